"""What the Recorder wrote about one series, read back from its master file: the detector's own
description, where the frames are, their shape, and when each frame was taken.

The Standardizer reads it rather than asking the Recorder: the file is the record, and reading
it needs no server (the same code standardizes files written yesterday).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import h5py
import numpy as np

from photonflow.errors import ConfigurationError


@dataclass
class RecordedSeries:
    path: Path  # the Recorder's master file
    detector_name: str  # its NXdetector group under /entry/instrument
    data_path: str  # the frames' dataset inside the master file
    shape: tuple[int, ...]  # (frames, rows, columns)
    dtype: np.dtype
    series_id: int
    start_time: str
    end_time: str
    end_reason: str
    detector: dict[str, tuple[object, str | None]] = field(default_factory=dict)  # NXdetector fields: (value, unit)
    specific: dict[str, tuple[object, str | None]] = field(default_factory=dict)  # detector_specific
    frame_times: np.ndarray = field(default_factory=lambda: np.zeros(0))  # UNIX time of each frame; NaN: none
    per_frame: dict[str, tuple[np.ndarray, str | None]] = field(default_factory=dict)  # frame_metadata: (values, unit)

    @property
    def frames(self) -> int:
        return self.shape[0]

    @property
    def series_start(self) -> float | None:
        """UNIX time of the series start (the detector's arm, or the Acquirer's start): what was
        captured before it belongs to an earlier series. None if the file does not say."""
        return _unix_time(self.start_time)

    @property
    def series_end(self) -> float | None:
        return _unix_time(self.end_time)

    def value(self, name: str, default=None):
        """A detector field's value: NXdetector first, then detector_specific, then the first value
        the detector sent with its frames (``frame_metadata``; ``varies`` tells whether it changed)."""
        found = self.value_with_unit(name)
        return default if found is None else found[0]

    def value_with_unit(self, name: str) -> tuple[object, str | None] | None:
        for table in (self.detector, self.specific):
            if name in table:
                return table[name]
        if name in self.per_frame:
            values, unit = self.per_frame[name]
            sent = values[np.isfinite(values)] if values.dtype.kind == "f" else values
            if sent.size:
                return sent[0].item(), unit
        return None

    def origin(self, name: str) -> str:
        """Where the Recorder's file has ``name`` from, as a value's source: the detector's header
        (its description, NXdetector or detector_specific), or the values sent with each frame."""
        if name in self.detector or name in self.specific or name not in self.per_frame:
            return f"detector header: {name}"
        return f"detector, per frame: {name}"

    def varies(self, name: str) -> float:
        """How far a per-frame value moved during the series (0 for a value sent once or not at all)."""
        if name not in self.per_frame:
            return 0.0
        values = self.per_frame[name][0]
        sent = values[np.isfinite(values)] if values.dtype.kind == "f" else values
        return float(np.ptp(sent)) if sent.size and sent.dtype.kind in "iuf" else 0.0


def read_recorded_series(path: str | Path) -> RecordedSeries:
    path = Path(path)
    try:
        f = h5py.File(path, "r")
    except OSError as error:
        raise ConfigurationError(f"cannot read the Recorder's file {path}: {error}") from None
    with f:
        instrument = f.get("entry/instrument")
        detectors = [name for name, group in (instrument or {}).items()
                     if isinstance(group, h5py.Group) and _nx_class(group) == "NXdetector"]
        if not detectors:
            raise ConfigurationError(f"{path} has no /entry/instrument/<NXdetector>: not a photonflow Recorder file")
        name = detectors[0]
        group = instrument[name]
        data = group["data"]
        detector = {key: _read(item) for key, item in group.items() if isinstance(item, h5py.Dataset) and key != "data"}
        specific_group = group.get("detector_specific")
        specific = {key: _read(item) for key, item in (specific_group or {}).items() if isinstance(item, h5py.Dataset)}
        per_frame_group = group.get("frame_metadata")
        per_frame = {key: (item[()], _unit(item)) for key, item in (per_frame_group or {}).items()
                     if isinstance(item, h5py.Dataset) and item.ndim == 1}
        accounting = f.get("entry/accounting")
        frame_times = np.zeros(0)
        end_reason = ""
        if accounting is not None:
            if "timestamp" in accounting:
                frame_times = accounting["timestamp"][()]
                if "receive_time" in accounting:  # a detector that stamps nothing: when it arrived
                    received = accounting["receive_time"][()]
                    frame_times = np.where(np.isnan(frame_times), received, frame_times)
            if "end_reason" in accounting:
                end_reason = _text(accounting["end_reason"][()])
        return RecordedSeries(
            path=path, detector_name=name, data_path=data.name, shape=tuple(data.shape), dtype=data.dtype,
            series_id=int(f["entry/series_id"][()]) if "entry/series_id" in f else 0,
            start_time=_text(f["entry/start_time"][()]) if "entry/start_time" in f else "",
            end_time=_text(f["entry/end_time"][()]) if "entry/end_time" in f else "",
            end_reason=end_reason, detector=detector, specific=specific, frame_times=frame_times,
            per_frame=per_frame,
        )


def _unix_time(text: str) -> float | None:
    """An ISO 8601 time (UTC when it names no zone) as UNIX seconds; None if it is not one."""
    try:
        moment = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def _nx_class(group: h5py.Group) -> str:
    return _text(group.attrs.get("NX_class", ""))


def _read(dataset: h5py.Dataset) -> tuple[object, str | None]:
    value = dataset[()]
    unit = _unit(dataset)
    if isinstance(value, bytes):
        value = value.decode()
    elif isinstance(value, np.generic):
        value = value.item()
    return value, unit


def _unit(dataset: h5py.Dataset) -> str | None:
    unit = dataset.attrs.get("units")
    return _text(unit) if unit is not None else None


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
