"""A beamline server that hangs (SIGSTOP) never stops the detector: the series is taken, every
frame written, and the Acquirer's Status names the beamline read that did not answer."""

from __future__ import annotations

import os
import signal

import h5py
import pytest

from tests.helpers.devices import acquire, proxy, running_deployment

pytestmark = pytest.mark.integration

SUITE = """
servers:
  PhotonflowAcquirer/hungbl:
    SimulatorAcquirer:
      hungbl/photonflow/simulator:
        properties:
          ImageWidth: 64
          ImageHeight: 48
          Seed: 3
          BeamlineMonochromator: hungbl/beamline/mono
          DetectorDistanceMotor: hungbl/beamline/detz
          BeamlineReadTimeout: 1.0
  PhotonflowRecorder/hungbl:
    PhotonflowRecorder:
      hungbl/photonflow/recorder:
        properties:
          DataRoot: ${PHOTONFLOW_DATA_ROOT}
  PhotonflowController/hungbl:
    PhotonflowController:
      hungbl/photonflow/controller:
        properties:
          Acquirer: hungbl/photonflow/simulator
          Recorder: hungbl/photonflow/recorder
  PhotonflowBeamline/hungbl:
    SimulatedMonochromator:
      hungbl/beamline/mono:
        properties: {InitialEnergy: 12.0, EnergyRange: [5.0, 25.0]}
    SimulatedMotor:
      hungbl/beamline/detz:
        properties: {Unit: mm, InitialPosition: 150.0, SoftLimits: [100.0, 800.0]}
"""

FRAMES = 50


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    var_dir = tmp_path_factory.mktemp("hungbl")
    data_root = var_dir / "data"
    with running_deployment(SUITE, var_dir, {"PHOTONFLOW_DATA_ROOT": str(data_root)}) as running:
        yield running, data_root


def _distance(path) -> float:
    with h5py.File(path, "r") as f:
        assert f["entry/data/data"].shape[0] == FRAMES
        assert f["entry/accounting/frames_written"][()] == FRAMES
        return float(f["entry/instrument/simulator/distance"][()])


def test_a_stopped_beamline_server_neither_fails_prepare_nor_loses_a_frame_and_the_status_names_the_read(suite):
    running, data_root = suite
    controller = proxy(running.device_url("hungbl/photonflow/controller"))
    acquirer = proxy(running.device_url("hungbl/photonflow/simulator"))
    beamline_pid = next(p.pid for p in running.processes if p.name == "PhotonflowBeamline/hungbl")

    assert acquire(controller, frames=FRAMES, exposure=0.001, period=0.002, file="before.h5") == "ON"
    assert str(acquirer.state()) == "ON", acquirer.status()
    assert _distance(controller.LastFile) == pytest.approx(0.150)  # detz, followed

    os.kill(beamline_pid, signal.SIGSTOP)
    try:
        acquire(controller, frames=FRAMES, exposure=0.001, period=0.002, file="stopped.h5")
        assert str(acquirer.state()) == "ALARM"
        status = acquirer.status()
        assert f"Series 2 completed: {FRAMES} of {FRAMES} frames acquired" in status
        assert "hungbl/beamline/mono/Wavelength did not answer within 1 s; using the simulation's default" in status
        assert "hungbl/beamline/detz/Position did not answer within 1 s" in status
        assert (controller.FramesAcquired, controller.FramesWritten) == (FRAMES, FRAMES)
        assert controller.LastFile == str(data_root / "stopped.h5")
        _distance(controller.LastFile)  # every frame is in the file
    finally:
        os.kill(beamline_pid, signal.SIGCONT)

    assert acquire(controller, frames=FRAMES, exposure=0.001, period=0.002, file="after.h5") == "ON"
    assert str(acquirer.state()) == "ON", acquirer.status()
    assert _distance(controller.LastFile) == pytest.approx(0.150)
