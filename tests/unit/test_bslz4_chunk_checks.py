"""A bslz4 chunk that the bitshuffle filter could not read back is refused before it is written:
a reader of the file must never crash on a frame the Recorder accepted."""

import h5py
import hdf5plugin  # noqa: F401  (registers the bitshuffle filter for reading back)
import numpy as np
import pytest

from photonflow import states
from photonflow.errors import StreamMessageError
from photonflow.recording.recorder import Recorder, RecordingRequest
from photonflow.stream import bslz4, maxiv
from photonflow.stream.stins import StinsEncoder

SHAPE = (67, 45)  # 3015 elements: with 512-element blocks, 5 full blocks, a partial one and 7 copied as they are
FRAME = (np.arange(SHAPE[0] * SHAPE[1], dtype=np.uint32).reshape(SHAPE) * 2654435761 % 1000).astype(np.uint16)
GOOD = bslz4.compress(FRAME, block_size=512)


def damaged_chunks():
    body = bytearray(GOOD)
    body[bslz4.HEADER_BYTES] ^= 0x01  # the first block's length prefix, off by one
    return {
        "cut short by one byte": GOOD[:-1],
        "cut inside a block header": GOOD[: bslz4.HEADER_BYTES + 2],
        "one byte too many": GOOD + b"\0",
        "a garbled length prefix": bytes(body),
    }


def test_a_good_chunk_passes_and_reads_back_equal():
    bslz4.check_chunk(GOOD, SHAPE, "uint16")
    np.testing.assert_array_equal(bslz4.decompress(GOOD, SHAPE, "uint16"), FRAME)


@pytest.mark.parametrize("name", sorted(damaged_chunks()))
def test_a_damaged_chunk_is_refused_with_what_is_wrong(name):
    chunk = damaged_chunks()[name]
    with pytest.raises(StreamMessageError) as caught:
        bslz4.check_chunk(chunk, SHAPE, "uint16")
    assert "bslz4 payload" in str(caught.value)
    with pytest.raises(StreamMessageError):  # the full decoder agrees the chunk is unreadable
        bslz4.decompress(chunk, SHAPE, "uint16")




def stins_series(encoder, chunks):
    yield encoder.series_start(1, len(chunks), SHAPE, "uint16", {"model": "test"}, encoding="bslz4")
    for n, chunk in enumerate(chunks):
        yield encoder.data(1, n, chunk, 1.0, encoding="bslz4", shape=SHAPE, dtype="uint16")
    yield encoder.series_end(1, len(chunks), len(chunks))


def maxiv_series(chunks):
    yield maxiv.encode_start(0)
    for n, chunk in enumerate(chunks):
        yield maxiv.encode_image(n + 1, n, chunk, "bslz4", shape=SHAPE, dtype="uint16")
    yield maxiv.encode_end(len(chunks) + 1)


@pytest.mark.parametrize("protocol", ["stins", "maxiv"])
def test_the_recorder_rejects_damaged_chunks_and_every_written_frame_reads_back(tmp_path, stream, protocol):
    chunks = [GOOD, damaged_chunks()["cut short by one byte"], GOOD, damaged_chunks()["a garbled length prefix"]]
    recorder = Recorder(tmp_path)
    path = recorder.arm(RecordingRequest(4, 1, stream.endpoint, f"{protocol}.h5", protocol=protocol))
    messages = stins_series(StinsEncoder(), chunks) if protocol == "stins" else maxiv_series(chunks)
    for parts in messages:
        stream.send(parts)
    assert recorder.wait(10)
    assert recorder.counters.messages_rejected == 2
    assert recorder.state == states.ALARM and "2 frame(s) missing: 1, 3" in recorder.status
    with h5py.File(path, "r") as f:
        data = f["entry/data/data"]
        for n in (0, 2):
            np.testing.assert_array_equal(data[n], FRAME)
