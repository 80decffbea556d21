"""Disk faults for real: a file-size limit (RLIMIT_FSIZE) and a full file system hit mid-series."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
from pathlib import Path

import h5py
import numpy as np
import pytest

from photonflow.stream.stins import StinsEncoder
from photonflow.stream.transport import SendInterrupted, StreamSender
from tests.helpers.recording import DETECTOR, SHAPE, frame

LIMITED_RECORDER = textwrap.dedent(
    """
    import resource, signal, sys, time
    # Past the limit, write() fails with EFBIG instead of the process being killed.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[3]), int(sys.argv[3])))
    from photonflow.recording.config import RecorderConfig
    from photonflow.recording.recorder import Recorder, RecordingRequest
    recorder = Recorder(RecorderConfig(sys.argv[1], durable=False))
    recorder.arm(RecordingRequest(500, 1, sys.argv[2], "full.h5"))
    deadline = time.monotonic() + 30
    while recorder.state == "RUNNING" and time.monotonic() < deadline:
        time.sleep(0.02)
    import json
    print(json.dumps([recorder.state, recorder.status, recorder.counters.frames_written]))
    """
)


def test_a_full_disk_faults_naming_the_file_and_cause_and_spares_earlier_files(tmp_path):
    earlier = tmp_path / "earlier.h5"
    with h5py.File(earlier, "w") as f:
        f["data"] = np.arange(10)
    earlier_bytes = earlier.read_bytes()
    sender = StreamSender("tcp://127.0.0.1:*")
    limit = 40 * SHAPE[0] * SHAPE[1] * 2  # room for about 40 frames
    process = subprocess.Popen(
        [sys.executable, "-c", LIMITED_RECORDER, str(tmp_path), sender.endpoint, str(limit)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        encoder = StinsEncoder()
        sender.send(encoder.series_start(1, 500, SHAPE, "uint16", DETECTOR))
        recorder_gone = threading.Event()  # once in FAULT it stops reading, and then exits
        threading.Thread(target=lambda: (process.wait(60), recorder_gone.set()), daemon=True).start()
        try:
            for n in range(500):
                sender.send(encoder.data(1, n, frame(n), 0.0), recorder_gone)
        except SendInterrupted:
            pass
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
        sender.close()
    assert out.strip(), (process.returncode, err)
    state, status, written = __import__("json").loads(out.strip().splitlines()[-1])
    assert state == "FAULT", (out, err)
    assert status.startswith(f"cannot write {tmp_path / 'full.h5'}: File too large"), status
    assert 0 < written < 500
    assert earlier.read_bytes() == earlier_bytes


# In a mount namespace of its own (so the mount vanishes with the process): a 1 MB tmpfs as
# the data root, a file already on it, and a Recorder fed 256x256 frames until it is full.
FULL_FILE_SYSTEM = textwrap.dedent(
    """
    import json, subprocess, sys, threading, time
    from pathlib import Path
    import h5py, numpy as np
    root = Path(sys.argv[1])
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(root)], check=True)
    earlier = root / "earlier.h5"
    with h5py.File(earlier, "w") as f:
        f["data"] = np.arange(1000)
    earlier_bytes = earlier.read_bytes()
    from photonflow.recording.recorder import Recorder, RecordingRequest
    from photonflow.stream.stins import StinsEncoder
    from photonflow.stream.transport import SendInterrupted, StreamSender
    sender = StreamSender("tcp://127.0.0.1:*")
    recorder = Recorder(root)
    recorder.arm(RecordingRequest(100, 1, sender.endpoint, "full.h5"))
    ended = threading.Event()
    encoder = StinsEncoder()
    def send():
        sender.send(encoder.series_start(1, 100, (256, 256), "uint16", {"name": "sim"}))
        try:
            for n in range(100):
                sender.send(encoder.data(1, n, np.full((256, 256), n, np.uint16), 0.0), ended)
            sender.send(encoder.series_end(1, 100, 100), ended)
        except SendInterrupted:
            pass
    thread = threading.Thread(target=send)
    thread.start()
    recorder.wait(30)
    ended.set()
    thread.join()
    sender.close()
    c = recorder.counters
    with h5py.File(root / "full.h5", "r") as f:  # closed as failed, readable, holding what it says
        kept = f["entry/data/data"][()]
        failed_file = [f["entry/accounting/end_reason"][()].decode(), int(f["entry/accounting/frames_written"][()]),
                       all((kept[n] == n).all() for n in range(kept.shape[0])), kept.shape[0]]
    print(json.dumps([recorder.state, recorder.status, c.frames_written, c.frames_received, c.frames_lost,
                      earlier.read_bytes() == earlier_bytes, failed_file]))
    """
)


def can_mount_private_file_systems() -> bool:
    if sys.platform != "linux" or os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    trial = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"], capture_output=True)
    return trial.returncode == 0


@pytest.mark.skipif(not can_mount_private_file_systems(), reason="needs root and mount namespaces (unshare)")
def test_a_really_full_file_system_faults_with_no_space_left_and_spares_earlier_files(tmp_path):
    result = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", sys.executable, "-c", FULL_FILE_SYSTEM, str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    state, status, written, received, lost, earlier_intact, failed_file = json.loads(
        result.stdout.strip().splitlines()[-1]
    )
    assert state == "FAULT", status
    assert status.startswith(f"cannot write {tmp_path / 'full.h5'}: No space left on device"), status
    assert written < 100  # 1 MB holds a few of the 131 kB frames, not all
    assert received == written + lost  # every frame that reached the Recorder is written or counted lost
    end_reason, frames_in_file, frames_equal_those_sent, frames_readable = failed_file
    assert end_reason == "failed" and frames_in_file == written == frames_readable and frames_equal_those_sent
    assert earlier_intact


# As an unprivileged user (root drops to nobody first: root may write anywhere), arm into a
# directory that user may not write.
UNPRIVILEGED_ARM = textwrap.dedent(
    """
    import json, os, sys
    from photonflow.errors import PhotonflowError
    from photonflow.recording.recorder import Recorder, RecordingRequest
    if os.geteuid() == 0:  # after the imports: root's Python may live where nobody can read
        os.setgid(65534)
        os.setuid(65534)
    recorder = Recorder(sys.argv[1])
    try:
        recorder.arm(RecordingRequest(10, 1, "tcp://127.0.0.1:1", "locked/scan.h5"))
        print(json.dumps(["armed", recorder.state]))
    except PhotonflowError as error:
        print(json.dumps([error.reason, str(error), recorder.state]))
    """
)


def test_a_directory_the_recorder_may_not_write_is_refused_at_arm_naming_it():
    root = Path(tempfile.mkdtemp(prefix="photonflow-permissions-"))  # under /tmp: reachable by nobody
    try:
        locked = root / "locked"
        locked.mkdir()
        root.chmod(0o755)
        locked.chmod(0o555)  # and owned by us: nobody (or we, unprivileged) may not write in it
        result = subprocess.run(
            [sys.executable, "-c", UNPRIVILEGED_ARM, str(root)], capture_output=True, text=True, timeout=60,
        )
        assert result.returncode == 0, result.stderr
        reason, description, state = json.loads(result.stdout.strip().splitlines()[-1])
        assert description == f"cannot write into the directory {locked}: Permission denied"
        assert state == "ON"  # refused before arming: nothing started
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o755)
        shutil.rmtree(root)
