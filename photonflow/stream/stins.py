"""STINS: the stream metadata protocol of MAX IV, as photonflow speaks it.

Every message is a JSON object whose top-level keys are all reserved by the protocol,
with the mandatory ``version`` (1), ``message_type`` and ``message_id`` (incremented with
every message a sender emits). A ``data`` message carries its frame as a second ZeroMQ
part. ``docs/stins.md`` defines every field used here; this module is the one place that
encodes and validates them, so the Acquirer, the Recorder and any consumer agree.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Sequence

import numpy as np

from photonflow.errors import StreamMessageError

STINS_VERSION = 1
SERIES_START = "series_start"
DATA = "data"
SERIES_END = "series_end"
MESSAGE_TYPES = (SERIES_START, DATA, SERIES_END)

ENCODINGS = ("raw",)
PIXEL_TYPES = ("uint8", "uint16", "uint32", "int8", "int16", "int32", "float32", "float64")
_ITEM_SIZES = {name: np.dtype(name).itemsize for name in PIXEL_TYPES}
END_REASONS = ("completed", "stopped", "aborted", "failed")

_COMMON_KEYS = {"version", "message_type", "message_id", "series_id"}
_FRAME_KEYS = {"shape", "dtype", "encoding"}
_REQUIRED_KEYS = {
    SERIES_START: _COMMON_KEYS | _FRAME_KEYS | {"frame_count", "detector", "start_time"},
    DATA: _COMMON_KEYS | _FRAME_KEYS | {"frame_number", "timestamp"},
    SERIES_END: _COMMON_KEYS | {"frames_acquired", "frames_sent", "end_reason", "end_time"},
}


@dataclass(frozen=True)
class SeriesStart:
    """Announces a series: what the frames look like and which detector makes them."""

    message_id: int
    series_id: int
    frame_count: int
    shape: tuple[int, int]
    dtype: str
    encoding: str
    detector: dict[str, Any]
    start_time: str


@dataclass(frozen=True)
class DataMessage:
    """One frame; ``payload`` is the second ZeroMQ part, kept as a buffer, never copied."""

    message_id: int
    series_id: int
    frame_number: int
    shape: tuple[int, int]
    dtype: str
    encoding: str
    timestamp: float
    payload: Any = field(repr=False)

    def to_array(self) -> np.ndarray:
        """The frame as a numpy array (a view on the payload for raw encoding)."""
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
    return datetime.now(timezone.utc).isoformat()


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
        return json.dumps(header, separators=(",", ":")).encode()

    def series_start(
        self,
        series_id: int,
        frame_count: int,
        shape: Sequence[int],
        dtype: str,
        detector: dict[str, Any],
        start_time: str | None = None,
    ) -> list[bytes]:
        return [
            self._header(
                SERIES_START,
                series_id,
                frame_count=frame_count,
                shape=list(shape),
                dtype=dtype,
                encoding="raw",
                detector=detector,
                start_time=start_time or utc_now_iso(),
            )
        ]

    def data(self, series_id: int, frame_number: int, frame: np.ndarray, timestamp: float) -> list:
        """Header and frame; the frame goes out as its own buffer (zero-copy with ZeroMQ)."""
        if frame.dtype.byteorder == ">":
            frame = frame.astype(frame.dtype.newbyteorder("<"))
        frame = np.ascontiguousarray(frame)
        header = self._header(
            DATA,
            series_id,
            frame_number=frame_number,
            shape=list(frame.shape),
            dtype=frame.dtype.name,
            encoding="raw",
            timestamp=timestamp,
        )
        return [header, frame]

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


def _fail(message: str) -> None:
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
        unknown = sorted(header.keys() - required)
        _fail(f"top-level keys are reserved by STINS; unknown key(s) {', '.join(unknown)}")
    return header


def decode(parts: Sequence[Any]) -> StinsMessage:
    """Validate and decode the ZeroMQ parts of one message.

    Raises StreamMessageError naming what is wrong; the caller counts and reports it.
    """
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
    payload = parts[1]
    payload = payload.buffer if hasattr(payload, "buffer") else memoryview(payload)
    expected_bytes = shape[0] * shape[1] * _ITEM_SIZES[dtype]
    if payload.nbytes != expected_bytes:
        _fail(
            f"frame payload has {payload.nbytes} bytes; shape {list(shape)} of {dtype} "
            f"needs {expected_bytes}"
        )
    return DataMessage(
        frame_number=_integer(header, "frame_number"),
        shape=shape,
        dtype=dtype,
        encoding=encoding,
        timestamp=float(timestamp),
        payload=payload,
        **common,
    )
