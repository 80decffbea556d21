"""A PILATUS3 through the whole pipeline: a simulated camserver process writing CBF files,
the PilatusAcquirer streaming them, Recorder and Controller on their own database."""

from __future__ import annotations

import os
import time

import fabio
import h5py
import numpy as np
import pytest

from photonflow.drivers.camserver import CamserverClient
from tests.helpers.devices import acquire, devfailed, proxy, wait_for_state
from tests.helpers.trigger_line import (
    assert_recorded_frames_are_the_pulses,
    deployment_on_a_trigger_line,
    pulsed_series,
)

DEPLOYMENT = """
simulators:
  camserver:
    command: [photonflow-pilatus-camserver, --model, pilatus3_100k, --seed, "3", --image-path, "${PILATUS_IMAGES}",
              --trigger-input, "${PILATUS_TRIGGER_LINE}"]
servers:
  PhotonflowAcquirer/pilatus:
    PilatusAcquirer:
      test/pilatus/acquirer:
        properties:
          CamserverAddress: ${PHOTONFLOW_SIM_CAMSERVER_CAMSERVER}
          Model: pilatus3_100k
          ImageDirectory: ${PILATUS_IMAGES}
          SerialNumber: 10-0042
  PhotonflowRecorder/pilatus:
    PhotonflowRecorder:
      test/pilatus/recorder:
        properties:
          DataRoot: ${PILATUS_DATA}
  PhotonflowController/pilatus:
    PhotonflowController:
      test/pilatus/controller:
        properties:
          Acquirer: test/pilatus/acquirer
          Recorder: test/pilatus/recorder
          FinishTimeout: 30
"""


@pytest.fixture(scope="module")
def pilatus(tmp_path_factory):
    var_dir = tmp_path_factory.mktemp("pilatus")
    environment = {"PILATUS_IMAGES": str(var_dir / "images"), "PILATUS_DATA": str(var_dir / "data")}
    with deployment_on_a_trigger_line(DEPLOYMENT, var_dir, environment, "PILATUS_TRIGGER_LINE") as (suite, line):
        yield suite, var_dir, line  # the test is the pulse generator


def test_a_pilatus_series_through_the_controller_equals_the_cbf_files(pilatus):
    suite, var_dir, _ = pilatus
    controller = proxy(suite.device_url("test/pilatus/controller"))
    acquirer = proxy(suite.device_url("test/pilatus/acquirer"))
    assert "tvx" in acquirer.CamserverVersion
    acquirer.Wavelength = 0.97721
    acquirer.StartAngle = 5.0
    state = acquire(controller, frames=20, exposure=0.002, period=0.005, file="pilatus/series.h5")
    assert state == "ON", controller.status()
    cbf_files = sorted((var_dir / "images").glob("*.cbf"))
    assert len(cbf_files) == 20
    with h5py.File(var_dir / "data" / "pilatus" / "series.h5", "r") as f:
        data = f["entry/data/data"]
        assert data.shape == (20, 195, 487) and data.dtype == np.int32
        for n in (0, 9, 19):
            image = fabio.open(str(cbf_files[n]))
            np.testing.assert_array_equal(data[n], image.data)
            # the image's own header went with it: its numbers, by frame, beside the data
            header = image.pilatus_headers
            detector = f["entry/instrument/pilatus3_100k"]
            assert detector["frame_metadata/start_angle"][n] == pytest.approx(header["Start_angle"])
            assert detector["frame_metadata/count_time"][n] == pytest.approx(header["Exposure_time"])
        assert image.pilatus_headers["Wavelength"] == pytest.approx(0.97721)
        assert image.pilatus_headers["Start_angle"] == pytest.approx(5.0)
        assert detector["frame_metadata/incident_wavelength"][19] == pytest.approx(0.97721e-10)


def test_a_pilatus_series_on_the_trigger_line_has_an_image_per_pulse_dated_by_it(pilatus):
    suite, var_dir, line = pilatus
    line.wait_for_inputs(1)  # the simulated camserver is cabled
    controller = proxy(suite.device_url("test/pilatus/controller"))
    acquirer = proxy(suite.device_url("test/pilatus/acquirer"))
    started = time.time()
    state, pulses = pulsed_series(controller, acquirer, line, spacing=0.05, frames=4, exposure=0.002,
                                  period=0.005, trigger_mode="external", file="pilatus/pulses.h5")
    assert state == "ON", controller.status()
    assert "4 of 4 frames acquired" in acquirer.status()
    images = sorted(p for p in (var_dir / "images").glob("*.cbf") if p.stat().st_mtime >= started)
    assert len(images) == 4  # camserver wrote an image per pulse, no more
    # each image's CBF date (to the millisecond) is its pulse's edge, and so is the file's timestamp
    assert_recorded_frames_are_the_pulses(var_dir / "data" / "pilatus" / "pulses.h5", pulses,
                                          lambda n: fabio.open(str(images[n])).data, atol=1.5e-3)


def test_a_threshold_beyond_the_detector_is_refused_with_its_range(pilatus):
    suite, _, _ = pilatus
    acquirer = proxy(suite.device_url("test/pilatus/acquirer"))
    error = devfailed(acquirer.write_attribute, "ThresholdEnergy", 90000.0)
    assert error.reason == "InvalidConfiguration"
    assert error.desc == "threshold 90000.0 eV is outside what a PILATUS3 accepts: 2000 to 40000 eV"


def test_a_dropped_camserver_connection_is_a_fault_and_init_reconnects(pilatus):
    suite, _, _ = pilatus
    acquirer = proxy(suite.device_url("test/pilatus/acquirer"))
    with CamserverClient(os.environ["PHOTONFLOW_SIM_CAMSERVER_CAMSERVER"]) as other:
        other.command("simfail drop")  # camserver drops the connection of the next command it gets
    error = devfailed(acquirer.Prepare)
    assert error.reason == "DetectorConnectionLost", error.desc
    assert str(acquirer.state()) == "FAULT" and "camserver" in acquirer.status()
    acquirer.Init()
    wait_for_state(acquirer, "ON")
    assert "tvx" in acquirer.CamserverVersion  # a new connection, answering
