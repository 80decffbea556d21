"""What the Recorder's Arm command asks for: one series, from which inputs, into which file."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from photonflow.errors import ConfigurationError
from photonflow.stream.protocols import decoder_for

MAX_SERIES_ID = 2**63 - 1  # what HDF5's int64 /entry/series_id holds
STREAM_ENDPOINT = re.compile(r"tcp://[^\s:/]+:\d{1,5}|tcp://\[[0-9A-Fa-f:.]+\]:\d{1,5}|ipc://\S+|inproc://\S+")


@dataclass(frozen=True)
class RecordingRequest:
    """One series to record: how many frames, which series, from where, into which file."""

    frame_count: int
    series_id: int
    endpoints: tuple[str, ...]
    file: str | None = None  # relative to the data root, or absolute under it; None = template
    protocol: str = "stins"

    def __post_init__(self):
        if isinstance(self.endpoints, str):  # one input, given as its endpoint
            object.__setattr__(self, "endpoints", (self.endpoints,))


def parse_recording_request(text: str) -> RecordingRequest:
    """Validate the JSON of the Recorder's Arm command."""
    try:
        raw = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as error:
        detail = "nested too deeply" if isinstance(error, RecursionError) else str(error)
        raise ConfigurationError(
            'Arm needs a JSON object such as {"frames": 100, "series_id": 1, '
            f'"endpoint": "tcp://127.0.0.1:5555", "file": "scan1.h5"}}: {detail}'
        ) from None
    if not isinstance(raw, dict):
        raise ConfigurationError("Arm needs a JSON object")
    allowed = {"frames", "series_id", "endpoint", "file", "protocol"}
    unknown = sorted(raw.keys() - allowed)
    if unknown:
        raise ConfigurationError(
            f"unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}",
            reason="UnknownConfigurationKey",
        )
    for key, kind in (("frames", int), ("series_id", int), ("endpoint", (str, list))):
        if key not in raw:
            raise ConfigurationError(f"missing key '{key}'")
        if isinstance(raw[key], bool) or not isinstance(raw[key], kind):
            expected = "a string or a list of strings" if key == "endpoint" else kind.__name__
            raise ConfigurationError(f"'{key}' must be {expected}, got {raw[key]!r}")
    if not 0 <= raw["series_id"] <= MAX_SERIES_ID:
        raise ConfigurationError(f"'series_id' must be 0 to {MAX_SERIES_ID}, got {raw['series_id']}")
    endpoints = [raw["endpoint"]] if isinstance(raw["endpoint"], str) else raw["endpoint"]
    if not endpoints or not all(isinstance(e, str) and e for e in endpoints):
        raise ConfigurationError(f"'endpoint' must name at least one stream, got {raw['endpoint']!r}")
    for endpoint in endpoints:
        if not STREAM_ENDPOINT.fullmatch(endpoint):
            raise ConfigurationError(
                f"'endpoint' {endpoint!r} is not a ZeroMQ address such as tcp://127.0.0.1:5555 "
                "(tcp://host:port, ipc://path or inproc://name)",
                reason="InvalidEndpoint",
            )
    for key in ("file", "protocol"):
        if raw.get(key) is not None and not isinstance(raw[key], str):
            raise ConfigurationError(f"'{key}' must be a string, got {raw[key]!r}")
    protocol = raw.get("protocol", "stins")
    decoder_for(protocol)  # refuse an unknown protocol now, not at the first message
    return RecordingRequest(raw["frames"], raw["series_id"], tuple(endpoints), raw.get("file"), protocol)
