"""DECTRIS stream v2 (CBOR, one ZeroMQ part per message): decoder and encoders (see ``dectris``)."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
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
from photonflow.stream.dectris_fields import (
    DECTRIS_COMPRESSION,
    DEFAULT_CHANNEL,
    KINDS,
    checked_field,
    date_time,
    fail,
    keep_the_rest,
    map_detector,
    plain,
    refusing_anything_else,
    unmap_detector,
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
        fail(f"{where}: 'channels' must be an array of text strings, got {show(channels)}")
    if len(channels) > 1:
        fail(
            f"{where}: {len(channels)} channels ({', '.join(channels)}); photonflow records one "
            "channel per series: enable a single threshold on the detector"
        )
    return channels[0] if channels else None


def _v2_threshold_energy(message: dict, channel: str | None, where: str) -> float | None:
    """The recorded channel's counting threshold (eV), or the only one; None when not sent."""
    thresholds = message.get("threshold_energy")
    if thresholds is None:
        return None
    if not isinstance(thresholds, dict):
        fail(f"{where}: 'threshold_energy' must be a map of channel to energy, got {show(thresholds)}")
    energy = thresholds.get(channel) if channel is not None else None
    if energy is None and len(thresholds) == 1:
        energy = next(iter(thresholds.values()))
    if energy is not None and not KINDS["number"][0](energy):
        fail(f"{where}: 'threshold_energy' of {channel} must be a finite number, got {show(energy)}")
    return energy


def _v2_start(message: dict) -> SeriesStart:
    where = "Dectris stream v2 start message"
    channel = _v2_channel(message, where)
    detector = map_detector(message, V2_DETECTOR, where)
    energy = _v2_threshold_energy(message, channel, where)
    if energy is not None:
        detector["threshold_energy"] = energy
    translation = message.get("detector_translation")
    if translation is not None:
        if not (
            isinstance(translation, list)
            and len(translation) == 3
            and all(KINDS["number"][0](v) for v in translation)
        ):
            fail(f"{where}: 'detector_translation' must be 3 numbers (m), got {show(translation)}")
        detector.update(zip(_TRANSLATION_KEYS, translation, strict=True))
    width = checked_field(message, "image_size_x", "unsigned", where, required=False)
    height = checked_field(message, "image_size_y", "unsigned", where, required=False)
    if (width is None) != (height is None) or width == 0 or height == 0:
        fail(f"{where}: 'image_size_x' and 'image_size_y' must both be positive, got {width}, {height}")
    dtype = checked_field(message, "image_dtype", "text", where, required=False)
    if dtype is not None and dtype not in PIXEL_TYPES:
        fail(f"{where}: 'image_dtype' must be one of {', '.join(PIXEL_TYPES)}, got {dtype!r}")
    if dtype is not None:  # v2 has no bit depth field: the images' depth is their pixel type's
        detector["bit_depth_image"] = 8 * np.dtype(dtype).itemsize
    arm_date = date_time(message, "arm_date", where)
    goniometer = message.get("goniometer")
    if isinstance(goniometer, dict):  # {axis: {"start": deg, "increment": deg}}
        for axis, motion in goniometer.items():
            for key, value in (motion.items() if isinstance(motion, dict) else ()):
                detector[f"{axis}_{key}"] = plain(value)
    for key in _V2_TABLES:  # per channel: the one channel's table, else the whole map
        tables = message.get(key)
        if tables is not None:
            table = tables.get(channel, tables) if isinstance(tables, dict) else tables
            if isinstance(table, dict) and len(table) == 1:
                table = next(iter(table.values()))
            detector[key] = plain(table)
    keep_the_rest(detector, message, _V2_CONSUMED)
    return SeriesStart(
        message_id=next(_v2_message_ids),
        series_id=checked_field(message, "series_id", "unsigned", where),
        frame_count=checked_field(message, "number_of_images", "unsigned", where, required=False) or 0,
        shape=(height, width) if height is not None else None,
        dtype=dtype,
        encoding=None,
        detector=detector,
        start_time=arm_date.isoformat() if arm_date else utc_now_iso(),
    )




def _v2_frame(array: Any, where: str) -> tuple[tuple[int, int], str, str, memoryview]:
    """(shape, dtype, encoding, payload) of one channel's 40([[h, w], typed array])."""
    if not isinstance(array, Tag) or array.number != MULTI_DIMENSIONAL_ARRAY:
        fail(f"{where}: channel data must be a multi-dimensional array (tag 40), got {show(array)}")
    if not isinstance(array.value, list) or len(array.value) != 2:
        fail(f"{where}: tag 40 must hold [dimensions, typed array], got {show(array.value)}")
    dimensions, typed = array.value
    if (
        not isinstance(dimensions, list)
        or len(dimensions) != 2
        or not all(KINDS["unsigned"][0](n) and n > 0 for n in dimensions)
    ):
        fail(f"{where}: image dimensions must be [height, width] of positive integers, got {show(dimensions)}")
    shape = (dimensions[0], dimensions[1])
    if not isinstance(typed, Tag):
        fail(f"{where}: image pixels must be an RFC 8746 typed array, got {show(typed)}")
    dtype = TYPED_ARRAY_DTYPES.get(typed.number)
    if dtype is None:
        name = typed_array_name(typed.number) if 64 <= typed.number <= 87 else f"tag {typed.number}"
        fail(f"{where}: pixels are {name}; photonflow takes {', '.join(PIXEL_TYPES)}, little-endian")
    content = typed.value
    if isinstance(content, memoryview):
        check_frame_payload(content, shape, dtype, RAW, where)
        return shape, dtype, RAW, content
    if not isinstance(content, Tag) or content.number != DECTRIS_COMPRESSION:
        fail(f"{where}: typed array must hold a byte string or a compressed one (tag 56500), got {show(content)}")
    compressed = content.value
    if not (
        isinstance(compressed, list)
        and len(compressed) == 3
        and isinstance(compressed[0], str)
        and KINDS["unsigned"][0](compressed[1])
        and isinstance(compressed[2], memoryview)
    ):
        fail(f"{where}: tag 56500 must hold [algorithm, element size, bytes], got {show(compressed)}")
    algorithm, element_size, payload = compressed
    if algorithm != "bslz4":
        fail(
            f"{where}: frames compressed with {algorithm!r}; photonflow records bslz4 or uncompressed "
            "frames: set the detector's compression to bslz4"
        )
    if element_size != np.dtype(dtype).itemsize:
        fail(f"{where}: bslz4 element size {element_size} does not match {dtype} pixels")
    try:
        bslz4.check_chunk(payload, shape, dtype)
    except StreamMessageError as error:
        fail(f"{where}: {error}")
    return shape, dtype, BSLZ4, payload


def _rational_seconds(message: dict, key: str, where: str) -> float | None:
    value = message.get(key)
    if value is None:
        return None
    if not (
        isinstance(value, list)
        and len(value) == 2
        and all(KINDS["unsigned"][0](n) for n in value)
        and value[1] > 0
    ):
        fail(f"{where}: '{key}' must be [numerator, denominator > 0], got {show(value)}")
    return value[0] / value[1]


def _v2_image(message: dict) -> DataMessage:
    where = "Dectris stream v2 image message"
    image_id = checked_field(message, "image_id", "unsigned", where)
    where = f"Dectris stream v2 image {image_id}"
    data = message.get("data")
    if not isinstance(data, dict):
        fail(f"{where}: 'data' must be a map of channel to image, got {show(data)}")
    if len(data) != 1:
        fail(
            f"{where} carries {len(data)} channels ({', '.join(map(str, data))}); photonflow records "
            "one channel per series: enable a single threshold on the detector"
        )
    shape, dtype, encoding, payload = _v2_frame(next(iter(data.values())), where)
    series_date = date_time(message, "series_date", where)
    start = _rational_seconds(message, "start_time", where)
    timestamp = series_date.timestamp() + start if series_date and start is not None else time.time()
    return DataMessage(
        message_id=next(_v2_message_ids),
        series_id=checked_field(message, "series_id", "unsigned", where),
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
        series_id=checked_field(message, "series_id", "unsigned", "Dectris stream v2 end message"),
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


@refusing_anything_else("Dectris stream v2")
def decode_v2(parts: Sequence[Any]) -> StinsMessage:
    """Validate and decode one Dectris stream v2 message (one ZeroMQ part of CBOR)."""
    if len(parts) != 1:
        fail(f"a Dectris stream v2 message is one ZeroMQ part, got {len(parts)}")
    message = cbor_loads(parts[0])
    if isinstance(message, Tag) and message.number == SELF_DESCRIBED_CBOR:
        message = message.value
    if not isinstance(message, dict):
        fail(f"a Dectris stream v2 message is a CBOR map, got {show(message)}")
    kind = message.get("type")
    handler = _V2_HANDLERS.get(kind) if isinstance(kind, str) else None
    if handler is None:
        fail(f"Dectris stream v2 'type' must be one of {', '.join(_V2_HANDLERS)}, got {show(kind)}")
    return handler(message)


def _v2_pixels(frame: Any, encoding: str, shape, dtype) -> tuple[Tag, tuple[int, int]]:
    payload, shape, dtype = frame_payload(frame, encoding, shape, dtype)
    if dtype not in TYPED_ARRAY_TAGS:
        raise ValueError(f"pixel type must be one of {', '.join(TYPED_ARRAY_TAGS)}, got {dtype}")
    if encoding == BSLZ4:
        payload = Tag(DECTRIS_COMPRESSION, ["bslz4", np.dtype(dtype).itemsize, payload])
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
        **unmap_detector(detector, V2_DETECTOR),
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
