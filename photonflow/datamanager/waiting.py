"""Runs waiting to be catalogued: ``<directory>/<proposal>.waiting.jsonl`` beside the catalogue, one
JSON record per run, appended and fsynced before the catalogue is tried. A catalogue that cannot be
written (locked, read-only, deleted, corrupt) loses no run: they stay here, in the order their
series ended, until it can, and survive a restart meanwhile.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import asdict
from pathlib import Path

from photonflow.datamanager.catalogue import RunRecord

log = logging.getLogger(__name__)
SUFFIX = ".waiting.jsonl"


class WaitingRuns:
    """The durable queue of one proposal's runs not catalogued yet, oldest first."""

    def __init__(self, directory: str | Path, proposal: str):
        self.proposal = proposal
        self.path = Path(directory) / f"{proposal}{SUFFIX}"
        self._lock = threading.Lock()
        self._records = self._read()

    def __len__(self) -> int:
        return len(self._records)

    @property
    def oldest(self) -> RunRecord | None:
        with self._lock:
            return self._records[0] if self._records else None

    def raw_files(self) -> set[str]:
        with self._lock:
            return {record.raw_file for record in self._records}

    def append(self, record: RunRecord) -> None:
        """On disk (fsynced, the folder too when the file is new) before this returns."""
        with self._lock:
            new = not self.path.exists()
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as file:
                file.write(json.dumps(asdict(record)) + "\n")
                file.flush()
                os.fsync(file.fileno())
            if new:
                _sync_folder(self.path.parent)
            self._records.append(record)

    def catalogued(self, record: RunRecord) -> None:
        """The oldest run is in the catalogue: the file keeps the others (rewritten whole, then renamed
        over; gone when none is left). A crash before this leaves it here: the catalogue gives the
        same Recorder file its run back instead of adding another."""
        with self._lock:
            if not self._records or self._records[0] != record:
                return
            self._records.pop(0)
            if not self._records:
                self.path.unlink(missing_ok=True)
                return
            partial = self.path.with_name(f".{self.path.name}.partial")
            with open(partial, "w", encoding="utf-8") as file:
                file.writelines(json.dumps(asdict(kept)) + "\n" for kept in self._records)
                file.flush()
                os.fsync(file.fileno())
            os.replace(partial, self.path)

    def _read(self) -> list[RunRecord]:
        """The runs a previous process left; a line cut short by a crash mid-append is skipped, said."""
        if not self.path.exists():
            return []
        records = []
        for number, line in enumerate(self.path.read_text(encoding="utf-8").splitlines(), 1):
            try:
                records.append(RunRecord(**json.loads(line)))
            except (ValueError, TypeError) as error:
                log.warning("%s line %d is not a run (%s): skipped", self.path, number, error)
        return records


def waiting_proposals(directory: str | Path) -> list[str]:
    """The proposals with runs waiting in ``directory``."""
    return sorted(path.name[: -len(SUFFIX)] for path in Path(directory).glob(f"*{SUFFIX}"))


def _sync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
