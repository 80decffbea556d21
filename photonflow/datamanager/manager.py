"""The DataManager: what each acquisition means and where it goes.

It holds the experiment (proposal, session, sample), the structure being run (which acquisition
comes next, with its role and the Controller's settings, its files named by the data policy),
records every series in the run catalogue as it ends, and has each run's variables computed in
another process (the context file, DAMNIT's model). A series nobody planned (a plain Start on the
Controller) is catalogued too, with no node and no role.

Told of series by its device (which follows the Controller and the Standardizer), it works on a
thread of its own: the catalogue and the variables never delay the frames.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from operator import methodcaller
from pathlib import Path
from typing import Protocol, TypeVar

from photonflow import states
from photonflow.core import CoreListener, StatefulCore
from photonflow.datamanager.catalogue import (
    BUSY_TIMEOUT_S,
    PROCESSING_ORIGIN,
    Catalogue,
    CatalogueCorrupt,
    CatalogueGone,
    CatalogueUnavailable,
    RunRecord,
    check_writable,
    send_to_icat,
    set_aside,
)
from photonflow.datamanager.jobs import JobEngineLost
from photonflow.datamanager.policy import DataPolicy, check_name
from photonflow.datamanager.structure import ROLES, AcquisitionNode, StructureRun, load_structure
from photonflow.datamanager.waiting import WaitingRuns, waiting_proposals
from photonflow.errors import ConfigurationError, PhotonflowError, StateError
from photonflow.standardizing.standard_files import same_series, standardized_candidates

log = logging.getLogger(__name__)
_T = TypeVar("_T")
# built-in processing: its name -> the function in photonflow.datamanager.processing
PROCESSING = {"integration": "integrate_azimuthally", "normalization": "normalize_tomography",
              "alignment": "align_images"}
# what a run's role starts by itself once its standardized file is written, by the file's
# definition: a diffraction run is integrated, a tomography's projections normalized by its flats
AUTOMATIC_PROCESSING = {("data", "NXmx"): "integration", ("data", "NXtomo"): "normalization"}
EXPERIMENT_FILE = "experiment.json"  # in the catalogue directory: the experiment last set, resumed at start
SWEEP_INTERVAL = 1.0  # seconds: how often runs still waiting for their standardized file are looked at


@dataclass(frozen=True)
class SeriesResult:
    """What the Controller reports when a series ends."""

    series_id: int
    raw_file: str
    frames_requested: int
    frames_written: int
    missing_frames: int
    end_reason: str  # "completed", or the Controller's state and why


class VariablesLauncher(Protocol):
    """Computes a run's variables (in another process) and stores them in the catalogue."""

    context_file: Path  # the DAMNIT-style context file each run loads afresh
    on_done: Callable[[RunRecord, dict], None]  # the DataManager's, set when it takes the launcher

    def launch(self, run: RunRecord) -> None: ...

    def list_variables(self) -> list[str]: ...  # the context's variables, loaded in another process


@dataclass
class DataManagerCounters:
    last_run: int = 0
    runs: int = 0
    run_table_version: int = 0
    current_node: str = ""
    progress: float = 0.0
    proposal: str = ""
    sample: str = ""
    messages: list = field(default_factory=list)  # {msg_kind, data} for the event bus


class DataManager(StatefulCore):
    def __init__(self, data_root: str | Path, beamline: str, catalogue_directory: str | Path,
                 listener: CoreListener | None = None, variables: VariablesLauncher | None = None,
                 publish: Callable[[dict], None] | None = None, clock: Callable[[], float] = time.time,
                 jobs=None, icat: dict | None = None, catalogue_timeout: float = BUSY_TIMEOUT_S):
        super().__init__(listener, states.ON, "Ready: set the experiment (SetExperiment), then load a structure")
        self.policy = DataPolicy(Path(data_root), beamline)
        self.beamline = beamline
        self.catalogue_directory = Path(catalogue_directory)
        self.catalogue_timeout = catalogue_timeout  # how long a write waits for another process's lock
        self.variables = variables
        self.jobs = jobs  # a JobBoard on the Dask engine; None: no built-in processing
        self.icat = icat or {}  # a facility's ICAT (pyicat-plus) settings; empty: JSON export only
        self._processing: dict[str, tuple[int, str, str]] = {}  # job id -> (run, kind, output)
        self._job_engine_lost = ""  # why the job engine does not answer; empty: it does (or none)
        self._variables_failed = ""  # why the last run's variables were not computed; empty: they were
        self.publish = publish
        self.clock = clock
        self.counters = DataManagerCounters()
        self.proposal = self.session = self.sample = ""
        self.catalogue: Catalogue | None = None
        self.structure_run: StructureRun | None = None
        self._current: AcquisitionNode | None = None
        self._current_started = ""
        self.standing_role = ""  # what series recorded outside a structure mean (SetRole); empty: nothing said
        self._pending_nexus: set[str] = set()  # Recorder files of runs still waiting for their standardized file
        # runs not catalogued yet, per proposal (a previous process's too), and why the catalogue refused
        self._waiting = {proposal: WaitingRuns(self.catalogue_directory, proposal)
                         for proposal in waiting_proposals(self.catalogue_directory)}
        self._catalogue_problem = ""  # why the last write failed; empty once one succeeds
        self._catalogue_notice = ""  # a catalogue begun again (deleted, corrupt): said until the next SetExperiment
        self._lock = threading.RLock()
        self._jobs: queue.Queue = queue.Queue()
        self._idle = threading.Event()
        self._idle.set()
        self._worker = threading.Thread(target=self._work, name="datamanager", daemon=True)
        self._worker.start()
        if variables is not None:
            variables.on_done = self._variables_done
        self._resume_experiment()

    # -- the experiment ------------------------------------------------------------------------
    def set_experiment(self, proposal: str, session: str, sample: str) -> None:
        """Every name is checked, and the catalogue opened, before anything changes: a refused
        experiment never becomes the current one. The same proposal keeps its open catalogue."""
        for what, value in (("proposal", proposal), ("session", session), ("sample", sample)):
            check_name(value, what)
        with self._lock:
            if self.structure_run is not None and self._current is not None:
                raise StateError(f"acquisition {self._current.path} is under way; end it (or EndSequence) first")
            previous = self.catalogue
            same = previous is not None and previous.proposal == proposal
            self._catalogue_notice = ""  # the operator acted: a new experiment, or the same again
            if same and previous is not None:
                check_writable(previous.path)
                catalogue = previous
            else:
                catalogue = self._open_catalogue(proposal)
            self.proposal, self.session, self.sample = proposal, session, sample
            self.catalogue = catalogue
            if previous is not None and not same:
                previous.close()  # its connection's files (database, -wal, -shm) would stay open otherwise
            self.counters.proposal, self.counters.sample = proposal, sample
            self.counters.runs = catalogue.count()
            self.counters.run_table_version = catalogue.version()
            self._remember_experiment()
            kept = self.structure_run
            if kept is not None and (kept.proposal, kept.session, kept.sample) != (proposal, session, sample):
                self.structure_run = None  # another experiment's structure is never taken for this one
        self._restore_progress()
        resumed = f"; structure resumed at {self.structure_run.progress:.0%}" if self.structure_run else ""
        self._changed(states.ON, f"Experiment {proposal}/{session}, sample {sample}; catalogue "
                      f"{catalogue.path}{resumed}")
        self.catch_up()

    def _experiment_file(self) -> Path:
        return self.catalogue_directory / EXPERIMENT_FILE

    def _remember_experiment(self) -> None:
        """The experiment, written whole beside its catalogue: an Init or a restart resumes it, so
        the next runs never go to ``unassigned`` because the server was restarted."""
        names = {"proposal": self.proposal, "session": self.session, "sample": self.sample}
        try:
            _write_whole(self._experiment_file(), json.dumps(names) + "\n")
        except OSError as error:  # the catalogue was written: only a restart would forget it, said
            log.warning("the experiment %s will not be resumed after a restart: %s", names, error)

    def _resume_experiment(self) -> None:
        """The experiment of before the Init or restart, as SetExperiment would set it; one whose
        catalogue cannot be written now is kept all the same (its runs wait for the catalogue)."""
        path = self._experiment_file()
        if not path.exists():
            return
        try:
            names = json.loads(path.read_text(encoding="utf-8"))
            proposal, session, sample = (str(names[key]) for key in ("proposal", "session", "sample"))
        except (OSError, ValueError, KeyError, TypeError) as error:
            self._changed(states.ALARM, f"The experiment of before the restart was not resumed ({path} is "
                          f"unreadable: {error}): SetExperiment")
            return
        try:
            self.set_experiment(proposal, session, sample)
        except CatalogueUnavailable as error:  # its names were checked before the catalogue was tried
            self.proposal, self.session, self.sample = proposal, session, sample
            self.counters.proposal, self.counters.sample = proposal, sample
            self._catalogue_problem = str(error)
            self._changed(states.ALARM, f"Experiment {proposal}/{session}, sample {sample} resumed, but its "
                          f"catalogue cannot be written: {error}; runs wait until it can")
        except PhotonflowError as error:  # a name edited into the file, a structure under way...
            self._changed(states.ALARM, f"The experiment of before the restart ({proposal}/{session}, sample "
                          f"{sample}, from {path}) was not resumed: {error}. SetExperiment")

    def set_sample(self, sample: str) -> None:
        self._need_catalogue()
        self.set_experiment(self.proposal, self.session, sample)

    def set_role(self, role: str) -> None:
        """What the series recorded from now on outside a structure mean (dark, flat, data...): a
        single acquisition's role needs no structure; empty: none. A structure's own roles win."""
        if role and role not in ROLES:
            raise ConfigurationError(f"unknown role {role!r}: give one of {', '.join(ROLES)}, or empty for none")
        with self._lock:
            self.standing_role = role
        self._changed(self.state, f"Series outside a structure: {role or 'no role'} from now on")

    def dataset_file(self, name: str) -> str:
        """The data policy's file for one acquisition of this experiment outside a structure (a
        macro's darks or flats): a new dataset ``NNNN_<name>`` of the sample, numbered after those
        already there, ``.../RAW_DATA/<sample>/<sample>_NNNN_<name>/NNNN_<name>.h5``."""
        self._need_catalogue()
        with self._lock:
            dataset = self.policy.next_dataset(self.proposal, self.session, self.sample, name)
            folder = self.policy.raw_dataset(self.proposal, self.session, self.sample, dataset)
        return str(folder / f"{dataset}.h5")

    def set_comment(self, run: int, text: str) -> None:
        catalogue = self._need_catalogue()
        if catalogue.run(run) is None:
            raise ConfigurationError(f"run {run} is not in the catalogue of {self.proposal}")
        catalogue.set_comment(run, text)
        self.counters.run_table_version = catalogue.version()
        self._message("run_values_updated", {"run": run, "proposal": self.proposal, "values": {"comment": text}})
        self._changed(self.state, f"Run {run}: comment set")

    def reprocess(self, runs: list[int]) -> int:
        """Compute these runs' variables again (all runs of the proposal when ``runs`` is empty),
        with the context file as it is now (a variable it no longer has leaves those runs); returns
        how many were queued. Every number is checked before any run is queued."""
        catalogue = self._need_catalogue()
        if self.variables is None:
            raise StateError("no context file: set the DataManager's ContextFile, then Init")
        runs = list(dict.fromkeys(runs))  # each run once, in the order given
        wrong = [number for number in runs if isinstance(number, bool) or not isinstance(number, int) or number < 1]
        if wrong:
            raise ConfigurationError(f"run numbers start at 1: {', '.join(map(repr, wrong))} is not one "
                                     "(give none to recompute every run of the proposal)")
        looked_up = [catalogue.run(number) for number in runs]
        missing = [number for number, record in zip(runs, looked_up, strict=True) if record is None]
        if missing:
            raise ConfigurationError(f"run(s) {', '.join(map(str, missing))} not in the catalogue of {self.proposal}",
                                     reason="UnknownRun")
        records = [record for record in looked_up if record is not None] if runs else catalogue.runs()
        for record in records:
            self.variables.launch(record)
        self._changed(self.state, f"{len(records)} run(s) queued for their variables")
        return len(records)

    def reload_context(self) -> list[str]:
        """Check the context file as it is now (each run loads it afresh): its variables' names, or
        the error with file and line. It is loaded in a process of its own, never in this one."""
        if self.variables is None:
            raise StateError("no context file: set the DataManager's ContextFile, then Init")
        names = self.variables.list_variables()
        self._changed(self.state, f"Context {self.variables.context_file}: {len(names)} variables")
        return names

    def catch_up(self) -> int:
        """Catalogue the Recorder files of this experiment's folders that no run names yet (series
        that ended while the DataManager was down); returns how many."""
        found = self._uncatalogued(self._need_catalogue(), self.policy.session_directory(self.proposal, self.session))
        for raw, accounting in found:
            self.series_ended(SeriesResult(accounting["series_id"], str(raw), accounting["frames_requested"],
                                           accounting["frames_written"], accounting["missing_frames"],
                                           accounting["end_reason"]))
        return len(found)

    def _uncatalogued(self, catalogue: Catalogue, folder: Path) -> list[tuple[Path, dict]]:
        """The Recorder files under ``folder`` (a session, or ``*`` sessions) that neither the catalogue
        nor the runs waiting for it name, with their accounting, oldest first."""
        known = catalogue.raw_files() | self._queue(catalogue.proposal).raw_files()
        found = [(raw, accounting) for raw in sorted(folder.parent.glob(f"{folder.name}/RAW_DATA/*/*/*.h5"))
                 if str(raw) not in known and (accounting := _accounting(raw)) is not None]
        return sorted(found, key=lambda item: (_recorded_time(str(item[0])), str(item[0])))

    def _open_catalogue(self, proposal: str) -> Catalogue:
        """The proposal's catalogue; a corrupt one is set aside, a new one begun and rebuilt from the files."""
        try:
            return Catalogue(self.catalogue_directory, proposal, timeout=self.catalogue_timeout)
        except CatalogueCorrupt as error:
            fresh, said = self._begin_again(self.catalogue_directory / f"{proposal}.sqlite", proposal, error)
            self._idle.clear()
            self._jobs.put((self._rebuild, (fresh, said)))
            return fresh

    def _need_catalogue(self) -> Catalogue:
        """The experiment's catalogue; refused before SetExperiment."""
        if self.catalogue is None:
            raise StateError("no experiment yet: call SetExperiment(proposal, session, sample) first")
        return self.catalogue

    @property
    def current_role(self) -> str:
        """What the acquisition under way means (dark, flat, data...); outside a structure, SetRole's."""
        return self._current.role if self._current is not None else self.standing_role

    def data_policy(self) -> dict[str, str]:
        """The data-policy fields of what is being acquired now, for live consumers (blissdata's
        scan identity): proposal, beamline, session, sample, the dataset and its role; {} before
        an experiment is set. An acquisition nobody planned has no dataset, and the role SetRole gave."""
        with self._lock:
            if self.catalogue is None:
                return {}
            current, planned_file = self._current, getattr(self, "_expected_file", None)
            return {
                "data_policy": "ESRF", "proposal": self.proposal, "beamline": self.beamline,
                "session": self.session, "sample": self.sample,
                "dataset": planned_file.stem if current is not None and planned_file is not None else "",
                "role": current.role if current is not None else self.standing_role,
                "node": current.path if current is not None else "",
            }

    # -- the structure ---------------------------------------------------------------------------
    def load_structure(self, path: str, overrides: dict | None = None) -> int:
        """Load a data structure description, with a client's ``overrides`` of its values (see
        ``structure.py``); returns how many acquisitions it has."""
        self._need_catalogue()
        structure = load_structure(path, overrides=overrides)
        with self._lock:
            if self._current is not None:
                raise StateError(f"acquisition {self._current.path} is under way: EndSequence first")
            self.structure_run = structure_run = StructureRun(structure, self.proposal, self.session, self.sample)
            self.structure_path = path
            self._save_progress(structure_run)
        self._changed(states.ON, f"Structure {path} loaded: {len(structure_run.nodes)} acquisitions; "
                      "BeginSequence to start")
        return len(structure_run.nodes)

    def begin_sequence(self) -> None:
        run = self._need_structure()
        self._changed(states.RUNNING, f"Sequence of {len(run.nodes)} acquisitions begun")

    def next_acquisition(self) -> dict | None:
        """The next acquisition: its node, role, the Controller's configuration (file included,
        named by the data policy) and the beamline settings; None when the structure is done."""
        structure_run = self._need_structure()
        with self._lock:
            if self._current is not None:
                raise StateError(f"acquisition {self._current.path} has not ended yet; wait for its series to end")
            node = structure_run.next_acquisition()
            if node is None:
                self._changed(states.ON, "Every acquisition of the structure is done")
                return None
            self._current = node
            self._current_started = _now()
            dataset = self.policy.next_dataset(self.proposal, self.session, self.sample, node.dataset)
            folder = self.policy.raw_dataset(self.proposal, self.session, self.sample, dataset)
            file = folder / f"{dataset}.h5"
            self._expected_file = file
            self.counters.current_node = node.path
        self._changed(states.RUNNING, f"Acquisition {node.path} ({node.role}) next, into {file}")
        return {"node": node.path, "role": node.role, "parameters": node.parameters,
                "controller": {**node.controller, "file": str(file)}, "beamline": node.beamline,
                "dataset": dataset, "rotation": node.rotation}

    def end_sequence(self) -> None:
        with self._lock:
            if self._current is not None and self.structure_run is not None:
                self.structure_run.finish(self._current.path, False)
            self._current = None
        self._changed(states.ON, "Sequence ended")

    def _progress_file(self) -> Path:
        """One file per experiment, its names joined by "+", which no name may hold: (a_b, c, d) and
        (a, b_c, d) never share one."""
        return self.catalogue_directory / f"{self.proposal}+{self.session}+{self.sample}.structure.json"

    def _save_progress(self, structure_run: StructureRun) -> None:
        """The structure's progress beside the catalogue, written whole: a restart resumes it."""
        _write_whole(self._progress_file(), structure_run.to_json())

    def _restore_progress(self) -> None:
        path = self._progress_file()
        if not path.exists():
            return
        try:
            restored = StructureRun.from_json(path.read_text())
        except Exception as error:  # noqa: BLE001 - a structure edited since: start afresh, say so
            log.warning("structure progress in %s not resumed: %s", path, error)
            return
        running = restored.current
        if running is not None and restored.run_of(running.path) is None:
            restored.retry(running.path)  # its series never ended: it is taken again
        self.structure_run = restored

    def _need_structure(self) -> StructureRun:
        self._need_catalogue()
        if self.structure_run is None:
            raise StateError("no structure loaded: LoadStructure(file) first")
        return self.structure_run

    # -- what the device tells it ----------------------------------------------------------------
    def series_ended(self, result: SeriesResult) -> None:
        self._idle.clear()
        self._jobs.put((self._record, (result, self.standing_role)))  # the role said when it ended, not later

    def standardized(self, nexus_file: str) -> None:
        self._idle.clear()
        self._jobs.put((self._attach_nexus, (nexus_file,)))

    def wait_idle(self, timeout: float) -> bool:
        return self._idle.wait(timeout)

    def close(self) -> None:
        self._jobs.put(None)
        self._worker.join(10)
        if self.variables is not None and hasattr(self.variables, "close"):
            self.variables.close()

    # -- the worker ------------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            try:
                item = self._jobs.get(timeout=SWEEP_INTERVAL)
            except queue.Empty:
                self._sweep_pending()
                continue
            if item is None:
                return
            job, args = item
            try:
                job(*args)
            except Exception as error:  # the next run must be catalogued whatever happened to this one
                log.exception("cataloguing failed")
                self._changed(states.ALARM, f"A run was not catalogued: {type(error).__name__}: {error}")
            finally:
                if self._jobs.empty():
                    self._idle.set()

    def _record(self, result: SeriesResult, standing_role: str = "") -> None:
        if self.catalogue is None:  # its catalogue refused at resumption, or nobody said: one of its own
            names = (self.proposal, self.session, self.sample) if self.proposal else ("unassigned", "default",
                                                                                       "unknown")
            try:
                self.set_experiment(*names)
            except CatalogueUnavailable:  # the run waits for that catalogue like any other
                self.proposal, self.session, self.sample = names
        with self._lock:
            node, structure_run = self._current, self.structure_run
            # the structure's acquisition under way when this is the file it was given; else a series of its own
            planned = node if (node is not None and structure_run is not None
                               and Path(result.raw_file) == getattr(self, "_expected_file", None)) else None
            record = RunRecord(
                run=0, proposal=self.proposal, session=self.session,
                sample=self.sample, beamline=self.beamline,
                start=self._current_started if planned else _recorded_time(result.raw_file),
                end=_now(), node=planned.path if planned else "", role=planned.role if planned else standing_role,
                raw_file=result.raw_file, nexus_file="", frames_requested=result.frames_requested,
                frames_written=result.frames_written, missing_frames=result.missing_frames,
                end_reason=result.end_reason, series_id=result.series_id,
                dataset=Path(result.raw_file).stem,
            )
            if planned is not None and structure_run is not None:
                structure_run.finish(planned.path, result.end_reason == "completed")
                self._current = None
                self._save_progress(structure_run)
            self._queue(record.proposal).append(record)  # on disk before the catalogue is tried: never lost
        self._catalogue_waiting()

    def _queue(self, proposal: str) -> WaitingRuns:
        waiting = self._waiting.get(proposal)
        if waiting is None:
            waiting = self._waiting[proposal] = WaitingRuns(self.catalogue_directory, proposal)
        return waiting

    def _catalogue_waiting(self) -> None:
        """The waiting runs into their catalogues, oldest first; one that cannot be written stops its
        proposal's queue (the order is kept), and the State says how many wait and why."""
        for waiting in list(self._waiting.values()):
            while (record := waiting.oldest) is not None:
                try:
                    number = self._writing(record.proposal, methodcaller("add_run", record))
                except CatalogueUnavailable:
                    self._changed(states.ALARM, f"Run of {record.raw_file} not catalogued yet")
                    break
                waiting.catalogued(record)
                if record.proposal == self.proposal and self.catalogue is None:
                    self._open_waited_for()
                if record.proposal == self.proposal and self.catalogue is not None:
                    self._catalogued(record, number)

    def _open_waited_for(self) -> None:
        """The experiment's catalogue, refused when it was set (resumed after a restart, or the
        ``unassigned`` one), opened once a run could be written into it: its runs follow as usual."""
        try:
            catalogue = Catalogue(self.catalogue_directory, self.proposal, timeout=self.catalogue_timeout)
        except CatalogueUnavailable:
            return  # tried again with the next run written
        with self._lock:
            if self.catalogue is None:
                self.catalogue = catalogue
                self.counters.runs, self.counters.run_table_version = catalogue.count(), catalogue.version()
                return
        catalogue.close()  # SetExperiment was quicker

    def _catalogued(self, record: RunRecord, number: int) -> None:
        """The run is in the catalogue as ``number``: its structure acquisition, its standardized file and
        variables follow (the Standardizer may have been quicker than the Controller's event)."""
        record.run = number
        with self._lock:
            structure_run = self.structure_run
            if record.node and structure_run is not None and (
                    structure_run.proposal, structure_run.session, structure_run.sample) == (
                    record.proposal, record.session, record.sample):
                structure_run.recorded_as(record.node, number)
                self._save_progress(structure_run)
            self._pending_nexus.add(record.raw_file)
        self._after_change(record, f"Run {number} catalogued ({record.role or 'no role'}): {record.raw_file}",
                           catalogued=True)
        written = _complete_nexus(record.raw_file)
        if written:
            self._attach_nexus(written)

    def _writing(self, proposal: str, write: Callable[[Catalogue], _T]) -> _T:
        """``write(catalogue)`` on the proposal's catalogue (the open one, else one of its own, closed
        after); the open one found deleted, replaced or corrupt is begun again at its path and rebuilt
        from the files first. Why a write failed stays in the State until one succeeds."""
        try:
            catalogue = self.catalogue
            if catalogue is None or catalogue.proposal != proposal:
                with Catalogue(self.catalogue_directory, proposal, timeout=self.catalogue_timeout) as own:
                    result = write(own)
            else:
                try:
                    result = write(catalogue)
                except (CatalogueGone, CatalogueCorrupt) as error:
                    result = write(self._catalogue_begun_again(catalogue, error))
        except CatalogueUnavailable as error:
            self._catalogue_problem = str(error)
            raise
        self._catalogue_problem = ""
        return result

    def _catalogue_begun_again(self, broken: Catalogue, error: CatalogueUnavailable) -> Catalogue:
        """The open catalogue was deleted, replaced or corrupted: a new one at its path takes its place,
        rebuilt from the Recorder files' own accounting, and the State says so."""
        fresh, said = self._begin_again(broken.path, broken.proposal, error, broken)
        with self._lock:
            if self.catalogue is broken:
                self.catalogue = fresh
        self._rebuild(fresh, said)
        return fresh

    def _begin_again(self, path: Path, proposal: str, error: CatalogueUnavailable,
                     broken: Catalogue | None = None) -> tuple[Catalogue, str]:
        """A new catalogue at ``path`` (a corrupt one set aside first: renamed, never deleted), and what
        happened, in words. ``broken``, still open, is closed after the renaming: what SQLite writes
        as it closes (its last consistent pages) goes into the file set aside, not into the new one."""
        said = str(error)
        if isinstance(error, CatalogueCorrupt):
            said += f"; set aside as {set_aside(path, self.clock)}"
        if broken is not None:
            broken.close()
        return Catalogue(self.catalogue_directory, proposal, timeout=self.catalogue_timeout), said

    def _rebuild(self, catalogue: Catalogue, what: str) -> None:
        """The runs of the Recorder files in every session of the proposal (the runs waiting for the
        catalogue left to their queue, which knows their roles), numbered in the order they began."""
        folder = self.policy.root / catalogue.proposal / self.beamline / "*"
        rebuilt = 0
        for raw, accounting in self._uncatalogued(catalogue, folder):
            catalogue.add_run(RunRecord(
                run=0, proposal=catalogue.proposal, session=raw.parts[-5], sample=raw.parts[-3],
                beamline=self.beamline, start=_recorded_time(str(raw)), end=_recorded_time(str(raw), "end_time"),
                node="", role="", raw_file=str(raw), nexus_file=_complete_nexus(str(raw)),
                frames_requested=accounting["frames_requested"], frames_written=accounting["frames_written"],
                missing_frames=accounting["missing_frames"], end_reason=accounting["end_reason"],
                series_id=accounting["series_id"], dataset=raw.stem))
            rebuilt += 1
        self._catalogue_notice = f"{what}; rebuilt {rebuilt} run(s) from the files"
        with self._lock:  # SetExperiment may be installing it now
            current = catalogue is self.catalogue
        if current:
            self.counters.runs = catalogue.count()
            self.counters.run_table_version = catalogue.version()
        self._changed(states.ALARM, f"Catalogue {catalogue.path} rebuilt")

    def _sweep_pending(self) -> None:
        """Runs waiting for the catalogue are tried again. Runs whose standardized file is complete
        though no event said so (an event missed while the Standardizer restarted): attach them now.
        Processing jobs that ended go into the run table."""
        if any(self._waiting.values()):
            self._catalogue_waiting()
        # a lost engine is tried again only when a client asks (Jobs, Process): never here, in the way of runs
        if self._processing and self.jobs is not None and (self.jobs.connected or not self._job_engine_lost):
            try:
                self.job_states()
            except Exception:
                log.exception("could not follow the processing jobs")
        for raw_file in list(self._pending_nexus):
            written = _complete_nexus(raw_file)
            if written:
                try:
                    self._attach_nexus(written)
                except Exception:
                    log.exception("could not attach %s", written)

    def _attach_nexus(self, nexus_file: str) -> None:
        """The Standardizer's file to the run of its Recorder file (whatever the suffix its definition
        takes); kept for the next sweep while the catalogue cannot be written."""
        with self._lock:
            raw_file = next((raw for raw in self._pending_nexus if same_series(raw, nexus_file)), None)
        if raw_file is None or self.catalogue is None:
            return

        def attach(catalogue: Catalogue) -> RunRecord | None:
            run = catalogue.run_of_file(raw_file)
            if run is not None:
                catalogue.set_nexus_file(run, nexus_file)
                return catalogue.run(run)
            return None  # another proposal's catalogue is open now

        try:
            record = self._writing(self.proposal, attach)
        except CatalogueUnavailable:
            self._changed(states.ALARM, f"Standardized file {nexus_file} not in the catalogue yet")
            return
        with self._lock:
            self._pending_nexus.discard(raw_file)
        if record is None:
            return
        run = record.run
        self._after_change(record, f"Run {run}: standardized file {nexus_file}")
        self._register(record)
        if self.variables is not None:
            self.variables.launch(record)
        kind = AUTOMATIC_PROCESSING.get((record.role, _definition(nexus_file)))
        if kind is not None and self.jobs is not None:
            self.process(record.run, kind)

    # -- processing on the job engine ------------------------------------------------------------
    def process(self, run: int, kind: str) -> str:
        """Submit a built-in processing of a run to the job engine; returns the job id. Its result
        goes to PROCESSED_DATA (NeXus NXprocess) and, once done, into the run table."""
        from photonflow.datamanager import processing

        if self.jobs is None:
            raise StateError("no job engine: set the DataManager's JobEngine (a Dask scheduler), then Init")
        if kind not in PROCESSING:
            raise ConfigurationError(f"unknown processing '{kind}'; known: {', '.join(PROCESSING)}")
        record = self._need_catalogue().run(run)
        if record is None:
            raise ConfigurationError(f"run {run} is not in the catalogue of {self.proposal}")
        source = record.nexus_file or record.raw_file
        folder = self.policy.processed_dataset(record.proposal, record.session, record.sample,
                                               Path(record.raw_file).stem)
        folder.mkdir(parents=True, exist_ok=True)
        output = folder / f"{Path(record.raw_file).stem}_{kind}.h5"
        jobs = self.jobs
        job = self._on_job_engine(lambda: jobs.submit(f"{kind}-r{run}", getattr(processing, PROCESSING[kind]),
                                                      Path(source), output))
        with self._lock:
            self._processing[job] = (run, kind, str(output))
        return job

    def job_states(self) -> list[dict]:
        """Every processing job: id, run, kind, state, error; finished ones are put in the run table."""
        if self.jobs is None:
            return []
        states_now = []
        jobs = self.jobs
        for job in self._on_job_engine(jobs.jobs):
            run, kind, output = self._processing.get(job["id"], (0, job.get("name", ""), ""))
            states_now.append({"id": job["id"], "run": run, "kind": kind, "state": job["state"],
                               "error": job.get("error") or "", "output": output})
            if job["state"] in ("done", "failed") and job["id"] in self._processing:
                with self._lock:
                    self._processing.pop(job["id"], None)
                with self._catalogue_of(self.proposal) as catalogue:
                    if job["state"] == "done":
                        catalogue.set_variable(run, f"{kind}_file", output, attributes=PROCESSING_ORIGIN)
                    else:
                        catalogue.set_variable(run, f"{kind}_file", None, error=job.get("error") or "failed",
                                               attributes=PROCESSING_ORIGIN)
                    self.counters.run_table_version = catalogue.version()
                self.listener.counters_changed(self.counters)
        return states_now

    def _on_job_engine(self, use: Callable[[], _T]) -> _T:
        """``use()`` of the job engine; a lost engine is an ALARM saying why (and the error the
        caller gets), one answering again ends that ALARM."""
        try:
            result = use()
        except JobEngineLost as error:
            self._job_engine_lost = str(error)
            self._changed(states.ALARM, f"Job engine lost: {error}")
            raise
        if self._job_engine_lost:
            self._job_engine_lost = ""
            self._changed(states.RUNNING if self._current else states.ON, "Job engine answering again")
        return result

    def cancel_job(self, job_id: str) -> None:
        if self.jobs is None:
            raise StateError("no job engine: nothing to cancel")
        self.jobs.cancel(job_id)

    @contextmanager
    def _catalogue_of(self, proposal: str) -> Iterator[Catalogue]:
        """The open catalogue when it is that proposal's (a run finishing after SetExperiment
        changed it gets its own, closed after use: its files would stay open otherwise)."""
        catalogue = self.catalogue
        if catalogue is not None and catalogue.proposal == proposal:
            yield catalogue
            return
        with Catalogue(self.catalogue_directory, proposal) as own:
            yield own

    def _variables_done(self, record: RunRecord, results: dict) -> None:
        """The runner stored the run's variables in the catalogue: the table changed. A runner that
        failed as a whole (a context that does not load, a crash, the run's timeout) is an ALARM
        saying why and where; the next run computed ends it."""
        try:
            with self._catalogue_of(record.proposal) as catalogue:
                self.counters.run_table_version = catalogue.version()
                values = catalogue.variables(record.run)
        except CatalogueUnavailable as error:  # the runs waiting on disk say the rest
            self._changed(states.ALARM, f"Run {record.run}: variables not read back: {error}")
            return
        self._message("run_values_updated", {"run": record.run, "proposal": record.proposal, "values": values})
        if results.get("failed"):
            self._variables_failed = results["failed"]
            self._changed(states.ALARM, f"Run {record.run}: variables not computed: {results['failed']}")
            return
        failed = sorted(results.get("errors") or {})
        note = f"; failed: {', '.join(failed)}" if failed else ""
        state = self.state
        if self._variables_failed:
            self._variables_failed = ""
            state = states.RUNNING if self._current else states.ON
        elif state == states.ALARM:  # another ALARM's reason stays what the operator reads
            log.info("run %s: variables computed%s", record.run, note)
            self.listener.counters_changed(self.counters)
            return
        self._changed(state, f"Run {record.run}: variables computed{note}")

    def _register(self, record: RunRecord) -> None:
        """The run as a facility catalogue ingests it: ICAT's fields as JSON beside the catalogue,
        and sent with pyicat-plus when the facility configured it (a failure is a warning)."""
        catalogue = self._need_catalogue()
        catalogue.export_icat(record.run, self.catalogue_directory / f"{record.proposal}_icat")
        if self.icat:
            try:
                send_to_icat(catalogue.icat_dataset(record.run), self.icat)
            except Exception as error:  # noqa: BLE001 - ICAT's client raises anything: the run stays catalogued, the state says why
                self._changed(states.ALARM, f"Run {record.run} not registered in ICAT: {error}")

    def _after_change(self, record: RunRecord, status: str, catalogued: bool = False) -> None:
        """``catalogued``: ``record`` is a new run. LastRun moves only then (a sequencer waits for it
        to move), not when an earlier run's standardized file comes after a later run."""
        if catalogued:
            self.counters.last_run = record.run
        catalogue = self._need_catalogue()
        self.counters.runs = catalogue.count()
        self.counters.run_table_version = catalogue.version()
        if self.structure_run is not None:
            self.counters.progress = self.structure_run.progress
        self.counters.current_node = self._current.path if self._current else ""
        self._message("run_values_updated", {"run": record.run, "proposal": record.proposal,
                                             "values": {"role": record.role, "node": record.node,
                                                        "raw_file": record.raw_file,
                                                        "nexus_file": record.nexus_file}})
        self._changed(states.RUNNING if self._current else states.ON, status)

    def _message(self, kind: str, data: dict) -> None:
        """A message as DAMNIT sends them ({msg_kind, data}); idempotent for its readers."""
        if self.publish is None:
            return
        try:
            self.publish({"msg_kind": kind, "data": data})
        except Exception as error:  # noqa: BLE001 - the run is catalogued: a bus problem is only logged
            log.warning("message %s not published: %s", kind, error)

    def _standing_alarms(self) -> list[str]:
        """What keeps the DataManager in ALARM whatever else happens meanwhile: said in every Status
        until it is resolved, never overwritten by a later run's news."""
        reasons = [self._catalogue_notice] if self._catalogue_notice else []
        waiting = sum(len(runs) for runs in self._waiting.values())
        if waiting:
            reasons.append(f"{waiting} run(s) waiting to be catalogued: {self._catalogue_problem or 'to be retried'}")
        elif self._catalogue_problem:
            reasons.append(f"catalogue not written: {self._catalogue_problem}")
        if self._job_engine_lost:
            reasons.append(f"Job engine lost: {self._job_engine_lost}")
        return reasons

    def _changed(self, state: str, status: str) -> None:
        self.listener.counters_changed(self.counters)
        standing = [reason for reason in self._standing_alarms() if reason not in status]
        if standing and state != states.FAULT:
            state, status = states.ALARM, "; ".join([status, *standing])
        self._set_state(state, status)


def _write_whole(path: Path, text: str) -> None:
    """``text`` as ``path``'s content, whole or not at all (a crash mid-write leaves the old one)."""
    partial = path.with_name(f".{path.name}.partial")
    with open(partial, "w", encoding="utf-8") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())
    os.replace(partial, path)


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _accounting(raw: Path) -> dict | None:
    """What a Recorder file says of its series, or None if it is not one (or is still open)."""
    try:
        import h5py

        with h5py.File(raw, "r") as f:
            counts = f["entry/accounting"]
            reason = counts["end_reason"][()]
            return {
                "series_id": int(counts["series_id"][()]),
                "frames_requested": int(counts["frames_requested"][()]),
                "frames_written": int(counts["frames_written"][()]),
                "missing_frames": int(counts["missing_frames"][()]),
                "end_reason": reason.decode() if isinstance(reason, bytes) else str(reason),
            }
    except (OSError, KeyError):
        return None


def _complete_nexus(raw_file: str) -> str:
    """The standardized file of ``raw_file`` once it exists and is closed (HDF5 refuses to open a
    file being written); "" before."""
    for path in standardized_candidates(raw_file):
        if _definition(str(path)):
            return str(path)
    return ""


def _definition(nexus_file: str) -> str:
    """The application definition of a complete standardized file; "" when it is not (yet) one."""
    if not Path(nexus_file).exists():
        return ""
    try:
        import h5py

        with h5py.File(nexus_file, "r") as f:
            definition = f["entry/definition"][()] if "entry/definition" in f else b""
        return definition.decode() if isinstance(definition, bytes) else str(definition)
    except OSError:
        return ""


def _recorded_time(raw_file: str, which: str = "start_time") -> str:
    """When a series began (or ``which="end_time"``: ended), as its Recorder file says: for a series
    nobody announced, and for runs rebuilt from the files."""
    try:
        import h5py

        with h5py.File(raw_file, "r") as f:
            value = f[f"entry/{which}"][()]
        return value.decode() if isinstance(value, bytes) else str(value)
    except (OSError, KeyError):
        return ""
