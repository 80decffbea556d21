"""Disk faults for real: a file-size limit (RLIMIT_FSIZE) hit mid-series."""

import subprocess
import sys
import textwrap
import threading

import h5py
import numpy as np

from photonflow.stream.stins import StinsEncoder
from photonflow.stream.transport import SendInterrupted, StreamSender
from tests.unit.test_recorder import DETECTOR, SHAPE, frame

LIMITED_RECORDER = textwrap.dedent(
    """
    import resource, signal, sys, time
    # Past the limit, write() fails with EFBIG instead of the process being killed.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[3]), int(sys.argv[3])))
    from photonflow.recording.recorder import Recorder, RecordingRequest
    recorder = Recorder(sys.argv[1], durable=False)
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
    state, status, written = __import__("json").loads(out.strip().splitlines()[-1])
    assert state == "FAULT", (out, err)
    assert status.startswith(f"cannot write {tmp_path / 'full.h5'}: File too large"), status
    assert 0 < written < 500
    assert earlier.read_bytes() == earlier_bytes
