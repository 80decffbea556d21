"""Bitshuffle + LZ4 ("bslz4"), the frame compression of DECTRIS detectors and of HDF5.

Why photonflow has it: DECTRIS detectors (and MAX IV's receivers after them) send frames
already compressed. The Recorder keeps them compressed and writes each one as the chunk
of an HDF5 dataset that has the bitshuffle filter (filter id 32008, LZ4, as
``hdf5plugin.Bitshuffle(cname="lz4")`` creates it), with ``write_direct_chunk``: no
decompression, no recompression. This module makes such chunks (for simulators and
tests) and opens them (``DataMessage.to_array``, checks), bit for bit compatible with

- the bitshuffle HDF5 filter, ``src/bshuf_h5filter.c`` and ``src/bitshuffle_core.c`` of
  https://github.com/kiyo-masui/bitshuffle (the reference implementation), and
- DECTRIS' "bslz4" (CBOR tag 56500, https://github.com/dectris/documentation,
  ``cbor/dectris-compression-tag.md``: "the format is the same as the bitshuffle HDF5
  filter"; decoder in https://github.com/dectris/compression ``src/compression.c``).

The chunk format::

    uint64 big-endian   uncompressed size in bytes
    uint32 big-endian   block size in bytes (block elements x element size)
    then, for every full block, and for the last partial block rounded down to a
    multiple of 8 elements:
        uint32 big-endian   size of the LZ4 block that follows
        LZ4 block           (raw LZ4 block format, no frame) of the bit-shuffled block
    then the last (elements mod 8) elements, copied as they are.

Bit shuffling a block of ``n`` elements (``n`` a multiple of 8) of ``s`` bytes writes
``8 s`` bit planes of ``n / 8`` bytes: plane ``8 j + b`` holds bit ``b`` of byte ``j`` of
every element, element ``i`` at bit ``i mod 8`` of byte ``i // 8``. Here it is an 8x8
bit-matrix transpose of 64-bit words, done with numpy on the whole frame at once (a few
shifts and masks per word; no Python loop over pixels). LZ4 itself is the ``lz4``
package (the reference C library); its Python loop runs once per block, ~270 times for
a 1065x1030 uint16 frame.

The default block size is bitshuffle's: 8192 bytes' worth of elements, a multiple of 8,
at least 128 elements (``bshuf_default_block_size``): 4096 elements for uint16.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from typing import Any

import lz4.block
import numba
import numpy as np

from photonflow.errors import StreamMessageError
from photonflow.stream.buffers import as_bytes

HDF5_FILTER_ID = 32008  # registered id of the bitshuffle filter
HDF5_FILTER_OPTIONS = (0, 2)  # block size 0 = default, 2 = BSHUF_H5_COMPRESS_LZ4
HEADER_BYTES = 12
_HEADER = struct.Struct(">QI")
_BLOCK_SIZE_FIELD = struct.Struct(">I")
_TARGET_BLOCK_BYTES = 8192
_MIN_BLOCK_ELEMENTS = 128
_ELEMENTS_PER_GROUP = 8  # bit shuffling works on groups of 8 elements


def default_block_size(itemsize: int) -> int:
    """Elements per block that bitshuffle chooses for elements of ``itemsize`` bytes."""
    block = (_TARGET_BLOCK_BYTES // itemsize) // _ELEMENTS_PER_GROUP * _ELEMENTS_PER_GROUP
    return max(block, _MIN_BLOCK_ELEMENTS)


def _transpose_bit_matrices(words: np.ndarray) -> np.ndarray:
    """Transpose, in place, the 8x8 bit matrix in each 64-bit word (byte = row, bit = column)."""
    for shift, mask in ((7, 0x00AA00AA00AA00AA), (14, 0x0000CCCC0000CCCC), (28, 0x00000000F0F0F0F0)):
        swap = words >> np.uint64(shift)
        swap ^= words
        swap &= np.uint64(mask)
        words ^= swap
        swap <<= np.uint64(shift)
        words ^= swap
    return words


def _bitshuffle(blocks: np.ndarray) -> np.ndarray:
    """Blocks as bytes, shape (blocks, elements, itemsize) -> bit planes, (blocks, bytes)."""
    count, elements, itemsize = blocks.shape
    # Byte j of every element together, then 8 consecutive elements per 64-bit word. Always
    # a copy: the transpose below works in place and must never touch the caller's frame.
    by_byte = blocks.transpose(0, 2, 1).copy()
    words = by_byte.view("<u8")  # (count, itemsize, elements / 8)
    _transpose_bit_matrices(words)
    # Byte b of word g now holds bit b of elements 8g..8g+7: gather byte b of all words.
    planes = words.view(np.uint8).reshape(count, itemsize, elements // 8, 8).transpose(0, 1, 3, 2)
    return np.ascontiguousarray(planes).reshape(count, elements * itemsize)


def _bitunshuffle(planes: np.ndarray, out: np.ndarray) -> None:
    """Inverse of ``_bitshuffle``: bit planes (blocks, bytes) into ``out`` (blocks, elements, itemsize)."""
    count, elements, itemsize = out.shape
    grouped = planes.reshape(count, itemsize, 8, elements // 8)
    # Scattering with a short Python loop over the small axis is ~4x faster than numpy's
    # generic transposed copy, whose inner loop would write one byte with a large stride.
    words = np.empty((count, itemsize, elements // 8, 8), dtype=np.uint8)
    for bit in range(8):
        words[:, :, :, bit] = grouped[:, :, bit, :]
    by_byte = _transpose_bit_matrices(words.view("<u8")).view(np.uint8)  # its own inverse
    by_byte = by_byte.reshape(count, itemsize, elements)
    for byte in range(itemsize):
        out[:, :, byte] = by_byte[:, byte, :]



def compress(array: np.ndarray, block_size: int = 0) -> bytes:
    """The bslz4 chunk of ``array`` (C order, little-endian), as HDF5's bitshuffle filter writes it.

    ``block_size`` is in elements, a multiple of 8; 0 chooses bitshuffle's default.
    """
    array = np.asarray(array)
    little_endian = array.dtype.newbyteorder("<") if array.dtype.byteorder == ">" else array.dtype
    array = np.ascontiguousarray(array, dtype=little_endian)
    itemsize = array.dtype.itemsize
    if block_size == 0:
        block_size = default_block_size(itemsize)
    if block_size < 0 or block_size % _ELEMENTS_PER_GROUP:
        raise ValueError(f"block size must be a positive multiple of 8 elements, got {block_size}")
    raw = array.reshape(-1).view(np.uint8)
    total = array.size
    full_blocks = total // block_size
    last_block = (total % block_size) // _ELEMENTS_PER_GROUP * _ELEMENTS_PER_GROUP
    pieces = [_HEADER.pack(raw.nbytes, block_size * itemsize)]

    def add_blocks(start_element: int, count: int, elements: int) -> None:
        chunk = raw[start_element * itemsize : (start_element + count * elements) * itemsize]
        shuffled = _bitshuffle(chunk.reshape(count, elements, itemsize))
        for row in shuffled:
            packed = lz4.block.compress(row, mode="default", store_size=False)
            pieces.append(_BLOCK_SIZE_FIELD.pack(len(packed)))
            pieces.append(packed)

    if full_blocks:
        add_blocks(0, full_blocks, block_size)
    if last_block:
        add_blocks(full_blocks * block_size, 1, last_block)
    pieces.append(raw[(full_blocks * block_size + last_block) * itemsize :].tobytes())
    return b"".join(pieces)


def read_header(payload: Any) -> tuple[int, int]:
    """(uncompressed bytes, block size in bytes) from a chunk's 12-byte header."""
    data = as_bytes(payload)
    if data.nbytes < HEADER_BYTES:
        raise StreamMessageError(
            f"bslz4 payload has {data.nbytes} bytes, less than its {HEADER_BYTES}-byte header"
        )
    return _HEADER.unpack_from(data)


def check_header(payload: Any, shape: Sequence[int], dtype: str) -> int:
    """Refuse a bslz4 chunk whose header does not describe a frame of ``shape`` and ``dtype``;
    returns its block size in bytes.

    Costs 12 bytes of reading: a receiver can check every frame before writing it as a chunk.
    """
    itemsize = np.dtype(dtype).itemsize
    expected = math.prod(shape) * itemsize
    uncompressed, block_bytes = read_header(payload)
    if uncompressed != expected:
        raise StreamMessageError(
            f"bslz4 payload header declares {uncompressed} uncompressed bytes; shape "
            f"{list(shape)} of {dtype} needs {expected} (is the 12-byte HDF5 header missing?)"
        )
    if expected and (block_bytes == 0 or block_bytes % (_ELEMENTS_PER_GROUP * itemsize)):
        raise StreamMessageError(
            f"bslz4 block size {block_bytes} bytes is not a multiple of 8 {dtype} elements"
        )
    return block_bytes


def _block_layout(total: int, block_elements: int) -> tuple[int, int]:
    """(LZ4 blocks, trailing elements copied as they are) of a frame of ``total`` elements."""
    full_blocks = total // block_elements
    last_block = (total % block_elements) // _ELEMENTS_PER_GROUP * _ELEMENTS_PER_GROUP
    return full_blocks + (1 if last_block else 0), total - full_blocks * block_elements - last_block


_LOOKAHEAD_BYTES = 4096  # how far ahead of the block being read its cache lines are asked for
_CACHE_LINE = 64


@numba.njit(cache=True, nogil=True)
def _end_of_blocks(data: memoryview, position: int, blocks: int) -> tuple[int, int]:
    """Where the last of ``blocks`` length-prefixed LZ4 blocks from ``position`` ends in ``data``
    (bytes), or minus the block's number (1-based) if a length prefix lies beyond the data;
    and a sum of bytes read ahead, to be ignored.

    Compiled (numba), without the interpreter lock: a Python loop cost ~70 us per 1M-pixel
    frame, 2 us here, so every frame is checked at the detector's rate. A frame just received
    is in no cache of this core, and each length says where the next is: read one after the
    other, the ~270 lengths of a 1M-pixel frame cost a memory latency each, ~42 us (~55 us
    when another core received it). So the lines up to 4 kB ahead are read too, one byte
    each: those loads do not wait for one another, and the next lengths are in the cache when
    needed (~16 us). Their sum is returned only so the compiler keeps them.
    """
    size = data.shape[0]  # type: ignore[index]  # a 1-d buffer (numba's array), whose shape is set
    touched = 0
    ahead = position
    for block in range(blocks):
        if position + 4 > size:
            return -(block + 1), touched
        limit = min(position + _LOOKAHEAD_BYTES, size)
        while ahead < limit:
            touched += data[ahead]
            ahead += _CACHE_LINE
        position += 4 + (
            (data[position] << 24) | (data[position + 1] << 16) | (data[position + 2] << 8) | data[position + 3]
        )
    return position, touched


def check_chunk(payload: Any, shape: Sequence[int], dtype: str) -> None:
    """Refuse a bslz4 chunk that the bitshuffle filter could not read back, without decompressing it.

    Beyond the header (``check_header``), every LZ4 block's 4-byte length must lead exactly to
    the next one and the last to the trailing elements at the chunk's end: the filter trusts
    those lengths, so a chunk cut short or with a garbled body would make it read past the
    chunk (a crash of the reading process) or fail.
    """
    data = as_bytes(payload)
    block_bytes = check_header(data, shape, dtype)
    total = math.prod(shape)
    if not total:
        return
    itemsize = np.dtype(dtype).itemsize
    blocks, trailing = _block_layout(total, block_bytes // itemsize)
    position, _ = _end_of_blocks(data, HEADER_BYTES, blocks)
    if position < 0:
        raise StreamMessageError(
            f"bslz4 payload truncated: its {data.nbytes} bytes end inside the length prefix of block {-position}"
        )
    if data.nbytes - position != trailing * itemsize:
        raise StreamMessageError(
            f"bslz4 payload's {blocks} LZ4 block(s) end at byte {position} of {data.nbytes}; the "
            f"{trailing} trailing element(s) need {trailing * itemsize} byte(s) after them (chunk cut short or damaged)"
        )


def decompress(payload: Any, shape: Sequence[int], dtype: str | np.dtype) -> np.ndarray:
    """The frame inside a bslz4 chunk, as a new little-endian array of ``shape``.

    Raises StreamMessageError naming what is wrong with a damaged or mismatching chunk.
    """
    dtype = np.dtype(dtype).newbyteorder("<")
    data = as_bytes(payload)
    check_header(data, shape, dtype.name)
    itemsize = dtype.itemsize
    total = math.prod(shape)
    block_size = read_header(data)[1] // itemsize if total else 0
    full_blocks = total // block_size if block_size else 0
    last_block = (total % block_size) // _ELEMENTS_PER_GROUP * _ELEMENTS_PER_GROUP if block_size else 0
    out = np.empty(total * itemsize, dtype=np.uint8)
    position = HEADER_BYTES

    def take_blocks(start_element: int, count: int, elements: int) -> None:
        nonlocal position
        block_bytes = elements * itemsize
        planes = np.empty((count, block_bytes), dtype=np.uint8)
        for index in range(count):
            if position + 4 > data.nbytes:
                raise StreamMessageError(f"bslz4 payload truncated: {data.nbytes} bytes, block header at {position}")
            (packed_bytes,) = _BLOCK_SIZE_FIELD.unpack_from(data, position)
            position += 4
            if position + packed_bytes > data.nbytes:
                raise StreamMessageError(
                    f"bslz4 payload truncated: block at byte {position} needs {packed_bytes} bytes, "
                    f"{data.nbytes - position} left"
                )
            try:
                block = lz4.block.decompress(
                    data[position : position + packed_bytes], uncompressed_size=block_bytes
                )
            except lz4.block.LZ4BlockError as error:
                raise StreamMessageError(f"bslz4 block at byte {position} is not valid LZ4: {error}") from None
            if len(block) != block_bytes:
                raise StreamMessageError(
                    f"bslz4 block at byte {position} holds {len(block)} bytes, expected {block_bytes}"
                )
            planes[index] = np.frombuffer(block, dtype=np.uint8)
            position += packed_bytes
        target = out[start_element * itemsize : (start_element + count * elements) * itemsize]
        _bitunshuffle(planes, target.reshape(count, elements, itemsize))

    if full_blocks:
        take_blocks(0, full_blocks, block_size)
    if last_block:
        take_blocks(full_blocks * block_size, 1, last_block)
    copied = (total - full_blocks * block_size - last_block) * itemsize
    if data.nbytes - position != copied:
        raise StreamMessageError(
            f"bslz4 payload has {data.nbytes - position} bytes after its blocks; "
            f"the {copied // itemsize} trailing element(s) need {copied}"
        )
    out[out.nbytes - copied :] = np.frombuffer(data, dtype=np.uint8, count=copied, offset=position)
    return out.view(dtype).reshape(tuple(shape))
