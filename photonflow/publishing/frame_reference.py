"""The value reference of one photonflow frame, as Sardana's photonflow 2D channel reports it for
each scan point and photonflow's Sardana recorders read it back: frame ``index`` of the dataset
``/entry/data/data`` of one photonflow file, ``h5file:///<file>::/entry/data/data[<index>]``
(silx's DataUrl syntax). Kept here, free of Sardana, so the controller that writes references and
the recorders that read them cannot drift apart."""

from __future__ import annotations

import re
from typing import NamedTuple

DATASET = "/entry/data/data"
_REFERENCE = re.compile(r"^h5file://(?P<file>/[^:]+)::(?P<dataset>/?[\w./\-]+)\[(?P<index>\d+)\]$")


class FrameReference(NamedTuple):
    file: str
    dataset: str
    index: int  # type: ignore[assignment]  # the frame's index, named as in the reference; shadows tuple.index


def frame_reference(file: str, index: int, dataset: str = DATASET) -> str:
    """The value reference of frame ``index`` of a photonflow file."""
    return f"h5file://{file}::{dataset}[{index}]"


def parse_frame_reference(text: str | bytes) -> FrameReference | None:
    """The file, dataset and frame index a reference names; None if it names no single frame."""
    if isinstance(text, bytes):
        text = text.decode()
    match = _REFERENCE.match(str(text))
    if match is None:
        return None
    return FrameReference(match["file"], match["dataset"], int(match["index"]))
