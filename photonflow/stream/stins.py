"""STINS: the stream metadata protocol of MAX IV, as photonflow speaks it.

Every message is a JSON object whose top-level keys are all reserved by the protocol,
with the mandatory ``version`` (1), ``message_type`` and ``message_id`` (incremented with
every message a sender emits). A ``data`` message carries its frame as a second ZeroMQ
part. ``docs/stins.md`` defines every field used here; this module is the one place that
encodes and validates them, so the Acquirer, the Recorder and any consumer agree.

The three message classes are also photonflow's model of *any* detector stream: the
decoders of the other protocols (``dectris``, ``maxiv``; see ``protocols``) produce them
too, so the Recorder sees one model whatever the detector speaks. Those protocols do not
carry every field; what one does not carry is ``UNKNOWN`` (integers) or ``None`` (the
frame description of a start message), as each decoder's docstring says.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, NoReturn

import msgspec
import numpy as np

from photonflow.errors import StreamMessageError
from photonflow.stream import bslz4
from photonflow.stream.buffers import as_bytes

STINS_VERSION = 1
SERIES_START = "series_start"
DATA = "data"
SERIES_END = "series_end"
MESSAGE_TYPES = (SERIES_START, DATA, SERIES_END)

RAW = "raw"
BSLZ4 = "bslz4"
ENCODINGS = (RAW, BSLZ4)
PIXEL_TYPES = ("uint8", "uint16", "uint32", "int8", "int16", "int32", "float32", "float64")
_ITEM_SIZES = {name: np.dtype(name).itemsize for name in PIXEL_TYPES}
END_REASONS = ("completed", "stopped", "aborted", "failed")
# An id or count the sending protocol does not carry (never sent by STINS itself, whose
# decoder refuses negative values): e.g. Dectris and MAX IV end messages have no frame
# counts, MAX IV messages no series id. Same convention as the Recorder's accounting.
UNKNOWN = -1

_COMMON_KEYS = {"version", "message_type", "message_id", "series_id"}
_FRAME_KEYS = {"shape", "dtype", "encoding"}
_REQUIRED_KEYS = {
    SERIES_START: _COMMON_KEYS | _FRAME_KEYS | {"frame_count", "detector", "start_time"},
    DATA: _COMMON_KEYS | _FRAME_KEYS | {"frame_number", "timestamp"},
    SERIES_END: _COMMON_KEYS | {"frames_acquired", "frames_sent", "end_reason", "end_time"},
}
_OPTIONAL_KEYS = {SERIES_START: {"frame_metadata", "file"}, DATA: {"metadata"}, SERIES_END: set()}
# Per-frame values: series_start announces their names (``frame_metadata``), each data
# message may carry numbers under them (``metadata``). Bounded, because every name becomes
# a dataset in the file.
METADATA_MAX_KEYS = 64
_METADATA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


@dataclass(frozen=True)
class SeriesStart:
    """Announces a series: what the frames look like and which detector makes them.

    STINS always announces ``shape``, ``dtype`` and ``encoding``. Some other protocols do
    not (MAX IV's header, the pixel type of a Dectris stream v2 start): they are then
    None and the series' first frame says what they are. ``frame_count`` 0: not announced.
    """

    message_id: int
    series_id: int
    frame_count: int
    shape: tuple[int, int] | None
    dtype: str | None
    encoding: str | None
    detector: dict[str, Any]
    start_time: str
    frame_metadata: tuple[str, ...] = ()  # names of the per-frame values data messages may carry
    file: str = ""  # a Recorder's relay: the file it writes the series to ("" if not said)


@dataclass(frozen=True)
class DataMessage:
    """One frame; ``payload`` is the second ZeroMQ part, kept as a buffer, never copied.

    With ``bslz4`` encoding the payload is the compressed frame exactly as an HDF5 chunk of
    the bitshuffle filter holds it (12-byte header included), ready for write_direct_chunk.
    """

    message_id: int
    series_id: int
    frame_number: int
    shape: tuple[int, int]
    dtype: str
    encoding: str
    timestamp: float
    payload: Any = field(repr=False)
    metadata: dict[str, float] | None = None  # per-frame values (STINS ``metadata``), e.g. a CBF header's

    def to_array(self) -> np.ndarray:
        """The frame as a numpy array (a view on the payload for raw encoding, decompressed for bslz4)."""
        if self.encoding == BSLZ4:
            return bslz4.decompress(self.payload, self.shape, self.dtype)
        return np.frombuffer(self.payload, dtype=np.dtype(self.dtype).newbyteorder("<")).reshape(
            self.shape
        )


@dataclass(frozen=True)
class SeriesEnd:
    """Closes a series with the sender's final counts, so a receiver can prove nothing was lost."""

    message_id: int
    series_id: int
    frames_acquired: int
    frames_sent: int
    end_reason: str
    end_time: str


StinsMessage = SeriesStart | DataMessage | SeriesEnd


def utc_now_iso() -> str:
    """An ISO 8601 UTC time stamp, the form NeXus ``NX_DATE_TIME`` fields take."""
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def frame_payload(
    frame: Any, encoding: str = RAW, shape: Sequence[int] | None = None, dtype: str | None = None
) -> tuple[Any, tuple[int, int], str]:
    """(payload, shape, dtype) of one frame, for the encoders of every protocol.

    ``frame`` is either a numpy frame, sent raw (little-endian, C order, zero-copy when it
    already is) or compressed here for bslz4; or bytes already in ``encoding`` (e.g. a
    detector's bslz4 chunk), whose ``shape`` and ``dtype`` must then be given.
    """
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding must be one of {', '.join(ENCODINGS)}, got {encoding!r}")
    if isinstance(frame, np.ndarray):
        if frame.ndim != 2:
            raise ValueError(f"a frame has 2 dimensions, got shape {frame.shape}")
        if frame.dtype.byteorder == ">":
            frame = frame.astype(frame.dtype.newbyteorder("<"))
        frame = np.ascontiguousarray(frame)
        payload = bslz4.compress(frame) if encoding == BSLZ4 else frame
        return payload, (frame.shape[0], frame.shape[1]), frame.dtype.name
    if shape is None or dtype is None:
        raise ValueError("a frame given as bytes needs its shape and dtype")
    if len(shape) != 2:
        raise ValueError(f"a frame has 2 dimensions, got shape {tuple(shape)}")
    return frame, (int(shape[0]), int(shape[1])), np.dtype(dtype).name


class StinsEncoder:
    """Builds the ZeroMQ parts of each message; owns the ``message_id`` sequence of one sender."""

    def __init__(self, first_message_id: int = 0):
        self._next_message_id = first_message_id

    def _header(self, message_type: str, series_id: int, **fields: Any) -> bytes:
        header = {
            "version": STINS_VERSION,
            "message_type": message_type,
            "message_id": self._next_message_id,
            "series_id": series_id,
            **fields,
        }
        self._next_message_id += 1
        return json.dumps(header, separators=(",", ":"), default=_described).encode()

    def series_start(
        self,
        series_id: int,
        frame_count: int,
        shape: Sequence[int],
        dtype: str,
        detector: dict[str, Any],
        start_time: str | None = None,
        encoding: str = RAW,
        frame_metadata: Sequence[str] = (),
    ) -> list[bytes]:
        """``frame_metadata``: names of the per-frame values the data messages will carry."""
        extra = {"frame_metadata": list(frame_metadata)} if frame_metadata else {}
        return [
            self._header(
                SERIES_START,
                series_id,
                frame_count=frame_count,
                shape=list(shape),
                dtype=dtype,
                encoding=encoding,
                detector=detector,
                start_time=start_time or utc_now_iso(),
                **extra,
            )
        ]

    def data(
        self,
        series_id: int,
        frame_number: int,
        frame: Any,
        timestamp: float,
        encoding: str = RAW,
        shape: Sequence[int] | None = None,
        dtype: str | None = None,
        metadata: dict[str, float] | None = None,
    ) -> list:
        """Header and frame; the frame goes out as its own buffer (zero-copy with ZeroMQ).

        ``frame``: a numpy frame (compressed here for bslz4), or bytes already in
        ``encoding`` with ``shape`` and ``dtype`` given (see ``frame_payload``).
        ``metadata``: this frame's own values (numbers by name), sent only when given.
        """
        payload, shape, dtype = frame_payload(frame, encoding, shape, dtype)
        extra = {"metadata": metadata} if metadata else {}
        header = self._header(
            DATA,
            series_id,
            frame_number=frame_number,
            shape=list(shape),
            dtype=dtype,
            encoding=encoding,
            timestamp=timestamp,
            **extra,
        )
        return [header, payload]

    def series_end(
        self,
        series_id: int,
        frames_acquired: int,
        frames_sent: int,
        end_reason: str = "completed",
        end_time: str | None = None,
    ) -> list[bytes]:
        return [
            self._header(
                SERIES_END,
                series_id,
                frames_acquired=frames_acquired,
                frames_sent=frames_sent,
                end_reason=end_reason,
                end_time=end_time or utc_now_iso(),
            )
        ]


def _described(value: Any) -> str:
    """What a header cannot carry as JSON (a detector's pixel mask, say), said in words."""
    if isinstance(value, np.ndarray):
        return f"array of shape {list(value.shape)}, {value.dtype.name} (in the data file)"
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _fail(message: str) -> NoReturn:
    raise StreamMessageError(message)


def _integer(header: dict, key: str, minimum: int = 0) -> int:
    value = header[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        _fail(f"'{key}' must be an integer >= {minimum}, got {value!r}")
    return value


def _text(header: dict, key: str, allowed: Sequence[str] | None = None) -> str:
    value = header[key]
    if not isinstance(value, str) or (allowed is not None and value not in allowed):
        expected = f"one of {', '.join(allowed)}" if allowed else "a string"
        _fail(f"'{key}' must be {expected}, got {value!r}")
    return value


def _shape(header: dict) -> tuple[int, int]:
    shape = header["shape"]
    if (
        not isinstance(shape, list)
        or len(shape) != 2
        or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in shape)
    ):
        _fail(f"'shape' must be [rows, columns] of positive integers, got {shape!r}")
    return (shape[0], shape[1])


def _parse_header(raw: Any) -> dict:
    try:
        header = json.loads(bytes(raw))
    except (ValueError, TypeError) as error:
        _fail(f"header is not JSON: {error}")
    if not isinstance(header, dict):
        _fail(f"header must be a JSON object, got {type(header).__name__}")
    if "version" not in header:
        _fail("missing mandatory key 'version'")
    if header["version"] != STINS_VERSION:
        _fail(f"unsupported STINS version {header['version']!r}; this receiver speaks version 1")
    message_type = header.get("message_type")
    if message_type not in MESSAGE_TYPES:
        _fail(f"'message_type' must be one of {', '.join(MESSAGE_TYPES)}, got {message_type!r}")
    required = _REQUIRED_KEYS[message_type]
    if header.keys() != required:  # the usual case, exactly the required keys, costs one comparison
        missing = sorted(required - header.keys())
        if missing:
            _fail(f"{message_type} message lacks {', '.join(missing)}")
        unknown = sorted(header.keys() - required - _OPTIONAL_KEYS[message_type])
        if unknown:
            _fail(f"top-level keys are reserved by STINS; unknown key(s) {', '.join(unknown)}")
    return header


def _metadata_names(header: dict) -> tuple[str, ...]:
    """series_start's optional ``frame_metadata``: the names, each at most once."""
    names = header.get("frame_metadata", [])
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        _fail(f"'frame_metadata' must be a list of names, got {names!r}")
    if len(names) > METADATA_MAX_KEYS:
        _fail(f"'frame_metadata' has {len(names)} names; at most {METADATA_MAX_KEYS} are accepted")
    if len(set(names)) != len(names):
        _fail(f"'frame_metadata' names a value twice: {names!r}")
    for name in names:
        _check_metadata_name(name)
    return tuple(names)


def _check_metadata_name(name: str) -> None:
    if not _METADATA_NAME.fullmatch(name):
        _fail(f"metadata name {name!r} must be letters, digits and _ (not first), up to 64 characters")


def _frame_metadata(header: dict) -> dict[str, float] | None:
    """A data message's optional ``metadata``: at most 64 numbers, by names a file can hold."""
    metadata = header.get("metadata")
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        _fail(f"'metadata' must be a JSON object of numbers, got {type(metadata).__name__}")
    if len(metadata) > METADATA_MAX_KEYS:
        _fail(f"'metadata' has {len(metadata)} entries; at most {METADATA_MAX_KEYS} are accepted")
    for name, value in metadata.items():
        _check_metadata_name(name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            _fail(f"'metadata' value of {name!r} must be a finite number, got {value!r}")
    return metadata


def check_frame_payload(payload: memoryview, shape: Sequence[int], dtype: str, encoding: str, where: str) -> None:
    """A frame's bytes must fit its description, whatever protocol carried it: a raw frame
    has exactly rows x columns x itemsize bytes; a bslz4 one says so in its 12-byte header, and
    its LZ4 blocks must fill it exactly."""
    if encoding == BSLZ4:  # compressed: its size says nothing, its header must fit the frame
        try:
            bslz4.check_chunk(payload, shape, dtype)
        except StreamMessageError as error:
            _fail(f"{where}: {error}")
        return
    expected = shape[0] * shape[1] * _ITEM_SIZES[dtype]
    if payload.nbytes != expected:
        _fail(f"{where}: raw frame has {payload.nbytes} bytes; {list(shape)} of {dtype} needs {expected}")


# The fast path of a data message, once per frame. msgspec decodes the JSON header into
# this typed record and checks it in one call to compiled code: every key present and no
# other, integers >= 0 (no booleans, no fractions), a pixel type and an encoding STINS knows,
# a finite timestamp (JSON has no infinities; a number too large for a float is refused),
# metadata of at most 64 numbers under valid names. ~0.4 us against ~8 us for json.loads and
# the checks below (~1 us against ~12 us with 10 metadata values). Whatever it refuses, or
# any other message, takes the general path, which accepts it or names what is wrong: the
# fast path only ever accepts what the general path accepts.
NonNegativeInt = Annotated[int, msgspec.Meta(ge=0)]  # for msgspec's typed records (no booleans, no fractions)
PositiveInt = Annotated[int, msgspec.Meta(gt=0)]
_MetadataName = Annotated[str, msgspec.Meta(pattern=f"^{_METADATA_NAME.pattern}$")]


class _DataHeader(msgspec.Struct, forbid_unknown_fields=True):
    version: Literal[1]
    message_type: Literal["data"]
    message_id: NonNegativeInt
    series_id: NonNegativeInt
    frame_number: NonNegativeInt
    shape: tuple[PositiveInt, PositiveInt]
    dtype: Literal[PIXEL_TYPES]  # type: ignore[valid-type]  # Literal of a tuple: of its items
    encoding: Literal[ENCODINGS]  # type: ignore[valid-type]
    timestamp: float
    metadata: Annotated[dict[_MetadataName, float], msgspec.Meta(max_length=METADATA_MAX_KEYS)] | None = None


_decode_data_header = msgspec.json.Decoder(_DataHeader).decode


def decode(parts: Sequence[Any]) -> StinsMessage:
    """Validate and decode the ZeroMQ parts of one message.

    Raises StreamMessageError naming what is wrong; the caller counts and reports it.
    """
    if len(parts) == 2:
        try:
            typed = _decode_data_header(as_bytes(parts[0]))
        except msgspec.MsgspecError:
            pass  # the general path says why, or accepts what the typed record is stricter about
        else:
            payload = as_bytes(parts[1])
            check_frame_payload(payload, typed.shape, typed.dtype, typed.encoding, "frame")
            return DataMessage(
                typed.message_id, typed.series_id, typed.frame_number, typed.shape, typed.dtype,
                typed.encoding, typed.timestamp, payload, typed.metadata,
            )
    if not parts:
        _fail("empty message")
    header = _parse_header(parts[0])
    message_type = header["message_type"]
    common = dict(
        message_id=_integer(header, "message_id"),
        series_id=_integer(header, "series_id"),
    )
    expected_parts = 2 if message_type == DATA else 1
    if len(parts) != expected_parts:
        _fail(f"{message_type} message must have {expected_parts} part(s), got {len(parts)}")
    if message_type == SERIES_START:
        detector = header["detector"]
        if not isinstance(detector, dict):
            _fail("'detector' must be a JSON object")
        return SeriesStart(
            frame_count=_integer(header, "frame_count"),
            shape=_shape(header),
            dtype=_text(header, "dtype", PIXEL_TYPES),
            encoding=_text(header, "encoding", ENCODINGS),
            detector=detector,
            start_time=_text(header, "start_time"),
            frame_metadata=_metadata_names(header),
            file=_text(header, "file") if "file" in header else "",
            **common,
        )
    if message_type == SERIES_END:
        return SeriesEnd(
            frames_acquired=_integer(header, "frames_acquired"),
            frames_sent=_integer(header, "frames_sent"),
            end_reason=_text(header, "end_reason", END_REASONS),
            end_time=_text(header, "end_time"),
            **common,
        )
    shape = _shape(header)
    dtype = _text(header, "dtype", PIXEL_TYPES)
    encoding = _text(header, "encoding", ENCODINGS)
    timestamp = header["timestamp"]
    if isinstance(timestamp, bool) or not isinstance(timestamp, (int, float)) or not math.isfinite(
        timestamp
    ):
        _fail(f"'timestamp' must be a number of seconds, got {timestamp!r}")
    payload = as_bytes(parts[1])
    check_frame_payload(payload, shape, dtype, encoding, "frame")
    return DataMessage(
        frame_number=_integer(header, "frame_number"),
        shape=shape,
        dtype=dtype,
        encoding=encoding,
        timestamp=float(timestamp),
        payload=payload,
        metadata=_frame_metadata(header),
        **common,
    )
