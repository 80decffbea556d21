"""Series for the Recorder tests: frames of a known pattern sent over a real ZeroMQ stream, a
series run from an Acquirer into a Recorder as the Controller would, and a Recorder in a process
of its own that a test can kill."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

from photonflow.acquisition.acquirer import Acquirer
from photonflow.recording.config import RecorderConfig
from photonflow.recording.recorder import Recorder, RecordingRequest
from photonflow.stream.stins import StinsEncoder
from photonflow.stream.transport import StreamSender
from tests.helpers.paths import REPOSITORY

SHAPE = (24, 40)
DETECTOR = {"name": "sim", "model": "Test", "x_pixel_size": 75e-6, "y_pixel_size": 75e-6, "count_time": 0.001, "trigger_mode": "internal"}


def frame(n):
    return (np.arange(SHAPE[0] * SHAPE[1], dtype=np.uint16).reshape(SHAPE) + n * 7).astype(np.uint16)


def arm(recorder, stream, frames, name="scan.h5", series_id=1):
    return recorder.arm(RecordingRequest(frames, series_id, stream.endpoint, name))


def send_series(stream, frame_numbers, series_id=1, frame_count=None, end=True, encoder=None):
    encoder = encoder or StinsEncoder()
    frame_count = len(frame_numbers) if frame_count is None else frame_count
    stream.send(encoder.series_start(series_id, frame_count, SHAPE, "uint16", DETECTOR))
    for n in frame_numbers:
        stream.send(encoder.data(series_id, n, frame(n), 1000.0 + n))
    if end:
        stream.send(encoder.series_end(series_id, len(frame_numbers), len(frame_numbers)))
    return encoder


def record_split(tmp_path, count, frame_numbers, frames_per_file=4, end=True, stop=False):
    """A series of ``count`` frames split over data files of ``frames_per_file``; the frames sent
    are ``frame_numbers`` (Stop once they are written, when ``stop``)."""
    sender = StreamSender("tcp://127.0.0.1:*")
    recorder = Recorder(RecorderConfig(tmp_path, frames_per_file=frames_per_file))
    try:
        path = recorder.arm(RecordingRequest(count, 1, sender.endpoint, "split.h5"))
        encoder = StinsEncoder()
        sender.send(encoder.series_start(1, count, SHAPE, "uint16", DETECTOR))
        for n in frame_numbers:
            sender.send(encoder.data(1, n, frame(n), 0.0))
        if end:
            sender.send(encoder.series_end(1, count, count))
        if stop:
            while recorder.counters.frames_written < len(frame_numbers):
                recorder.wait(0.01)
            recorder.stop()
        assert recorder.wait(10)
    finally:
        sender.close()
    return recorder, path


def acquire_into(acquirer: Acquirer, recorder: Recorder, request: RecordingRequest,
                 stop_after: int | None = None) -> Path:
    """Arm the Recorder, prepare and start the Acquirer (Stop after ``stop_after`` frames), wait for both."""
    path = recorder.arm(request)
    acquirer.prepare()
    acquirer.start()
    if stop_after is not None:
        while acquirer.frames_acquired < stop_after:
            acquirer.wait(0.01)
        acquirer.stop()
    assert acquirer.wait(30) and recorder.wait(30)
    return path


class Flushes:
    """A sink of the Recorder counting its flushes: after one, what it wrote before is in the file
    for a reader (and for the repair after a crash)."""

    def __init__(self):
        self.count = 0

    def series_started(self, start) -> None:
        pass

    def frame_written(self, message) -> None:
        pass

    def series_ended(self, end, end_reason) -> None:
        pass

    def close(self) -> None:
        pass

    def frames_flushed(self) -> None:
        self.count += 1


# A Recorder in a process of its own: arguments data root, endpoint, frames to write, frames per
# file; it says "written N" once N frames are written and flushed, then waits to be killed.
RECORDER_PROCESS = textwrap.dedent(
    f"""
    import sys, time
    sys.path.insert(0, {str(REPOSITORY)!r})
    from photonflow.recording.config import RecorderConfig
    from photonflow.recording.recorder import Recorder, RecordingRequest
    from tests.helpers.recording import Flushes
    flushes = Flushes()
    recorder = Recorder(RecorderConfig(sys.argv[1], counter_interval=0.0, frames_per_file=int(sys.argv[4])),
                        sinks=[flushes])
    recorder.arm(RecordingRequest(1000, 1, sys.argv[2], "crash.h5"))
    while recorder.counters.frames_written < int(sys.argv[3]):
        time.sleep(0.01)
    flushed = flushes.count
    while flushes.count == flushed:  # one flush of the bookkeeping since
        time.sleep(0.01)
    print("written", recorder.counters.frames_written, flush=True)
    time.sleep(60)
    """
)
