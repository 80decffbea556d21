"""Writes one series to an HDF5 file in NeXus layout, one frame per chunk.

Layout (NXmx-style):
    /entry                          NXentry, default=data, start_time, end_time
    /entry/instrument/<detector>    NXdetector: data (frames, rows, columns) + description
    /entry/data                     NXdata, signal=data, data -> the detector's data (hard link)
    /entry/accounting               NXcollection: the final counts of the series
Frames go in with ``write_direct_chunk``: the received buffer is the chunk, never re-copied
into a numpy array nor touched by the HDF5 type conversion machinery.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Iterable

import h5py
import numpy as np

import photonflow
from photonflow.stream.stins import SeriesStart

# NXdetector fields photonflow fills from the STINS detector description, with their units.
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
    """One open data file; ``close`` writes the accounting and the end time."""

    def __init__(self, path: Path, start: SeriesStart):
        self.path = path
        self.shape = start.shape
        self.dtype = np.dtype(start.dtype).newbyteorder("<")
        self.frame_bytes = self.shape[0] * self.shape[1] * self.dtype.itemsize
        self.highest_frame = -1
        # "w-" fails if the file exists: an existing file is never opened for writing.
        self._file = h5py.File(path, "w-", libver=("v110", "latest"))
        try:
            self._create_layout(start)
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
        entry["series_id"] = start.series_id
        instrument = entry.create_group("instrument")
        instrument.attrs["NX_class"] = "NXinstrument"
        detector = instrument.create_group(detector_group_name(start.detector))
        detector.attrs["NX_class"] = "NXdetector"
        self._write_detector_description(detector, start.detector)
        # Frames the dataset holds; kept here because h5py's Dataset.shape asks HDF5 each time.
        self._capacity = max(start.frame_count, 1)
        self.data = detector.create_dataset(
            "data",
            shape=(self._capacity, *self.shape),
            maxshape=(None, *self.shape),
            chunks=(1, *self.shape),
            dtype=self.dtype,
            fillvalue=0,
        )
        self.data.attrs["long_name"] = "photon counts"
        self.data.attrs["units"] = "counts"
        nxdata = entry.create_group("data")
        nxdata.attrs["NX_class"] = "NXdata"
        nxdata.attrs["signal"] = "data"
        nxdata["data"] = self.data  # hard link: the same dataset, two NeXus roles
        self._chunk_writer = self.data.id.write_direct_chunk

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

    def write_frame(self, frame_number: int, payload: Any) -> None:
        """Store one raw frame buffer as the chunk of index ``frame_number``."""
        if frame_number >= self._capacity:
            self._capacity = max(frame_number + 1, 2 * self._capacity)
            self.data.resize(self._capacity, axis=0)
        self._chunk_writer((frame_number, 0, 0), payload)
        if frame_number > self.highest_frame:
            self.highest_frame = frame_number

    def close(
        self, end_time: str, accounting: dict[str, Any], missing_frames: Iterable[int], durable: bool = True
    ) -> None:
        """Trim the data to the frames that exist, write the final counts, close the file.

        With ``durable`` the file is on disk (fsync) when this returns, not just in the page
        cache: a series the Recorder reports as written survives a power cut.
        """
        try:
            self.data.resize(self.highest_frame + 1, axis=0)
            entry = self._file["entry"]
            entry["end_time"] = end_time
            group = entry.create_group("accounting")
            group.attrs["NX_class"] = "NXcollection"
            for key, value in accounting.items():
                group[key] = value
            group["missing_frame_numbers"] = np.asarray(sorted(missing_frames), dtype=np.int64)
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
