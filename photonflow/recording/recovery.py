"""Bringing back a file whose writer died mid-series (killed process, power cut).

A file open for SWMR writing carries "open for write" flags in its superblock; after a crash
they stay set and a plain ``h5py.File(path, "r")`` refuses the file (HDF5 suggests the
``h5clear`` tool). ``clear_write_flags`` does what ``h5clear -s`` does, in Python: it
clears the flags and rewrites the superblock checksum (Jenkins lookup3, as HDF5 computes it).
``finalise_interrupted`` then trims the series to the frames whose arrival was recorded and
marks it ``interrupted``, so the file tells the truth about what it holds.

``CrashJournal`` is how the next Recorder knows which file that is: the note a series writes
in the data root when it creates its file and removes when the file is closed.
"""

from __future__ import annotations

import json
import logging
import os
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from photonflow.recording.nexus_writer import (
    ACCOUNTING_COUNTS,
    WRITER_TOKEN,
    data_file_path,
    retrim_virtual_dataset,
)
from photonflow.recording.paths import DataRoot
from photonflow.stream.stins import utc_now_iso

log = logging.getLogger(__name__)

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_MASK = 0xFFFFFFFF


def _rotate(value: int, bits: int) -> int:
    return ((value << bits) | (value >> (32 - bits))) & _MASK


def lookup3(data: bytes, initial: int = 0) -> int:
    """Bob Jenkins' lookup3 ``hashlittle``, byte by byte, as ``H5_checksum_lookup3``."""
    length = len(data)
    a = b = c = (0xDEADBEEF + length + initial) & _MASK
    offset = 0
    while length > 12:
        a = (a + int.from_bytes(data[offset : offset + 4], "little")) & _MASK
        b = (b + int.from_bytes(data[offset + 4 : offset + 8], "little")) & _MASK
        c = (c + int.from_bytes(data[offset + 8 : offset + 12], "little")) & _MASK
        a = (a - c) & _MASK; a ^= _rotate(c, 4); c = (c + b) & _MASK  # noqa: E702
        b = (b - a) & _MASK; b ^= _rotate(a, 6); a = (a + c) & _MASK  # noqa: E702
        c = (c - b) & _MASK; c ^= _rotate(b, 8); b = (b + a) & _MASK  # noqa: E702
        a = (a - c) & _MASK; a ^= _rotate(c, 16); c = (c + b) & _MASK  # noqa: E702
        b = (b - a) & _MASK; b ^= _rotate(a, 19); a = (a + c) & _MASK  # noqa: E702
        c = (c - b) & _MASK; c ^= _rotate(b, 4); b = (b + a) & _MASK  # noqa: E702
        offset += 12
        length -= 12
    if length == 0:
        return c
    tail = data[offset:] + bytes(12 - length)
    a = (a + int.from_bytes(tail[0:4], "little")) & _MASK
    b = (b + int.from_bytes(tail[4:8], "little")) & _MASK
    c = (c + int.from_bytes(tail[8:12], "little")) & _MASK
    c ^= b; c = (c - _rotate(b, 14)) & _MASK  # noqa: E702
    a ^= c; a = (a - _rotate(c, 11)) & _MASK  # noqa: E702
    b ^= a; b = (b - _rotate(a, 25)) & _MASK  # noqa: E702
    c ^= b; c = (c - _rotate(b, 16)) & _MASK  # noqa: E702
    a ^= c; a = (a - _rotate(c, 4)) & _MASK  # noqa: E702
    b ^= a; b = (b - _rotate(a, 14)) & _MASK  # noqa: E702
    c ^= b; c = (c - _rotate(b, 24)) & _MASK  # noqa: E702
    return c


def clear_write_flags(path: str | Path) -> bool:
    """Clear the superblock's file-consistency flags; True if they were set."""
    with open(path, "r+b") as f:
        head = f.read(12)
        if head[:8] != HDF5_SIGNATURE:
            raise ValueError(f"{path} is not an HDF5 file (or has a user block)")
        version, offset_size = head[8], head[9]
        if version < 2:
            return False  # superblocks before version 2 carry no such flags
        superblock_size = 12 + 4 * offset_size
        f.seek(0)
        superblock = bytearray(f.read(superblock_size + 4))
        if superblock[11] == 0:
            return False
        stored = struct.unpack("<I", superblock[superblock_size:])[0]
        if lookup3(bytes(superblock[:superblock_size])) != stored:
            raise ValueError(f"{path}: superblock checksum does not match; not touching it")
        superblock[11] = 0
        superblock[superblock_size:] = struct.pack("<I", lookup3(bytes(superblock[:superblock_size])))
        f.seek(0)
        f.write(superblock)
        f.flush()
        os.fsync(f.fileno())
    return True


def write_flags_set(path: str | Path) -> bool:
    """Whether the file's superblock still says a writer has it open (read only, nothing changed)."""
    with open(path, "rb") as f:
        head = f.read(12)
    return head[:8] == HDF5_SIGNATURE and head[8] >= 2 and head[11] != 0


def _open_for_reading(path: Path) -> h5py.File:
    """Open a file a dead writer may have left flagged open, without touching it."""
    return h5py.File(path, "r", swmr=True) if write_flags_set(path) else h5py.File(path, "r")


def writer_refusal(root: DataRoot, path: Path, token: str) -> str:
    """Why a crash journal's file must not be repaired, or '' if it is one this Recorder's series
    opened and left running: a regular file under the data root, carrying the series' token in
    its attributes and ``end_reason`` ``running``. A finished file is never rewritten."""
    if not root.contains(os.path.realpath(path)):
        return f"{path} is outside the data root {root.path}"
    if path.is_symlink() or not path.is_file():
        return f"{path} is not a regular file"
    try:
        with _open_for_reading(path) as f:
            if f.attrs.get(WRITER_TOKEN) != token:
                return f"{path} was not opened by this Recorder's interrupted series"
            end_reason = f["entry/accounting/end_reason"][()]
    except (OSError, KeyError) as error:
        return f"{path} cannot be read as a photonflow file ({error})"
    end_reason = end_reason.decode() if isinstance(end_reason, bytes) else str(end_reason)
    if end_reason != "running":
        return f"{path} was closed (end_reason {end_reason}); a finished file is never rewritten"
    return ""


def read_accounting(path: str | Path) -> dict[str, int]:
    """The final counts in a file's /entry/accounting."""
    with _open_for_reading(Path(path)) as f:
        accounting = f["entry/accounting"]
        return {name: int(accounting[name][()]) for name in ACCOUNTING_COUNTS if name in accounting}


def finalise_interrupted(path: str | Path, end_reason: str = "interrupted") -> int:
    """Trim an interrupted series to the frames whose arrival was recorded; returns how many.

    For a split series the data files get the same treatment, and the master's virtual
    dataset is rebuilt over the frames that exist.
    """
    path = Path(path)
    clear_write_flags(path)
    with h5py.File(path, "r+") as f:
        accounting = f["entry/accounting"]
        received = ~np.isnan(accounting["receive_time"][()])
        frames = int(np.flatnonzero(received)[-1]) + 1 if received.any() else 0
        frames_per_file = int(accounting["frames_per_file"][()]) if "frames_per_file" in accounting else 0
        data = f["entry/data/data"]
        detector_path = next(
            group.name for group in f["entry/instrument"].values()
            if isinstance(group, h5py.Group) and group.attrs.get("NX_class") == "NXdetector"
        )
        if frames_per_file:
            _finalise_data_files(path, frames, frames_per_file)
            retrim_virtual_dataset(f, detector_path, path, frames, frames_per_file)
        else:
            data.resize(frames, axis=0)
        for name in ("receive_time", "timestamp"):
            accounting[name].resize(frames, axis=0)
        for values in f[detector_path].get("frame_metadata", {}).values():
            values.resize(frames, axis=0)
        missing = np.flatnonzero(~received[:frames]).astype(np.int64)
        accounting["missing_frame_numbers"].resize(missing.size, axis=0)
        accounting["missing_frame_numbers"][:] = missing
        kept = int(received[:frames].sum())
        accounting["frames_written"][()] = kept
        accounting["frames_received"][()] = max(int(accounting["frames_received"][()]), kept)
        accounting["missing_frames"][()] = missing.size
        accounting["end_reason"][()] = end_reason
        if not f["entry/end_time"][()]:
            f["entry/end_time"][()] = utc_now_iso()  # when the series was found ended
    return int(received[:frames].sum())


def _finalise_data_files(master: Path, frames: int, frames_per_file: int) -> None:
    """Clear the flags of every data file of the series and trim each to its frames."""
    for index, first in enumerate(range(0, max(frames, 1), frames_per_file)):
        data_path = data_file_path(master, index)
        if not data_path.exists():
            continue
        clear_write_flags(data_path)
        with h5py.File(data_path, "r+") as f:
            kept = max(0, min(frames_per_file, frames - first))
            f["entry/data/data"].resize(kept, axis=0)
            f["entry/data/data"].attrs["image_nr_high"] = first + kept


@dataclass(frozen=True)
class Repair:
    """What a Recorder found at start-up: the file it repaired and that file's own accounting,
    or a status saying why nothing was repaired ('' when there was no journal at all)."""

    status: str = ""
    file: str = ""
    accounting: dict[str, int] = field(default_factory=dict)


class CrashJournal:
    """The note, in the data root, of the file a series has open: written when the series
    creates its file, removed when the file is closed, marked ``failed`` when the disk refused
    even the closing. A Recorder that finds the note at start-up was killed mid-series (or lost
    its disk): ``repair_interrupted`` finalises the file it names. Only a file this Recorder
    opened, under its data root and still marked running, is ever touched: a note naming
    anything else is set aside, never followed."""

    def __init__(self, root: DataRoot, recorder_name: str, wall_clock: Callable[[], float] = time.time):
        self._root = root
        self._wall_clock = wall_clock
        self.name = f".photonflow-open-{recorder_name}.json"  # opened relative to the root, never through a link
        self.path = root.path / self.name

    def series_opened(self, file: Path, token: str) -> None:
        self._write({"file": str(file.relative_to(self._root.path)), "token": token})

    def series_failed(self, file: Path, token: str) -> None:
        """The file could not be closed: the next start repairs it and marks it failed."""
        self._write({"file": str(file.relative_to(self._root.path)), "token": token, "end_reason": "failed"})

    def series_closed(self) -> None:
        try:
            os.unlink(self.name, dir_fd=self._root.fd)
        except FileNotFoundError:
            pass

    def _write(self, entry: dict) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(self.name, flags, 0o644, dir_fd=self._root.fd)
        with os.fdopen(fd, "w") as journal:
            journal.write(json.dumps(entry))

    def repair_interrupted(self) -> Repair:
        """Repair the file an earlier run left open (killed mid-series, or failed on a full disk)."""
        try:
            fd = os.open(self.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self._root.fd)
        except FileNotFoundError:
            return Repair()
        except OSError as error:
            return self._set_aside(f"it cannot be read ({error.strerror})")
        try:
            with os.fdopen(fd) as journal:
                entry = json.loads(journal.read(65536))
            path = self._root.path / entry["file"]
            token, end_reason = str(entry["token"]), entry.get("end_reason", "interrupted")
        except (OSError, ValueError, KeyError, TypeError, RecursionError) as error:
            return self._set_aside(f"it is not a photonflow journal ({error})")
        refusal = writer_refusal(self._root, path, token)
        if refusal:
            return self._set_aside(refusal)
        try:
            frames = finalise_interrupted(path, end_reason)
        except (OSError, ValueError, KeyError) as error:
            log.error("could not repair %s named in %s: %s", path, self.path, error)
            return Repair(f"Idle. The interrupted file {path} could not be repaired ({error}); see {self.path}.")
        self.series_closed()
        accounting = read_accounting(path)
        status = (
            f"Idle. Repaired {path} left open by an {end_reason} series: {frames} frames kept, "
            f"{accounting['missing_frames']} missing."
        )
        log.warning(status)
        return Repair(status, str(path), accounting)

    def _set_aside(self, why: str) -> Repair:
        """Rename the journal (never follow it) and say why nothing was repaired."""
        aside = f"{self.name}.refused-{int(self._wall_clock())}"
        try:
            os.rename(self.name, aside, src_dir_fd=self._root.fd, dst_dir_fd=self._root.fd)
        except OSError:
            pass
        status = f"Idle. Nothing repaired: the crash journal {self.path} was set aside as {aside}: {why}."
        log.error(status)
        return Repair(status)
