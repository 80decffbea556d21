"""No path escapes the data root and no finished file is ever rewritten: not through a symbolic
link swapped in while a series is armed, a data root reached through a link, nor a forged crash
journal."""

import contextlib
import json
import subprocess
import sys

import h5py
import numpy as np
import pytest

from photonflow import states
from photonflow.errors import ConfigurationError, FilePathError
from photonflow.recording.recorder import Recorder, RecordingRequest
from photonflow.stream.stins import StinsEncoder
from photonflow.stream.transport import ReceiverGone
from tests.helpers.recording import DETECTOR, RECORDER_PROCESS, SHAPE, frame, send_series


def test_a_directory_swapped_for_a_link_after_arm_cannot_send_the_file_outside(tmp_path, stream):
    root, outside = tmp_path / "root", tmp_path / "outside"
    outside.mkdir()
    recorder = Recorder(root)
    armed = recorder.arm(RecordingRequest(3, 1, stream.endpoint, "sub/x.h5"))
    (root / "sub").rename(root / "sub_moved")  # the race: sub/ replaced by a link out of the root
    (root / "sub").symlink_to(outside)
    send_series(stream, range(3))
    assert recorder.wait(10)
    assert list(outside.iterdir()) == []
    assert recorder.state == states.ON, recorder.status
    written = root / "sub_moved" / "x.h5"
    assert recorder.last_file == str(written) and armed.name == written.name
    with h5py.File(written, "r") as f:
        np.testing.assert_array_equal(f["entry/data/data"][2], frame(2))


def test_a_directory_moved_out_of_the_root_after_arm_gets_no_file(tmp_path, stream):
    root, outside = tmp_path / "root", tmp_path / "outside"
    outside.mkdir()
    recorder = Recorder(root)
    recorder.arm(RecordingRequest(3, 1, stream.endpoint, "sub/x.h5"))
    (root / "sub").rename(outside / "sub")  # the armed directory itself now lies outside
    (root / "sub").symlink_to(outside / "sub")
    stream.send_timeout = 2  # the Recorder stops taking the stream once it refused the file
    with contextlib.suppress(ReceiverGone):
        send_series(stream, range(3))
    assert recorder.wait(10)
    assert list((outside / "sub").iterdir()) == []
    assert recorder.state == states.FAULT
    assert "outside the data root" in recorder.status


def test_arm_refuses_a_link_under_the_root(tmp_path, stream):
    root, outside = tmp_path / "root", tmp_path / "outside"
    outside.mkdir()
    root.mkdir()
    (root / "link").symlink_to(outside)
    recorder = Recorder(root)
    with pytest.raises(FilePathError) as caught:
        recorder.arm(RecordingRequest(3, 1, stream.endpoint, "link/x.h5"))
    assert caught.value.reason == "FileOutsideDataRoot"
    assert list(outside.iterdir()) == []


def test_a_data_root_reached_through_a_link_is_refused_naming_the_real_path(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "real")
    with pytest.raises(ConfigurationError) as caught:
        Recorder(tmp_path / "alias" / "data")
    assert caught.value.reason == "DataRootIsLinked"
    assert f"configure the real path {tmp_path / 'real' / 'data'} instead" in str(caught.value)


def finished_file(root, stream, name="done.h5"):
    recorder = Recorder(root)
    path = recorder.arm(RecordingRequest(3, 1, stream.endpoint, name))
    send_series(stream, range(3))
    assert recorder.wait(10) and recorder.state == states.ON
    with h5py.File(path, "r") as f:
        token = f.attrs["photonflow_writer"]
    return path, token


@pytest.mark.parametrize("journal", [
    lambda path, token: {"file": path.name, "token": token},  # the finished file's own token
    lambda path, token: {"file": str(path)},  # the journal of earlier photonflow versions
    lambda path, token: {"file": "../outside.h5", "token": token},
])
def test_a_forged_journal_never_rewrites_a_finished_file(tmp_path, stream, journal):
    root = tmp_path / "root"
    path, token = finished_file(root, stream)
    outside = tmp_path / "outside.h5"
    outside.write_bytes(path.read_bytes())
    before = {p: p.read_bytes() for p in (path, outside)}
    (root / ".photonflow-open-recorder.json").write_text(json.dumps(journal(path, token)))
    recorder = Recorder(root)  # what Init does
    assert {p: p.read_bytes() for p in (path, outside)} == before
    assert "Nothing repaired: the crash journal" in recorder.status
    assert not (root / ".photonflow-open-recorder.json").exists()
    assert recorder.last_file == ""


def test_a_journal_that_is_a_link_is_not_followed(tmp_path, stream):
    root = tmp_path / "root"
    path, token = finished_file(root, stream)
    target = tmp_path / "elsewhere.json"
    target.write_text(json.dumps({"file": path.name, "token": token}))
    (root / ".photonflow-open-recorder.json").symlink_to(target)
    before = path.read_bytes()
    recorder = Recorder(root)
    assert path.read_bytes() == before and "Nothing repaired" in recorder.status
    assert target.exists()


def test_a_genuine_crash_is_still_repaired_and_its_accounting_reported(tmp_path, stream):
    root, path = tmp_path, tmp_path / "crash.h5"
    process = subprocess.Popen(
        [sys.executable, "-c", RECORDER_PROCESS, str(root), stream.endpoint, "30", "0"], stdout=subprocess.PIPE, text=True
    )
    try:
        encoder = StinsEncoder()
        stream.send(encoder.series_start(1, 1000, SHAPE, "uint16", DETECTOR))
        for n in range(30):
            stream.send(encoder.data(1, n, frame(n), 0.0))
        assert process.stdout.readline().startswith("written 30")
    finally:
        process.kill()
        process.wait(10)
        process.stdout.close()
    recorder = Recorder(root)
    assert recorder.recovered == str(path)
    assert recorder.last_file == str(path)
    with h5py.File(path, "r") as f:
        accounting = f["entry/accounting"]
        assert accounting["end_reason"][()].decode() == "interrupted"
        kept = int(accounting["frames_written"][()])
    assert kept == 30
    assert (recorder.counters.frames_written, recorder.counters.frames_received) == (30, 30)
    assert recorder.counters.missing_frames == 0
    assert "30 frames kept, 0 missing" in recorder.status
    assert not (root / ".photonflow-open-recorder.json").exists()
