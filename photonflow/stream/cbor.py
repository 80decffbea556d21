"""CBOR (RFC 8949) as detector streams use it: the subset any CBOR encoder produces, with byte
strings kept as views on the received buffer (a frame is never copied to be decoded), RFC 8746
typed arrays, and every refusal a StreamMessageError naming what is wrong and where.

Generic: DECTRIS' stream v2 (``dectris``) is one user; nothing here is vendor-specific.
"""

from __future__ import annotations

import struct
from typing import Any, NamedTuple, NoReturn

import numpy as np

from photonflow.errors import StreamMessageError
from photonflow.stream.buffers import as_bytes


def _fail(message: str) -> NoReturn:
    raise StreamMessageError(message)



def show(value: Any) -> str:
    """A value as an error message quotes it: byte strings by their size, long values cut."""
    if isinstance(value, memoryview):
        return f"<{value.nbytes} bytes>"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."




class Tag(NamedTuple):
    """A CBOR tagged item, e.g. Tag(40, [[rows, columns], Tag(69, pixels)])."""

    number: int
    value: Any


SELF_DESCRIBED_CBOR = 55799
DATE_TIME = 0
MULTI_DIMENSIONAL_ARRAY = 40  # row-major
_MAX_NESTING = 32
_BREAK = object()

# RFC 8746 typed arrays photonflow takes (little-endian, or single bytes); 68 is clamped uint8.
TYPED_ARRAY_TAGS = {
    "uint8": 64, "uint16": 69, "uint32": 70, "int8": 72, "int16": 77, "int32": 78, "float32": 85, "float64": 86,
}
TYPED_ARRAY_DTYPES = {68: "uint8", **{tag: dtype for dtype, tag in TYPED_ARRAY_TAGS.items()}}


def typed_array_name(tag: int) -> str:
    """RFC 8746 section 2.1: tag = 0b010_f_s_e_ll (float, signed, little-endian, log2 size)."""
    floating, signed, little, size_log = (tag >> 4) & 1, (tag >> 3) & 1, (tag >> 2) & 1, tag & 3
    kind = "float" if floating else ("int" if signed else "uint")
    bits = 8 << (size_log + floating)
    return f"{'little' if little else 'big'}-endian {kind}{bits}"


class _CborReader:
    """Decodes one CBOR item from a buffer; byte strings come out as views on that buffer."""

    def __init__(self, data: memoryview):
        self.data = data
        self.size = data.nbytes
        self.position = 0

    def take(self, count: int) -> memoryview:
        end = self.position + count
        if end > self.size:
            self._truncated(count)
        view = self.data[self.position : end]
        self.position = end
        return view

    def _truncated(self, count: int) -> NoReturn:
        _fail(
            f"CBOR message truncated: {count} byte(s) needed at byte {self.position}, "
            f"{self.size - self.position} left"
        )

    def argument(self, info: int) -> int:
        if info < 24:
            return info
        if info <= 27:
            return int.from_bytes(self.take(1 << (info - 24)), "big")
        _fail(f"CBOR: reserved additional information {info} at byte {self.position - 1}")

    def item(self, depth: int = 0, inside_indefinite: bool = False) -> Any:
        # This runs for every item of every frame: one byte read in place, the nesting depth
        # checked only where containers open (array, map, tag).
        position = self.position
        if position >= self.size:
            self._truncated(1)
        initial = self.data[position]
        self.position = position + 1
        value = _CBOR_MAJOR_TYPES[initial >> 5](self, initial & 0x1F, depth)
        if value is _BREAK and not inside_indefinite:
            _fail(f"CBOR break code at byte {self.position - 1} outside an indefinite-length item")
        return value

    def _nested(self, depth: int) -> int:
        if depth >= _MAX_NESTING:
            _fail(f"CBOR items nested deeper than {_MAX_NESTING} levels")
        return depth + 1

    def items_until_break(self, depth: int):
        while True:
            value = self.item(self._nested(depth), inside_indefinite=True)
            if value is _BREAK:
                return
            yield value

    def unsigned(self, info: int, depth: int) -> int:
        return info if info < 24 else self.argument(info)

    def negative(self, info: int, depth: int) -> int:
        return -1 - self.argument(info)

    def byte_string(self, info: int, depth: int) -> memoryview:
        if info == 31:  # indefinite length: definite chunks until a break (copied, rare)
            chunks = list(self.items_until_break(depth))
            if not all(isinstance(chunk, memoryview) for chunk in chunks):
                _fail("CBOR: an indefinite byte string may only hold byte strings")
            return memoryview(b"".join(chunks))
        return self.take(info if info < 24 else self.argument(info))

    def text_string(self, info: int, depth: int) -> str:
        if info == 31:
            chunks = list(self.items_until_break(depth))
            if not all(isinstance(chunk, str) for chunk in chunks):
                _fail("CBOR: an indefinite text string may only hold text strings")
            return "".join(chunks)
        length = info if info < 24 else self.argument(info)
        start = self.position
        end = start + length
        if end > self.size:
            self._truncated(length)
        self.position = end
        try:
            return str(self.data[start:end], "utf-8")
        except UnicodeDecodeError as error:
            _fail(f"CBOR text string is not UTF-8: {error}")

    def array(self, info: int, depth: int) -> list:
        if info == 31:
            return list(self.items_until_break(depth))
        inner = self._nested(depth)
        return [self.item(inner) for _ in range(info if info < 24 else self.argument(info))]

    def map(self, info: int, depth: int) -> dict:
        inner = self._nested(depth)
        keys = self.items_until_break(depth) if info == 31 else (
            self.item(inner) for _ in range(info if info < 24 else self.argument(info))
        )
        result: dict = {}
        for key in keys:
            if key.__class__ is not str:  # text keys, as every Dectris message has, pass at once
                if isinstance(key, memoryview):
                    key = bytes(key)
                if not isinstance(key, (str, int, bytes)) or isinstance(key, bool):
                    _fail(f"CBOR map key must be a text string or an integer, got {show(key)}")
            value = self.item(inner)
            if key in result:
                _fail(f"CBOR map has key {key!r} twice")
            result[key] = value
        return result

    def tag(self, info: int, depth: int) -> Tag:
        number = self.argument(info)
        return Tag(number, self.item(self._nested(depth)))

    def simple_or_float(self, info: int, depth: int) -> Any:
        if info in _CBOR_SIMPLE_VALUES:
            return _CBOR_SIMPLE_VALUES[info]
        if info in _CBOR_FLOATS:
            layout = _CBOR_FLOATS[info]
            return layout.unpack(self.take(layout.size))[0]
        if info == 31:
            return _BREAK
        _fail(f"CBOR simple value {info} is not used by this protocol")


_CBOR_MAJOR_TYPES = (
    _CborReader.unsigned,
    _CborReader.negative,
    _CborReader.byte_string,
    _CborReader.text_string,
    _CborReader.array,
    _CborReader.map,
    _CborReader.tag,
    _CborReader.simple_or_float,
)
_CBOR_SIMPLE_VALUES = {20: False, 21: True, 22: None, 23: None}
_CBOR_FLOATS = {25: struct.Struct(">e"), 26: struct.Struct(">f"), 27: struct.Struct(">d")}


def cbor_loads(part: Any) -> Any:
    """The one CBOR item a ZeroMQ part holds; refuses truncated or trailing data."""
    reader = _CborReader(as_bytes(part))
    if reader.data.nbytes == 0:
        _fail("empty message: no CBOR item")
    value = reader.item()
    if reader.position != reader.data.nbytes:
        _fail(f"CBOR message has {reader.data.nbytes - reader.position} byte(s) after its item")
    return value


def _cbor_head(major: int, argument: int) -> bytes:
    if argument < 24:
        return bytes([major << 5 | argument])
    for info, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if argument < 1 << (8 * size):
            return bytes([major << 5 | info]) + argument.to_bytes(size, "big")
    raise ValueError(f"integer {argument} does not fit CBOR's 64 bits")


def _cbor_encode(value: Any, out: list) -> None:
    if isinstance(value, Tag):
        out.append(_cbor_head(6, value.number))
        _cbor_encode(value.value, out)
    elif value is None or isinstance(value, bool):
        out.append(bytes([0xF6 if value is None else 0xF5 if value else 0xF4]))
    elif isinstance(value, (int, np.integer)):
        value = int(value)
        out.append(_cbor_head(0, value) if value >= 0 else _cbor_head(1, -1 - value))
    elif isinstance(value, (float, np.floating)):
        out.append(b"\xfb" + struct.pack(">d", float(value)))
    elif isinstance(value, str):
        encoded = value.encode()
        out += (_cbor_head(3, len(encoded)), encoded)
    elif isinstance(value, (bytes, bytearray, memoryview, np.ndarray)):
        data = as_bytes(value)
        out += (_cbor_head(2, data.nbytes), data)
    elif isinstance(value, (list, tuple)):
        out.append(_cbor_head(4, len(value)))
        for item in value:
            _cbor_encode(item, out)
    elif isinstance(value, dict):
        out.append(_cbor_head(5, len(value)))
        for key, item in value.items():
            _cbor_encode(key, out)
            _cbor_encode(item, out)
    else:
        raise TypeError(f"cannot encode {type(value).__name__} as CBOR")


def cbor_dumps(value: Any, self_described: bool = True) -> bytes:
    """CBOR bytes of ``value`` (dict, list, str, int, float, bool, None, bytes-like, Tag)."""
    out: list = []
    _cbor_encode(Tag(SELF_DESCRIBED_CBOR, value) if self_described else value, out)
    return b"".join(out)
