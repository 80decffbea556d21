"""MAX IV's legacy detector stream, as its streaming-receiver speaks it, in photonflow's model.

Why: at MAX IV the detector "streamers" and the streaming-receiver
(https://github.com/maxiv-science/streaming-receiver, ``receiver/detector.py``: the
``Detector`` class reads this format directly; ``Eiger`` and ``DectrisStream2`` convert
DECTRIS streams into it; ``tests/stream1.py`` is a reference sender) pass frames between
each other in one simple format. Reading it lets the Recorder take any detector a MAX IV
streamer already serves (Pilatus, Orca, Zyla, Xspress3, converted Eigers...).

The format: every message is ZeroMQ parts, the first a JSON object with ``htype``:

- ``header``   {htype, msg_number, filename}, optionally a second part: a JSON object of
  detector metadata (the Eiger converter sends count_time, threshold_energy, photon_energy,
  nimages, ntrigger, trigger_mode, the *_applied flags...).
- ``image``    {htype, msg_number, frame, shape [rows, columns], type, compression} and
  the frame as the second part; ``compression`` is ``none`` (raw pixels) or ``bslz4``
  (the HDF5 bitshuffle filter's chunk, 12-byte header first, which the receiver writes
  with ``write_direct_chunk``). Senders may add keys (e.g. ``exposure_time``): ignored.
- ``series_end`` {htype, msg_number}.

How the fields map: message_id <- ``msg_number``. The format has **no series id**:
series_id is ``UNKNOWN`` in every message. SeriesStart: frame_count <- ``nimages`` x
``ntrigger`` from the metadata (0 if absent); shape, dtype and encoding None (the header
does not describe frames; the first image does); detector <- the metadata, keys already
named as in NXdetector kept, ``exposure_time``/``exptime`` -> count_time,
``photon_energy`` -> incident_energy, other scalars as they are; start_time: the time of
decoding. ``filename`` is not mapped (the Recorder's Arm chooses the file). DataMessage:
frame_number <- ``frame``; shape, dtype <- ``shape``, ``type``; encoding <- ``compression``
(none -> raw); timestamp: the time of decoding (the format carries none). SeriesEnd:
frames_acquired, frames_sent ``UNKNOWN`` (no counts), end_reason "completed", end_time:
the time of decoding. Multi-module or multi-threshold images (3-D ``shape``, several data
parts) are refused: the model holds one 2-D frame per message.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal, NoReturn

import msgspec

from photonflow.errors import StreamMessageError
from photonflow.stream.buffers import as_bytes
from photonflow.stream.stins import (
    BSLZ4,
    PIXEL_TYPES,
    RAW,
    UNKNOWN,
    DataMessage,
    NonNegativeInt,
    PositiveInt,
    SeriesEnd,
    SeriesStart,
    StinsMessage,
    check_frame_payload,
    frame_payload,
    utc_now_iso,
)

HEADER = "header"
IMAGE = "image"
SERIES_END = "series_end"
COMPRESSIONS = {"none": RAW, "bslz4": BSLZ4}
_COMPRESSION_NAMES = {encoding: name for name, encoding in COMPRESSIONS.items()}
# Metadata keys renamed into photonflow's detector description (NXdetector names).
METADATA_NAMES = {"exposure_time": "count_time", "exptime": "count_time", "photon_energy": "incident_energy"}


def _fail(message: str) -> NoReturn:
    raise StreamMessageError(message)



def _json_object(part: Any, what: str) -> dict:
    try:
        value = json.loads(bytes(as_bytes(part)))
    except ValueError as error:  # JSONDecodeError and UnicodeDecodeError both are
        _fail(f"{what} is not JSON: {error}")
    if not isinstance(value, dict):
        _fail(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


def _unsigned(header: dict, key: str, where: str) -> int:
    if key not in header:
        _fail(f"{where} lacks '{key}'")
    value = header[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        _fail(f"{where}: '{key}' must be an integer >= 0, got {value!r}")
    return value


def _parts(parts: Sequence[Any], allowed: tuple[int, ...], where: str) -> None:
    if len(parts) not in allowed:
        counts = " or ".join(str(n) for n in allowed)
        _fail(f"{where} has {counts} part(s), got {len(parts)}")


def _header(header: dict, parts: Sequence[Any]) -> SeriesStart:
    where = "MAX IV stream header"
    _parts(parts, (1, 2), where)
    message_id = _unsigned(header, "msg_number", where)
    filename = header.get("filename")
    if filename is not None and not isinstance(filename, str):
        _fail(f"{where}: 'filename' must be a string, got {filename!r}")
    metadata = _json_object(parts[1], f"{where}: metadata (part 2)") if len(parts) == 2 else {}
    detector: dict[str, Any] = {}
    for key, value in metadata.items():
        finite = not isinstance(value, float) or math.isfinite(value)
        if isinstance(value, (str, int, float, bool)) and finite:  # scalars; lists, maps are not described
            detector[METADATA_NAMES.get(key, key)] = value
    frame_count = 0
    images, triggers = metadata.get("nimages"), metadata.get("ntrigger", 1)
    if images is not None:
        frame_count = _unsigned(metadata, "nimages", f"{where} metadata") * _unsigned(
            {"ntrigger": triggers}, "ntrigger", f"{where} metadata"
        )
    return SeriesStart(
        message_id=message_id,
        series_id=UNKNOWN,
        frame_count=frame_count,
        shape=None,
        dtype=None,
        encoding=None,
        detector=detector,
        start_time=utc_now_iso(),
    )


def _image(header: dict, parts: Sequence[Any]) -> DataMessage:
    where = "MAX IV stream image"
    frame_number = _unsigned(header, "frame", where)
    where = f"MAX IV stream image {frame_number}"
    message_id = _unsigned(header, "msg_number", where)
    for key in ("shape", "type", "compression"):
        if key not in header:
            _fail(f"{where} lacks '{key}'")
    shape = header["shape"]
    if not isinstance(shape, list) or not all(
        isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in shape
    ):
        _fail(f"{where}: 'shape' must be [rows, columns] of positive integers, got {shape!r}")
    if len(shape) != 2:
        _fail(f"{where}: 'shape' {shape} is not [rows, columns]; photonflow records one 2-D frame per message")
    _parts(parts, (2,), where)
    dtype = header["type"]
    if dtype not in PIXEL_TYPES:
        _fail(f"{where}: 'type' must be one of {', '.join(PIXEL_TYPES)}, got {dtype!r}")
    compression = header["compression"]
    if not isinstance(compression, str) or compression not in COMPRESSIONS:
        _fail(f"{where}: 'compression' must be one of {', '.join(COMPRESSIONS)}, got {compression!r}")
    encoding = COMPRESSIONS[compression]
    payload = as_bytes(parts[1])
    shape = (shape[0], shape[1])
    check_frame_payload(payload, shape, dtype, encoding, where)
    return DataMessage(
        message_id=message_id,
        series_id=UNKNOWN,
        frame_number=frame_number,
        shape=shape,
        dtype=dtype,
        encoding=encoding,
        timestamp=time.time(),
        payload=payload,
    )


def _series_end(header: dict, parts: Sequence[Any]) -> SeriesEnd:
    where = "MAX IV stream series_end"
    _parts(parts, (1,), where)
    return SeriesEnd(
        message_id=_unsigned(header, "msg_number", where),
        series_id=UNKNOWN,
        frames_acquired=UNKNOWN,
        frames_sent=UNKNOWN,
        end_reason="completed",
        end_time=utc_now_iso(),
    )


_HANDLERS: dict[str, Callable[[dict, Sequence[Any]], StinsMessage]] = {
    HEADER: _header,
    IMAGE: _image,
    SERIES_END: _series_end,
}


# The fast path of an image message, once per frame, as STINS has it (``stins._DataHeader``):
# msgspec decodes and checks the header in one call; keys a sender adds are ignored, as the
# general path ignores them; anything refused takes the general path, which says why.
class _ImageHeader(msgspec.Struct):
    htype: Literal["image"]
    msg_number: NonNegativeInt
    frame: NonNegativeInt
    shape: tuple[PositiveInt, PositiveInt]
    type: Literal[PIXEL_TYPES]  # type: ignore[valid-type]  # Literal of a tuple: of its items
    compression: Literal[tuple(COMPRESSIONS)]  # type: ignore[valid-type]


_decode_image_header = msgspec.json.Decoder(_ImageHeader).decode


def decode(parts: Sequence[Any]) -> StinsMessage:
    """Validate and decode one MAX IV stream message (its ZeroMQ parts).

    Raises StreamMessageError, and only that, naming what is wrong.
    """
    if len(parts) == 2:
        try:
            typed = _decode_image_header(as_bytes(parts[0]))
        except msgspec.MsgspecError:
            pass
        else:
            payload = as_bytes(parts[1])
            encoding = COMPRESSIONS[typed.compression]
            check_frame_payload(payload, typed.shape, typed.type, encoding, f"MAX IV stream image {typed.frame}")
            return DataMessage(typed.msg_number, UNKNOWN, typed.frame, typed.shape, typed.type, encoding,
                               time.time(), payload)
    try:
        if not parts:
            _fail("empty message")
        header = _json_object(parts[0], "MAX IV stream message: part 1")
        htype = header.get("htype")
        handler = _HANDLERS.get(htype) if isinstance(htype, str) else None
        if handler is None:
            _fail(f"MAX IV stream 'htype' must be one of {', '.join(_HANDLERS)}, got {htype!r}")
        return handler(header, parts)
    except StreamMessageError:
        raise
    except Exception as error:  # noqa: BLE001 - the net under the checks above: never another exception type
        raise StreamMessageError(
            f"MAX IV stream message could not be decoded: {type(error).__name__}: {error}"
        ) from None


def _json(value: dict) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def encode_start(msg_number: int, filename: str = "", metadata: dict[str, Any] | None = None) -> list[bytes]:
    """A ``header`` message; ``metadata`` (JSON-able) goes as its second part when given."""
    parts = [_json({"htype": HEADER, "msg_number": msg_number, "filename": filename})]
    if metadata is not None:
        parts.append(_json(metadata))
    return parts


def encode_image(
    msg_number: int,
    frame_number: int,
    frame: Any,
    encoding: str = RAW,
    shape: Sequence[int] | None = None,
    dtype: str | None = None,
) -> list:
    """An ``image`` message: a numpy frame (compressed here for bslz4), or bytes already in
    ``encoding`` (``raw`` or ``bslz4``) with ``shape`` and ``dtype``."""
    payload, shape, dtype = frame_payload(frame, encoding, shape, dtype)
    header = {
        "htype": IMAGE,
        "msg_number": msg_number,
        "frame": frame_number,
        "shape": list(shape),
        "type": dtype,
        "compression": _COMPRESSION_NAMES[encoding],
    }
    return [_json(header), payload]


def encode_end(msg_number: int) -> list[bytes]:
    """A ``series_end`` message."""
    return [_json({"htype": SERIES_END, "msg_number": msg_number})]
