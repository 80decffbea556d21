"""An Andor Zyla through the whole pipeline: the AndorAcquirer on the simulated SDK3 camera
(Mono12Packed, binned), Recorder and Controller as their own processes on their own database."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from photonflow.simulators.andor_sdk3 import SimulatedSDK3Camera
from tests.helpers.devices import acquire, devfailed, proxy
from tests.helpers.trigger_line import (
    assert_recorded_frames_are_the_pulses,
    deployment_on_a_trigger_line,
    pulsed_series,
)

DEPLOYMENT = """
servers:
  PhotonflowAcquirer/zyla:
    AndorAcquirer:
      test/zyla/acquirer:
        properties:
          Simulation: zyla42
          SerialNumber: VSC-04242
          Seed: 9
          PixelEncoding: Mono12Packed
          Binning: 4
          SimulationTriggerInput: ${ZYLA_TRIGGER_LINE}
  PhotonflowRecorder/zyla:
    PhotonflowRecorder:
      test/zyla/recorder:
        properties:
          DataRoot: ${ZYLA_DATA}
  PhotonflowController/zyla:
    PhotonflowController:
      test/zyla/controller:
        properties:
          Acquirer: test/zyla/acquirer
          Recorder: test/zyla/recorder
          FinishTimeout: 30
"""


@pytest.fixture(scope="module")
def zyla(tmp_path_factory):
    var_dir = tmp_path_factory.mktemp("zyla")
    environment = {"ZYLA_DATA": str(var_dir / "data")}  # the test is the pulse generator
    with deployment_on_a_trigger_line(DEPLOYMENT, var_dir, environment, "ZYLA_TRIGGER_LINE") as (suite, line):
        yield suite, var_dir / "data", line


def reference_zyla(exposure: float, frames: int) -> SimulatedSDK3Camera:
    """The same camera model, seed and settings as the deployment's: the same frames."""
    reference = SimulatedSDK3Camera("zyla42", seed=9)
    reference.set_attribute_value("PixelEncoding", "Mono12Packed")
    reference.set_roi(0, 2048, 0, 2048, 4, 4)
    reference.set_attribute_value("ExposureTime", exposure)
    reference.setup_acquisition("snap", frames)
    reference.start_acquisition()
    reference.stop_acquisition()
    return reference


def test_a_zyla_series_through_the_controller_equals_what_the_sensor_counted(zyla):
    suite, data_root, _ = zyla
    controller = proxy(suite.device_url("test/zyla/controller"))
    acquirer = proxy(suite.device_url("test/zyla/acquirer"))
    assert acquirer.CameraModel == "ZYLA-4.2P-USB3" and acquirer.PixelEncodingUsed == "Mono12Packed"
    state = acquire(controller, frames=10, exposure=0.002, period=0.011, file="zyla/series.h5")
    assert state == "ON", controller.status()
    reference = reference_zyla(0.002, 10)
    with h5py.File(data_root / "zyla" / "series.h5", "r") as f:
        data = f["entry/data/data"]
        assert data.shape == (10, 512, 512)
        for n in (0, 9):
            np.testing.assert_array_equal(data[n], reference.frame(n))


def test_a_zyla_series_on_the_trigger_line_has_a_frame_per_pulse_at_the_pulses_time(zyla):
    suite, data_root, line = zyla
    line.wait_for_inputs(1)  # the Acquirer's simulated camera is cabled
    controller = proxy(suite.device_url("test/zyla/controller"))
    acquirer = proxy(suite.device_url("test/zyla/acquirer"))
    state, pulses = pulsed_series(controller, acquirer, line, spacing=0.05, frames=4, exposure=0.002,
                                  period=0.011, trigger_mode="external", file="zyla/pulses.h5")
    assert state == "ON", controller.status()
    assert "4 of 4 frames acquired" in acquirer.status()
    # each exposure starts at its pulse's edge: the camera's timestamp, in the Recorder's file
    reference = reference_zyla(0.002, 4)
    assert_recorded_frames_are_the_pulses(data_root / "zyla" / "pulses.h5", pulses,
                                          lambda n: reference.frame(n, pulses[n].position))


def test_a_frame_rate_beyond_the_camera_faults_with_the_sdks_limit(zyla):
    suite, _, _ = zyla
    controller = proxy(suite.device_url("test/zyla/controller"))
    acquirer = proxy(suite.device_url("test/zyla/acquirer"))
    state = acquire(controller, frames=10, exposure=0.001, period=0.002, file="zyla/too_fast.h5")
    assert state != "ON"
    status = acquirer.status()
    assert "AT_ERR_OUTOFRANGE" in status and "FrameRate: 500.0 is outside 0.0001 to 100.0" in status
    acquirer.Init()
    assert devfailed(acquirer.write_attribute, "Exposure", -1.0).reason

