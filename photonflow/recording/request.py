"""What the Recorder's Arm command asks for: one series, from which inputs, into which file."""

from __future__ import annotations

import re
from dataclasses import dataclass

from photonflow.requests import Request, value
from photonflow.stream.protocols import PROTOCOLS

MAX_SERIES_ID = 2**63 - 1  # what HDF5's int64 /entry/series_id holds
STREAM_ENDPOINT = re.compile(r"tcp://[^\s:/]+:\d{1,5}|tcp://\[[0-9A-Fa-f:.]+\]:\d{1,5}|ipc://\S+|inproc://\S+")


@dataclass(frozen=True)
class RecordingRequest(Request):
    """Arm: one series to record: how many frames, which series, from which stream inputs, into
    which file. The Recorder checks the rest at Arm: its MaxFramesPerSeries, the file."""

    command = "Arm"
    example = {"frames": 100, "series_id": 1, "endpoint": "tcp://127.0.0.1:5555", "file": "scan1.h5"}

    frame_count: int = value(key="frames", minimum=1, doc="the number of frames the series has")
    series_id: int = value(minimum=0, maximum=MAX_SERIES_ID, span=True, doc="the series' number, kept in its file")
    endpoints: tuple[str, ...] = value(
        key="endpoint", pattern=STREAM_ENDPOINT, mismatch_reason="InvalidEndpoint",
        mismatch="is not a ZeroMQ address such as tcp://127.0.0.1:5555 (tcp://host:port, ipc://path or inproc://name)",
        doc="the stream to record: a ZeroMQ address, or a list of them for a detector of several outputs",
    )
    file: str | None = value(
        None, doc="the file, relative to the data root or absolute under it; none: the FilePathTemplate",
    )
    protocol: str = value("stins", choices=tuple(PROTOCOLS), doc="how the stream's messages are encoded")
    share: bool = value(
        False, doc="one of several Recorders sharing the stream: the frames it did not receive went to the "
                   "others and are not missing here (the Controller counts the series across them)")
    blissdata_scan: bool = value(
        True, doc="publish the series as a blissdata scan of its own (Blissdata property); false: a scan engine "
                  "publishes its frames in its scan")

    def __post_init__(self):
        if isinstance(self.endpoints, str):  # one input, given as its endpoint
            object.__setattr__(self, "endpoints", (self.endpoints,))


def parse_recording_request(text: str) -> RecordingRequest:
    """Validate the JSON of the Recorder's Arm command."""
    return RecordingRequest.parse(text)
