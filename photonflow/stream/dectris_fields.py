"""What both DECTRIS stream versions share: failing with a reason, field checks that name the
message and the key, and the detector description in NeXus names (see ``dectris``)."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, NoReturn

import numpy as np

from photonflow.errors import StreamMessageError
from photonflow.stream.cbor import (
    MULTI_DIMENSIONAL_ARRAY,
    TYPED_ARRAY_DTYPES,
    Tag,
    show,
)
from photonflow.stream.stins import (
    StinsMessage,
)

VENDOR = "DECTRIS"
DEFAULT_CHANNEL = "threshold_1"
DECTRIS_COMPRESSION = 56500  # DECTRIS' tag of a compressed typed array: ["bslz4", element size, chunk]


def fail(message: str) -> NoReturn:
    raise StreamMessageError(message)


def refusing_anything_else(protocol: str) -> Callable:
    """Whatever goes wrong decoding a message becomes a StreamMessageError, never another type.

    Every check of the decoders raises its own precise reason; this is the net under them.
    """

    def wrap(decode: Callable[[Sequence[Any]], StinsMessage]) -> Callable[[Sequence[Any]], StinsMessage]:
        @functools.wraps(decode)
        def guarded(parts: Sequence[Any]) -> StinsMessage:
            try:
                return decode(parts)
            except StreamMessageError:
                raise
            except Exception as error:  # noqa: BLE001 - the net under the decoder: never another exception type
                raise StreamMessageError(
                    f"{protocol} message could not be decoded: {type(error).__name__}: {error}"
                ) from None

        return guarded

    return wrap



# ---------------------------------------------------------------------------------------------
# Field access shared by both versions: every refusal names the message and the key.

KINDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "unsigned": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "an unsigned integer"),
    "number": (
        lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v),
        "a finite number",
    ),
    "text": (lambda v: isinstance(v, str), "a text string"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
}


def checked_field(message: dict, key: str, kind: str, where: str, required: bool = True) -> Any:
    """``message[key]`` checked to be of ``kind``; None if absent and not required.

    Tags around a scalar are looked through, as DECTRIS' reference parser does.
    """
    if key not in message:
        if required:
            fail(f"{where} lacks '{key}'")
        return None
    value = message[key]
    while isinstance(value, Tag):
        value = value.value
    check, description = KINDS[kind]
    if not check(value):
        fail(f"{where}: '{key}' must be {description}, got {show(value)}")
    return value


def date_time(message: dict, key: str, where: str) -> datetime | None:
    text = checked_field(message, key, "text", where, required=False)
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        fail(f"{where}: '{key}' must be an RFC 3339 date-time, got {show(text)}")
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def map_detector(source: dict, table: Sequence[tuple[str, str, str, float | None]], where: str) -> dict[str, Any]:
    """The detector description, NXdetector names and SI units, from a DECTRIS message."""
    detector: dict[str, Any] = {"vendor": VENDOR}
    for dectris_key, key, kind, to_si in table:
        value = checked_field(source, dectris_key, kind, where, required=False)
        if value is not None and value != "":  # an empty text says nothing
            detector[key] = value * to_si if to_si else value
    return detector


def plain(value: Any) -> Any:
    """A decoded value as plain data a file can keep: bytes as hex text, tags as their content."""
    if isinstance(value, memoryview):
        return value.hex()
    if isinstance(value, Tag):
        array = typed_array(value)
        return array if array is not None else plain(value.value)
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def keep_the_rest(detector: dict[str, Any], source: dict, consumed: set[str]) -> None:
    """Every field of the detector's header not mapped to a NeXus name is kept under its own."""
    for key, value in source.items():
        if key not in consumed and isinstance(key, str) and key not in detector:
            detector[key] = plain(value)


def unmap_detector(detector: dict[str, Any] | None, table: Sequence[tuple[str, str, str, float | None]]) -> dict:
    """The inverse of ``map_detector``, for the encoders."""
    fields = {}
    for dectris_key, key, _kind, to_si in table:
        if detector and detector.get(key) is not None:
            fields[dectris_key] = detector[key] / to_si if to_si else detector[key]
    return fields



def typed_array(value: Tag) -> np.ndarray | None:
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
