"""Writes one series to an HDF5 file in NeXus layout, one frame per chunk, readable while written.

Layout (NXmx-style):
    /entry                          NXentry, default=data, start_time, end_time
    /entry/instrument/<detector>    NXdetector: data (frames, rows, columns) + description
    /entry/data                     NXdata, signal=data, data -> the detector's data (hard link)
    /entry/accounting               NXcollection: live and final counts, per-frame bookkeeping
Frames go in with ``write_direct_chunk``: the received buffer is the chunk, never copied into
a numpy array nor touched by HDF5's conversion machinery; bslz4 frames stay compressed and
are read back through the bitshuffle filter (hdf5plugin).

The file is in SWMR mode from the first frame on: another process may open it with
``h5py.File(path, "r", swmr=True)`` and watch it grow, without locks that stop the writer.
SWMR forbids creating objects once on, so every dataset the series will need, including the
final accounting, is created at the start and only written afterwards.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Iterable

import h5py
import hdf5plugin
import numpy as np

import photonflow
from photonflow.stream.stins import SeriesStart

# NXdetector fields photonflow fills from the stream's detector description, with their units.
NXDETECTOR_FIELDS: dict[str, str | None] = {
    "description": None,
    "serial_number": None,
    "local_name": None,
    "type": None,
    "x_pixel_size": "m",
    "y_pixel_size": "m",
    "sensor_material": None,
    "sensor_thickness": "m",
    "bit_depth_readout": None,
    "count_time": "s",
    "frame_time": "s",
    "dead_time": "s",
    "detector_readout_time": "s",
    "threshold_energy": "eV",
    "saturation_value": None,
    "beam_center_x": "pixel",
    "beam_center_y": "pixel",
    "distance": "m",
}
# The counts in /entry/accounting, created at the start and updated live and at close.
ACCOUNTING_COUNTS = (
    "series_id", "frames_requested", "frames_acquired", "frames_sent", "frames_received",
    "frames_written", "missing_frames", "duplicate_frames", "messages_rejected", "frames_lost",
)
GROWTH_FRAMES = 64  # the data grows by this many frames at a time: resizing per frame costs ~0.3 ms
TEXT = h5py.string_dtype("utf-8", 64)


def detector_group_name(detector: dict[str, Any]) -> str:
    """A NeXus-safe group name for the detector (``name``, else its model)."""
    raw = str(detector.get("name") or detector.get("model") or "detector")
    name = re.sub(r"[^A-Za-z0-9_]+", "_", raw).strip("_").lower()
    return name or "detector"


def make_durable(path: Path) -> None:
    """Flush a closed file and its directory entry to the disk."""
    for target, flags in ((path, os.O_RDONLY), (path.parent, os.O_RDONLY | os.O_DIRECTORY)):
        descriptor = os.open(target, flags)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


class NexusFrameWriter:
    """One open data file; ``flush`` publishes progress to readers, ``close`` finalises it."""

    def __init__(self, path: Path, start: SeriesStart):
        self.path = path
        self.shape = start.shape
        self.encoding = start.encoding
        self.dtype = np.dtype(start.dtype).newbyteorder("<")
        self.frame_bytes = self.shape[0] * self.shape[1] * self.dtype.itemsize
        self.highest_frame = -1
        self._capacity = 0
        self._receive_times = np.full(0, np.nan)
        self._timestamps = np.full(0, np.nan)
        self._dirty = [None, -1]  # lowest and highest frame index whose bookkeeping is not yet in the file
        # "w-" fails if the file exists: an existing file is never opened for writing.
        self._file = h5py.File(path, "w-", libver=("v110", "latest"))
        try:
            self._create_layout(start)
            self._file.swmr_mode = True
        except BaseException:
            self._file.close()
            raise

    def _create_layout(self, start: SeriesStart) -> None:
        f = self._file
        f.attrs["default"] = "entry"
        f.attrs["creator"] = f"photonflow {photonflow.__version__}"
        f.attrs["file_name"] = str(self.path)
        f.attrs["file_time"] = start.start_time
        f.attrs["HDF5_Version"] = h5py.version.hdf5_version
        f.attrs["h5py_version"] = h5py.version.version
        entry = f.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        entry.attrs["default"] = "data"
        entry["start_time"] = start.start_time
        entry.create_dataset("end_time", data="", dtype=TEXT)
        entry["series_id"] = start.series_id
        instrument = entry.create_group("instrument")
        instrument.attrs["NX_class"] = "NXinstrument"
        detector = instrument.create_group(detector_group_name(start.detector))
        detector.attrs["NX_class"] = "NXdetector"
        self._write_detector_description(detector, start.detector)
        compression = hdf5plugin.Bitshuffle(nelems=0, cname="lz4") if self.encoding == "bslz4" else None
        self.data = detector.create_dataset(
            "data",
            shape=(0, *self.shape),
            maxshape=(None, *self.shape),
            chunks=(1, *self.shape),
            dtype=self.dtype,
            fillvalue=0,
            **(compression or {}),
        )
        self.data.attrs["long_name"] = "photon counts"
        self.data.attrs["units"] = "counts"
        nxdata = entry.create_group("data")
        nxdata.attrs["NX_class"] = "NXdata"
        nxdata.attrs["signal"] = "data"
        nxdata["data"] = self.data  # hard link: the same dataset, two NeXus roles
        self._chunk_writer = self.data.id.write_direct_chunk

        accounting = entry.create_group("accounting")
        accounting.attrs["NX_class"] = "NXcollection"
        for name in ACCOUNTING_COUNTS:
            accounting.create_dataset(name, data=-1, dtype=np.int64)
        accounting["series_id"][()] = start.series_id
        accounting.create_dataset("end_reason", data="running", dtype=TEXT)
        accounting.create_dataset("missing_frame_numbers", shape=(0,), maxshape=(None,), dtype=np.int64, chunks=(4096,))
        for name, doc in (("receive_time", "UNIX time each frame reached the Recorder"),
                          ("timestamp", "UNIX time the detector stamped each frame")):
            bookkeeping = accounting.create_dataset(
                name, shape=(0,), maxshape=(None,), dtype=np.float64, chunks=(4096,), fillvalue=np.nan
            )
            bookkeeping.attrs["units"] = "s"
            bookkeeping.attrs["description"] = f"{doc}, by frame number; NaN: never arrived"
        self._accounting = accounting

    @staticmethod
    def _write_detector_description(group: h5py.Group, detector: dict[str, Any]) -> None:
        extra = {}
        for key, value in detector.items():
            if key in NXDETECTOR_FIELDS and value is not None:
                group[key] = value
                if NXDETECTOR_FIELDS[key]:
                    group[key].attrs["units"] = NXDETECTOR_FIELDS[key]
            elif isinstance(value, (str, int, float, bool)):
                extra[key] = value
        if "description" not in detector:
            vendor_model = " ".join(str(detector[k]) for k in ("vendor", "model") if k in detector)
            if vendor_model:
                group["description"] = vendor_model
        if extra:
            specific = group.create_group("detector_specific")
            specific.attrs["NX_class"] = "NXcollection"
            for key, value in extra.items():
                specific[key] = value

    def _grow(self, frame_number: int) -> None:
        self._capacity = (frame_number // GROWTH_FRAMES + 1) * GROWTH_FRAMES
        self.data.resize(self._capacity, axis=0)
        for name in ("_receive_times", "_timestamps"):
            old = getattr(self, name)
            grown = np.full(self._capacity, np.nan)
            grown[: old.size] = old
            setattr(self, name, grown)

    def write_frame(self, frame_number: int, payload: Any, timestamp: float, receive_time: float) -> None:
        """Store one frame buffer (raw or bslz4, as announced) as the chunk of index ``frame_number``."""
        if frame_number >= self._capacity:
            self._grow(frame_number)
        self._chunk_writer((frame_number, 0, 0), payload)
        self._receive_times[frame_number] = receive_time
        self._timestamps[frame_number] = timestamp
        low, high = self._dirty
        self._dirty = [frame_number if low is None else min(low, frame_number), max(high, frame_number)]
        if frame_number > self.highest_frame:
            self.highest_frame = frame_number

    def flush(self, counts: dict[str, int]) -> None:
        """Make the frames and bookkeeping so far visible to SWMR readers."""
        self._write_bookkeeping()
        for name, value in counts.items():
            self._accounting[name][()] = value
        self._file.flush()

    def _write_bookkeeping(self) -> None:
        low, high = self._dirty
        if low is None:
            return
        for name, values in (("receive_time", self._receive_times), ("timestamp", self._timestamps)):
            dataset = self._accounting[name]
            if dataset.shape[0] < self._capacity:
                dataset.resize(self._capacity, axis=0)
            dataset[low : high + 1] = values[low : high + 1]
        self._dirty = [None, -1]

    def close(
        self, end_time: str, end_reason: str, counts: dict[str, int], missing_frames: Iterable[int],
        durable: bool = True,
    ) -> None:
        """Trim the data to the frames that exist, write the final counts, close the file.

        With ``durable`` the file is on disk (fsync) when this returns, not just in the page
        cache: a series the Recorder reports as written survives a power cut.
        """
        try:
            self._write_bookkeeping()
            frames = self.highest_frame + 1
            self.data.resize(frames, axis=0)
            for name in ("receive_time", "timestamp"):
                self._accounting[name].resize(frames, axis=0)
            missing = np.asarray(sorted(missing_frames), dtype=np.int64)
            self._accounting["missing_frame_numbers"].resize(missing.size, axis=0)
            self._accounting["missing_frame_numbers"][:] = missing
            for name, value in counts.items():
                self._accounting[name][()] = value
            self._accounting["end_reason"][()] = end_reason
            self._file["entry/end_time"][()] = end_time
        finally:
            self._file.close()
        if durable:
            make_durable(self.path)

    def abandon(self) -> None:
        """Close without accounting (after a write error), keeping what was written readable."""
        try:
            self._file.close()
        except Exception:
            pass
