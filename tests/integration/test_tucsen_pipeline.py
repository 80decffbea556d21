"""A Tucsen Dhyana through the whole pipeline: the TucsenAcquirer on the simulated TUCam library,
Recorder and Controller as their own processes on their own database."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from photonflow.acquisition.tucsen import TucsenCamera, TucsenSettings
from photonflow.camera import AcquisitionSettings
from photonflow.simulators.tucsen_tucam import SimulatedTucam
from tests.helpers.devices import acquire, devfailed, proxy
from tests.helpers.trigger_line import (
    assert_recorded_frames_are_the_pulses,
    deployment_on_a_trigger_line,
    pulsed_series,
)

DEPLOYMENT = """
servers:
  PhotonflowAcquirer/dhyana:
    TucsenAcquirer:
      test/dhyana/acquirer:
        properties:
          Simulation: dhyana95
          SerialNumber: DH95-00117
          Seed: 5
          GainMode: High
          TargetTemperature: -10
          Roi: [64, 32, 512, 256]
          SimulationTriggerInput: ${DHYANA_TRIGGER_LINE}
  PhotonflowRecorder/dhyana:
    PhotonflowRecorder:
      test/dhyana/recorder:
        properties:
          DataRoot: ${DHYANA_DATA}
  PhotonflowController/dhyana:
    PhotonflowController:
      test/dhyana/controller:
        properties:
          Acquirer: test/dhyana/acquirer
          Recorder: test/dhyana/recorder
          FinishTimeout: 30
"""


@pytest.fixture(scope="module")
def dhyana(tmp_path_factory):
    var_dir = tmp_path_factory.mktemp("dhyana")
    environment = {"DHYANA_DATA": str(var_dir / "data")}  # the test is the pulse generator
    with deployment_on_a_trigger_line(DEPLOYMENT, var_dir, environment, "DHYANA_TRIGGER_LINE") as (suite, line):
        yield suite, var_dir / "data", line


def reference_dhyana(exposure: float, frames: int) -> tuple[SimulatedTucam, TucsenCamera]:
    """The same model, seed and settings as the deployment's: the same frames."""
    reference = SimulatedTucam("dhyana95", seed=5)
    camera = TucsenCamera(reference.functions, 0, TucsenSettings("High", roi=(64, 32, 512, 256)))
    camera.prepare(AcquisitionSettings(frames, exposure, 0.02))
    return reference, camera


def test_a_dhyana_series_through_the_controller_equals_what_the_camera_delivered(dhyana):
    suite, data_root, _ = dhyana
    controller = proxy(suite.device_url("test/dhyana/controller"))
    acquirer = proxy(suite.device_url("test/dhyana/acquirer"))
    assert acquirer.CameraModel == "Dhyana 95 V2" and acquirer.CameraSerialNumber == "DH95-00117"
    assert acquirer.GainModeUsed == "High" and list(acquirer.RoiUsed) == [64, 32, 512, 256]
    assert acquirer.TargetTemperatureUsed == -10.0 and acquirer.SensorTemperature < 22.0
    state = acquire(controller, frames=12, exposure=0.004, period=0.02, file="dhyana/series.h5")
    assert state == "ON", controller.status()
    reference, camera = reference_dhyana(0.004, 12)
    with h5py.File(data_root / "dhyana" / "series.h5", "r") as f:
        data = f["entry/data/data"]
        assert data.shape == (12, 256, 512) and data.dtype == np.uint16
        for n in (0, 11):
            np.testing.assert_array_equal(data[n], reference.frame(n))
        detector = f["entry/instrument/dhyana_95_v2"]
        assert detector["serial_number"][()] == b"DH95-00117" and detector["x_pixel_size"][()] == 11e-6
    camera.close()


def test_a_dhyana_series_on_the_trigger_line_has_a_frame_per_pulse_when_the_pulse_came(dhyana):
    suite, data_root, line = dhyana
    line.wait_for_inputs(1)  # the Acquirer's simulated camera is cabled
    controller = proxy(suite.device_url("test/dhyana/controller"))
    acquirer = proxy(suite.device_url("test/dhyana/acquirer"))
    state, pulses = pulsed_series(controller, acquirer, line, spacing=0.05, frames=4, exposure=0.004,
                                  period=0.02, trigger_mode="external", file="dhyana/pulses.h5")
    assert state == "ON", controller.status()
    assert "4 of 4 frames acquired" in acquirer.status()
    reference, camera = reference_dhyana(0.004, 4)
    # TUCam's frames carry no time: stamped when handed over, at the end of the exposure the pulse began
    assert_recorded_frames_are_the_pulses(data_root / "dhyana" / "pulses.h5", pulses,
                                          lambda n: reference.frame(n, pulses[n].position),
                                          offset=0.004, atol=0.25)
    camera.close()


def test_values_beyond_the_camera_are_refused_with_its_limits(dhyana):
    suite, _, _ = dhyana
    acquirer = proxy(suite.device_url("test/dhyana/acquirer"))
    error = devfailed(acquirer.write_attribute, "GainModeUsed", "CMS")
    assert error.reason == "InvalidConfiguration"
    assert error.desc == "a Dhyana 95 V2 has gain modes HDR, High, Low, not 'CMS'"
    error = devfailed(acquirer.write_attribute, "RoiUsed", [2000, 0, 100, 8])
    assert "does not fit the 2048x2048 sensor" in error.desc
    assert devfailed(acquirer.write_attribute, "TargetTemperatureUsed", -70.0).reason  # Tango's own limit
    acquirer.RoiUsed = [0, 0, 0, 0]
    assert list(acquirer.RoiUsed) == [0, 0, 2048, 2048]
    acquirer.RoiUsed = [64, 32, 512, 256]
