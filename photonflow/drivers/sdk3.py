"""Andor SDK3's pixel encodings and the Mono12Packed buffer format (Andor SDK3 manual, the
``PixelEncoding`` and ``AOIStride`` features and "Mono12Packed").

Why: a Zyla or Balor hands over raw buffers, rows padded to ``AOIStride`` bytes, in the
``PixelEncoding`` set; pylablib decodes them on the real camera, the simulated camera encodes
and decodes them the same way, so both go through these functions. Nothing here imports Tango.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# SDK3's PixelEncoding values and the numpy type of a decoded frame
PIXEL_TYPES = {"Mono12": "uint16", "Mono12Packed": "uint16", "Mono16": "uint16", "Mono32": "uint32"}


def unpack_mono12packed(raw: Any, width: int, height: int, stride: int) -> np.ndarray:
    """Mono12Packed rows (``stride`` bytes each) -> (height, width) uint16.

    Every 3 bytes hold 2 pixels: the first is byte0 << 4 | (byte1 & 0xF), the second is
    byte2 << 4 | byte1 >> 4 (Andor SDK3 manual, "Mono12Packed").
    """
    data = np.frombuffer(raw, dtype=np.uint8)
    packed_width = (width * 3 + 1) // 2
    if stride < packed_width or data.size < stride * height:
        raise ValueError(f"a {width}x{height} Mono12Packed frame needs {height} rows of >= {packed_width} bytes, "
                         f"got {data.size} bytes with a stride of {stride}")
    rows = data[: stride * height].reshape(height, stride)[:, : (width + 1) // 2 * 3].astype(np.uint16)
    triples = rows.reshape(height, -1, 3)
    pixels = np.empty((height, triples.shape[1] * 2), dtype=np.uint16)
    pixels[:, 0::2] = (triples[:, :, 0] << 4) | (triples[:, :, 1] & 0x0F)
    pixels[:, 1::2] = (triples[:, :, 2] << 4) | (triples[:, :, 1] >> 4)
    return pixels[:, :width]


def pack_mono12packed(frame: np.ndarray, stride: int | None = None) -> bytes:
    """The inverse, for simulators and tests: (height, width) 12-bit values -> packed rows."""
    height, width = frame.shape
    padded = np.zeros((height, width + width % 2), dtype=np.uint16)
    padded[:, :width] = frame & 0x0FFF
    first, second = padded[:, 0::2], padded[:, 1::2]
    triples = np.empty((height, first.shape[1], 3), dtype=np.uint8)
    triples[:, :, 0] = first >> 4
    triples[:, :, 1] = (first & 0x0F) | ((second & 0x0F) << 4)
    triples[:, :, 2] = second >> 4
    rows = triples.reshape(height, -1)
    stride = stride or rows.shape[1]
    out = np.zeros((height, stride), dtype=np.uint8)
    out[:, : rows.shape[1]] = rows
    return out.tobytes()
