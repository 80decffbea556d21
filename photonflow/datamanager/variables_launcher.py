"""Computing each run's variables after it is catalogued, one run at a time, off the DataManager's
thread: the runner loads the context file in another process, so a user's code can neither block
nor crash the server, and a context edited on disk is read afresh for every run.

Each run has a deadline (``run_timeout_s``, the device's ``VariablesTimeout``): its runner, and all
it started, is killed then and the next run goes on. Closing (``Init``) stops the runner under way
and drops the runs still waiting: no runner outlives its DataManager.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from photonflow.datamanager.catalogue import RunRecord
from photonflow.datamanager.runner import LOAD_TIMEOUT_S, SupervisedRunner, list_variables, run_variables

log = logging.getLogger(__name__)
DEFAULT_RUN_TIMEOUT_S = 600.0


class VariablesInProcess:
    def __init__(self, context_file: str | Path, catalogue_directory: str | Path, job_engine: str = "local",
                 timeout_s: float = 120.0, run_timeout_s: float = DEFAULT_RUN_TIMEOUT_S):
        self.context_file = Path(context_file)
        self.catalogue_directory = Path(catalogue_directory)
        self.cluster = job_engine if job_engine.startswith("tcp://") else None
        self.timeout_s = timeout_s  # per variable
        self.run_timeout_s = run_timeout_s  # every variable of a run
        self.on_done: Callable[[RunRecord, dict], None] = lambda record, results: None
        self.running: RunRecord | None = None
        self._runner: SupervisedRunner | None = None
        self._closed = threading.Event()
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._work, name="variables", daemon=True)
        self._thread.start()

    def output_directory(self, proposal: str) -> Path:
        return self.catalogue_directory / f"{proposal}_variables"

    def launch(self, record: RunRecord) -> None:
        self._queue.put(record)

    def compute(self, record: RunRecord) -> dict:
        """One run's variables, now, in a supervised runner (its summary, or why it failed)."""
        return run_variables(
            str(self.context_file), asdict(record), str(self.catalogue_directory), record.proposal,
            str(self.output_directory(record.proposal)), timeout_s=self.timeout_s, cluster=self.cluster,
            process_timeout=self.run_timeout_s, started=self._follow,
        )

    def list_variables(self) -> list[str]:
        """The context's variables as it is now, loaded in a process of its own."""
        return list_variables(self.context_file, timeout_s=min(self.run_timeout_s, LOAD_TIMEOUT_S))

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    def _work(self) -> None:
        while True:
            record = self._queue.get()
            if record is None or self._closed.is_set():
                return
            self.running = record
            try:
                results = self.compute(record)
            except Exception as error:  # recorded for the run; the next run is computed all the same
                log.exception("variables of run %s failed", record.run)
                results = {"run": record.run, "failed": f"{type(error).__name__}: {error}"}
            finally:
                self.running, self._runner = None, None
            if not self._closed.is_set():
                try:
                    self.on_done(record, results)
                except Exception:  # the DataManager's news of one run must not stop the next runs' variables
                    log.exception("after the variables of run %s", record.run)

    def _follow(self, runner: SupervisedRunner) -> None:
        self._runner = runner
        if self._closed.is_set():  # closed while it was starting
            runner.stop()

    def close(self) -> None:
        """Stops the runner under way (with all it started); the runs still waiting are dropped."""
        self._closed.set()
        self._queue.put(None)
        runner = self._runner
        if runner is not None:
            runner.stop()
        self._thread.join(30)
