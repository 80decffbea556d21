"""The files of one series, from the directory opened at Arm to the file closed: the NeXus
writer, the compression in front of it, and the crash journal's note that the file is open."""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from photonflow.errors import RecordingError
from photonflow.recording.compression import CompressionPipeline
from photonflow.recording.config import RecorderConfig
from photonflow.recording.nexus_writer import NexusFrameWriter
from photonflow.recording.paths import DataRoot, SeriesDirectory
from photonflow.recording.recovery import CrashJournal, finalise_interrupted
from photonflow.recording.request import RecordingRequest
from photonflow.stream.stins import UNKNOWN, SeriesStart

log = logging.getLogger(__name__)


class SeriesFile:
    """Where one series is written. Nothing is created before the series starts: ``open``
    makes the file (and notes it in the journal), ``close`` or ``close_failed`` ends it."""

    def __init__(self, path: Path, directory: SeriesDirectory, journal: CrashJournal):
        self.path = path  # where the file is (once opened: where it really is, which LastFile names)
        self.directory: SeriesDirectory | None = directory  # held open: the files are made in it, by descriptor
        self.journal = journal
        self.token = secrets.token_hex(16)  # this series' mark in its file, which the journal names
        self.writer: NexusFrameWriter | None = None
        self.compressor: CompressionPipeline | None = None

    @classmethod
    def prepare(cls, root: DataRoot, path: Path, journal: CrashJournal) -> SeriesFile:
        """Make and open the directory of the file at Arm: a path that cannot be written is
        refused now, not a FAULT at the first frame."""
        try:
            directory = root.open_directory(path.parent)
        except OSError as error:
            raise RecordingError(f"cannot create the directory {path.parent}: {error.strerror or error}") from None
        if not directory.writable():
            directory.close()
            raise RecordingError(f"cannot write into the directory {path.parent}: Permission denied")
        return cls(path, directory, journal)

    def open(self, start: SeriesStart, request: RecordingRequest, config: RecorderConfig,
             store: Callable) -> NexusFrameWriter:
        """Create the file for the series ``start`` describes and return its writer; with
        compression, frames that arrive raw go through the compressor to ``store``."""
        # The file holds what was armed: the series id when the protocol carries none, and the
        # armed frame count (the detector's own count is kept as frames_announced).
        stored = replace(
            start,
            series_id=request.series_id if start.series_id == UNKNOWN else start.series_id,
            frame_count=request.frame_count,
        )
        if config.compression == "bslz4" and start.encoding == "raw":
            stored = replace(stored, encoding="bslz4")
            self.compressor = CompressionPipeline(store, config.compression_workers)
        self.writer = writer = NexusFrameWriter(
            self.path, stored, config.frames_per_file, writeback=config.durable,
            directory=self.directory, writer_token=self.token,
        )
        self.path = writer.path
        self.journal.series_opened(self.path, self.token)
        return writer

    def drain(self) -> None:
        """Let the compressor store every frame it holds, before the final accounting."""
        if self.compressor is not None:
            self.compressor.drain()
            self.compressor.close()

    def close(self, end_time: str, end_reason: str, counts: dict, missing, durable: bool) -> None:
        """Close the file with its final accounting (if it was ever opened) and forget it in the journal."""
        if self.writer is not None:
            self.writer.close(end_time, end_reason, counts, missing, durable=durable)
            self.journal.series_closed()
        self.release_directory()

    def close_failed(self) -> int | None:
        """After a write error: close the file as ``failed`` with the frames whose arrival it
        recorded and return how many; None if there is no file, or if the disk refuses even
        that (then the journal says ``failed`` and the next start repairs it)."""
        if self.compressor is not None:
            self.compressor.discard()
            self.compressor.close()
        try:
            if self.writer is None:
                return None
            if not self.writer.abandon():
                raise RecordingError("HDF5 could not close it")
            kept = finalise_interrupted(self.path, "failed")
            self.journal.series_closed()
            return kept
        except (OSError, ValueError, KeyError, RecordingError) as error:
            log.error("could not close the failed file %s: %s", self.path, error)
            # If even the journal cannot be written, the note of the open file stays: the next
            # start repairs it as interrupted.
            with contextlib.suppress(OSError):
                self.journal.series_failed(self.path, self.token)
            return None
        finally:
            self.release_directory()

    def release_directory(self) -> None:
        if self.directory is not None:
            self.directory.close()
            self.directory = None
