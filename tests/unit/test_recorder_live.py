"""The Recorder while a series runs: SWMR readers, several inputs, bookkeeping, abort, back-pressure."""

import multiprocessing
import threading
import time

import h5py
import numpy as np
import pytest

from photonflow import states
from photonflow.recording.config import RecorderConfig
from photonflow.recording.recorder import Recorder, RecordingRequest
from photonflow.stream.stins import StinsEncoder
from photonflow.stream.transport import StreamSender
from tests.helpers.fakes import EventLog
from tests.helpers.recording import DETECTOR, SHAPE, Flushes, arm, frame, send_series
from tests.helpers.waiting import wait_until


@pytest.fixture
def senders():
    opened = []

    def open_sender():
        sender = StreamSender("tcp://127.0.0.1:*")
        opened.append(sender)
        return sender

    yield open_sender
    for sender in opened:
        sender.close()


def watch_growth(path, until_frames, result):
    """In another process: open the file SWMR and record the frame counts seen while it grows."""
    seen = []
    deadline = time.monotonic() + 30
    with h5py.File(path, "r", swmr=True) as f:
        result.put(("opened",))
        written = f["entry/accounting/frames_written"]
        data = f["entry/data/data"]
        while time.monotonic() < deadline:
            written.refresh()
            count = int(written[()])
            data.refresh()
            if count > 0 and (not seen or count != seen[-1]):
                seen.append(count)
                # a frame the reader is told is written holds the frame that was sent
                got = data[count - 1]
                result.put(("frame", count - 1, bool(np.array_equal(got, frame(count - 1))), int(got.sum()), int(frame(count - 1).sum()), data.shape[0]))
            if count >= until_frames:
                break
            time.sleep(0.02)
    result.put(("seen", seen))


def test_a_reader_in_another_process_sees_frames_grow_while_the_series_runs(tmp_path, senders):
    sender = senders()
    flushes = Flushes()
    recorder = Recorder(RecorderConfig(tmp_path, counter_interval=0.0), sinks=[flushes])
    path = recorder.arm(RecordingRequest(60, 1, sender.endpoint, "live.h5"))
    encoder = StinsEncoder()
    sender.send(encoder.series_start(1, 60, SHAPE, "uint16", DETECTOR))
    sender.send(encoder.data(1, 0, frame(0), 0.0))
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    while recorder.counters.frames_written < 1:
        recorder.wait(0.01)
    flushed = flushes.count
    wait_until(lambda: flushes.count > flushed, 30, what="the first frame flushed to the file for the reader")
    reader = context.Process(target=watch_growth, args=(str(path), 60, results))
    reader.start()
    assert results.get(timeout=60) == ("opened",)  # the reader watches before the series goes on
    for n in range(1, 60):
        sender.send(encoder.data(1, n, frame(n), 0.0))
        time.sleep(0.02)  # a slow detector: the series lasts over a second
    sender.send(encoder.series_end(1, 60, 60))
    assert recorder.wait(10)
    reader.join(30)
    messages = []
    while not results.empty():
        messages.append(results.get())
    seen = next(m[1] for m in messages if m[0] == "seen")
    assert len(seen) >= 3, f"the reader saw too few steps: {seen}"
    assert seen == sorted(seen) and seen[-1] == 60
    bad = [m for m in messages if m[0] == "frame" and not m[2]]
    assert not bad, bad


def test_two_inputs_are_merged_into_one_file_in_frame_order(tmp_path, senders):
    even, odd = senders(), senders()
    recorder = Recorder(tmp_path)
    path = recorder.arm(RecordingRequest(10, 4, (even.endpoint, odd.endpoint), "merged.h5"))

    def feed(sender, numbers):
        encoder = StinsEncoder()
        sender.send(encoder.series_start(4, 10, SHAPE, "uint16", DETECTOR))
        for n in numbers:
            sender.send(encoder.data(4, n, frame(n), float(n)))
        sender.send(encoder.series_end(4, len(numbers), len(numbers)))

    workers = [threading.Thread(target=feed, args=(even, range(0, 10, 2))),
               threading.Thread(target=feed, args=(odd, range(1, 10, 2)))]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(10)
    assert recorder.wait(10)
    assert recorder.state == states.ON and recorder.counters.frames_written == 10
    with h5py.File(path, "r") as f:
        for n in range(10):
            np.testing.assert_array_equal(f["entry/data/data"][n], frame(n))
        assert f["entry/accounting/frames_sent"][()] == 10
        np.testing.assert_array_equal(f["entry/accounting/timestamp"][()], np.arange(10.0))


def test_per_frame_bookkeeping_records_arrival_and_marks_the_missing(tmp_path, senders):
    sender = senders()
    times = iter(float(t) for t in range(100, 200))
    recorder = Recorder(tmp_path, wall_clock=lambda: next(times))
    path = recorder.arm(RecordingRequest(4, 1, sender.endpoint, "book.h5"))
    encoder = StinsEncoder()
    sender.send(encoder.series_start(1, 4, SHAPE, "uint16", DETECTOR))
    for n in (0, 1, 3):
        sender.send(encoder.data(1, n, frame(n), 50.0 + n))
    sender.send(encoder.series_end(1, 4, 4))
    recorder.wait(10)
    with h5py.File(path, "r") as f:
        accounting = f["entry/accounting"]
        np.testing.assert_array_equal(accounting["timestamp"][()], [50.0, 51.0, np.nan, 53.0])
        receive = accounting["receive_time"][()]
        assert np.isnan(receive[2]) and list(receive[[0, 1, 3]]) == sorted(receive[[0, 1, 3]])
        assert list(accounting["missing_frame_numbers"][()]) == [2]


def test_a_small_queue_slows_the_sender_but_loses_nothing(tmp_path, senders):
    sender = senders()
    recorder = Recorder(RecorderConfig(tmp_path, queue_frames=2, counter_interval=0.0))
    path = recorder.arm(RecordingRequest(200, 1, sender.endpoint, "tight.h5"))
    depths = []
    recorder.listener.counters_changed = lambda counters: depths.append(counters.queue_depth)
    send_all(sender, 200)
    assert recorder.wait(20)
    assert recorder.counters.frames_written == 200 and recorder.counters.frames_lost == 0
    assert max(depths) <= 2
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["entry/data/data"][199], frame(199))


def send_all(sender, count, series_id=1, end=True):
    encoder = StinsEncoder()
    sender.send(encoder.series_start(series_id, count, SHAPE, "uint16", DETECTOR))
    for n in range(count):
        sender.send(encoder.data(series_id, n, frame(n), 0.0))
    if end:
        sender.send(encoder.series_end(series_id, count, count))


def test_abort_mid_series_leaves_a_file_that_opens_and_says_aborted(tmp_path, senders):
    sender = senders()
    events = EventLog()
    recorder = Recorder(tmp_path, listener=events)
    path = recorder.arm(RecordingRequest(1000, 1, sender.endpoint, "aborted.h5"))
    encoder = StinsEncoder()
    sender.send(encoder.series_start(1, 1000, SHAPE, "uint16", DETECTOR))
    for n in range(20):
        sender.send(encoder.data(1, n, frame(n), 0.0))
    while recorder.counters.frames_received < 5:
        recorder.wait(0.01)
    recorder.abort()
    assert recorder.wait(5)
    written = recorder.counters.frames_written
    assert written + recorder.counters.frames_lost <= 20
    with h5py.File(path, "r") as f:  # a plain open: the file was closed properly
        assert f["entry/accounting/end_reason"][()] == b"aborted"
        data = f["entry/data/data"]
        assert data.shape[0] >= written
        for n in range(written):
            np.testing.assert_array_equal(data[n], frame(n))


def test_series_armed_back_to_back_lose_nothing(tmp_path, senders):
    """Re-arming the moment a series ends must not leave the old receiver taking frames."""
    sender = senders()
    recorder = Recorder(tmp_path)
    for series_id in range(1, 6):
        path = recorder.arm(RecordingRequest(50, series_id, sender.endpoint, f"s{series_id}.h5"))
        send_all(sender, 50, series_id)
        while recorder.state == states.RUNNING:
            recorder.wait(0.001)
        assert recorder.state == states.ON, recorder.status
        assert recorder.counters.frames_written == 50
        with h5py.File(path, "r") as f:
            np.testing.assert_array_equal(f["entry/data/data"][49], frame(49))
    recorder.wait(5)
    alive = [t.name for t in threading.enumerate() if t.name == "recorder-receive"]
    assert len(alive) <= 1


class SlowWriter:
    """A sink that holds the writer thread a while per frame, so the queue fills up."""

    def series_started(self, start):
        pass

    def frame_written(self, message):
        threading.Event().wait(0.005)

    def series_ended(self, end, end_reason):
        pass


def test_the_queue_holds_no_more_bytes_than_its_budget_however_many_frames_it_may_hold(tmp_path, senders):
    sender = senders()
    shape = (500, 500)  # 0.5 MB a frame: two do not fit in a 1 MB budget
    recorder = Recorder(RecorderConfig(tmp_path, queue_frames=256, queue_megabytes=1, counter_interval=0.0), sinks=[SlowWriter()])
    path = recorder.arm(RecordingRequest(60, 1, sender.endpoint, "budget.h5"))
    depths, sizes = [], []

    def note(counters):
        depths.append(counters.queue_depth)
        sizes.append(counters.queue_megabytes)

    recorder.listener.counters_changed = note
    encoder = StinsEncoder()
    frames = [np.full(shape, n, dtype=np.uint16) for n in range(60)]
    sender.send(encoder.series_start(1, 60, shape, "uint16", DETECTOR))
    for n, image in enumerate(frames):
        sender.send(encoder.data(1, n, image, 0.0))
    sender.send(encoder.series_end(1, 60, 60))
    assert recorder.wait(30)
    assert recorder.counters.frames_written == 60 and recorder.counters.frames_lost == 0
    assert 0.5 <= max(sizes) <= 1.0  # a frame waited, never two (0.5 MB each)
    assert max(depths) <= 2  # that frame and at most a series_start or series_end
    with h5py.File(path, "r") as f:
        for n in (0, 31, 59):
            np.testing.assert_array_equal(f["entry/data/data"][n], frames[n])


def read_frames(path, count, result):
    """In another process, as Sardana's value mode reads: the first ``count`` frames, SWMR."""
    with h5py.File(path, "r", swmr=True) as f:
        result.put(f["entry/data/data"][:count])


def test_the_frames_counted_flushed_are_the_ones_another_process_reads_as_sent(tmp_path, senders):
    """FramesFlushed is what a file reader may rely on: a frame written but not yet flushed reads
    as zeros (the fill value) from another process; one counted flushed reads as sent."""
    sender = senders()
    recorder = Recorder(RecorderConfig(tmp_path, counter_interval=0.0))
    path = arm(recorder, sender, 10, "flushed.h5")
    encoder = send_series(sender, range(5), frame_count=10, end=False)
    wait_until(lambda: recorder.counters.frames_flushed >= 5, 30, what="5 frames flushed")
    assert recorder.counters.frames_flushed == recorder.counters.frames_written == 5
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    reader = context.Process(target=read_frames, args=(str(path), 5, results))
    reader.start()
    seen = results.get(timeout=60)
    reader.join(30)
    for n in range(5):
        np.testing.assert_array_equal(seen[n], frame(n))
    for n in range(5, 10):
        sender.send(encoder.data(1, n, frame(n), 0.0))
    sender.send(encoder.series_end(1, 10, 10))
    assert recorder.wait(10)
    assert recorder.counters.frames_flushed == 10  # the file is closed: every frame can be read
