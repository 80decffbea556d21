"""A DECTRIS detector through the whole pipeline: a simulated DCU process (SIMPLON over HTTP,
stream v2 on ZeroMQ), the DectrisAcquirer, Recorder and Controller servers on their own
database, and a file whose frames equal what the DCU sent, stored as the DCU compressed them,
and are the powder rings at the geometry the file's metadata (from the DCU's header) give."""

from __future__ import annotations

import os
import signal

import h5py
import hdf5plugin  # noqa: F401 - the bitshuffle filter, to read the frames back
import numpy as np
import pytest

from photonflow.simulators.dectris_dcu import MODELS
from photonflow.simulators.diffraction import DiffractionFrames, PatternSettings
from photonflow.stream.bslz4 import compress
from tests.helpers.devices import (
    acquire,
    devfailed,
    proxy,
    wait_for_state,
)
from tests.helpers.trigger_line import (
    assert_recorded_frames_are_the_pulses,
    deployment_on_a_trigger_line,
    pulsed_series,
)

MODEL, SEED = "eiger2_1m", 11

DEPLOYMENT = f"""
simulators:
  dcu:
    command: [photonflow-dectris-dcu, --model, {MODEL}, --seed, "{SEED}", --serial-number, E-01-0099,
              --trigger-input, "${{EIGER_TRIGGER_LINE}}"]
servers:
  PhotonflowAcquirer/eiger:
    DectrisAcquirer:
      test/eiger/acquirer:
        properties:
          DcuUrl: ${{PHOTONFLOW_SIM_DCU_SIMPLON}}
          DcuStreamEndpoint: ${{PHOTONFLOW_SIM_DCU_STREAM}}
          StreamFormat: cbor
          BeamCentre: "500.5,520.25"  # written to the DCU at each Prepare (no beamline devices here)
  PhotonflowRecorder/eiger:
    PhotonflowRecorder:
      test/eiger/recorder:
        properties:
          DataRoot: ${{EIGER_DATA_ROOT}}
  PhotonflowController/eiger:
    PhotonflowController:
      test/eiger/controller:
        properties:
          Acquirer: test/eiger/acquirer
          Recorder: test/eiger/recorder
          FinishTimeout: 30
"""


@pytest.fixture(scope="module")
def eiger(tmp_path_factory):
    var_dir = tmp_path_factory.mktemp("eiger")
    environment = {"EIGER_DATA_ROOT": str(var_dir / "data")}  # the test is the pulse generator
    with deployment_on_a_trigger_line(DEPLOYMENT, var_dir, environment, "EIGER_TRIGGER_LINE") as (suite, line):
        assert os.environ["PHOTONFLOW_SIM_DCU_SIMPLON"].startswith("http://127.0.0.1:")
        dcu = next(p for p in suite.processes if p.name == "simulator_dcu")
        yield suite, var_dir / "data", dcu.pid, line


def test_an_eiger_series_through_the_controller_is_stored_as_the_dcu_sent_it(eiger):
    suite, data_root, _, _ = eiger
    controller = proxy(suite.device_url("test/eiger/controller"))
    acquirer = proxy(suite.device_url("test/eiger/acquirer"))
    assert acquirer.StreamProtocol == "dectris-v2"
    assert acquirer.Description == "Dectris EIGER2 Si 1M" and acquirer.SerialNumber == "E-01-0099"
    acquirer.PhotonEnergy = 9000.0
    state = acquire(controller, frames=40, exposure=0.002, period=0.004, file="eiger/series.h5")
    assert state == "ON", controller.status()
    assert acquirer.FramesAcquired == 40
    model = MODELS[MODEL]
    with h5py.File(data_root / "eiger" / "series.h5", "r") as f:
        frames = frames_at_the_recorded_geometry(f, model)
        settings = frames.settings
        assert settings.beam_centre == (500.5, 520.25)  # BeamCentre "row,column"
        assert settings.wavelength == pytest.approx(12398.419843320026 / 9000.0 * 1e-10)  # PhotonEnergy
        assert settings.distance == pytest.approx(0.1)  # the DCU's own detector_distance
        data = f["entry/data/data"]
        assert data.shape == (40, model.height, model.width)
        for n in (0, 17, 39):
            expected = frames.frame(n)
            np.testing.assert_array_equal(data[n], expected)
            mask, chunk = data.id.read_direct_chunk((n, 0, 0))
            assert mask == 0 and chunk == bytes(compress(expected))
        (detector,) = [g for g in f["entry/instrument"].values() if g.attrs.get("NX_class") == "NXdetector"]
        assert detector["serial_number"][()].decode() == "E-01-0099"
    # The next series: the DCU numbers it itself; the Recorder follows.
    state = acquire(controller, frames=5, exposure=0.002, period=0.004, file="eiger/next.h5")
    assert state == "ON", controller.status()
    with h5py.File(data_root / "eiger" / "next.h5", "r") as f:
        np.testing.assert_array_equal(f["entry/data/data"][4], frames.frame(4))


def frames_at_the_recorded_geometry(f: h5py.File, model) -> DiffractionFrames:
    """The frames the simulated DCU draws, rebuilt from what the file says of the series: beam
    centre (pixels), wavelength, distance (stream v2: detector_translation [0, 0, -distance]),
    pixel size and count time, all as the DCU's header gave them."""
    (detector,) = [g for g in f["entry/instrument"].values() if g.attrs.get("NX_class") == "NXdetector"]
    specific = detector["detector_specific"]
    assert specific["incident_wavelength"].attrs["units"] == "m"
    assert specific["detector_translation_z"].attrs["units"] == "m"
    return DiffractionFrames(PatternSettings(
        height=model.height, width=model.width, dtype="uint16", seed=SEED,
        exposure=float(detector["count_time"][()]),
        beam_centre=(float(detector["beam_center_y"][()]), float(detector["beam_center_x"][()])),
        wavelength=float(specific["incident_wavelength"][()]),
        distance=-float(specific["detector_translation_z"][()]),
        pixel_size=float(detector["x_pixel_size"][()]),
    ))


def test_an_eiger_series_on_the_trigger_line_has_an_image_per_pulse_at_the_pulses_time(eiger):
    suite, data_root, _, line = eiger
    line.wait_for_inputs(1)  # the simulated DCU is cabled
    controller = proxy(suite.device_url("test/eiger/controller"))
    acquirer = proxy(suite.device_url("test/eiger/acquirer"))
    state, pulses = pulsed_series(controller, acquirer, line, spacing=0.05, frames=4, exposure=0.002,
                                  period=0.004, trigger_mode="external", file="eiger/pulses.h5")
    assert state == "ON", controller.status()
    assert acquirer.FramesAcquired == 4
    path = data_root / "eiger" / "pulses.h5"
    with h5py.File(path, "r") as f:
        frames = frames_at_the_recorded_geometry(f, MODELS[MODEL])
    # stream v2: each image's start_time after the arm's series_date is its pulse's edge
    assert_recorded_frames_are_the_pulses(path, pulses, frames.frame)


def test_values_beyond_the_dcus_limits_are_refused_with_the_limit(eiger):
    suite, _, _, _ = eiger
    acquirer = proxy(suite.device_url("test/eiger/acquirer"))
    error = devfailed(acquirer.write_attribute, "PhotonEnergy", 200000.0)
    assert error.reason == "InvalidConfiguration"
    assert error.desc == "photon_energy 200000.0 eV is outside what the detector accepts: 2700.0 to 100000.0 eV"
    error = devfailed(acquirer.write_attribute, "Exposure", 1e-9)
    assert "3e-06" in error.desc


def test_a_lost_dcu_puts_the_acquirer_in_fault_and_init_reconnects(eiger):
    suite, _, dcu_pid, _ = eiger
    acquirer = proxy(suite.device_url("test/eiger/acquirer"))
    wait_for_state(acquirer, "ON")
    os.kill(dcu_pid, signal.SIGSTOP)  # the DCU stops answering
    try:
        error = devfailed(acquirer.Prepare)
        assert error.reason == "DetectorConnectionLost", error.desc
        assert str(acquirer.state()) == "FAULT"
    finally:
        os.kill(dcu_pid, signal.SIGCONT)
    acquirer.Init()
    wait_for_state(acquirer, "ON")
