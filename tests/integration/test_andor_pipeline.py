"""An Andor Zyla through the whole pipeline: the AndorAcquirer on the simulated SDK3 camera
(Mono12Packed, binned), Recorder and Controller as their own processes on their own database."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from photonflow.simulators.andor_sdk3 import SimulatedSDK3Camera
from tests.helpers.devices import acquire, devfailed, proxy, running_deployment

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
    with running_deployment(DEPLOYMENT, var_dir, {"ZYLA_DATA": str(var_dir / "data")}) as suite:
        yield suite, var_dir / "data"


def test_a_zyla_series_through_the_controller_equals_what_the_sensor_counted(zyla):
    suite, data_root = zyla
    controller = proxy(suite.device_url("test/zyla/controller"))
    acquirer = proxy(suite.device_url("test/zyla/acquirer"))
    assert acquirer.CameraModel == "ZYLA-4.2P-USB3" and acquirer.PixelEncodingUsed == "Mono12Packed"
    state = acquire(controller, frames=10, exposure=0.002, period=0.011, file="zyla/series.h5")
    assert state == "ON", controller.status()
    # the same camera model, seed and settings give the same frames
    reference = SimulatedSDK3Camera("zyla42", seed=9)
    reference.set_attribute_value("PixelEncoding", "Mono12Packed")
    reference.set_roi(0, 2048, 0, 2048, 4, 4)
    reference.set_attribute_value("ExposureTime", 0.002)
    reference.setup_acquisition("snap", 10)
    reference.start_acquisition()
    reference.stop_acquisition()
    with h5py.File(data_root / "zyla" / "series.h5", "r") as f:
        data = f["entry/data/data"]
        assert data.shape == (10, 512, 512)
        for n in (0, 9):
            np.testing.assert_array_equal(data[n], reference.frame(n))


def test_a_frame_rate_beyond_the_camera_faults_with_the_sdks_limit(zyla):
    suite, _ = zyla
    controller = proxy(suite.device_url("test/zyla/controller"))
    acquirer = proxy(suite.device_url("test/zyla/acquirer"))
    state = acquire(controller, frames=10, exposure=0.001, period=0.002, file="zyla/too_fast.h5")
    assert state != "ON"
    status = acquirer.status()
    assert "AT_ERR_OUTOFRANGE" in status and "FrameRate: 500.0 is outside 0.0001 to 100.0" in status
    acquirer.Init()
    assert devfailed(acquirer.write_attribute, "Exposure", -1.0).reason
