"""The run catalogue: one SQLite database per proposal, in WAL mode, that the DataManager writes as
each series ends and a variables runner (another process) fills with computed values.

Tables follow DAMNIT's model: ``runs`` (one row per run: times, sample, structure node and role,
files, frame counts, end reason, comment) and ``run_variables`` (one row per run and variable:
the value as REAL, TEXT or BLOB, its summary type, the error that replaced it, when it was
computed). ``runs_table`` is the pivoted view, one row per run and one column per variable, kept
up to date as variables appear. ``meta.version`` grows on every change, so a window in another
process knows when to read again.

Every write is one short ``BEGIN IMMEDIATE`` transaction on a connection that waits (``timeout``)
for the other writer rather than failing; a new run takes its number inside that transaction, so two
writers never share one. Before each write the file at the path is checked to be the one open and
still an SQLite database: a catalogue deleted, replaced or overwritten is said (``CatalogueGone``,
``CatalogueCorrupt``), never written into unseen; one that cannot be written now (locked past the
timeout, read-only, a disk error) is ``CatalogueUnavailable``.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from photonflow.datamanager.policy import check_name
from photonflow.errors import ConfigurationError

BUSY_TIMEOUT_S = 30.0
SQLITE_HEADER = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite database file
COMPANIONS = ("", "-wal", "-shm")  # a WAL database is these three files
MAX_ARRAY_BYTES = 1 << 20  # arrays up to 1 MiB are kept in the database (for plots); larger ones only in HDF5
VARIABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
SUMMARIES: dict[str, Callable[[np.ndarray], Any]] = {
    "mean": np.mean, "sum": np.sum, "min": np.min, "max": np.max, "std": np.std, "median": np.median,
    "size": np.size, "nanmean": np.nanmean, "nansum": np.nansum,
}


def iso_utc(timestamp: float) -> str:
    """A time as the catalogue stores it: ISO 8601 in UTC with a Z."""
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class RunRecord:
    """One run as catalogued."""

    run: int
    proposal: str
    session: str
    sample: str
    beamline: str
    start: str  # ISO 8601 UTC with Z
    end: str
    node: str  # the structure node path ("" when none)
    role: str  # its role ("" when none)
    raw_file: str  # absolute paths
    nexus_file: str
    frames_requested: int
    frames_written: int
    missing_frames: int
    end_reason: str
    comment: str = ""
    series_id: int = 0
    dataset: str = ""


RUN_COLUMNS = tuple(f.name for f in fields(RunRecord))
_COLUMN_TYPES = {"run": "INTEGER PRIMARY KEY", "frames_requested": "INTEGER", "frames_written": "INTEGER",
                 "missing_frames": "INTEGER", "series_id": "INTEGER"}
SCHEMA = [
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value)",
    "INSERT OR IGNORE INTO meta (key, value) VALUES ('version', 0)",
    "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema', 1)",
    "CREATE TABLE IF NOT EXISTS runs ("
    + ", ".join(f"{name} {_COLUMN_TYPES.get(name, 'TEXT NOT NULL')}" for name in RUN_COLUMNS) + ")",
    # no declared type for value: SQLite keeps each as given (REAL, INTEGER, TEXT, BLOB or NULL)
    "CREATE TABLE IF NOT EXISTS run_variables (run INTEGER NOT NULL, name TEXT NOT NULL, value, "
    "summary_type TEXT, error TEXT, timestamp REAL NOT NULL, attributes TEXT, PRIMARY KEY (run, name))",
    "CREATE INDEX IF NOT EXISTS runs_by_raw_file ON runs (raw_file)",
]


class CatalogueUnavailable(ConfigurationError):
    """The catalogue cannot be written now (locked past the timeout, read-only, a disk error)."""

    reason = "CatalogueUnavailable"


class CatalogueGone(CatalogueUnavailable):
    """The file at the catalogue's path is not the one open: deleted, or replaced by another."""

    reason = "CatalogueDeleted"


class CatalogueCorrupt(CatalogueUnavailable):
    """The catalogue's file is not an SQLite database any more, or is malformed."""

    reason = "CatalogueCorrupt"


def _unavailable(path: Path, error: sqlite3.Error) -> CatalogueUnavailable:
    """SQLite's error as the catalogue's, saying what an operator can do about it."""
    name = getattr(error, "sqlite_errorname", "") or ""
    if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")):
        return CatalogueCorrupt(f"the catalogue {path} is corrupt ({error})")
    if name.startswith("SQLITE_READONLY"):
        return _read_only(path, error)
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return CatalogueUnavailable(f"the catalogue {path} is locked by another process ({error}); it is "
                                    "written once that process lets it go")
    return CatalogueUnavailable(f"the catalogue {path} cannot be written ({error})")


def _read_only(path: Path, error: object) -> CatalogueUnavailable:
    return CatalogueUnavailable(f"the catalogue {path} is read-only ({error}): make it and its folder writable "
                                f"(chattr -i, chmod u+w), then SetExperiment again", reason="CatalogueReadOnly")


def check_writable(path: Path) -> None:
    """Refuse a catalogue whose files cannot be written (immutable, read-only file or file system):
    SQLite would open it read-only and fail only at the first run (and an immutable -shm, which it
    maps, would kill the process). Asked with access(2), never by opening them: closing a
    descriptor of a database file drops every lock SQLite holds on it in this process."""
    for suffix in COMPANIONS:
        name = f"{path}{suffix}"
        if os.path.exists(name) and not os.access(name, os.W_OK):
            raise _read_only(path, f"{name} cannot be written")


def set_aside(path: Path, clock=time.time) -> Path:
    """Rename a corrupt catalogue (and its -wal, -shm) to ``<name>.corrupt-<UTC time>``: kept for
    whoever wants to look into it, never deleted, out of the way of a new one."""
    stamp = datetime.fromtimestamp(clock(), UTC).strftime("%Y%m%dT%H%M%SZ")
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    for suffix in COMPANIONS:
        with suppress(FileNotFoundError):
            os.rename(f"{path}{suffix}", f"{aside}{suffix}")
    return aside


class Catalogue:
    """The runs of one proposal: ``<directory>/<proposal>.sqlite``."""

    def __init__(self, directory: str | Path, proposal: str, *, timeout: float = BUSY_TIMEOUT_S,
                 clock=time.time):
        self.proposal = check_name(proposal, "proposal")
        self.directory = Path(directory)
        self.path = self.directory / f"{self.proposal}.sqlite"
        self.clock = clock
        self.timeout = timeout
        self._identity: tuple[int, int] | None = None  # the file open (device, inode), None once closed
        self._lock = threading.Lock()
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            check_writable(self.path)
            self._db = sqlite3.connect(self.path, timeout=timeout, isolation_level=None, check_same_thread=False)
        except (OSError, sqlite3.Error) as error:
            raise CatalogueUnavailable(f"cannot open the catalogue {self.path}: {error}") from None
        try:
            with self._session():
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
            self._identity = _READERS.take(self.path)
        except (CatalogueUnavailable, OSError) as error:
            self._db.close()
            if isinstance(error, OSError):
                raise CatalogueUnavailable(f"cannot open the catalogue {self.path}: {error}") from None
            raise
        try:
            with self._session(write=True) as db:
                for statement in SCHEMA:
                    db.execute(statement)
                self._refresh_view(db)
        except CatalogueUnavailable:
            self.close()
            raise

    def close(self) -> None:
        with self._lock:
            if self._identity is None:
                return
            self._db.close()
            _READERS.give_back(self._identity)
            self._identity = None

    def __enter__(self) -> Catalogue:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- runs ----------------------------------------------------------------------------------

    def add_run(self, record: RunRecord) -> int:
        """Catalogue a new run; returns its number, taken inside the write transaction (two writers
        never get the same). A Recorder file already catalogued (by another DataManager, or before a
        retry) gets its run back and adds none. ``record.run`` is not used."""
        values = self._checked(record, numbered=False)
        with self._session(write=True) as db:
            known = _run_of_file(db, values["raw_file"]) if values["raw_file"] else None
            if known is not None:
                return known
            (last,) = db.execute("SELECT MAX(run) FROM runs").fetchone()
            values["run"] = (last or 0) + 1
            db.execute(f"INSERT INTO runs ({', '.join(RUN_COLUMNS)}) VALUES ({', '.join('?' * len(RUN_COLUMNS))})",
                       [values[name] for name in RUN_COLUMNS])
            self._changed(db)
        return values["run"]

    def record_run(self, record: RunRecord) -> None:
        """Store the run under the number it has (a copy, an import), or update it: an empty comment
        keeps the operator's. New runs are numbered by ``add_run``."""
        values = self._checked(record)
        with self._session(write=True) as db:
            row = db.execute(f"SELECT {', '.join(RUN_COLUMNS)} FROM runs WHERE run = ?", (record.run,)).fetchone()
            if row is not None:
                if not values["comment"]:
                    values["comment"] = row[RUN_COLUMNS.index("comment")]
                if tuple(values[name] for name in RUN_COLUMNS) == tuple(row):
                    return
            db.execute(f"INSERT OR REPLACE INTO runs ({', '.join(RUN_COLUMNS)}) "
                       f"VALUES ({', '.join('?' * len(RUN_COLUMNS))})", [values[name] for name in RUN_COLUMNS])
            self._changed(db)

    def run_of_file(self, raw_file: str) -> int | None:
        """The run of a Recorder file, None when none names it."""
        with self._session() as db:
            return _run_of_file(db, raw_file)

    def count(self) -> int:
        with self._session() as db:
            (number,) = db.execute("SELECT COUNT(*) FROM runs").fetchone()
        return int(number)

    def raw_files(self) -> set[str]:
        """The Recorder files the catalogue names."""
        with self._session() as db:
            return {raw for (raw,) in db.execute("SELECT raw_file FROM runs")}

    def run(self, number: int) -> RunRecord | None:
        with self._session():
            row = self._db.execute(f"SELECT {', '.join(RUN_COLUMNS)} FROM runs WHERE run = ?", (number,)).fetchone()
        return RunRecord(*row) if row else None

    def runs(self) -> list[RunRecord]:
        with self._session():
            rows = self._db.execute(f"SELECT {', '.join(RUN_COLUMNS)} FROM runs ORDER BY run").fetchall()
        return [RunRecord(*row) for row in rows]

    def set_comment(self, run: int, text: str) -> None:
        if not isinstance(text, str):
            raise ConfigurationError(f"the comment of run {run} must be text, got {text!r}")
        self._update(run, "comment", text)

    def set_nexus_file(self, run: int, path: str) -> None:
        """The run's standardized file (only this field: another writer's changes to the run stay)."""
        self._update(run, "nexus_file", str(path))

    # --- variables -----------------------------------------------------------------------------

    def set_variable(self, run: int, name: str, value, *, summary: str | None = None, error: str | None = None,
                     attributes: dict | None = None) -> None:
        """Store one variable of one run (DAMNIT's run_variables row): numbers and text as they are,
        arrays summarised with ``summary`` (mean, max...) or kept whole when small; ``error`` is
        what replaced the value when computing it failed."""
        if not isinstance(name, str) or not VARIABLE_NAME.fullmatch(name):
            raise ConfigurationError(f"the variable name {name!r} is not a Python identifier")
        if name in RUN_COLUMNS:
            raise ConfigurationError(f"the variable name {name!r} is a column of the runs table; rename it")
        stored, summary_type, extra = _storable(run, name, value, summary)
        attributes = {**(attributes or {}), **extra}
        try:
            attributes_text = json.dumps(attributes) if attributes else None
        except (TypeError, ValueError) as failure:
            raise ConfigurationError(f"the attributes of variable {name} of run {run} are not JSON: {failure}",
                                     reason="UnsupportedVariableType") from None
        row = (int(run), name, stored, summary_type, error, self.clock(), attributes_text)
        with self._session(write=True) as db:
            new = db.execute("SELECT 1 FROM run_variables WHERE name = ? LIMIT 1", (name,)).fetchone() is None
            db.execute("INSERT OR REPLACE INTO run_variables (run, name, value, summary_type, error, timestamp, "
                       "attributes) VALUES (?, ?, ?, ?, ?, ?, ?)", row)
            if new:
                self._refresh_view(db)
            self._changed(db)

    def variables(self, run: int) -> dict:
        """``{name: value}`` of one run (arrays kept whole come back as numpy arrays; failed ones as None)."""
        return {name: record["value"] for name, record in self.variable_records(run).items()}

    def variable_records(self, run: int) -> dict[str, dict]:
        """``{name: {value, summary_type, error, timestamp, attributes}}`` of one run."""
        with self._session():
            rows = self._db.execute("SELECT name, value, summary_type, error, timestamp, attributes "
                                    "FROM run_variables WHERE run = ? ORDER BY name", (run,)).fetchall()
        return {name: {"value": _loaded(value, summary_type), "summary_type": summary_type, "error": error,
                       "timestamp": timestamp, "attributes": json.loads(attributes) if attributes else {}}
                for name, value, summary_type, error, timestamp, attributes in rows}

    def table(self) -> list[dict]:
        """The run table: one row per run with the run's fields and one column per variable (None where
        a run has no value for it)."""
        with self._session() as db:
            names = [name for (name,) in db.execute("SELECT DISTINCT name FROM run_variables ORDER BY name")]
            runs = db.execute(f"SELECT {', '.join(RUN_COLUMNS)} FROM runs ORDER BY run").fetchall()
            cells = db.execute("SELECT run, name, value, summary_type FROM run_variables").fetchall()
        values = {(run, name): _loaded(value, summary_type) for run, name, value, summary_type in cells}
        rows = []
        for run in runs:
            row = dict(zip(RUN_COLUMNS, run, strict=True))
            row.update({name: values.get((row["run"], name)) for name in names})
            rows.append(row)
        return rows

    def version(self) -> int:
        """Grows on every change to the catalogue, whichever process made it."""
        with self._session():
            (value,) = self._db.execute("SELECT value FROM meta WHERE key = 'version'").fetchone()
        return int(value)

    # --- the facility catalogue (ICAT) ---------------------------------------------------------

    def icat_dataset(self, run: int) -> dict:
        """The run in the field names ICAT ingests (with the structure's role and node beside them)."""
        record = self.run(run)
        if record is None:
            raise self._unknown(run)
        location = os.path.dirname(record.raw_file) if record.raw_file else ""
        return {
            "beamlineID": record.beamline,
            "proposal": record.proposal,
            "datasetName": record.dataset or f"{record.sample}_{record.run:04d}",
            "location": location,
            "Sample_name": record.sample,
            "startDate": record.start,
            "endDate": record.end,
            "role": record.role,
            "node": record.node,
            "session": record.session,
            "run": record.run,
            "files": [path for path in (record.raw_file, record.nexus_file) if path],
            "frames_requested": record.frames_requested,
            "frames_written": record.frames_written,
            "missing_frames": record.missing_frames,
            "end_reason": record.end_reason,
            "comment": record.comment,
        }

    def export_icat(self, run: int, directory: str | Path) -> Path:
        """The run's ICAT dataset as JSON, ``<directory>/<proposal>_r<run>.icat.json`` (written whole or not at all)."""
        dataset = self.icat_dataset(run)
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{self.proposal}_r{int(run):04d}.icat.json"
        partial = path.with_name(f".{path.name}.partial")
        partial.write_text(json.dumps(dataset, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(partial, path)
        return path

    # --- internals -----------------------------------------------------------------------------

    @contextmanager
    def _session(self, write: bool = False) -> Iterator[sqlite3.Connection]:
        """The connection, to this thread alone; with ``write``, inside ``BEGIN IMMEDIATE`` ... ``COMMIT``
        (``ROLLBACK`` on error), the write lock taken at once so that a second writer waits for it
        instead of failing halfway, and only once the file at the path is checked to be this one.
        SQLite's errors come out as ``CatalogueUnavailable`` (or its kinds)."""
        with self._lock:
            try:
                if not write:
                    yield self._db
                    return
                self._check_file()
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                    self._db.execute("COMMIT")
                finally:
                    if self._db.in_transaction:
                        with suppress(sqlite3.Error):
                            self._db.execute("ROLLBACK")
            except sqlite3.Error as error:
                raise _unavailable(self.path, error) from error

    def _check_file(self) -> None:
        """The file at the path is the one open, still an SQLite database, and writable."""
        if self._identity is None:
            raise CatalogueUnavailable(f"the catalogue {self.path} was closed (another experiment was set)")
        try:
            if _identity(self.path) != self._identity:
                raise CatalogueGone(f"the catalogue {self.path} was replaced by another file")
            header = _READERS.header(self._identity)
        except FileNotFoundError:
            raise CatalogueGone(f"the catalogue {self.path} was deleted") from None
        except OSError as error:
            raise CatalogueUnavailable(f"the catalogue {self.path} cannot be read: {error}") from None
        if header != SQLITE_HEADER:
            raise CatalogueCorrupt(f"the catalogue {self.path} is corrupt (not an SQLite database: its header was "
                                   "overwritten)")
        check_writable(self.path)

    def _update(self, run: int, column: str, value: str) -> None:
        with self._session(write=True) as db:
            changed = db.execute(f"UPDATE runs SET {column} = ? WHERE run = ? AND {column} != ?", (value, run, value))
            if changed.rowcount:
                self._changed(db)
            elif db.execute("SELECT 1 FROM runs WHERE run = ?", (run,)).fetchone() is None:
                raise self._unknown(run)

    def _changed(self, db: sqlite3.Connection) -> None:
        db.execute("UPDATE meta SET value = value + 1 WHERE key = 'version'")

    def _refresh_view(self, db: sqlite3.Connection) -> None:
        names = [name for (name,) in db.execute("SELECT DISTINCT name FROM run_variables ORDER BY name")]
        pivots = "".join(f', MAX(CASE WHEN v.name = \'{name}\' THEN v.value END) AS "{name}"' for name in names)
        db.execute("DROP VIEW IF EXISTS runs_table")
        db.execute(f"CREATE VIEW runs_table AS SELECT {', '.join(f'r.{c}' for c in RUN_COLUMNS)}{pivots} "
                   "FROM runs r LEFT JOIN run_variables v ON v.run = r.run GROUP BY r.run ORDER BY r.run")

    def _checked(self, record: RunRecord, numbered: bool = True) -> dict:
        if record.proposal != self.proposal:
            raise ConfigurationError(f"run {record.run} belongs to proposal {record.proposal!r}, not to this "
                                     f"catalogue's {self.proposal!r}")
        values = asdict(record)
        for name in RUN_COLUMNS:
            wanted = int if name in _COLUMN_TYPES else str
            value = values[name]
            if wanted is int and (isinstance(value, bool) or not isinstance(value, int | np.integer)):
                raise ConfigurationError(f"run {record.run}: {name} must be a whole number, got {value!r}")
            if wanted is str and not isinstance(value, str):
                raise ConfigurationError(f"run {record.run}: {name} must be text, got {value!r}")
            values[name] = wanted(value)
        if numbered and values["run"] < 1:
            raise ConfigurationError(f"run numbers start at 1, got {values['run']}")
        return values

    def _unknown(self, run: int) -> ConfigurationError:
        return ConfigurationError(f"run {run} is not in the catalogue of proposal {self.proposal}",
                                  reason="UnknownRun")

    def variable_names(self, *, of_context: bool = False) -> list[str]:
        """The variables some run has: the run table's variable columns; ``of_context``: only those a
        context computed, not the outputs of processing jobs (``integration_file``...)."""
        with self._session() as db:
            rows = db.execute("SELECT name, attributes FROM run_variables ORDER BY name").fetchall()
        return list(dict.fromkeys(name for name, attributes in rows
                                  if not (of_context and _from_processing(attributes))))

    def remove_variables_except(self, run: int, kept: list[str]) -> list[str]:
        """Deletes the run's cells of variables not in ``kept`` (those its context no longer has), never
        a processing job's output; ``runs_table`` loses a column no run has any more. Returns the
        names removed."""
        with self._session(write=True) as db:
            rows = db.execute("SELECT name, attributes FROM run_variables WHERE run = ?", (int(run),)).fetchall()
            names = [name for name, attributes in rows if not _from_processing(attributes)]
            removed = sorted(set(names) - set(kept))
            if not removed:
                return []
            db.executemany("DELETE FROM run_variables WHERE run = ? AND name = ?", [(int(run), n) for n in removed])
            self._refresh_view(db)
            self._changed(db)
        return removed


PROCESSING_ORIGIN = {"origin": "processing"}  # the attributes of a processing job's output cell


def _from_processing(attributes: str | None) -> bool:
    return attributes is not None and json.loads(attributes).get("origin") == PROCESSING_ORIGIN["origin"]


def _run_of_file(db: sqlite3.Connection, raw_file: str) -> int | None:
    (run,) = db.execute("SELECT MIN(run) FROM runs WHERE raw_file = ?", (raw_file,)).fetchone()
    return None if run is None else int(run)


def _identity(path: Path) -> tuple[int, int]:
    """Which file is at ``path`` (device and inode): another file there is another catalogue."""
    stat = os.stat(path)
    return stat.st_dev, stat.st_ino


class _HeaderReaders:
    """One read-only descriptor per catalogue file in this process, shared by its Catalogues and closed
    with the last of them: closing a descriptor of a database file drops every lock SQLite holds on
    it in this process (POSIX locks), so none is closed while a connection to it is open."""

    def __init__(self):
        self._lock = threading.Lock()
        self._open: dict[tuple[int, int], list[int]] = {}  # (device, inode) -> [descriptor, users]

    def take(self, path: Path) -> tuple[int, int]:
        """The identity of the file at ``path``, whose descriptor this caller now shares."""
        with self._lock:
            identity = _identity(path)
            if identity in self._open:
                self._open[identity][1] += 1
                return identity
            descriptor = os.open(path, os.O_RDONLY)
            stat = os.fstat(descriptor)
            identity = stat.st_dev, stat.st_ino  # the file opened, even if another took the path meanwhile
            if identity in self._open:  # that rare race: a second descriptor stays open rather than drop locks
                self._open[identity][1] += 1
                return identity
            self._open[identity] = [descriptor, 1]
            return identity

    def header(self, identity: tuple[int, int]) -> bytes:
        with self._lock:
            return os.pread(self._open[identity][0], len(SQLITE_HEADER), 0)

    def give_back(self, identity: tuple[int, int]) -> None:
        """Once the caller's connection is closed."""
        with self._lock:
            entry = self._open[identity]
            entry[1] -= 1
            if entry[1] == 0:
                os.close(entry[0])
                del self._open[identity]


_READERS = _HeaderReaders()


def _storable(run: int, name: str, value, summary: str | None) -> tuple[object, str | None, dict]:
    """``value`` as an SQLite value, its summary type, and attributes describing what was reduced."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, str | bytes):
        return value, None, {}
    if isinstance(value, bool):
        return int(value), "bool", {}
    if isinstance(value, int):
        return (value, None, {}) if -(2 ** 63) <= value < 2 ** 63 else (float(value), None, {})
    if isinstance(value, float):
        return (value if math.isfinite(value) else None), None, ({} if math.isfinite(value) else {"value": repr(value)})
    if isinstance(value, list | tuple):
        try:
            value = np.asarray(value)
        except ValueError:
            value = None
    if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
        shape = {"shape": list(value.shape), "dtype": str(value.dtype)}
        if summary is not None:
            if summary not in SUMMARIES:
                raise ConfigurationError(f"variable {name} of run {run}: unknown summary {summary!r}; known: "
                                         f"{', '.join(SUMMARIES)}", reason="UnsupportedVariableType")
            reduced = SUMMARIES[summary](value).item() if value.size else None
            return reduced, summary, shape
        if value.nbytes <= MAX_ARRAY_BYTES:
            buffer = io.BytesIO()
            np.save(buffer, value, allow_pickle=False)
            return buffer.getvalue(), "npy", shape
        return None, "array", shape
    raise ConfigurationError(f"variable {name} of run {run}: cannot store a {type(value).__name__}; return a number, "
                             "text, bytes or a numeric array", reason="UnsupportedVariableType")


def _loaded(value, summary_type: str | None):
    if summary_type == "npy" and isinstance(value, bytes):
        return np.load(io.BytesIO(value), allow_pickle=False)
    if summary_type == "bool" and value is not None:
        return bool(value)
    return value


def send_to_icat(dataset: dict, config: dict) -> None:
    """Register ``dataset`` (from ``Catalogue.icat_dataset``) with the facility's ICAT through
    pyicat-plus; ``config`` is what the facility configures: ``{"metadata_urls": ["host:61613"]}``
    (the message brokers), optionally ``"metadata_queue"``."""
    if not config or not config.get("metadata_urls"):
        raise ConfigurationError("ICAT is not configured: give metadata_urls (the ICAT message brokers, "
                                 "e.g. ['icat-broker:61613'])")
    try:
        from pyicat_plus.client.main import IcatClient
    except ImportError:
        raise ConfigurationError("sending datasets to ICAT needs the package pyicat-plus, which is not installed: "
                                 "pip install pyicat-plus", reason="MissingPackage") from None
    options = {"metadata_urls": list(config["metadata_urls"])}
    if config.get("metadata_queue"):
        options["metadata_queue"] = config["metadata_queue"]
    metadata = {key: value for key, value in dataset.items()
                if key in ("Sample_name", "startDate", "endDate") and value}
    client = IcatClient(**options)
    try:
        client.store_dataset(beamline=dataset["beamlineID"], proposal=dataset["proposal"],
                             dataset=dataset["datasetName"], path=dataset["location"], metadata=metadata)
    finally:
        disconnect = getattr(client, "disconnect", None)
        if disconnect is not None:
            disconnect()
