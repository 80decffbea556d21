"""bslz4: chunks that HDF5's bitshuffle filter reads back, and HDF5's chunks read here; STINS carries them."""

import json
import struct

import h5py
import hdf5plugin
import lz4.block
import numpy as np
import pytest

from photonflow.errors import StreamMessageError
from photonflow.stream import bslz4
from photonflow.stream.stins import StinsEncoder, decode

SHAPES = [(1065, 1030), (7, 5), (1, 1), (3, 8), (64, 64)]
PIXEL_TYPES = ["uint8", "uint16", "uint32", "int32", "float32", "float64"]


def diffraction_like(shape, dtype, seed=0):
    """Mostly small photon counts with a few bright pixels, as detector frames are."""
    rng = np.random.default_rng(seed)
    frame = rng.poisson(1.5, size=shape)
    frame.flat[rng.integers(0, frame.size, size=max(1, frame.size // 500))] = 40000
    return frame.astype(dtype)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", PIXEL_TYPES)
def test_round_trip_gives_the_frame_back(shape, dtype):
    frame = diffraction_like(shape, dtype)
    np.testing.assert_array_equal(bslz4.decompress(bslz4.compress(frame), shape, dtype), frame)


@pytest.mark.parametrize("block_size", [8, 128, 1000 * 8])
def test_any_block_size_round_trips(block_size):
    frame = diffraction_like((37, 41), "uint16")
    chunk = bslz4.compress(frame, block_size)
    assert struct.unpack(">QI", chunk[:12]) == (frame.nbytes, block_size * 2)
    np.testing.assert_array_equal(bslz4.decompress(chunk, frame.shape, "uint16"), frame)


def test_header_holds_the_size_and_bitshuffles_default_block():
    for dtype, block_elements in (("uint8", 8192), ("uint16", 4096), ("uint32", 2048), ("float64", 1024)):
        frame = np.zeros((10, 10), dtype)
        assert struct.unpack(">QI", bslz4.compress(frame)[:12]) == (frame.nbytes, block_elements * frame.itemsize)


def test_the_elements_beyond_a_multiple_of_eight_are_copied_as_they_are():
    frame = np.arange(35, dtype="<u2").reshape(7, 5)  # 32 shuffled + 3 copied
    assert bslz4.compress(frame)[-6:] == frame.reshape(-1)[-3:].tobytes()


def test_the_callers_frame_is_left_untouched():
    frame = diffraction_like((64, 64), "uint8")
    kept = frame.copy()
    bslz4.compress(frame)
    np.testing.assert_array_equal(frame, kept)


def test_big_endian_frames_are_compressed_as_little_endian():
    frame = np.arange(24, dtype=">u4").reshape(4, 6)
    np.testing.assert_array_equal(bslz4.decompress(bslz4.compress(frame), (4, 6), "uint32"), frame)


@pytest.mark.parametrize("shape", [(1065, 1030), (7, 5)])
@pytest.mark.parametrize("dtype", ["uint16", "uint32"])
def test_hdf5_reads_our_chunks_and_we_read_hdf5s(tmp_path, shape, dtype):
    frame = diffraction_like(shape, dtype, seed=1)
    with h5py.File(tmp_path / "frames.h5", "w") as f:
        data = f.create_dataset(
            "data", shape=(2, *shape), chunks=(1, *shape), dtype=dtype, compression=hdf5plugin.Bitshuffle(cname="lz4")
        )
        data.id.write_direct_chunk((0, 0, 0), bslz4.compress(frame))  # ours, as the Recorder writes it
        data[1] = frame  # compressed by the HDF5 filter
        _, hdf5_chunk = data.id.read_direct_chunk((1, 0, 0))
    with h5py.File(tmp_path / "frames.h5", "r") as f:
        np.testing.assert_array_equal(f["data"][0], frame)
    np.testing.assert_array_equal(bslz4.decompress(hdf5_chunk, shape, dtype), frame)


def test_the_filter_id_and_options_create_the_same_dataset(tmp_path):
    frame = diffraction_like((7, 5), "uint16")
    with h5py.File(tmp_path / "frames.h5", "w") as f:
        data = f.create_dataset(
            "data", shape=(1, 7, 5), chunks=(1, 7, 5), dtype="uint16",
            compression=bslz4.HDF5_FILTER_ID, compression_opts=bslz4.HDF5_FILTER_OPTIONS,
        )
        data.id.write_direct_chunk((0, 0, 0), bslz4.compress(frame))
        np.testing.assert_array_equal(data[0], frame)


def damaged(chunk: bytes, at: int, value: bytes) -> bytes:
    return chunk[:at] + value + chunk[at + len(value) :]


FRAME = diffraction_like((64, 64), "uint16")
CHUNK = bslz4.compress(FRAME, 1024)  # 4 blocks of 1024 elements
SHORT_BLOCK = lz4.block.compress(bytes(100), store_size=False)  # valid LZ4, too few bytes


@pytest.mark.parametrize(
    "payload, shape, complaint",
    [
        (CHUNK[:10], (64, 64), "less than its 12-byte header"),
        (CHUNK, (64, 65), "declares 8192 uncompressed bytes; shape [64, 65] of uint16 needs 8320"),
        (damaged(CHUNK, 8, struct.pack(">I", 1000)), (64, 64), "block size 1000 bytes is not a multiple of 8 uint16"),
        (CHUNK[:14], (64, 64), "truncated"),
        (CHUNK[:200], (64, 64), "truncated"),
        (damaged(CHUNK, 12, struct.pack(">I", 5)), (64, 64), "not valid LZ4"),
        (CHUNK[:12] + struct.pack(">I", len(SHORT_BLOCK)) + SHORT_BLOCK, (64, 64), "holds 100 bytes, expected 2048"),
        (damaged(CHUNK, 16, b"\xff\xff\xff\xff"), (64, 64), "not valid LZ4"),
        (CHUNK + b"\x00", (64, 64), "1 bytes after its blocks"),
        (FRAME.tobytes(), (64, 64), "is the 12-byte HDF5 header missing?"),
    ],
)
def test_damaged_chunks_are_refused_with_the_reason(payload, shape, complaint):
    with pytest.raises(StreamMessageError) as caught:
        bslz4.decompress(payload, shape, "uint16")
    assert complaint in str(caught.value)


def test_compressing_is_refused_for_a_block_size_not_a_multiple_of_eight():
    with pytest.raises(ValueError, match="multiple of 8"):
        bslz4.compress(FRAME, 12)


# STINS carries bslz4 frames as they are.


def parts_as_bytes(parts):
    return [p.tobytes() if isinstance(p, np.ndarray) else bytes(p) for p in parts]


def test_stins_carries_a_bslz4_frame_compressed_and_gives_it_back():
    encoder = StinsEncoder()
    start = decode(parts_as_bytes(encoder.series_start(2, 1, FRAME.shape, "uint16", {}, encoding="bslz4")))
    data = decode(parts_as_bytes(encoder.data(2, 0, FRAME, 5.0, encoding="bslz4")))
    assert (start.encoding, data.encoding) == ("bslz4", "bslz4")
    assert bytes(data.payload) == bslz4.compress(FRAME)
    np.testing.assert_array_equal(data.to_array(), FRAME)


def test_stins_sends_a_precompressed_chunk_as_it_is():
    header, payload = StinsEncoder().data(2, 0, CHUNK, 5.0, encoding="bslz4", shape=(64, 64), dtype="uint16")
    assert payload is CHUNK
    np.testing.assert_array_equal(decode([header, payload]).to_array(), FRAME)


def stins_data_header(**changes):
    header = {
        "version": 1, "message_type": "data", "message_id": 3, "series_id": 1, "frame_number": 0,
        "shape": [64, 64], "dtype": "uint16", "encoding": "bslz4", "timestamp": 1.0,
    }
    return json.dumps({**header, **changes}).encode()


@pytest.mark.parametrize(
    "parts, complaint",
    [
        ([stins_data_header(shape=[64, 32]), CHUNK], "declares 8192 uncompressed bytes; shape [64, 32]"),
        ([stins_data_header(), CHUNK[:8]], "less than its 12-byte header"),
        ([stins_data_header(encoding="lz4"), CHUNK], "'encoding' must be one of raw, bslz4"),
    ],
)
def test_stins_refuses_a_bslz4_frame_whose_header_does_not_fit(parts, complaint):
    with pytest.raises(StreamMessageError) as caught:
        decode(parts)
    assert complaint in str(caught.value)


def test_stins_does_not_check_a_bslz4_payload_size_against_the_shape():
    message = decode([stins_data_header(), CHUNK])  # far fewer bytes than 64 x 64 x 2
    assert message.payload.nbytes == len(CHUNK) < 64 * 64 * 2
