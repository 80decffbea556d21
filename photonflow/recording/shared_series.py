"""One series written by several Recorders that share the detector's stream (each frame reaches
exactly one of them): each Recorder writes the frames it received into its own part file, at
their frame numbers (a part is sparse, its other chunks never written), and the master file
presents the series as one.

The master is the odin-data/DECTRIS way of joining the parts: a NeXus file like a single
Recorder's (the first part's entry, its detector description and counts), whose frames are a
virtual dataset in frame-number order, each frame mapped to the part that holds it (one strided
mapping per run of a part's frames: round-robin parts give a few mappings, not one per frame). A
frame no part holds is listed in ``accounting/missing_frame_numbers`` and reads as the fill value
(0), never as another frame. ``accounting/recorder_of_frame`` says which part holds each frame
(-1: none), ``accounting/part_files`` where the parts are (relative to the master when beside it).

Why our own code: h5py's virtual datasets do the joining; what frame sits where is photonflow's
own bookkeeping (each part's ``receive_time``, NaN for a frame it never had).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

import photonflow
from photonflow.errors import RecordingError

PER_FRAME = ("receive_time", "timestamp")  # the accounting's per-frame datasets, merged by owner
SUMMED = ("frames_received", "frames_written", "duplicate_frames", "messages_rejected", "frames_lost")
END_REASONS_BY_WEIGHT = ("failed", "interrupted", "aborted", "stopped", "completed_without_end", "completed")


def part_file(file: str, index: int) -> str:
    """The file Recorder ``index`` (0-based) writes its part of ``file`` into: ``<stem>_r<n>``."""
    path = Path(file)
    return str(path.with_name(f"{path.stem}_r{index + 1}{path.suffix or '.h5'}"))


@dataclass(frozen=True)
class MasterSummary:
    """What the master presents: frames held by some part, those missing, and each frame's part."""

    path: Path
    frames: int  # the frames the master spans
    owners: np.ndarray  # part index of each frame, -1 for none
    missing: np.ndarray  # frame numbers no part holds, below the frames expected
    unreadable: tuple[str, ...] = ()  # parts that could not be read (a Recorder killed: until its repair)

    @property
    def frames_written(self) -> int:
        return int(np.count_nonzero(self.owners >= 0))


def frames_held(part: h5py.File) -> np.ndarray:
    """The frame numbers a part holds: those it has a receive time for."""
    received = part["entry/accounting/receive_time"][()]
    return np.flatnonzero(np.isfinite(received))


def part_paths(master: h5py.File, master_path: Path) -> list[Path]:
    """Where a master's parts are, in part order (``accounting/part_files``, relative to the
    master's folder when beside it); empty for a file that is no shared series' master."""
    if "entry/accounting/part_files" not in master:
        return []
    return [master_path.parent / (p.decode() if isinstance(p, bytes) else str(p))
            for p in master["entry/accounting/part_files"][()]]


def strided_runs(frames: np.ndarray) -> Iterator[tuple[int, int, int]]:
    """(first, step, count) runs covering sorted ``frames``: round-robin frames 0, 2, 4... are one run."""
    index, total = 0, len(frames)
    while index < total:
        if index + 1 == total:
            yield int(frames[index]), 1, 1
            return
        step = int(frames[index + 1] - frames[index])
        last = index + 1
        while last + 1 < total and frames[last + 1] - frames[last] == step:
            last += 1
        yield int(frames[index]), step, last - index + 1
        index = last + 1


def write_master(master: Path, parts: Sequence[Path], expected: int) -> MasterSummary:
    """Write ``master`` (a new file) joining ``parts``, ``expected`` frames. A part that does not
    exist (a Recorder gone before its first frame) holds nothing; one that cannot be read (a
    Recorder killed mid-series leaves its file marked open until its repair) is named in
    ``unreadable`` and holds nothing either."""
    opened, unreadable = [], []
    for index, path in enumerate(parts):
        if not Path(path).is_file():
            continue
        try:
            opened.append((index, h5py.File(path, "r", locking=False)))
        except OSError as error:
            unreadable.append(f"{path}: {error}")
    if not opened:
        raise RecordingError(f"no part of {master.name} can be read: {', '.join(str(p) for p in parts)}"
                             + (f" ({'; '.join(unreadable)})" if unreadable else ""))
    try:
        holdings = {index: frames_held(f) for index, f in opened}
        frames = max([expected, *(int(held[-1]) + 1 for held in holdings.values() if held.size)])
        owners = np.full(frames, -1, dtype=np.int16)
        for index in sorted(holdings, reverse=True):  # a frame two parts hold: the first part's
            owners[holdings[index]] = index
        missing = np.flatnonzero(owners[:expected] < 0)
        _write(master, parts, dict(opened), owners, missing)
    finally:
        for _, f in opened:
            f.close()
    return MasterSummary(master, frames, owners, missing, tuple(unreadable))


def _write(master: Path, parts: Sequence[Path], opened: dict[int, h5py.File], owners: np.ndarray,
           missing: np.ndarray) -> None:
    first = opened[min(opened)]
    detector_path = _detector_data_path(first)
    frame_data = first[detector_path]
    with h5py.File(master, "w-", libver="v110") as f:
        for key, value in first.attrs.items():
            f.attrs[key] = value
        f.attrs["file_name"] = str(master)
        f.attrs["creator"] = f"photonflow {photonflow.__version__} (master of {len(parts)} Recorders' parts)"
        skip = {detector_path, "entry/data", "entry/accounting"}
        _copy_tree(first["entry"], f.require_group("entry"), skip)
        metadata_path = str(Path(detector_path).parent / "frame_metadata")
        if metadata_path in first:  # the detector's per-frame values, each frame's from its part
            for name in first[metadata_path]:
                _merge_per_frame(f"{metadata_path}/{name}", f[metadata_path], opened, owners)
        layout = h5py.VirtualLayout(shape=(len(owners), *frame_data.shape[1:]), dtype=frame_data.dtype)
        for index in opened:
            source = h5py.VirtualSource(_relative(parts[index], master), detector_path,
                                        shape=(len(owners), *frame_data.shape[1:]), dtype=frame_data.dtype)
            for start, step, count in strided_runs(np.flatnonzero(owners == index)):
                stop = start + step * (count - 1) + 1
                layout[start:stop:step] = source[start:stop:step]
        data = f[str(Path(detector_path).parent)].create_virtual_dataset("data", layout, fillvalue=0)
        for key, value in frame_data.attrs.items():
            data.attrs[key] = value
        nxdata = f["entry"].create_group("data")
        for key, value in first["entry/data"].attrs.items():
            nxdata.attrs[key] = value
        nxdata["data"] = data
        _write_accounting(f["entry"], first, opened, parts, master, owners, missing)


def _write_accounting(entry: h5py.Group, first: h5py.File, opened: dict[int, h5py.File], parts: Sequence[Path],
                      master: Path, owners: np.ndarray, missing: np.ndarray) -> None:
    source = first["entry/accounting"]
    accounting = entry.create_group("accounting")
    for key, value in source.attrs.items():
        accounting.attrs[key] = value
    for name, item in source.items():
        if name in (*PER_FRAME, "missing_frame_numbers", "end_reason") or not isinstance(item, h5py.Dataset):
            continue
        if name in SUMMED:
            total = sum(int(f["entry/accounting"][name][()]) for f in opened.values() if name in f["entry/accounting"])
            accounting.create_dataset(name, data=total, dtype=np.int64)
        else:
            source.copy(item, accounting, name)
        for key, value in item.attrs.items():
            accounting[name].attrs[key] = value
    if "missing_frames" in accounting:
        accounting["missing_frames"][()] = missing.size
    reasons = {f["entry/accounting/end_reason"][()].decode() for f in opened.values()}
    if len(opened) < len(parts):
        reasons.add("failed")
    accounting.create_dataset("end_reason", data=next((r for r in END_REASONS_BY_WEIGHT if r in reasons), "completed"),
                              dtype=h5py.string_dtype())
    accounting.create_dataset("missing_frame_numbers", data=missing.astype(np.int64))
    for name in PER_FRAME:
        _merge_per_frame(f"entry/accounting/{name}", accounting, opened, owners)
    accounting.create_dataset("recorder_of_frame", data=owners)
    accounting["recorder_of_frame"].attrs["description"] = (
        "which part file holds each frame (index in part_files); -1: none")
    accounting.create_dataset("part_files", data=[_relative(p, master) for p in parts], dtype=h5py.string_dtype())


def _merge_per_frame(path: str, target: h5py.Group, opened: dict[int, h5py.File], owners: np.ndarray) -> None:
    """A per-frame dataset (NaN where a part never had the frame) as one: each frame's value from
    the part that holds it."""
    merged = np.full(len(owners), np.nan)
    for index, f in opened.items():
        if path not in f:
            continue
        values = f[path][()]
        mine = np.flatnonzero(owners[: values.size] == index)
        merged[mine] = values[mine]
    name = path.rsplit("/", 1)[1]
    if name in target:
        del target[name]
    target.create_dataset(name, data=merged)
    for key, value in opened[min(opened)][path].attrs.items():
        target[name].attrs[key] = value


def _detector_data_path(f: h5py.File) -> str:
    for name, group in f["entry/instrument"].items():
        if isinstance(group, h5py.Group) and group.attrs.get("NX_class") == "NXdetector" and "data" in group:
            return f"entry/instrument/{name}/data"
    raise RecordingError(f"{f.filename} has no detector data under entry/instrument")


def _copy_tree(source: h5py.Group, target: h5py.Group, skip: set[str]) -> None:
    """Copy a group's attributes and members, leaving out the paths in ``skip`` (never the frames)."""
    for key, value in source.attrs.items():
        target.attrs[key] = value
    for name, item in source.items():
        path = f"{source.name.lstrip('/')}/{name}"
        if path in skip:
            continue
        if isinstance(item, h5py.Group):
            _copy_tree(item, target.require_group(name), skip)
        elif isinstance(item, h5py.Dataset) and not item.is_virtual:
            source.copy(item, target, name)


def _relative(path: Path, master: Path) -> str:
    """A part's path as the master names it: relative when beside or below it (the folder can move)."""
    path, folder = Path(path).resolve(), master.resolve().parent
    try:
        return str(path.relative_to(folder))
    except ValueError:
        return os.fspath(path)
