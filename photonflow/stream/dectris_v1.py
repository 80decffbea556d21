"""DECTRIS stream v1 (legacy JSON multi-part): decoder and encoders (see ``dectris``)."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from photonflow.stream.buffers import as_bytes
from photonflow.stream.cbor import (
    show,
)
from photonflow.stream.dectris_fields import (
    KINDS,
    VENDOR,
    checked_field,
    date_time,
    fail,
    keep_the_rest,
    map_detector,
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
        value = json.loads(bytes(as_bytes(part)))
    except ValueError as error:  # JSONDecodeError and UnicodeDecodeError both are
        fail(f"{what} is not JSON: {error}")
    if not isinstance(value, dict):
        fail(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


def _json_part(parts: Sequence[Any], index: int, htype: str, where: str) -> dict:
    """Part ``index``, a JSON object whose htype must be ``htype``."""
    part = _json_object(parts[index], f"{where}: part {index + 1}")
    if part.get("htype") != htype:
        fail(f"{where}: part {index + 1} must have htype {htype!r}, got {show(part.get('htype'))}")
    return part


def _v1_pixel_type(description: dict, where: str) -> str:
    dtype = checked_field(description, "type", "text", where)
    if dtype not in PIXEL_TYPES:
        fail(f"{where}: 'type' must be one of {', '.join(PIXEL_TYPES)}, got {dtype!r}")
    return dtype


def _v1_shape(description: dict, where: str) -> tuple[int, int]:
    """photonflow's (rows, columns) from DECTRIS' [x, y]."""
    shape = description.get("shape")
    if not isinstance(shape, list) or not all(KINDS["unsigned"][0](n) and n > 0 for n in shape):
        fail(f"{where}: 'shape' must be [x, y] of positive integers, got {show(shape)}")
    if len(shape) != 2:
        fail(f"{where}: 'shape' {shape} is not [x, y]; photonflow records 2-D frames")
    return (shape[1], shape[0])


def _v1_check_table(parts: Sequence[Any], index: int, htype: str, name: str, where: str) -> np.ndarray:
    """One (JSON description, data) pair of a header_detail=all header: the sizes must agree.
    Returns the table as an array ([x, y] as DECTRIS gives it becomes (rows, columns))."""
    description = _json_part(parts, index, htype, where)
    table_where = f"{where}: {name}"
    shape = description.get("shape")
    if not isinstance(shape, list) or not shape or not all(KINDS["unsigned"][0](n) for n in shape):
        fail(f"{table_where}: 'shape' must be a list of sizes, got {show(shape)}")
    table_type = checked_field(description, "type", "text", table_where)
    if table_type not in PIXEL_TYPES:
        fail(f"{table_where}: unknown 'type' {table_type!r}; expected one of {', '.join(PIXEL_TYPES)}")
    itemsize = np.dtype(table_type).itemsize
    expected = math.prod(shape) * itemsize
    data = as_bytes(parts[index + 1])
    if data.nbytes != expected:
        fail(f"{table_where} has {data.nbytes} bytes; {shape} of {description['type']} needs {expected}")
    return np.frombuffer(data, dtype=np.dtype(table_type).newbyteorder("<")).reshape(shape[::-1]).copy()


def _v1_header(header: dict, parts: Sequence[Any]) -> SeriesStart:
    where = "Dectris stream v1 dheader-1.0"
    series_id = checked_field(header, "series", "unsigned", where)
    detail = checked_field(header, "header_detail", "text", where)
    if detail not in HEADER_PARTS:
        fail(f"{where}: 'header_detail' must be one of {', '.join(HEADER_PARTS)}, got {detail!r}")
    expected = HEADER_PARTS[detail]
    if len(parts) not in (expected, expected + 1):
        fail(
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
    start["detector"] = map_detector(config, V1_DETECTOR, config_where)
    for offset, (htype, name) in enumerate(_HEADER_TABLES if detail == "all" else ()):
        start["detector"][_TABLE_KEYS[htype]] = _v1_check_table(parts, 2 + 2 * offset, htype, name, where)
    if len(parts) == expected + 1:  # the header appendix: the beamline's own, kept as it came
        start["detector"]["header_appendix"] = bytes(as_bytes(parts[-1])).decode("utf-8", "replace")
    keep_the_rest(start["detector"], config, {key for key, *_ in V1_DETECTOR} | _V1_FRAME_KEYS)
    width = checked_field(config, "x_pixels_in_detector", "unsigned", config_where, required=False)
    height = checked_field(config, "y_pixels_in_detector", "unsigned", config_where, required=False)
    if (width is None) != (height is None) or width == 0 or height == 0:
        fail(f"{config_where}: x_ and y_pixels_in_detector must both be positive, got {width}, {height}")
    start["shape"] = (height, width) if height is not None else None
    depth = checked_field(config, "bit_depth_image", "unsigned", config_where, required=False)
    if depth is not None:
        if depth not in _BIT_DEPTH_TYPES:
            fail(f"{config_where}: 'bit_depth_image' must be 8, 16 or 32, got {depth}")
        start["dtype"] = _BIT_DEPTH_TYPES[depth]
        start["detector"]["bit_depth_image"] = depth  # the images' depth, beside the electronics' (bit_depth_readout)
    compression = checked_field(config, "compression", "text", config_where, required=False)
    if compression is not None:
        if compression not in _COMPRESSION_ENCODINGS:
            fail(
                f"{config_where}: the detector compresses with {compression!r}; photonflow records bslz4 "
                "or uncompressed frames: set the detector's compression to bslz4"
            )
        start["encoding"] = _COMPRESSION_ENCODINGS[compression]
    images = checked_field(config, "nimages", "unsigned", config_where, required=False)
    triggers = checked_field(config, "ntrigger", "unsigned", config_where, required=False)
    start["frame_count"] = (images or 0) * (1 if triggers is None else triggers)
    collection_date = date_time(config, "data_collection_date", config_where)
    if collection_date is not None:
        start["start_time"] = collection_date.isoformat()
    return SeriesStart(**start)


def _v1_encoding(description: dict, dtype: str, where: str) -> str:
    encoding = checked_field(description, "encoding", "text", where)
    match = _ENCODING_PATTERN.match(encoding)
    if match is None or (match["bits"] and not match["lz4"]):
        fail(f"{where}: unknown encoding {encoding!r} (expected '<' or 'bs<bits>-lz4<')")
    if match["order"] == ">":
        fail(f"{where}: encoding {encoding!r} is big-endian; photonflow takes little-endian pixels")
    if match["lz4"] and not match["bits"]:
        fail(
            f"{where}: frames compressed with lz4 ({encoding!r}); photonflow records bslz4 or "
            "uncompressed frames: set the detector's compression to bslz4"
        )
    if match["bits"] and int(match["bits"]) != 8 * np.dtype(dtype).itemsize:
        fail(f"{where}: encoding {encoding!r} does not match {dtype} pixels")
    return BSLZ4 if match["bits"] else RAW


def _v1_image(header: dict, parts: Sequence[Any]) -> DataMessage:
    where = "Dectris stream v1 dimage-1.0"
    frame_number = checked_field(header, "frame", "unsigned", where)
    where = f"Dectris stream v1 image {frame_number}"
    if len(parts) not in (4, 5):
        fail(
            f"{where} has 4 parts (dimage, dimage_d, data, dconfig; 5 with an image appendix), "
            f"got {len(parts)}"
        )
    series_id = checked_field(header, "series", "unsigned", where)
    checked_field(header, "hash", "text", where, required=False)
    description = _json_part(parts, 1, IMAGE_DESCRIPTION, where)
    shape = _v1_shape(description, where)
    dtype = _v1_pixel_type(description, where)
    encoding = _v1_encoding(description, dtype, where)
    payload = as_bytes(parts[2])
    size = checked_field(description, "size", "unsigned", where)
    if payload.nbytes != size:
        fail(f"{where}: data part has {payload.nbytes} bytes, dimage_d 'size' says {size}")
    check_frame_payload(payload, shape, dtype, encoding, where)
    times = _json_part(parts, 3, IMAGE_TIMES, where)
    for key in ("start_time", "stop_time", "real_time"):
        checked_field(times, key, "number", f"{where} dconfig-1.0")
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
        fail(f"{where} has 1 part, got {len(parts)}")
    return SeriesEnd(
        message_id=next(_v1_message_ids),
        series_id=checked_field(header, "series", "unsigned", where),
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


@refusing_anything_else("Dectris stream v1")
def decode_v1(parts: Sequence[Any]) -> StinsMessage:
    """Validate and decode one Dectris stream v1 message (its ZeroMQ parts)."""
    if not parts:
        fail("empty message")
    header = _json_object(parts[0], "Dectris stream v1 message: part 1")
    htype = header.get("htype")
    handler = _V1_HANDLERS.get(htype) if isinstance(htype, str) else None
    if handler is None:
        fail(f"Dectris stream v1 'htype' must be one of {', '.join(_V1_HANDLERS)}, got {show(htype)}")
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
            **unmap_detector(detector, V1_DETECTOR),
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
    data = as_bytes(payload)
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
