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

import json
import logging
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import h5py
import hdf5plugin
import numpy as np

import photonflow
from photonflow.errors import RecordingError
from photonflow.recording.paths import SeriesDirectory
from photonflow.recording.writeback import BackgroundWriteback
from photonflow.stream.stins import SeriesStart

log = logging.getLogger(__name__)

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
    # the detector's own corrections, as arrays over its pixels
    "pixel_mask": None,
    "flatfield": None,
    "countrate_correction_lookup_table": None,
}
# Units of the detector values photonflow keeps in ``detector_specific`` (not NXdetector fields).
DETECTOR_SPECIFIC_UNITS: dict[str, str] = {
    "incident_energy": "eV", "incident_wavelength": "m", "photon_energy": "eV",
    "detector_translation_x": "m", "detector_translation_y": "m", "detector_translation_z": "m",
    "detector_readout_time": "s", "omega_start": "deg", "omega_increment": "deg",
    "exposure": "s", "period": "s", "frame_period": "s",
}
# Goniometer axes of DECTRIS headers: <axis>_start, _increment, _range_average... are angles.
GONIOMETER_AXES = ("omega", "chi", "phi", "kappa", "two_theta")
UNIT_SUFFIXES = (("_time", "s"), ("_energy", "eV"), ("_distance", "m"), ("_size", "m"), ("_thickness", "m"))


def detector_specific_unit(key: str) -> str | None:
    """The unit of a detector_specific value, from its name (DECTRIS and photonflow conventions)."""
    if key in DETECTOR_SPECIFIC_UNITS:
        return DETECTOR_SPECIFIC_UNITS[key]
    if any(key.startswith(axis + "_") for axis in GONIOMETER_AXES):
        return "deg"
    return next((unit for suffix, unit in UNIT_SUFFIXES if key.endswith(suffix)), None)


# Units of the per-frame values (STINS ``metadata``) photonflow's detectors send.
FRAME_METADATA_UNITS: dict[str, str | None] = {
    **NXDETECTOR_FIELDS, "incident_wavelength": "m", "start_angle": "deg", "angle_increment": "deg",
    **{f"{axis}_{kind}": "deg" for axis in GONIOMETER_AXES for kind in ("start", "increment")},
}
# The counts in /entry/accounting, created at the start and updated live and at close.
ACCOUNTING_COUNTS = (
    "series_id", "frames_requested", "frames_acquired", "frames_sent", "frames_announced", "frames_received",
    "frames_written", "missing_frames", "duplicate_frames", "messages_rejected", "frames_lost",
)
LIBVER = ("v110", "latest")
GROWTH_FRAMES = 64  # the data grows by this many frames at a time: resizing per frame costs ~0.3 ms
# Every text field is variable-length UTF-8 (h5py's default for str): one storage for all of them,
# which can be overwritten in place while SWMR is on (end_time, end_reason).
TEXT = h5py.string_dtype("utf-8")
# NXdetector's *_applied fields are NX_BOOLEAN.
NEXUS_BOOLEANS = frozenset({
    "countrate_correction_applied", "flatfield_applied", "pixel_mask_applied",
    "virtual_pixel_interpolation_applied", "efficiency_correction_applied", "angular_calibration_applied",
})
WRITER_TOKEN = "photonflow_writer"  # file attribute: which Recorder's series opened it
UNKNOWN_COUNT_NOTE = "-1: unknown (the stream did not say)"


def nexus_time(text: str) -> str:
    """An ISO 8601 time as NeXus files carry it, with ``Z`` for UTC."""
    return text[:-6] + "Z" if isinstance(text, str) and text.endswith("+00:00") else text


def nexus_value(value: Any) -> Any:
    """What HDF5 can hold of a detector's value: numbers, text, flat lists and tables (lists of
    equal rows) of numbers as they are; anything else (nested objects, mixed lists, integers
    beyond 64 bits) as JSON text, so no field a detector sends can make the file fail."""
    if isinstance(value, (bool, float, str, np.ndarray)):
        return value
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**63 else str(value)
    if isinstance(value, list) and value and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) < 2**63 for v in value
    ):
        return np.asarray(value)
    if isinstance(value, list) and value and all(isinstance(row, list) for row in value):
        try:  # a table of numbers (a pixel mask sent as JSON) as a 2-D array
            table = np.asarray(value)
        except ValueError:  # rows of different lengths
            table = None
        if table is not None and table.ndim == 2 and table.dtype.kind in "iuf":
            return table
    return json.dumps(value, default=str)


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


def write_detector_description(group: h5py.Group, detector: dict[str, Any]) -> None:
    """A detector's description as NXdetector fields with their units; every other key in
    ``detector_specific`` (NXcollection), its unit from its name."""
    extra = {}
    for key, value in detector.items():
        if value is None:
            continue
        if key in NEXUS_BOOLEANS and isinstance(value, (bool, int)):
            group.create_dataset(key, data=np.bool_(value))
        elif key in NXDETECTOR_FIELDS:
            stored = nexus_value(value)
            if key == "pixel_mask" and isinstance(stored, np.ndarray) and stored.dtype.kind in "iu":
                stored = stored.astype(np.uint32, copy=False)  # NeXus' bits, whatever integers the stream carried
            group[key] = stored
            if NXDETECTOR_FIELDS[key]:
                group[key].attrs["units"] = NXDETECTOR_FIELDS[key]
        else:
            extra[key] = value
    if "description" not in detector:
        vendor_model = " ".join(str(detector[k]) for k in ("vendor", "model") if k in detector)
        if vendor_model:
            group["description"] = vendor_model
    if extra:
        specific = group.create_group("detector_specific")
        specific.attrs["NX_class"] = "NXcollection"
        for key, value in extra.items():
            specific[key] = nexus_value(value)
            unit = detector_specific_unit(key)
            if unit:
                specific[key].attrs["units"] = unit


class FrameStack:
    """A (frames, rows, columns) dataset, one frame per chunk, that grows as frames come."""

    def __init__(self, group: h5py.Group, name: str, shape: tuple[int, int], dtype: np.dtype, encoding: str):
        compression = hdf5plugin.Bitshuffle(nelems=0, cname="lz4") if encoding == "bslz4" else None
        self.dataset = group.create_dataset(
            name,
            shape=(0, *shape),
            maxshape=(None, *shape),
            chunks=(1, *shape),
            dtype=dtype,
            fillvalue=0,
            **(compression or {}),
        )
        self.dataset.attrs["long_name"] = "photon counts"
        self.dataset.attrs["units"] = "counts"
        self._write_chunk = self.dataset.id.write_direct_chunk
        self.capacity = 0
        self.highest = -1

    def write(self, index: int, payload: Any) -> None:
        if index >= self.capacity:
            self.capacity = (index // GROWTH_FRAMES + 1) * GROWTH_FRAMES
            self.dataset.resize(self.capacity, axis=0)
        self._write_chunk((index, 0, 0), payload)
        self.highest = max(self.highest, index)

    def trim(self) -> int:
        """Shrink to the frames written (up to the highest one); returns that count."""
        self.dataset.resize(self.highest + 1, axis=0)
        return self.highest + 1


def create_hdf5(path: Path, directory: SeriesDirectory | None) -> tuple[h5py.File, Path]:
    """A new HDF5 file and its real path: in ``directory`` (by descriptor, never through a link)
    when given, else at ``path``; "w-" fails if the file exists: an existing file is never opened
    for writing."""
    if directory is None:
        return h5py.File(path, "w-", libver=LIBVER), path
    return directory.create(path.name, lambda fd_path: h5py.File(fd_path, "w", libver=LIBVER))


class DataFile:
    """One file of a split series: frames ``first .. first + planned - 1``.

    ``image_nr_low``/``image_nr_high`` (DECTRIS' convention, 1-based) say which frames of the
    series it holds; attributes cannot change while SWMR is on, so ``image_nr_high`` is the
    planned last frame and is corrected after the file is closed if the series ended earlier.
    """

    def __init__(
        self, path: Path, first: int, planned: int, shape, dtype, encoding: str,
        directory: SeriesDirectory | None = None,
    ):
        self.first = first
        self.planned = planned
        self._file, self.path = create_hdf5(path, directory)
        try:
            self._file.attrs["creator"] = f"photonflow {photonflow.__version__}"
            entry = self._file.create_group("entry")
            entry.attrs["NX_class"] = "NXentry"
            data = entry.create_group("data")
            data.attrs["NX_class"] = "NXdata"
            data.attrs["signal"] = "data"
            self.frames = FrameStack(data, "data", shape, dtype, encoding)
            self.frames.dataset.attrs["image_nr_low"] = first + 1  # Dectris convention: 1-based
            self.frames.dataset.attrs["image_nr_high"] = first + planned
            self._file.swmr_mode = True
        except BaseException:
            self._file.close()
            raise

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> int:
        try:
            count = self.frames.trim()
        finally:
            self._file.close()
        if count != self.planned:
            with h5py.File(self.path, "r+") as f:
                f["entry/data/data"].attrs["image_nr_high"] = self.first + count
        return count


def data_file_path(master: Path, index: int) -> Path:
    """Dectris-style name of the index-th (0-based) data file of a master file."""
    return master.with_name(f"{master.stem}_data_{index + 1:06d}{master.suffix}")


def build_virtual_dataset(group: h5py.Group, master: Path, frames: int, frames_per_file: int,
                          shape, dtype) -> h5py.Dataset:
    """``group/data``: a virtual dataset over the data files for frames ``0 .. frames-1``.

    Sources are named relative to the master, so the series can move as a whole. A data
    file not written yet reads as zeros (the fill value), so the master is valid while the
    series runs as well as after.
    """
    layout = h5py.VirtualLayout(shape=(frames, *shape), dtype=dtype)
    for index, first in enumerate(range(0, frames, frames_per_file)):
        count = min(frames_per_file, frames - first)
        source = h5py.VirtualSource(
            "./" + data_file_path(master, index).name, "entry/data/data", shape=(count, *shape)
        )
        layout[first : first + count] = source
    return group.create_virtual_dataset("data", layout, fillvalue=0)


class NexusFrameWriter:
    """One series on disk: a NeXus master file, plus data files when the series is split.

    With ``frames_per_file`` > 0 (and a known frame count), frames go to data files of that
    many frames each and the master's ``data`` is a virtual dataset spanning them; else the
    frames are in the master itself. ``flush`` publishes progress to SWMR readers, ``close``
    finalises. With ``writeback`` the disk starts writing the files while frames still come
    (see ``writeback.py``), so a durable close has little left to wait for.
    """

    def __init__(
        self, path: Path, start: SeriesStart, frames_per_file: int = 0, writeback: bool = False,
        directory: SeriesDirectory | None = None, writer_token: str = "",
    ):
        self._directory = directory
        self.writer_token = writer_token  # names this writer in the file, for crash repair
        if start.shape is None or start.dtype is None or start.encoding is None:
            raise RecordingError("a file is made only for a series_start that says what a frame is "
                                 "(shape, dtype and encoding)")
        self.shape: tuple[int, int] = start.shape
        self.encoding: str = start.encoding
        self.dtype = np.dtype(start.dtype).newbyteorder("<")
        self.frame_bytes = self.shape[0] * self.shape[1] * self.dtype.itemsize
        self.frames_per_file = frames_per_file if start.frame_count > 0 else 0
        self.frame_count = start.frame_count
        self.highest_frame = -1
        self._capacity = 0
        self._receive_times = np.full(0, np.nan)
        self._timestamps = np.full(0, np.nan)
        self._frame_metadata: dict[str, np.ndarray] = {}  # per-frame values by name, NaN where never sent
        # (frame number, receive time, timestamp, metadata) of each frame written since the last flush
        self._unbooked: list[tuple[int, float, float, dict[str, float] | None]] = []
        self._data_files: dict[int, DataFile] = {}
        self.data_file_paths: list[Path] = []
        self._stack: FrameStack | None = None
        self._file, self.path = create_hdf5(path, directory)
        self._writeback = BackgroundWriteback() if writeback else None
        try:
            self._create_layout(start)
            self._file.swmr_mode = True
            self._watch(self.path)
        except BaseException:
            self._stop_writeback()
            self._file.close()
            raise

    def _create_layout(self, start: SeriesStart) -> None:
        f = self._file
        f.attrs["default"] = "entry"
        f.attrs["creator"] = f"photonflow {photonflow.__version__}"
        f.attrs["file_name"] = str(self.path)
        if self.writer_token:
            f.attrs[WRITER_TOKEN] = self.writer_token
        f.attrs["file_time"] = nexus_time(start.start_time)
        f.attrs["HDF5_Version"] = h5py.version.hdf5_version
        f.attrs["h5py_version"] = h5py.version.version
        entry = f.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        entry.attrs["default"] = "data"
        entry.create_dataset("start_time", data=nexus_time(start.start_time), dtype=TEXT)
        entry.create_dataset("end_time", data="", dtype=TEXT)
        entry["series_id"] = start.series_id
        instrument = entry.create_group("instrument")
        instrument.attrs["NX_class"] = "NXinstrument"
        detector = instrument.create_group(detector_group_name(start.detector))
        detector.attrs["NX_class"] = "NXdetector"
        write_detector_description(detector, start.detector)
        if self.frames_per_file:
            self.data = build_virtual_dataset(
                detector, self.path, self.frame_count, self.frames_per_file, self.shape, self.dtype
            )
        else:
            self._stack = FrameStack(detector, "data", self.shape, self.dtype, self.encoding)
            self.data = self._stack.dataset
        self.data.attrs["long_name"] = "photon counts"
        self.data.attrs["units"] = "counts"
        self._detector_path = detector.name
        nxdata = entry.create_group("data")
        nxdata.attrs["NX_class"] = "NXdata"
        nxdata.attrs["signal"] = "data"
        nxdata["data"] = self.data  # hard link: the same dataset, two NeXus roles

        accounting = entry.create_group("accounting")
        accounting.attrs["NX_class"] = "NXcollection"
        for name in ACCOUNTING_COUNTS:
            accounting.create_dataset(name, data=-1, dtype=np.int64).attrs["description"] = UNKNOWN_COUNT_NOTE
        accounting["series_id"][()] = start.series_id
        accounting["frames_per_file"] = self.frames_per_file  # 0: the frames are in this file
        accounting["frames_per_file"].attrs["description"] = "frames in each data_NNNNNN file; 0: none"
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
        if start.frame_metadata:  # created now: no new object can be made once SWMR writing starts
            self._metadata_group = detector.create_group("frame_metadata")
            self._metadata_group.attrs["NX_class"] = "NXcollection"
            for name in start.frame_metadata:
                values = self._metadata_group.create_dataset(
                    name, shape=(0,), maxshape=(None,), dtype=np.float64, chunks=(4096,), fillvalue=np.nan
                )
                values.attrs["description"] = f"{name} of each frame, as the detector sent it; NaN: not sent"
                if FRAME_METADATA_UNITS.get(name):
                    values.attrs["units"] = FRAME_METADATA_UNITS[name]
                self._frame_metadata[name] = np.full(0, np.nan)

    def _grow(self, frame_number: int) -> None:
        # Doubling, not +64: copying ever longer arrays every 64 frames would cost O(n^2).
        self._capacity = max(frame_number + 1, 2 * self._capacity, GROWTH_FRAMES)
        self._receive_times = self._grown(self._receive_times)
        self._timestamps = self._grown(self._timestamps)
        for name, values in self._frame_metadata.items():
            self._frame_metadata[name] = self._grown(values)

    def _grown(self, values: np.ndarray) -> np.ndarray:
        grown = np.full(self._capacity, np.nan)
        grown[: values.size] = values
        return grown

    def write_frame(
        self, frame_number: int, payload: Any, timestamp: float, receive_time: float,
        metadata: dict[str, float] | None = None,
    ) -> None:
        """Store one frame buffer (raw or bslz4, as announced) as the chunk of index ``frame_number``.

        ``metadata``: the frame's own values, by names series_start announced
        (``frame_metadata``); each is a per-frame dataset in ``<detector>/frame_metadata``.
        The per-frame values wait in a list until the next flush, which stores them in blocks
        (``_book``): never an HDF5 call, nor a numpy store, per frame and value.
        """
        if self._stack is not None:
            self._stack.write(frame_number, payload)
        else:
            data_file = self._data_file(frame_number // self.frames_per_file)
            data_file.frames.write(frame_number - data_file.first, payload)
        self._unbooked.append((frame_number, receive_time, timestamp, metadata))
        if frame_number > self.highest_frame:
            self.highest_frame = frame_number

    def _book(self) -> tuple[int, int] | None:
        """Put the per-frame values of the frames written since the last call into their arrays,
        one numpy store per value name for all of them; the lowest and highest frame they cover
        (None: no frame)."""
        if not self._unbooked:
            return None
        numbers, receive_times, timestamps, metadata = zip(*self._unbooked, strict=True)
        self._unbooked = []
        low, high = min(numbers), max(numbers)
        if high >= self._capacity:
            self._grow(high)
        index = np.fromiter(numbers, np.int64, len(numbers))
        self._receive_times[index] = receive_times
        self._timestamps[index] = timestamps
        if any(metadata):  # names series_start did not announce never get here: the Recorder rejects them
            for name, values in self._frame_metadata.items():
                values[index] = [frame.get(name, np.nan) if frame else np.nan for frame in metadata]
        return low, high

    def _data_file(self, index: int) -> DataFile:
        """The data file for frames of file ``index``, created on first use.

        Frames arrive nearly in order, so a file is closed once a file two further on is
        opened: at most two are open, and each is complete on disk soon after its last frame.
        """
        data_file = self._data_files.get(index)
        if data_file is None:
            first = index * self.frames_per_file
            data_file = DataFile(
                data_file_path(self.path, index), first, min(self.frames_per_file, self.frame_count - first),
                self.shape, self.dtype, self.encoding, self._directory,
            )
            self._data_files[index] = data_file
            self.data_file_paths.append(data_file.path)
            self._watch(data_file.path)
            for older in [i for i in self._data_files if i < index - 1]:
                self._close_data_file(older)
        return data_file

    def _close_data_file(self, index: int) -> None:
        data_file = self._data_files.pop(index)
        if self._writeback is not None:
            self._writeback.forget(data_file.path)
        data_file.close()

    def _watch(self, path: Path) -> None:
        if self._writeback is not None:
            self._writeback.watch(path)

    def _stop_writeback(self) -> None:
        if self._writeback is not None:
            self._writeback.close()
            self._writeback = None

    def flush(self, counts: dict[str, int]) -> None:
        """Make the frames and bookkeeping so far visible to SWMR readers.

        Frames first, counts after: a count is plain data that reaches the file at once, so
        written before the flush it could announce frames whose chunk index a reader cannot
        see yet.
        """
        self._write_bookkeeping()
        for data_file in self._data_files.values():
            data_file.flush()
        self._file.flush()
        for name, value in counts.items():
            self._accounting[name][()] = value

    def _write_bookkeeping(self) -> None:
        booked = self._book()
        if booked is None:
            return
        low, high = booked
        extent = (self.highest_frame // GROWTH_FRAMES + 1) * GROWTH_FRAMES
        for dataset, values in self._bookkeeping_datasets():
            if dataset.shape[0] < extent:
                dataset.resize(extent, axis=0)
            dataset[low : high + 1] = values[low : high + 1]

    def _bookkeeping_datasets(self) -> Iterator[tuple[h5py.Dataset, np.ndarray]]:
        """Each per-frame dataset with the values behind it."""
        yield self._accounting["receive_time"], self._receive_times
        yield self._accounting["timestamp"], self._timestamps
        for name, values in self._frame_metadata.items():
            yield self._metadata_group[name], values

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
            if self._stack is not None:
                self._stack.trim()
            self._stop_writeback()
            for index in list(self._data_files):
                self._close_data_file(index)
            for dataset, _ in self._bookkeeping_datasets():
                dataset.resize(frames, axis=0)
            missing = np.sort(np.asarray(missing_frames, dtype=np.int64))
            self._accounting["missing_frame_numbers"].resize(missing.size, axis=0)
            self._accounting["missing_frame_numbers"][:] = missing
            self._file.flush()  # the frames first, then the counts that announce them (see flush)
            for name, value in counts.items():
                self._accounting[name][()] = value
            self._accounting["end_reason"][()] = end_reason
            self._file["entry/end_time"][()] = nexus_time(end_time)
        finally:
            self._stop_writeback()
            self._file.close()
        if self.frames_per_file:
            self._trim_virtual_dataset(self.highest_frame + 1)
        if durable:
            for path in (*self.data_file_paths, self.path):
                make_durable(path)

    def _trim_virtual_dataset(self, frames: int) -> None:
        """After the series: the virtual dataset spans exactly the frames that exist."""
        with h5py.File(self.path, "r+") as f:
            retrim_virtual_dataset(f, self._detector_path, self.path, frames, self.frames_per_file)

    def abandon(self) -> bool:
        """Close without accounting (after a write error), keeping what was written readable;
        False if HDF5 could not close a file (the disk refused even that)."""
        self._stop_writeback()
        closed = True
        files = [(f"data file {index}", data_file) for index, data_file in self._data_files.items()]
        for name, closable in (*files, (str(self.path), self._file)):
            try:
                closable.close()
            except Exception:  # the disk refused even that: say which file (never by asking HDF5), go on
                log.exception("could not close %s after a write error", name)
                closed = False
        self._data_files.clear()
        return closed


def retrim_virtual_dataset(f: h5py.File, detector_path: str, master: Path, frames: int, frames_per_file: int) -> None:
    """Replace the master's virtual dataset (and its NXdata link) by one over ``frames`` frames."""
    detector = f[detector_path]
    old = detector["data"]
    shape, dtype = old.shape[1:], old.dtype
    attributes = dict(old.attrs)
    del detector["data"]
    entry_data = f["entry/data"]
    if "data" in entry_data:
        del entry_data["data"]
    data = build_virtual_dataset(detector, master, frames, frames_per_file, shape, dtype) if frames else \
        detector.create_dataset("data", shape=(0, *shape), dtype=dtype)
    for key, value in attributes.items():
        data.attrs[key] = value
    entry_data["data"] = data
