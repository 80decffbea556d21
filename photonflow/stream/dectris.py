"""DECTRIS detector streams (EIGER, EIGER2, PILATUS4), version 1 and version 2, in photonflow's model.

Why: a DECTRIS detector control unit (DCU) pushes its frames over ZeroMQ itself, already
compressed. Reading that stream directly lets the Recorder take an EIGER without any
photonflow code on the detector side; each frame stays compressed (``bslz4``) and becomes
one HDF5 chunk as it arrived. This module turns every DECTRIS message into a
``SeriesStart``, ``DataMessage`` or ``SeriesEnd`` (``photonflow.stream.stins``), refusing
anything malformed with a StreamMessageError that says what is wrong; and it encodes both
versions, for simulators and tests.

Specifications followed
-----------------------
- **Stream v2** (CBOR, one ZeroMQ part per message, DCU port 31001, release 2022.1+):
  ``stream_v2/README.md`` of https://github.com/dectris/documentation (SIMPLON API 1.8),
  its reference parser ``stream_v2/examples/stream2.c``, the compression tag
  ``cbor/dectris-compression-tag.md``; CBOR is RFC 8949, typed and multi-dimensional
  arrays RFC 8746. A message is ``55799(map)`` (self-described CBOR; accepted without the
  tag too) whose ``type`` is ``start``, ``image`` or ``end``. Image data is
  ``data: {channel: 40([[height, width], T(bytes)])}`` where ``T`` is an RFC 8746 typed
  array tag (69 = uint16 little-endian, 70 = uint32 LE, ...) and ``bytes`` is either the
  raw pixels or ``56500(["bslz4", element size, chunk])``: the modifier of tag 56500 is the
  element size, not the uncompressed size, which is the first 8 bytes of the chunk.
- **Stream v1** ("legacy", JSON multi-part, DCU port 9999): the stream chapter of the
  DECTRIS SIMPLON API manual. ``dheader-1.0`` {htype, series, header_detail} followed by,
  for ``basic``, the detector configuration (JSON) and for ``all`` also flatfield, pixel
  mask and count-rate table, each a JSON part {htype, shape, type} and a data part (8 parts
  in all; ``none``: the header alone); a header appendix adds one last part. ``dimage-1.0``
  {htype, series, frame, hash}, ``dimage_d-1.0`` {htype, shape [x, y], type, encoding,
  size}, the data blob, ``dconfig-1.0`` {htype, start_time, stop_time, real_time} (ns),
  plus one part for an image appendix. ``dseries_end-1.0`` {htype, series}.

In both versions a bslz4 payload is the HDF5 bitshuffle filter's chunk (12-byte header
first), which ``photonflow.stream.bslz4`` reads and writes; lz4-only compression and
big-endian pixels are refused, so are multi-channel (multi-threshold) images, which the
model, one 2-D frame per message, cannot hold yet.

How the fields map
------------------
``message_id``: DECTRIS messages have none; the decoder numbers the messages it decodes,
one counter per version for the whole process, in decoding order (so ids increase, but are
not the sender's and interleave when several DCUs are read).

v2 ``start`` -> SeriesStart: series_id <- ``series_id``; frame_count <- ``number_of_images``
(nimages x ntrigger; 0 if absent); shape <- (``image_size_y``, ``image_size_x``); dtype <-
``image_dtype`` if the DCU sends it (not in the published table), else None: the first
frame's typed-array tag tells; encoding None (the start message does not say whether
images are compressed); start_time <- ``arm_date``; detector <- the table ``V2_DETECTOR``
below (``threshold_energy`` <- the energy of the one channel; ``incident_wavelength``
converted from angstrom to metres; ``detector_translation`` <- ``detector_translation_x/y/z``
(m)); vendor "DECTRIS". Not mapped: goniometer, user_data, and with header_detail ``all``
flatfield, pixel_mask and countrate_correction_lookup_table (decoded, then dropped).

v2 ``image`` -> DataMessage: series_id <- ``series_id``; frame_number <- ``image_id`` (from
0); shape <- the array's [height, width]; dtype <- its typed-array tag; encoding ``bslz4``
(tag 56500) or ``raw``; payload <- the chunk or pixels, a view on the received buffer;
timestamp <- ``series_date`` + ``start_time`` (a rational, seconds), or the time of
decoding when either is absent.

v2 ``end`` -> SeriesEnd: series_id <- ``series_id``; frames_acquired and frames_sent
``UNKNOWN`` (the message has no counts: the receiver expects ``number_of_images``);
end_reason "completed" (the DCU sends ``end`` at disarm, whatever ended the series);
end_time: the time of decoding.

v1 ``dheader-1.0`` -> SeriesStart: series_id <- ``series``; from the configuration part
(``basic``/``all``): frame_count <- ``nimages`` x ``ntrigger``; shape <-
(``y_pixels_in_detector``, ``x_pixels_in_detector``); dtype <- ``bit_depth_image``;
encoding <- ``compression`` (bslz4 -> bslz4, none -> raw); start_time <-
``data_collection_date``; detector <- table ``V1_DETECTOR``. With ``none`` there is no
configuration: frame_count 0, shape, dtype, encoding None (the first frame tells),
detector {"vendor": "DECTRIS"}, start_time the time of decoding.

v1 ``dimage-1.0`` -> DataMessage: series_id <- ``series``; frame_number <- ``frame``;
shape <- ``dimage_d.shape`` reversed (DECTRIS writes [x, y], photonflow [rows, columns]);
dtype <- ``type``; encoding <- ``encoding`` ("<" -> raw, "bs16-lz4<" etc. -> bslz4); the
blob must have ``size`` bytes. ``hash`` is not verified. ``dconfig`` times are relative to
the detector's clock, so timestamp is the time of decoding.

v1 ``dseries_end-1.0`` -> SeriesEnd as for v2.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import math
import re
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np

from photonflow.errors import StreamMessageError
from photonflow.stream import bslz4
from photonflow.stream.cbor import (
    DATE_TIME,
    MULTI_DIMENSIONAL_ARRAY,
    SELF_DESCRIBED_CBOR,
    TYPED_ARRAY_DTYPES,
    TYPED_ARRAY_TAGS,
    Tag,
    cbor_dumps,
    cbor_loads,
    show,
    typed_array_name,
)
from photonflow.stream.stins import (
    BSLZ4,
    PIXEL_TYPES,
    RAW,
    UNKNOWN,
    DataMessage,
    SeriesEnd,
    SeriesStart,
    StinsMessage,
    check_frame_payload,
    frame_payload,
    utc_now_iso,
)

VENDOR = "DECTRIS"
DEFAULT_CHANNEL = "threshold_1"
_DECTRIS_COMPRESSION = 56500  # DECTRIS' tag of a compressed typed array: ["bslz4", element size, chunk]


def _fail(message: str) -> None:
    raise StreamMessageError(message)


def _refusing_anything_else(protocol: str) -> Callable:
    """Whatever goes wrong decoding a message becomes a StreamMessageError, never another type.

    Every check above raises its own precise reason; this is the net under them.
    """

    def wrap(decode: Callable[[Sequence[Any]], StinsMessage]) -> Callable[[Sequence[Any]], StinsMessage]:
        @functools.wraps(decode)
        def guarded(parts: Sequence[Any]) -> StinsMessage:
            try:
                return decode(parts)
            except StreamMessageError:
                raise
            except Exception as error:
                raise StreamMessageError(
                    f"{protocol} message could not be decoded: {type(error).__name__}: {error}"
                ) from None

        return guarded

    return wrap


def _as_bytes(part: Any) -> memoryview:
    """A flat byte view of one ZeroMQ part (zmq.Frame or bytes-like), without copying."""
    view = part.buffer if hasattr(part, "buffer") else memoryview(part)
    return view.cast("B") if view.format != "B" or view.ndim != 1 else view


# ---------------------------------------------------------------------------------------------
# Field access shared by both versions: every refusal names the message and the key.

_KINDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "unsigned": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "an unsigned integer"),
    "number": (
        lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v),
        "a finite number",
    ),
    "text": (lambda v: isinstance(v, str), "a text string"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
}


def _field(message: dict, key: str, kind: str, where: str, required: bool = True) -> Any:
    """``message[key]`` checked to be of ``kind``; None if absent and not required.

    Tags around a scalar are looked through, as DECTRIS' reference parser does.
    """
    if key not in message:
        if required:
            _fail(f"{where} lacks '{key}'")
        return None
    value = message[key]
    while isinstance(value, Tag):
        value = value.value
    check, description = _KINDS[kind]
    if not check(value):
        _fail(f"{where}: '{key}' must be {description}, got {show(value)}")
    return value


def _date_time(message: dict, key: str, where: str) -> datetime | None:
    text = _field(message, key, "text", where, required=False)
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        _fail(f"{where}: '{key}' must be an RFC 3339 date-time, got {show(text)}")
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _map_detector(source: dict, table: Sequence[tuple[str, str, str, float | None]], where: str) -> dict[str, Any]:
    """The detector description, NXdetector names and SI units, from a DECTRIS message."""
    detector: dict[str, Any] = {"vendor": VENDOR}
    for dectris_key, key, kind, to_si in table:
        value = _field(source, dectris_key, kind, where, required=False)
        if value is not None and value != "":  # an empty text says nothing
            detector[key] = value * to_si if to_si else value
    return detector


def _plain(value: Any) -> Any:
    """A decoded value as plain data a file can keep: bytes as hex text, tags as their content."""
    if isinstance(value, memoryview):
        return value.hex()
    if isinstance(value, Tag):
        array = _typed_array(value)
        return array if array is not None else _plain(value.value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _keep_the_rest(detector: dict[str, Any], source: dict, consumed: set[str]) -> None:
    """Every field of the detector's header not mapped to a NeXus name is kept under its own."""
    for key, value in source.items():
        if key not in consumed and isinstance(key, str) and key not in detector:
            detector[key] = _plain(value)


def _unmap_detector(detector: dict[str, Any] | None, table: Sequence[tuple[str, str, str, float | None]]) -> dict:
    """The inverse of ``_map_detector``, for the encoders."""
    fields = {}
    for dectris_key, key, _kind, to_si in table:
        if detector and detector.get(key) is not None:
            fields[dectris_key] = detector[key] / to_si if to_si else detector[key]
    return fields


# ---------------------------------------------------------------------------------------------
# Stream v2 (CBOR)

# (DECTRIS start field, photonflow detector key, kind, factor to SI or None)
V2_DETECTOR: tuple[tuple[str, str, str, float | None], ...] = (
    ("detector_description", "description", "text", None),
    ("detector_serial_number", "serial_number", "text", None),
    ("count_time", "count_time", "number", None),
    ("frame_time", "frame_time", "number", None),
    ("pixel_size_x", "x_pixel_size", "number", None),
    ("pixel_size_y", "y_pixel_size", "number", None),
    ("sensor_material", "sensor_material", "text", None),
    ("sensor_thickness", "sensor_thickness", "number", None),
    ("beam_center_x", "beam_center_x", "number", None),
    ("beam_center_y", "beam_center_y", "number", None),
    ("saturation_value", "saturation_value", "unsigned", None),
    ("incident_energy", "incident_energy", "number", None),
    ("incident_wavelength", "incident_wavelength", "number", 1e-10),  # angstrom -> m
    ("countrate_correction_enabled", "countrate_correction_applied", "bool", None),
    ("flatfield_enabled", "flatfield_applied", "bool", None),
    ("pixel_mask_enabled", "pixel_mask_applied", "bool", None),
    ("virtual_pixel_interpolation_enabled", "virtual_pixel_interpolation_applied", "bool", None),
    ("series_unique_id", "series_unique_id", "text", None),
)
_TRANSLATION_KEYS = ("detector_translation_x", "detector_translation_y", "detector_translation_z")
_V2_TABLES = ("flatfield", "pixel_mask", "countrate_correction_lookup_table")
# Start fields read into the frame description or mapped above; every other one is kept as it came.
_V2_CONSUMED = {key for key, *_ in V2_DETECTOR} | {
    "type", "series_id", "channels", "image_size_x", "image_size_y", "image_dtype", "arm_date",
    "threshold_energy", "detector_translation", "goniometer", *_V2_TABLES,
}

_v2_message_ids = itertools.count()


def _v2_channel(message: dict, where: str) -> str | None:
    """The one channel of a v2 start message (None if it lists none); refuses several."""
    channels = message.get("channels")
    if channels is None:
        return None
    if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
        _fail(f"{where}: 'channels' must be an array of text strings, got {show(channels)}")
    if len(channels) > 1:
        _fail(
            f"{where}: {len(channels)} channels ({', '.join(channels)}); photonflow records one "
            "channel per series: enable a single threshold on the detector"
        )
    return channels[0] if channels else None


def _v2_start(message: dict) -> SeriesStart:
    where = "Dectris stream v2 start message"
    channel = _v2_channel(message, where)
    detector = _map_detector(message, V2_DETECTOR, where)
    thresholds = message.get("threshold_energy")
    if thresholds is not None:
        if not isinstance(thresholds, dict):
            _fail(f"{where}: 'threshold_energy' must be a map of channel to energy, got {show(thresholds)}")
        energy = thresholds.get(channel) if channel is not None else None
        if energy is None and len(thresholds) == 1:
            energy = next(iter(thresholds.values()))
        if energy is not None:
            if not _KINDS["number"][0](energy):
                _fail(f"{where}: 'threshold_energy' of {channel} must be a finite number, got {show(energy)}")
            detector["threshold_energy"] = energy
    translation = message.get("detector_translation")
    if translation is not None:
        if not (
            isinstance(translation, list)
            and len(translation) == 3
            and all(_KINDS["number"][0](v) for v in translation)
        ):
            _fail(f"{where}: 'detector_translation' must be 3 numbers (m), got {show(translation)}")
        detector.update(zip(_TRANSLATION_KEYS, translation, strict=True))
    width = _field(message, "image_size_x", "unsigned", where, required=False)
    height = _field(message, "image_size_y", "unsigned", where, required=False)
    if (width is None) != (height is None) or width == 0 or height == 0:
        _fail(f"{where}: 'image_size_x' and 'image_size_y' must both be positive, got {width}, {height}")
    dtype = _field(message, "image_dtype", "text", where, required=False)
    if dtype is not None and dtype not in PIXEL_TYPES:
        _fail(f"{where}: 'image_dtype' must be one of {', '.join(PIXEL_TYPES)}, got {dtype!r}")
    arm_date = _date_time(message, "arm_date", where)
    goniometer = message.get("goniometer")
    if isinstance(goniometer, dict):  # {axis: {"start": deg, "increment": deg}}
        for axis, motion in goniometer.items():
            for key, value in (motion.items() if isinstance(motion, dict) else ()):
                detector[f"{axis}_{key}"] = _plain(value)
    for key in _V2_TABLES:  # per channel: the one channel's table, else the whole map
        tables = message.get(key)
        if tables is not None:
            table = tables.get(channel, tables) if isinstance(tables, dict) else tables
            if isinstance(table, dict) and len(table) == 1:
                table = next(iter(table.values()))
            detector[key] = _plain(table)
    _keep_the_rest(detector, message, _V2_CONSUMED)
    return SeriesStart(
        message_id=next(_v2_message_ids),
        series_id=_field(message, "series_id", "unsigned", where),
        frame_count=_field(message, "number_of_images", "unsigned", where, required=False) or 0,
        shape=(height, width) if height is not None else None,
        dtype=dtype,
        encoding=None,
        detector=detector,
        start_time=arm_date.isoformat() if arm_date else utc_now_iso(),
    )


def _typed_array(value: Tag) -> np.ndarray | None:
    """An uncompressed 40([dimensions, typed array]) or bare typed array as numpy, else None."""
    dimensions = None
    if value.number == MULTI_DIMENSIONAL_ARRAY and isinstance(value.value, list) and len(value.value) == 2:
        dimensions, value = value.value
    if not isinstance(value, Tag) or value.number not in TYPED_ARRAY_DTYPES or not isinstance(value.value, memoryview):
        return None
    array = np.frombuffer(value.value, dtype=np.dtype(TYPED_ARRAY_DTYPES[value.number]).newbyteorder("<"))
    try:
        return array.reshape(dimensions).copy() if dimensions else array.copy()
    except (ValueError, TypeError):
        return None


def _v2_frame(array: Any, where: str) -> tuple[tuple[int, int], str, str, memoryview]:
    """(shape, dtype, encoding, payload) of one channel's 40([[h, w], typed array])."""
    if not isinstance(array, Tag) or array.number != MULTI_DIMENSIONAL_ARRAY:
        _fail(f"{where}: channel data must be a multi-dimensional array (tag 40), got {show(array)}")
    if not isinstance(array.value, list) or len(array.value) != 2:
        _fail(f"{where}: tag 40 must hold [dimensions, typed array], got {show(array.value)}")
    dimensions, typed = array.value
    if (
        not isinstance(dimensions, list)
        or len(dimensions) != 2
        or not all(_KINDS["unsigned"][0](n) and n > 0 for n in dimensions)
    ):
        _fail(f"{where}: image dimensions must be [height, width] of positive integers, got {show(dimensions)}")
    shape = (dimensions[0], dimensions[1])
    if not isinstance(typed, Tag):
        _fail(f"{where}: image pixels must be an RFC 8746 typed array, got {show(typed)}")
    dtype = TYPED_ARRAY_DTYPES.get(typed.number)
    if dtype is None:
        name = typed_array_name(typed.number) if 64 <= typed.number <= 87 else f"tag {typed.number}"
        _fail(f"{where}: pixels are {name}; photonflow takes {', '.join(PIXEL_TYPES)}, little-endian")
    content = typed.value
    if isinstance(content, memoryview):
        check_frame_payload(content, shape, dtype, RAW, where)
        return shape, dtype, RAW, content
    if not isinstance(content, Tag) or content.number != _DECTRIS_COMPRESSION:
        _fail(f"{where}: typed array must hold a byte string or a compressed one (tag 56500), got {show(content)}")
    compressed = content.value
    if not (
        isinstance(compressed, list)
        and len(compressed) == 3
        and isinstance(compressed[0], str)
        and _KINDS["unsigned"][0](compressed[1])
        and isinstance(compressed[2], memoryview)
    ):
        _fail(f"{where}: tag 56500 must hold [algorithm, element size, bytes], got {show(compressed)}")
    algorithm, element_size, payload = compressed
    if algorithm != "bslz4":
        _fail(
            f"{where}: frames compressed with {algorithm!r}; photonflow records bslz4 or uncompressed "
            "frames: set the detector's compression to bslz4"
        )
    if element_size != np.dtype(dtype).itemsize:
        _fail(f"{where}: bslz4 element size {element_size} does not match {dtype} pixels")
    try:
        bslz4.check_chunk(payload, shape, dtype)
    except StreamMessageError as error:
        _fail(f"{where}: {error}")
    return shape, dtype, BSLZ4, payload


def _rational_seconds(message: dict, key: str, where: str) -> float | None:
    value = message.get(key)
    if value is None:
        return None
    if not (
        isinstance(value, list)
        and len(value) == 2
        and all(_KINDS["unsigned"][0](n) for n in value)
        and value[1] > 0
    ):
        _fail(f"{where}: '{key}' must be [numerator, denominator > 0], got {show(value)}")
    return value[0] / value[1]


def _v2_image(message: dict) -> DataMessage:
    where = "Dectris stream v2 image message"
    image_id = _field(message, "image_id", "unsigned", where)
    where = f"Dectris stream v2 image {image_id}"
    data = message.get("data")
    if not isinstance(data, dict):
        _fail(f"{where}: 'data' must be a map of channel to image, got {show(data)}")
    if len(data) != 1:
        _fail(
            f"{where} carries {len(data)} channels ({', '.join(map(str, data))}); photonflow records "
            "one channel per series: enable a single threshold on the detector"
        )
    shape, dtype, encoding, payload = _v2_frame(next(iter(data.values())), where)
    series_date = _date_time(message, "series_date", where)
    start = _rational_seconds(message, "start_time", where)
    timestamp = series_date.timestamp() + start if series_date and start is not None else time.time()
    return DataMessage(
        message_id=next(_v2_message_ids),
        series_id=_field(message, "series_id", "unsigned", where),
        frame_number=image_id,
        shape=shape,
        dtype=dtype,
        encoding=encoding,
        timestamp=timestamp,
        payload=payload,
    )


def _v2_end(message: dict) -> SeriesEnd:
    return SeriesEnd(
        message_id=next(_v2_message_ids),
        series_id=_field(message, "series_id", "unsigned", "Dectris stream v2 end message"),
        frames_acquired=UNKNOWN,
        frames_sent=UNKNOWN,
        end_reason="completed",
        end_time=utc_now_iso(),
    )


_V2_HANDLERS: dict[str, Callable[[dict], StinsMessage]] = {
    "start": _v2_start,
    "image": _v2_image,
    "end": _v2_end,
}


@_refusing_anything_else("Dectris stream v2")
def decode_v2(parts: Sequence[Any]) -> StinsMessage:
    """Validate and decode one Dectris stream v2 message (one ZeroMQ part of CBOR)."""
    if len(parts) != 1:
        _fail(f"a Dectris stream v2 message is one ZeroMQ part, got {len(parts)}")
    message = cbor_loads(parts[0])
    if isinstance(message, Tag) and message.number == SELF_DESCRIBED_CBOR:
        message = message.value
    if not isinstance(message, dict):
        _fail(f"a Dectris stream v2 message is a CBOR map, got {show(message)}")
    kind = message.get("type")
    handler = _V2_HANDLERS.get(kind) if isinstance(kind, str) else None
    if handler is None:
        _fail(f"Dectris stream v2 'type' must be one of {', '.join(_V2_HANDLERS)}, got {show(kind)}")
    return handler(message)


def _v2_pixels(frame: Any, encoding: str, shape, dtype) -> tuple[Tag, tuple[int, int]]:
    payload, shape, dtype = frame_payload(frame, encoding, shape, dtype)
    if dtype not in TYPED_ARRAY_TAGS:
        raise ValueError(f"pixel type must be one of {', '.join(TYPED_ARRAY_TAGS)}, got {dtype}")
    if encoding == BSLZ4:
        payload = Tag(_DECTRIS_COMPRESSION, ["bslz4", np.dtype(dtype).itemsize, payload])
    return Tag(MULTI_DIMENSIONAL_ARRAY, [list(shape), Tag(TYPED_ARRAY_TAGS[dtype], payload)]), shape


def encode_start_v2(
    series_id: int,
    shape: Sequence[int] | None = None,
    frame_count: int = 0,
    detector: dict[str, Any] | None = None,
    arm_date: str | None = None,
    series_unique_id: str = "",
    channel: str = DEFAULT_CHANNEL,
    image_dtype: str | None = None,
    extra: dict[str, Any] | None = None,
) -> list[bytes]:
    """A v2 ``start`` message; ``detector`` in photonflow's names (see V2_DETECTOR).

    ``image_dtype`` is sent only when given: it is not in DECTRIS' published field table.
    ``extra``: more start fields in DECTRIS' names (goniometer, user_data...); numpy arrays
    among them go as typed arrays, per channel for the flatfield and pixel mask, as a DCU sends them.
    """
    message: dict[str, Any] = {
        "type": "start",
        "series_id": series_id,
        "series_unique_id": series_unique_id,
        "arm_date": Tag(DATE_TIME, arm_date or utc_now_iso()),
        "channels": [channel],
        "number_of_images": frame_count,
        **_unmap_detector(detector, V2_DETECTOR),
    }
    message["series_unique_id"] = series_unique_id or message.get("series_unique_id", "")
    if shape is not None:
        message["image_size_x"], message["image_size_y"] = int(shape[1]), int(shape[0])
    if image_dtype is not None:
        message["image_dtype"] = image_dtype
    if detector and detector.get("threshold_energy") is not None:
        message["threshold_energy"] = {channel: detector["threshold_energy"]}
    if detector and all(detector.get(key) is not None for key in _TRANSLATION_KEYS):
        message["detector_translation"] = [detector[key] for key in _TRANSLATION_KEYS]
    for key, value in (extra or {}).items():
        if isinstance(value, np.ndarray):
            typed = _v2_pixels(value, RAW, value.shape, value.dtype.name)[0] if value.ndim == 2 else Tag(
                TYPED_ARRAY_TAGS[value.dtype.name], value.astype(value.dtype.newbyteorder("<")).tobytes()
            )
            value = {channel: typed} if key in ("flatfield", "pixel_mask") else typed
        message[key] = value
    return [cbor_dumps(message)]


def encode_image_v2(
    series_id: int,
    image_id: int,
    frame: Any,
    encoding: str = BSLZ4,
    shape: Sequence[int] | None = None,
    dtype: str | None = None,
    channel: str = DEFAULT_CHANNEL,
    series_unique_id: str = "",
    series_date: str | None = None,
    start_time: tuple[int, int] | None = None,
    stop_time: tuple[int, int] | None = None,
    real_time: tuple[int, int] | None = None,
) -> list[bytes]:
    """A v2 ``image`` message: a numpy frame (compressed here for bslz4), or bytes already
    in ``encoding`` with ``shape`` and ``dtype``. Times are rationals [numerator, denominator]."""
    pixels, _ = _v2_pixels(frame, encoding, shape, dtype)
    message: dict[str, Any] = {
        "type": "image",
        "series_id": series_id,
        "series_unique_id": series_unique_id,
        "image_id": image_id,
        "data": {channel: pixels},
    }
    if series_date is not None:
        message["series_date"] = Tag(DATE_TIME, series_date)
    for key, value in (("start_time", start_time), ("stop_time", stop_time), ("real_time", real_time)):
        if value is not None:
            message[key] = list(value)
    return [cbor_dumps(message)]


def encode_end_v2(series_id: int, series_unique_id: str = "") -> list[bytes]:
    """A v2 ``end`` message."""
    return [cbor_dumps({"type": "end", "series_id": series_id, "series_unique_id": series_unique_id})]


# ---------------------------------------------------------------------------------------------
# Stream v1 (legacy JSON multi-part)

HEADER = "dheader-1.0"
IMAGE = "dimage-1.0"
IMAGE_DESCRIPTION = "dimage_d-1.0"
IMAGE_TIMES = "dconfig-1.0"
SERIES_END = "dseries_end-1.0"
# Parts of a dheader-1.0 message for each header_detail (a header appendix adds one).
HEADER_PARTS = {"none": 1, "basic": 2, "all": 8}
# With "all": (htype, name) of the (JSON description, data) pairs after the configuration.
_HEADER_TABLES = (
    ("dflatfield-1.0", "flatfield"),
    ("dpixelmask-1.0", "pixel mask"),
    ("dcountrate_table-1.0", "count-rate table"),
)
# Where NXdetector keeps each table (NeXus names).
_TABLE_KEYS = {
    "dflatfield-1.0": "flatfield", "dpixelmask-1.0": "pixel_mask",
    "dcountrate_table-1.0": "countrate_correction_lookup_table",
}
# Configuration keys that describe the frames themselves (they go to the frame description).
_V1_FRAME_KEYS = {"x_pixels_in_detector", "y_pixels_in_detector", "bit_depth_image", "compression",
                  "data_collection_date"}
_BIT_DEPTH_TYPES = {8: "uint8", 16: "uint16", 32: "uint32"}
_COMPRESSION_ENCODINGS = {"bslz4": BSLZ4, "none": RAW}
_ENCODING_PATTERN = re.compile(r"^(?:bs(?P<bits>\d+)-)?(?P<lz4>lz4)?(?P<order>[<>])$")

# (DECTRIS detector configuration key, photonflow detector key, kind, factor to SI or None)
V1_DETECTOR: tuple[tuple[str, str, str, float | None], ...] = (
    ("description", "description", "text", None),
    ("detector_number", "serial_number", "text", None),
    ("count_time", "count_time", "number", None),
    ("frame_time", "frame_time", "number", None),
    ("x_pixel_size", "x_pixel_size", "number", None),
    ("y_pixel_size", "y_pixel_size", "number", None),
    ("sensor_material", "sensor_material", "text", None),
    ("sensor_thickness", "sensor_thickness", "number", None),
    ("threshold_energy", "threshold_energy", "number", None),
    ("beam_center_x", "beam_center_x", "number", None),
    ("beam_center_y", "beam_center_y", "number", None),
    ("detector_distance", "distance", "number", None),
    ("detector_readout_time", "detector_readout_time", "number", None),
    ("bit_depth_readout", "bit_depth_readout", "unsigned", None),
    ("countrate_correction_count_cutoff", "saturation_value", "unsigned", None),
    ("trigger_mode", "trigger_mode", "text", None),
    ("photon_energy", "incident_energy", "number", None),
    ("wavelength", "incident_wavelength", "number", 1e-10),  # angstrom -> m
    ("countrate_correction_applied", "countrate_correction_applied", "bool", None),
    ("flatfield_correction_applied", "flatfield_applied", "bool", None),
    ("pixel_mask_applied", "pixel_mask_applied", "bool", None),
    ("virtual_pixel_correction_applied", "virtual_pixel_interpolation_applied", "bool", None),
    ("software_version", "software_version", "text", None),
)

_v1_message_ids = itertools.count()


def _json_object(part: Any, what: str) -> dict:
    try:
        value = json.loads(bytes(_as_bytes(part)))
    except ValueError as error:  # JSONDecodeError and UnicodeDecodeError both are
        _fail(f"{what} is not JSON: {error}")
    if not isinstance(value, dict):
        _fail(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


def _json_part(parts: Sequence[Any], index: int, htype: str, where: str) -> dict:
    """Part ``index``, a JSON object whose htype must be ``htype``."""
    part = _json_object(parts[index], f"{where}: part {index + 1}")
    if part.get("htype") != htype:
        _fail(f"{where}: part {index + 1} must have htype {htype!r}, got {show(part.get('htype'))}")
    return part


def _v1_pixel_type(description: dict, where: str) -> str:
    dtype = _field(description, "type", "text", where)
    if dtype not in PIXEL_TYPES:
        _fail(f"{where}: 'type' must be one of {', '.join(PIXEL_TYPES)}, got {dtype!r}")
    return dtype


def _v1_shape(description: dict, where: str) -> tuple[int, int]:
    """photonflow's (rows, columns) from DECTRIS' [x, y]."""
    shape = description.get("shape")
    if not isinstance(shape, list) or not all(_KINDS["unsigned"][0](n) and n > 0 for n in shape):
        _fail(f"{where}: 'shape' must be [x, y] of positive integers, got {show(shape)}")
    if len(shape) != 2:
        _fail(f"{where}: 'shape' {shape} is not [x, y]; photonflow records 2-D frames")
    return (shape[1], shape[0])


def _v1_check_table(parts: Sequence[Any], index: int, htype: str, name: str, where: str) -> np.ndarray:
    """One (JSON description, data) pair of a header_detail=all header: the sizes must agree.
    Returns the table as an array ([x, y] as DECTRIS gives it becomes (rows, columns))."""
    description = _json_part(parts, index, htype, where)
    table_where = f"{where}: {name}"
    shape = description.get("shape")
    if not isinstance(shape, list) or not shape or not all(_KINDS["unsigned"][0](n) for n in shape):
        _fail(f"{table_where}: 'shape' must be a list of sizes, got {show(shape)}")
    table_type = _field(description, "type", "text", table_where)
    if table_type not in PIXEL_TYPES:
        _fail(f"{table_where}: unknown 'type' {table_type!r}; expected one of {', '.join(PIXEL_TYPES)}")
    itemsize = np.dtype(table_type).itemsize
    expected = math.prod(shape) * itemsize
    data = _as_bytes(parts[index + 1])
    if data.nbytes != expected:
        _fail(f"{table_where} has {data.nbytes} bytes; {shape} of {description['type']} needs {expected}")
    return np.frombuffer(data, dtype=np.dtype(table_type).newbyteorder("<")).reshape(shape[::-1]).copy()


def _v1_header(header: dict, parts: Sequence[Any]) -> SeriesStart:
    where = "Dectris stream v1 dheader-1.0"
    series_id = _field(header, "series", "unsigned", where)
    detail = _field(header, "header_detail", "text", where)
    if detail not in HEADER_PARTS:
        _fail(f"{where}: 'header_detail' must be one of {', '.join(HEADER_PARTS)}, got {detail!r}")
    expected = HEADER_PARTS[detail]
    if len(parts) not in (expected, expected + 1):
        _fail(
            f"{where} with header_detail {detail!r} has {expected} part(s) "
            f"({expected + 1} with a header appendix), got {len(parts)}"
        )
    start = dict(
        message_id=next(_v1_message_ids), series_id=series_id, frame_count=0, shape=None, dtype=None,
        encoding=None, detector={"vendor": VENDOR}, start_time=utc_now_iso(),
    )
    if detail == "none":
        return SeriesStart(**start)
    config = _json_object(parts[1], f"{where}: the detector configuration (part 2)")
    config_where = f"{where} detector configuration"
    start["detector"] = _map_detector(config, V1_DETECTOR, config_where)
    for offset, (htype, name) in enumerate(_HEADER_TABLES if detail == "all" else ()):
        start["detector"][_TABLE_KEYS[htype]] = _v1_check_table(parts, 2 + 2 * offset, htype, name, where)
    if len(parts) == expected + 1:  # the header appendix: the beamline's own, kept as it came
        start["detector"]["header_appendix"] = bytes(_as_bytes(parts[-1])).decode("utf-8", "replace")
    _keep_the_rest(start["detector"], config, {key for key, *_ in V1_DETECTOR} | _V1_FRAME_KEYS)
    width = _field(config, "x_pixels_in_detector", "unsigned", config_where, required=False)
    height = _field(config, "y_pixels_in_detector", "unsigned", config_where, required=False)
    if (width is None) != (height is None) or width == 0 or height == 0:
        _fail(f"{config_where}: x_ and y_pixels_in_detector must both be positive, got {width}, {height}")
    start["shape"] = (height, width) if height is not None else None
    depth = _field(config, "bit_depth_image", "unsigned", config_where, required=False)
    if depth is not None:
        if depth not in _BIT_DEPTH_TYPES:
            _fail(f"{config_where}: 'bit_depth_image' must be 8, 16 or 32, got {depth}")
        start["dtype"] = _BIT_DEPTH_TYPES[depth]
    compression = _field(config, "compression", "text", config_where, required=False)
    if compression is not None:
        if compression not in _COMPRESSION_ENCODINGS:
            _fail(
                f"{config_where}: the detector compresses with {compression!r}; photonflow records bslz4 "
                "or uncompressed frames: set the detector's compression to bslz4"
            )
        start["encoding"] = _COMPRESSION_ENCODINGS[compression]
    images = _field(config, "nimages", "unsigned", config_where, required=False)
    triggers = _field(config, "ntrigger", "unsigned", config_where, required=False)
    start["frame_count"] = (images or 0) * (1 if triggers is None else triggers)
    collection_date = _date_time(config, "data_collection_date", config_where)
    if collection_date is not None:
        start["start_time"] = collection_date.isoformat()
    return SeriesStart(**start)


def _v1_encoding(description: dict, dtype: str, where: str) -> str:
    encoding = _field(description, "encoding", "text", where)
    match = _ENCODING_PATTERN.match(encoding)
    if match is None or (match["bits"] and not match["lz4"]):
        _fail(f"{where}: unknown encoding {encoding!r} (expected '<' or 'bs<bits>-lz4<')")
    if match["order"] == ">":
        _fail(f"{where}: encoding {encoding!r} is big-endian; photonflow takes little-endian pixels")
    if match["lz4"] and not match["bits"]:
        _fail(
            f"{where}: frames compressed with lz4 ({encoding!r}); photonflow records bslz4 or "
            "uncompressed frames: set the detector's compression to bslz4"
        )
    if match["bits"] and int(match["bits"]) != 8 * np.dtype(dtype).itemsize:
        _fail(f"{where}: encoding {encoding!r} does not match {dtype} pixels")
    return BSLZ4 if match["bits"] else RAW


def _v1_image(header: dict, parts: Sequence[Any]) -> DataMessage:
    where = "Dectris stream v1 dimage-1.0"
    frame_number = _field(header, "frame", "unsigned", where)
    where = f"Dectris stream v1 image {frame_number}"
    if len(parts) not in (4, 5):
        _fail(
            f"{where} has 4 parts (dimage, dimage_d, data, dconfig; 5 with an image appendix), "
            f"got {len(parts)}"
        )
    series_id = _field(header, "series", "unsigned", where)
    _field(header, "hash", "text", where, required=False)
    description = _json_part(parts, 1, IMAGE_DESCRIPTION, where)
    shape = _v1_shape(description, where)
    dtype = _v1_pixel_type(description, where)
    encoding = _v1_encoding(description, dtype, where)
    payload = _as_bytes(parts[2])
    size = _field(description, "size", "unsigned", where)
    if payload.nbytes != size:
        _fail(f"{where}: data part has {payload.nbytes} bytes, dimage_d 'size' says {size}")
    check_frame_payload(payload, shape, dtype, encoding, where)
    times = _json_part(parts, 3, IMAGE_TIMES, where)
    for key in ("start_time", "stop_time", "real_time"):
        _field(times, key, "number", f"{where} dconfig-1.0")
    return DataMessage(
        message_id=next(_v1_message_ids),
        series_id=series_id,
        frame_number=frame_number,
        shape=shape,
        dtype=dtype,
        encoding=encoding,
        timestamp=time.time(),
        payload=payload,
    )


def _v1_end(header: dict, parts: Sequence[Any]) -> SeriesEnd:
    where = "Dectris stream v1 dseries_end-1.0"
    if len(parts) != 1:
        _fail(f"{where} has 1 part, got {len(parts)}")
    return SeriesEnd(
        message_id=next(_v1_message_ids),
        series_id=_field(header, "series", "unsigned", where),
        frames_acquired=UNKNOWN,
        frames_sent=UNKNOWN,
        end_reason="completed",
        end_time=utc_now_iso(),
    )


_V1_HANDLERS: dict[str, Callable[[dict, Sequence[Any]], StinsMessage]] = {
    HEADER: _v1_header,
    IMAGE: _v1_image,
    SERIES_END: _v1_end,
}


@_refusing_anything_else("Dectris stream v1")
def decode_v1(parts: Sequence[Any]) -> StinsMessage:
    """Validate and decode one Dectris stream v1 message (its ZeroMQ parts)."""
    if not parts:
        _fail("empty message")
    header = _json_object(parts[0], "Dectris stream v1 message: part 1")
    htype = header.get("htype")
    handler = _V1_HANDLERS.get(htype) if isinstance(htype, str) else None
    if handler is None:
        _fail(f"Dectris stream v1 'htype' must be one of {', '.join(_V1_HANDLERS)}, got {show(htype)}")
    return handler(header, parts)


def _json(value: dict) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def encode_start_v1(
    series_id: int,
    shape: Sequence[int] | None = None,
    dtype: str | None = None,
    frame_count: int = 0,
    detector: dict[str, Any] | None = None,
    encoding: str = BSLZ4,
    header_detail: str = "basic",
    start_time: str | None = None,
    appendix: Any = None,
    extra: dict[str, Any] | None = None,
    tables: dict[str, np.ndarray] | None = None,
) -> list[bytes]:
    """A ``dheader-1.0`` message with the parts ``header_detail`` calls for.

    ``all`` sends a flatfield of ones, an empty pixel mask and a small count-rate table
    (placeholders of the right sizes, or ``tables`` by their NeXus names); ``appendix``
    (JSON-able) adds the last part; ``extra``: more configuration fields in DECTRIS' names.
    """
    if header_detail not in HEADER_PARTS:
        raise ValueError(f"header_detail must be one of {', '.join(HEADER_PARTS)}, got {header_detail!r}")
    parts = [_json({"htype": HEADER, "series": series_id, "header_detail": header_detail})]
    if header_detail != "none":
        config: dict[str, Any] = {
            **_unmap_detector(detector, V1_DETECTOR),
            "nimages": frame_count,
            "ntrigger": 1,
            "compression": {BSLZ4: "bslz4", RAW: "none"}[encoding],
            "data_collection_date": start_time or utc_now_iso(),
            **(extra or {}),
        }
        if shape is not None:
            config["x_pixels_in_detector"], config["y_pixels_in_detector"] = int(shape[1]), int(shape[0])
        if dtype is not None:
            config["bit_depth_image"] = 8 * np.dtype(dtype).itemsize
        parts.append(_json(config))
    if header_detail == "all":
        if shape is None:
            raise ValueError("header_detail 'all' needs the frame shape")
        x_y = [int(shape[1]), int(shape[0])]
        placeholders = (
            (np.ones(tuple(shape), np.float32), x_y),
            (np.zeros(tuple(shape), np.uint32), x_y),
            (np.zeros((2, 8), np.float32), [8, 2]),
        )
        for (htype, _name), (table, table_shape) in zip(_HEADER_TABLES, placeholders, strict=True):
            given = (tables or {}).get(_TABLE_KEYS[htype])
            if given is not None:
                table, table_shape = given, list(given.shape[::-1])
            parts += [_json({"htype": htype, "shape": table_shape, "type": table.dtype.name}), table.tobytes()]
    if appendix is not None:
        parts.append(_json(appendix) if isinstance(appendix, dict) else str(appendix).encode())
    return parts


def encode_image_v1(
    series_id: int,
    frame_number: int,
    frame: Any,
    encoding: str = BSLZ4,
    shape: Sequence[int] | None = None,
    dtype: str | None = None,
    start_time: int = 0,
    stop_time: int = 0,
    real_time: int = 0,
    appendix: Any = None,
) -> list:
    """A ``dimage-1.0`` message: a numpy frame (compressed here for bslz4), or bytes already
    in ``encoding`` with ``shape`` and ``dtype``. Times in nanoseconds, as the DCU sends them."""
    payload, shape, dtype = frame_payload(frame, encoding, shape, dtype)
    data = _as_bytes(payload)
    bits = 8 * np.dtype(dtype).itemsize
    parts = [
        _json({"htype": IMAGE, "series": series_id, "frame": frame_number, "hash": hashlib.md5(data).hexdigest()}),
        _json({
            "htype": IMAGE_DESCRIPTION,
            "shape": [shape[1], shape[0]],
            "type": dtype,
            "encoding": f"bs{bits}-lz4<" if encoding == BSLZ4 else "<",
            "size": data.nbytes,
        }),
        payload,
        _json({"htype": IMAGE_TIMES, "start_time": start_time, "stop_time": stop_time, "real_time": real_time}),
    ]
    if appendix is not None:
        parts.append(_json(appendix) if isinstance(appendix, dict) else str(appendix).encode())
    return parts


def encode_end_v1(series_id: int) -> list[bytes]:
    """A ``dseries_end-1.0`` message."""
    return [_json({"htype": SERIES_END, "series": series_id})]
