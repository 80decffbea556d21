"""What a detector's own header tells an NXmx beyond NXdetector's plain fields: the ``user_data`` a
beamline gave the detector's stream (DECTRIS stream v2 ``user_data``, v1's header appendix: both
SIMPLON's ``stream/config/header_appendix``), the goniometer angles the mapping does not name, and
the bit depth of the stored images.

Why: the header is the detector's record of the experiment. A value it carries reaches the file
as a field with its unit and its source, never only as text; a value it garbles (user_data that
is not JSON, a unit cell of five numbers) is a capture problem named in the file, never a crash.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np

from photonflow.standardizing.recorded import RecordedSeries

USER_DATA_NAMES = ("user_data", "header_appendix")  # stream v2, stream v1 (the same SIMPLON setting)
SAMPLE_NAME_KEYS = ("sample_name", "sample")
GONIOMETER_AXES = ("omega", "chi", "phi", "kappa", "two_theta")  # DECTRIS' and miniCBF's <axis>_start/_increment
AXIS_VECTOR_SUFFIX = "_axis"  # user_data "<axis>_axis": [x, y, z], the axis' direction (NeXus coordinates)


@dataclass(frozen=True)
class UserData:
    """The known keys of a detector's user_data, checked; the rest as it came."""

    source: str  # where it was in the Recorder's file: "detector header: user_data"
    sample_name: str | None = None
    space_group: str | None = None
    unit_cell: tuple[float, ...] | None = None  # a, b, c (Å), alpha, beta, gamma (deg)
    axis_vectors: dict[str, tuple[float, float, float]] = field(default_factory=dict)  # axis -> direction
    others: dict[str, object] = field(default_factory=dict)
    problems: tuple[str, ...] = ()


def read_user_data(recorded: RecordedSeries) -> UserData | None:
    """The detector's user_data as the Recorder kept it (JSON text), parsed; None when it sent none.
    Malformed data gives a UserData with only its problems."""
    name = next((name for name in USER_DATA_NAMES if str(recorded.value(name, "") or "").strip()), None)
    if name is None:
        return None
    source, raw = recorded.origin(name), recorded.value(name)
    try:
        parsed = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError as error:
        return UserData(source, problems=(f"detector/{name}: not JSON ({error}); kept as the detector sent it in "
                                          "the Recorder's file, nothing taken from it",))
    if not isinstance(parsed, dict):
        return UserData(source, problems=(f"detector/{name}: a JSON {type(parsed).__name__}, not an object of "
                                          "named values; kept in the Recorder's file, nothing taken from it",))
    problems: list[str] = []
    known: dict[str, object] = {}
    others: dict[str, object] = {}
    vectors: dict[str, tuple[float, float, float]] = {}
    for key, value in parsed.items():
        key = str(key)
        if key in SAMPLE_NAME_KEYS or key == "space_group":
            if isinstance(value, str) and value.strip():
                known["space_group" if key == "space_group" else "sample_name"] = value.strip()
            else:
                problems.append(f"detector/{name}: '{key}' must be a text, got {value!r}")
        elif key == "unit_cell":
            if _numbers(value, 6) and all(number > 0 for number in value):
                known["unit_cell"] = tuple(float(number) for number in value)
            else:
                problems.append(f"detector/{name}: 'unit_cell' must be 6 positive numbers (a, b, c in Å; alpha, "
                                f"beta, gamma in deg), got {value!r}")
        elif key.endswith(AXIS_VECTOR_SUFFIX) and key[: -len(AXIS_VECTOR_SUFFIX)] in GONIOMETER_AXES:
            if _numbers(value, 3) and any(value):
                vectors[key[: -len(AXIS_VECTOR_SUFFIX)]] = (float(value[0]), float(value[1]), float(value[2]))
            else:
                problems.append(f"detector/{name}: '{key}' must be a direction of 3 numbers, got {value!r}")
        else:
            others[key] = value
    return UserData(source, axis_vectors=vectors, others=others, problems=tuple(problems),
                    **known)  # type: ignore[arg-type]


def _numbers(value: object, count: int) -> bool:
    return isinstance(value, list) and len(value) == count and all(
        isinstance(number, int | float) and not isinstance(number, bool) and math.isfinite(number) for number in value)


def header_angles(recorded: RecordedSeries, axes: tuple[str, ...]) -> dict[str, tuple[object, str | None, str]]:
    """``<axis>_start``/``<axis>_increment`` of ``axes`` the detector's header (or its frames)
    gives: {name: (value, unit, source)}, per frame where the detector sent them per frame."""
    found: dict[str, tuple[object, str | None, str]] = {}
    for axis in axes:
        for name in (f"{axis}_start", f"{axis}_increment"):
            if name in recorded.per_frame and recorded.varies(name):
                values, unit = recorded.per_frame[name]
                found[name] = (values[: recorded.frames], unit or "deg", recorded.origin(name))
                continue
            value = recorded.value_with_unit(name)
            if value is not None and isinstance(value[0], int | float):
                found[name] = (value[0], value[1] or "deg", recorded.origin(name))
    return found


@dataclass(frozen=True)
class BitDepths:
    """The image's and the readout's bit depths an NXmx states, with their sources."""

    image: int
    image_source: str
    readout: int
    readout_source: str
    header_readout: int | None  # the detector electronics' own, when it differs from ``readout``
    problems: tuple[str, ...] = ()


def bit_depths(recorded: RecordedSeries) -> BitDepths | None:
    """True to the frames. The image depth is the stored pixels' (checked against the header's
    ``bit_depth_image``). ``bit_depth_readout`` is what NXmx readers take as the depth of the values
    in the frames (dxtbx reads 2^n−1 and 2^n−2 as flagged pixels, and needs 32 for uint32): the
    header's readout depth where it describes the frames, else the image depth, the header's then
    kept apart. None for frames that are not integers."""
    dtype = np.dtype(recorded.dtype)
    if dtype.kind not in "iu":
        return None
    image = dtype.itemsize * 8
    frames = f"the frames: {dtype.name} pixels in the Recorder's file"
    problems = []
    told_image = recorded.value("bit_depth_image")
    if isinstance(told_image, int | float) and int(told_image) != image:
        problems.append(f"detector/bit_depth_image: the header says {int(told_image)}, the frames are {dtype.name}; "
                        "the file gives the frames'")
    told = recorded.value("bit_depth_readout")
    readout = int(told) if isinstance(told, int | float) and told > 0 else None
    # a DECTRIS image's depth is what its flag values and counts fill; a readout narrower than an
    # unsigned image does not describe the stored values
    if readout is None or told_image is not None or readout > image or (dtype.kind == "u" and readout < image):
        return BitDepths(image, frames, image, frames, readout if readout != image else None, tuple(problems))
    return BitDepths(image, frames, readout, recorded.origin("bit_depth_readout"), None, tuple(problems))
