"""Frame sinks: the live preview (rate, binning) and the STINS fan-out over real ZeroMQ."""

import importlib.util
import sys
import time
import types
from dataclasses import replace

import numpy as np
import pytest
import zmq

from photonflow.errors import ConfigurationError
from photonflow.recording.sinks import (
    FrameSink,
    LivePreview,
    StinsRelayEncoder,
    StreamFanOut,
    block_sum,
    decimation_factor,
)
from photonflow.stream.stins import DataMessage, SeriesEnd, SeriesStart, StinsEncoder, decode
from tests.helpers.waiting import returns_within, wait_until

DETECTOR = {"name": "sim", "model": "Test"}


def as_bytes(parts):
    return [p.tobytes() if isinstance(p, np.ndarray) else bytes(p) for p in parts]


def series_start(shape, dtype="uint16", series_id=4, frame_count=100):
    encoder = StinsEncoder()
    return decode(as_bytes(encoder.series_start(series_id, frame_count, shape, dtype, DETECTOR, "2026-01-01T00:00:00+00:00")))


def data_message(frame, frame_number=0, series_id=4):
    """A frame as the Recorder gets it: decoded from wire bytes, payload a buffer."""
    return decode(as_bytes(StinsEncoder(frame_number + 1).data(series_id, frame_number, frame, 1000.0 + frame_number)))


def series_end(series_id=4, frames=10, reason="completed"):
    return decode(as_bytes(StinsEncoder(99).series_end(series_id, frames, frames, reason, "2026-01-01T00:00:01+00:00")))


def test_both_sinks_follow_the_frame_sink_protocol():
    fan_out = StreamFanOut()
    try:
        assert isinstance(fan_out, FrameSink)
        assert isinstance(LivePreview(), FrameSink)
    finally:
        fan_out.close()


# --- live preview ----------------------------------------------------------------------------


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class Previews:
    def __init__(self):
        self.shown = []

    def __call__(self, image, frame_number):
        self.shown.append((frame_number, image))

    @property
    def frame_numbers(self):
        return [n for n, _ in self.shown]


def test_preview_is_made_at_most_max_rate_hz_times_a_second():
    clock, previews = FakeClock(), Previews()
    preview = LivePreview(max_rate_hz=5.0, clock=clock, on_preview=previews)
    frame = np.ones((8, 8), np.uint16)
    for n in range(100):  # 100 frames within 0.1 s
        clock.now = n * 0.001
        preview.frame_written(data_message(frame, n))
    assert previews.frame_numbers == [0]
    clock.now = 0.3  # 0.2 s after the last frame: the rate allows another
    preview.frame_written(data_message(frame, 100))
    assert previews.frame_numbers == [0, 100]
    assert preview.latest_frame_number == 100 and preview.previews_made == 2


def test_skipped_frames_are_never_decoded():
    """So a 2000 frames/s stream costs one clock reading per frame."""
    clock, previews = FakeClock(), Previews()
    preview = LivePreview(max_rate_hz=5.0, clock=clock, on_preview=previews)
    preview.frame_written(data_message(np.zeros((4, 4), np.uint16), 0))
    unreadable = DataMessage(0, 4, 1, (4, 4), "uint16", "raw", 0.0, payload=None)  # to_array() would raise
    for _ in range(2000):
        preview.frame_written(unreadable)
    assert previews.frame_numbers == [0] and preview.preview_errors == 0


def test_a_skipped_last_frame_is_shown_at_series_end_when_the_rate_allows():
    clock, previews = FakeClock(), Previews()
    preview = LivePreview(max_rate_hz=5.0, clock=clock, on_preview=previews)
    preview.series_started(series_start((4, 4)))
    for n in range(5):
        clock.now = n * 0.01
        preview.frame_written(data_message(np.full((4, 4), n, np.uint16), n))
    preview.series_ended(None, "stopped")  # at 0.04 s: too soon, stays skipped
    assert previews.frame_numbers == [0]

    preview.series_started(series_start((4, 4)))
    for n in range(5):
        clock.now = 1.0 + n * 0.01
        preview.frame_written(data_message(np.full((4, 4), n, np.uint16), n))
    clock.now = 1.5
    preview.series_ended(series_end(frames=5), "completed")
    assert previews.frame_numbers == [0, 0, 4]
    np.testing.assert_array_equal(preview.latest, np.full((4, 4), 4, np.float32))


def test_block_sums_equal_the_pixel_counts_of_each_block():
    frame = np.arange(36, dtype=np.uint16).reshape(6, 6)
    preview = block_sum(frame, 2)
    expected = frame.reshape(3, 2, 3, 2).sum(axis=(1, 3))
    np.testing.assert_array_equal(preview, expected)
    assert preview.dtype == np.float32


def test_edge_blocks_are_partial_and_no_count_is_lost():
    frame = np.random.default_rng(1).integers(0, 60000, (7, 11)).astype(np.uint16)
    preview = block_sum(frame, 3)
    assert preview.shape == (3, 4)
    for r in range(3):
        for c in range(4):
            assert preview[r, c] == frame[3 * r : 3 * r + 3, 3 * c : 3 * c + 3].sum()
    assert preview.sum(dtype=np.float64) == frame.sum()


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "uint32", "int8", "int16", "int32", "float32", "float64"])
def test_every_stins_pixel_type_bins_into_float32(dtype):
    offset = 0 if np.dtype(dtype).kind == "u" else 40  # negative pixels where the type allows
    frame = (np.arange(30).reshape(5, 6) * 4 - offset).astype(dtype)
    preview = LivePreview(max_pixels=9)  # binning by 2: 3 x 3 blocks, the last row partial
    preview.frame_written(data_message(frame))
    expected = np.add.reduceat(np.add.reduceat(frame.astype(np.float64), [0, 2, 4], axis=0), [0, 2, 4], axis=1)
    assert preview.latest.dtype == np.float32
    np.testing.assert_array_equal(preview.latest, expected)


def test_a_full_eiger_frame_is_binned_within_max_pixels_by_the_smallest_factor():
    shape, max_pixels = (1065, 1030), 512 * 512
    frame = np.random.default_rng(2).integers(0, 65536, shape).astype(np.uint16)
    previews = Previews()
    preview = LivePreview(max_pixels=max_pixels, on_preview=previews)
    preview.frame_written(data_message(frame, 7))
    image = preview.latest
    assert image.shape == (355, 344) and image.size <= max_pixels
    assert decimation_factor(shape, max_pixels) == 3  # binning by 2 would give 533 x 515 > max_pixels
    assert image.sum(dtype=np.float64) == frame.sum(dtype=np.float64)  # uint16 x 9 stays exact in float32
    assert previews.frame_numbers == [7] and previews.shown[0][1] is image


def test_a_small_frame_is_not_upscaled():
    frame = np.arange(100 * 80, dtype=np.uint16).reshape(100, 80)
    preview = LivePreview(max_pixels=512 * 512)
    assert preview.latest is None
    message = data_message(frame)
    preview.frame_written(message)
    np.testing.assert_array_equal(preview.latest, frame)
    assert not np.shares_memory(preview.latest, message.to_array())


def test_the_decimation_factor_is_the_smallest_that_fits():
    for shape in [(1, 1), (3, 1000), (512, 512), (513, 512), (1065, 1030), (4371, 4150), (2, 70000)]:
        for max_pixels in (1, 7, 1000, 512 * 512):
            factor = decimation_factor(shape, max_pixels)
            binned = lambda f, shape=shape: -(-shape[0] // f) * -(-shape[1] // f)  # noqa: E731
            assert binned(factor) <= max_pixels
            assert factor == 1 or binned(factor - 1) > max_pixels


def test_preview_failures_are_counted_never_raised():
    def broken_view(image, frame_number):
        raise RuntimeError("event channel gone")

    clock = FakeClock()
    preview = LivePreview(clock=clock, on_preview=broken_view)
    preview.frame_written(data_message(np.zeros((4, 4), np.uint16)))
    clock.now = 1.0
    preview.frame_written(DataMessage(0, 4, 1, (4, 4), "uint16", "jpeg", 0.0, payload=b""))
    assert preview.preview_errors == 2
    assert "jpeg" in preview.last_error


def test_bad_preview_settings_are_refused():
    with pytest.raises(ConfigurationError):
        LivePreview(max_rate_hz=0)
    with pytest.raises(ConfigurationError):
        LivePreview(max_pixels=0)


def test_a_bslz4_frame_is_handed_to_the_decompressor_with_shape_and_dtype(monkeypatch):
    """The dispatch only, with a stand-in decompressor (the real one is tested below)."""
    calls = []
    frame = np.arange(16, dtype=np.uint16).reshape(4, 4)

    def decompress(payload, shape, dtype):
        calls.append((bytes(payload), shape, dtype))
        return frame

    monkeypatch.setitem(sys.modules, "photonflow.stream.bslz4", types.SimpleNamespace(decompress=decompress))
    preview = LivePreview()
    preview.frame_written(DataMessage(0, 4, 0, (4, 4), "uint16", "bslz4", 0.0, payload=memoryview(b"packed")))
    assert calls == [(b"packed", (4, 4), "uint16")]
    np.testing.assert_array_equal(preview.latest, frame)


def bslz4_chunk(frame):
    """The frame as HDF5's bitshuffle/LZ4 filter stores a chunk (the Dectris 'bslz4' bytes)."""
    import h5py
    import hdf5plugin

    with h5py.File("preview.h5", "w", driver="core", backing_store=False) as file:
        dataset = file.create_dataset("f", data=frame, chunks=frame.shape, **hdf5plugin.Bitshuffle(cname="lz4"))
        filter_mask, chunk = dataset.id.read_direct_chunk((0, 0))
    assert filter_mask == 0
    return chunk


@pytest.mark.skipif(
    importlib.util.find_spec("photonflow.stream.bslz4") is None,
    reason="photonflow.stream.bslz4 (the bitshuffle/LZ4 decompressor) is not written yet",
)
def test_a_bslz4_frame_is_previewed_like_its_raw_pixels():
    from photonflow.stream import bslz4

    frame = np.random.default_rng(3).integers(0, 4000, (1065, 1030)).astype(np.uint16)
    packed = bslz4.compress(frame) if hasattr(bslz4, "compress") else bslz4_chunk(frame)
    compressed = DataMessage(0, 4, 0, frame.shape, "uint16", "bslz4", 0.0, payload=memoryview(packed))
    preview, reference = LivePreview(), LivePreview()
    preview.frame_written(compressed)
    reference.frame_written(data_message(frame))
    assert preview.preview_errors == 0, preview.last_error
    np.testing.assert_array_equal(preview.latest, reference.latest)


# --- fan-out ---------------------------------------------------------------------------------

SHAPE = (32, 48)


def frames(count):
    rng = np.random.default_rng(4)
    return [rng.integers(0, 65536, SHAPE).astype(np.uint16) for _ in range(count)]


@pytest.fixture
def sockets():
    """Consumer sockets, closed at the end of the test."""
    opened = []

    def open_socket(kind):
        socket = zmq.Context.instance().socket(kind)
        socket.setsockopt(zmq.LINGER, 0)
        opened.append(socket)
        return socket

    yield open_socket
    for socket in opened:
        socket.close()


@pytest.fixture
def fan_outs():
    made = []

    def make(**settings):
        made.append(StreamFanOut(**settings))
        return made[-1]

    yield make
    for fan_out in made:
        fan_out.close()


def receive_all(socket, count, timeout=5.0):
    messages, deadline = [], time.monotonic() + timeout
    while len(messages) < count:
        assert socket.poll(max(1, int((deadline - time.monotonic()) * 1000)), zmq.POLLIN), f"got only {messages}"
        messages.append(decode(socket.recv_multipart(copy=False)))
    return messages


def run_series(fan_out, originals, end=True):
    fan_out.series_started(series_start(SHAPE, frame_count=len(originals)))
    for n, frame in enumerate(originals):
        fan_out.frame_written(data_message(frame, n))
    fan_out.series_ended(series_end(frames=len(originals)) if end else None, "completed" if end else "stopped")


def check_forwarded(messages, originals, every):
    start, *data, end = messages
    assert isinstance(start, SeriesStart) and (start.series_id, start.frame_count) == (4, len(originals))
    assert start.detector == DETECTOR and start.start_time == "2026-01-01T00:00:00+00:00"
    assert [m.frame_number for m in data] == list(range(0, len(originals), every))
    for message in data:
        np.testing.assert_array_equal(message.to_array(), originals[message.frame_number])
        assert message.timestamp == 1000.0 + message.frame_number
    assert isinstance(end, SeriesEnd)
    assert (end.frames_acquired, end.frames_sent, end.end_reason) == (len(originals), len(data), "completed")


def test_push_fan_out_deals_every_nth_frame_to_a_worker(fan_outs, sockets):
    fan_out = fan_outs(mode="push", every=3)
    worker = sockets(zmq.PULL)
    worker.connect(fan_out.endpoint)
    wait_until(fan_out.outlet_ready)
    originals = frames(10)
    run_series(fan_out, originals)

    messages = receive_all(worker, 6)
    check_forwarded(messages, originals, every=3)
    assert [m.message_id for m in messages] == list(range(6))  # its own sequence, as a sender
    assert (fan_out.frames_forwarded, fan_out.frames_dropped) == (4, 0)
    assert fan_out.endpoint.startswith("tcp://127.0.0.1:") and not fan_out.endpoint.endswith(":*")


def test_pub_fan_out_serves_every_nth_frame_to_a_viewer(fan_outs, sockets):
    fan_out = fan_outs(mode="pub", every=2)
    viewer = sockets(zmq.SUB)
    viewer.setsockopt(zmq.SUBSCRIBE, b"")
    viewer.connect(fan_out.endpoint)
    start = series_start(SHAPE)
    deadline = time.monotonic() + 5.0
    while not viewer.poll(10, zmq.POLLIN):  # a subscriber misses what is sent before it has joined
        assert time.monotonic() < deadline, "the viewer never joined"
        fan_out.series_started(start)
    originals = frames(9)
    run_series(fan_out, originals)

    messages = receive_all(viewer, 1)
    while not isinstance(messages[-1], SeriesEnd):
        messages += receive_all(viewer, 1)
    while isinstance(messages[1], SeriesStart):  # the joining announcements still in flight
        messages.pop(0)
    check_forwarded(messages, originals, every=2)
    assert (fan_out.frames_forwarded, fan_out.frames_dropped) == (5, 0)


def test_push_without_a_worker_drops_and_counts_without_waiting(fan_outs):
    fan_out = fan_outs(mode="push")
    frame = np.zeros((1024, 1024), np.uint16)
    first = data_message(frame)
    messages = [replace(first, frame_number=n) for n in range(200)]  # one shared 2 MB payload

    def series():
        fan_out.series_started(series_start(frame.shape))
        for message in messages:
            fan_out.frame_written(message)
        fan_out.series_ended(None, "stopped")

    assert returns_within(series, 30), "a send waited for a worker that never comes"
    assert (fan_out.frames_forwarded, fan_out.frames_dropped) == (0, 200)
    assert fan_out.series_messages_dropped == 2


def test_push_to_a_stalled_worker_drops_once_its_queue_is_full(fan_outs, sockets):
    fan_out = fan_outs(mode="push", high_water_mark=2)
    worker = sockets(zmq.PULL)  # connected, never reads
    worker.setsockopt(zmq.RCVHWM, 2)
    worker.connect(fan_out.endpoint)
    wait_until(fan_out.outlet_ready)
    first = data_message(np.zeros((512, 512), np.uint16))
    messages = [replace(first, frame_number=n) for n in range(300)]  # one shared 512 kB payload

    def frames():
        for message in messages:
            fan_out.frame_written(message)

    assert returns_within(frames, 30), "a send waited for a worker that never reads"
    assert fan_out.frames_forwarded >= 1 and fan_out.frames_dropped >= 1
    assert fan_out.frames_forwarded + fan_out.frames_dropped == 300


def test_a_stop_without_series_end_still_closes_the_series_for_consumers(fan_outs, sockets):
    fan_out = fan_outs(mode="push")
    worker = sockets(zmq.PULL)
    worker.connect(fan_out.endpoint)
    wait_until(fan_out.outlet_ready)
    run_series(fan_out, frames(3), end=False)
    end = receive_all(worker, 5)[-1]
    assert isinstance(end, SeriesEnd)
    assert (end.series_id, end.frames_acquired, end.frames_sent, end.end_reason) == (4, 3, 3, "stopped")


def test_the_relay_encoder_passes_the_received_payload_on_as_is():
    message = data_message(np.arange(6, dtype=np.uint16).reshape(2, 3), 5)
    encoder = StinsRelayEncoder(first_message_id=40)
    header, payload = encoder.data_of(message)
    assert payload is message.payload
    relayed = decode([header, payload])
    assert (relayed.message_id, relayed.frame_number, relayed.timestamp) == (40, 5, 1005.0)


def test_closing_twice_and_calls_after_close_are_harmless(fan_outs):
    fan_out = fan_outs(mode="pub")
    fan_out.close()
    fan_out.close()
    run_series(fan_out, frames(2))
    assert fan_out.frames_forwarded == 0 and not fan_out.outlet_ready()


def test_bad_fan_out_settings_are_refused():
    with pytest.raises(ConfigurationError):
        StreamFanOut(mode="router")
    with pytest.raises(ConfigurationError):
        StreamFanOut(every=0)
    with pytest.raises(ConfigurationError, match="cannot bind"):
        StreamFanOut(bind_address="tcp://not-an-address")
