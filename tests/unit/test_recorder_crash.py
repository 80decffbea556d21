"""A Recorder process killed mid-series: the file it leaves is repaired by the next Recorder."""

import os
import signal
import subprocess
import sys

import h5py
import numpy as np
import pytest

from photonflow.recording.recorder import Recorder
from photonflow.recording.recovery import clear_write_flags, lookup3
from photonflow.stream.stins import StinsEncoder
from photonflow.stream.transport import StreamSender
from tests.helpers.recording import DETECTOR, RECORDER_PROCESS, SHAPE, frame


def test_lookup3_matches_the_published_test_vectors():
    # From Bob Jenkins' lookup3.c driver5(): hashlittle("", 0) and "Four score and seven years ago".
    assert lookup3(b"", 0) == 0xDEADBEEF
    assert lookup3(b"Four score and seven years ago", 0) == 0x17770551
    assert lookup3(b"Four score and seven years ago", 1) == 0xCD628161


@pytest.mark.parametrize("frames_per_file", [0, 8])
def test_a_killed_recorder_leaves_a_file_the_next_recorder_repairs(tmp_path, frames_per_file):
    sender = StreamSender("tcp://127.0.0.1:*")
    process = subprocess.Popen(
        [sys.executable, "-c", RECORDER_PROCESS, str(tmp_path), sender.endpoint, "30", str(frames_per_file)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        encoder = StinsEncoder()
        sender.send(encoder.series_start(1, 1000, SHAPE, "uint16", DETECTOR, frame_metadata=("start_angle",)))
        for n in range(30):
            sender.send(encoder.data(1, n, frame(n), 0.0, metadata={"start_angle": 0.25 * n}))
        assert process.stdout.readline().startswith("written 30")
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        process.stdout.close()
        sender.close()
    path = tmp_path / "crash.h5"
    with pytest.raises(OSError, match="already open for write"):
        h5py.File(path, "r")

    recorder = Recorder(tmp_path)
    assert recorder.recovered == str(path)
    assert "30 frames kept" in recorder.status
    with h5py.File(path, "r") as f:  # a plain open works again
        assert f["entry/accounting/end_reason"][()] == b"interrupted"
        assert f["entry/accounting/frames_written"][()] == 30
        data = f["entry/data/data"]
        assert data.shape[0] == 30
        for n in range(30):
            np.testing.assert_array_equal(data[n], frame(n))
        angles = next(iter(f["entry/instrument"].values()))["frame_metadata/start_angle"][()]
        np.testing.assert_array_equal(angles, 0.25 * np.arange(30))  # trimmed like the frames
    for data_file in tmp_path.glob("crash_data_*.h5"):  # a split series: every file opens too
        with h5py.File(data_file, "r") as f:
            assert f["entry/data/data"].shape[0] <= frames_per_file
    assert len(list(tmp_path.glob("crash_data_*.h5"))) == (4 if frames_per_file else 0)
    assert Recorder(tmp_path).recovered == ""  # repaired once, then forgotten


def test_clearing_flags_leaves_a_closed_file_alone(tmp_path):
    path = tmp_path / "closed.h5"
    with h5py.File(path, "w", libver="latest") as f:
        f["x"] = 1
    before = path.read_bytes()
    assert clear_write_flags(path) is False
    assert path.read_bytes() == before
