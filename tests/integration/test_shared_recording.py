"""Three Recorders behind one Controller, as processes: the Acquirer deals each frame to one of
them, each writes its part, the Controller's master presents the series in frame-number order,
equal to what the simulator sent; a Recorder killed mid-series leaves the others to finish, a
valid master and the exact missing frames named, and nothing hangs."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest

from photonflow.deployment import load_deployment
from tests.helpers.devices import acquire, demo_frames, proxy, running_deployment, wait_for_state, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

DEPLOYMENT = """
servers:
  PhotonflowAcquirer/shared:
    SimulatorAcquirer:
      test/shared/acquirer:
        properties:
          ImageWidth: 256
          ImageHeight: 200
          ImageType: uint16
          Seed: 5
          SendTimeout: 3
          StreamOutputs: 3
  PhotonflowRecorder/shared:
    PhotonflowRecorder:
      test/shared/recorder:
        properties: {DataRoot: "${SHARED_DATA}"}
  PhotonflowRecorder/shared_r2:
    PhotonflowRecorder:
      test/shared/recorder_2:
        properties: {DataRoot: "${SHARED_DATA}"}
  PhotonflowRecorder/shared_r3:
    PhotonflowRecorder:
      test/shared/recorder_3:
        properties: {DataRoot: "${SHARED_DATA}"}
  PhotonflowController/shared:
    PhotonflowController:
      test/shared/controller:
        properties:
          Acquirer: test/shared/acquirer
          Recorder: [test/shared/recorder, test/shared/recorder_2, test/shared/recorder_3]
          FinishTimeout: 10
"""
CONTROLLER = "test/shared/controller"
RECORDERS = ("test/shared/recorder", "test/shared/recorder_2", "test/shared/recorder_3")


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    var_dir = tmp_path_factory.mktemp("shared")
    data = var_dir / "data"
    with running_deployment(DEPLOYMENT, var_dir, {"SHARED_DATA": str(data)}) as suite:
        suite.data_root = data
        suite.deployment = load_deployment(DEPLOYMENT.replace("${SHARED_DATA}", str(data)))
        yield suite


def expected_frames(suite, master: Path, count: int) -> np.ndarray:
    """What the simulated detector sent, rebuilt from its configuration and the master's description."""
    frames = demo_frames(SimpleNamespace(deployment=suite.deployment), 0.001, master)
    return np.stack([frames.frame(n) for n in range(count)])


def test_three_recorders_write_one_series_whose_master_holds_every_frame_in_order(suite):
    controller = proxy(suite.device_url(CONTROLLER))
    assert acquire(controller, frames=90, exposure=0.001, period=0.002, file="three.h5") == "ON", controller.status()
    master = Path(controller.LastFile)
    assert master == suite.data_root / "three.h5"
    written = [proxy(suite.device_url(name)).FramesWritten for name in RECORDERS]
    assert sum(written) == 90 and all(count > 0 for count in written), written  # each frame to exactly one
    assert (controller.FramesAcquired, controller.FramesReceived, controller.FramesWritten,
            controller.MissingFrames) == (90, 90, 90, 0)
    with h5py.File(master, "r") as f:
        data = f["entry/data/data"]
        assert data.is_virtual and data.shape == (90, 200, 256)
        np.testing.assert_array_equal(data[()], expected_frames(suite, master, 90))
        assert sorted(set(f["entry/accounting/recorder_of_frame"][()].tolist())) == [0, 1, 2]
        assert [p.decode() for p in f["entry/accounting/part_files"][()]] == ["three_r1.h5", "three_r2.h5",
                                                                              "three_r3.h5"]
    for index in range(3):
        with h5py.File(suite.data_root / f"three_r{index + 1}.h5", "r") as part:
            assert int(part["entry/accounting/frames_written"][()]) == written[index]


def test_a_recorder_killed_mid_series_leaves_a_valid_master_and_the_exact_missing_frames(suite):
    controller = proxy(suite.device_url(CONTROLLER))
    wait_for_state(controller, "ON", "ALARM")
    controller.Configure(json.dumps({"frames": 300, "exposure": 0.001, "period": 0.02, "file": "killed.h5"}))
    controller.Start()
    second = proxy(suite.device_url(RECORDERS[1]))
    wait_until(lambda: second.FramesFlushed >= 10, what="the second Recorder writing (and flushing)")
    suite.kill("PhotonflowRecorder/shared_r2")
    # the others finish the series: the Controller ends, nothing hangs
    wait_until(lambda: str(controller.state()) not in ("RUNNING", "MOVING"), 120, what="the series' end")
    assert str(controller.state()) == "ALARM", controller.status()
    master = suite.data_root / "killed.h5"
    assert Path(controller.LastFile) == master
    with h5py.File(master, "r") as f:
        data = f["entry/data/data"][()]
        owners = f["entry/accounting/recorder_of_frame"][()]
        missing = f["entry/accounting/missing_frame_numbers"][()]
    assert data.shape[0] == 300
    assert missing.tolist() == np.flatnonzero(owners < 0).tolist() and missing.size > 0
    assert 1 not in owners.tolist()  # the killed Recorder's part is unreadable until it is repaired
    expected = expected_frames(suite, master, 300)
    held = owners >= 0
    np.testing.assert_array_equal(data[held], expected[held])  # every frame mapped is the frame sent
    assert not data[~held].any()  # a frame nobody holds reads as 0, never as another frame
    assert controller.MissingFrames == missing.size and controller.FramesWritten == int(held.sum())
    # the missing frames named by range in the Status
    ranges = re.search(r"missing: ([0-9, -]+)", controller.status())
    assert ranges is not None, controller.status()
    first = ranges.group(1).split(",")[0].strip()
    assert int(first.split("-")[0]) == missing[0]

    # restarted, the Recorder repairs its part at start-up, and the part rejoins the master
    suite.start_server(next(s for s in suite.deployment.servers if s.name == "PhotonflowRecorder/shared_r2"))

    def rejoined():
        with h5py.File(master, "r") as f:
            return 1 in f["entry/accounting/recorder_of_frame"][()].tolist()

    wait_until(rejoined, 90, what="the repaired part in the master")
    with h5py.File(master, "r") as f:
        data = f["entry/data/data"][()]
        owners = f["entry/accounting/recorder_of_frame"][()]
        still_missing = f["entry/accounting/missing_frame_numbers"][()]
    held = owners >= 0
    np.testing.assert_array_equal(data[held], expected[held])
    assert not data[~held].any() and still_missing.tolist() == np.flatnonzero(~held).tolist()
    assert set(still_missing.tolist()) < set(missing.tolist())  # the repaired part's frames are back
    wait_until(lambda: controller.MissingFrames == still_missing.size, 30, what="the Controller following the master")


def test_the_demo_with_three_recorders_ends_on_with_every_frame_in_order_and_its_nxmx_on_the_master(tmp_path):
    from photonflow.deployment import load_deployment_file
    from tests.helpers.cli import run_photonflow, summary_of
    from tests.helpers.paths import DEMO_CONFIG

    demo = run_photonflow(tmp_path, "demo", "--config", str(DEMO_CONFIG), "--recorders", "3", "--frames", "60",
                          "--exposure", "0.001", "--period", "0.002", PHOTONFLOW_DATA_ROOT=str(tmp_path / "data"))
    summary = summary_of(demo)
    assert summary["state"] == "ON", demo.stdout[-3000:] + demo.stderr[-3000:]
    assert (summary["recorders"], summary["frames_written"], summary["missing_frames"]) == (3, 60, 0)
    assert summary["nexus_problems"] == 0 and summary["definition"] == "NXmx"
    master = Path(summary["file"])
    parts = sorted(master.parent.glob(f"{master.stem}_r*.h5"))
    assert [p.name for p in parts] == [f"{master.stem}_r{n}.h5" for n in (1, 2, 3)]
    expected = demo_frames(SimpleNamespace(deployment=load_deployment_file(DEMO_CONFIG)), 0.001, master)
    with h5py.File(master, "r") as f:
        data = f["entry/data/data"]
        for n in range(60):
            np.testing.assert_array_equal(data[n], expected.frame(n), err_msg=f"frame {n}")
    with h5py.File(summary["nexus"], "r") as nxmx:  # the standardized file reads the frames through the master
        np.testing.assert_array_equal(nxmx["entry/data/data"][7], expected.frame(7))
