"""Computing each run's variables after it is catalogued, one run at a time, off the DataManager's
thread: the runner loads the context file in another process, so a user's code can neither block
nor crash the server, and a context edited on disk is read afresh for every run.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from photonflow.datamanager.catalogue import RunRecord

log = logging.getLogger(__name__)


class VariablesInProcess:
    def __init__(self, context_file: str | Path, catalogue_directory: str | Path, job_engine: str = "local",
                 timeout_s: float = 120.0):
        self.context_file = Path(context_file)
        self.catalogue_directory = Path(catalogue_directory)
        self.cluster = job_engine if job_engine.startswith("tcp://") else None
        self.timeout_s = timeout_s
        self.on_done: Callable[[RunRecord, dict], None] = lambda record, results: None
        self.running: RunRecord | None = None
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._work, name="variables", daemon=True)
        self._thread.start()

    def output_directory(self, proposal: str) -> Path:
        return self.catalogue_directory / f"{proposal}_variables"

    def launch(self, record: RunRecord) -> None:
        self._queue.put(record)

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    def _work(self) -> None:
        from photonflow.datamanager.runner import run_variables

        while True:
            record = self._queue.get()
            if record is None:
                return
            self.running = record
            try:
                results = run_variables(
                    str(self.context_file), asdict(record), str(self.catalogue_directory), record.proposal,
                    str(self.output_directory(record.proposal)), timeout_s=self.timeout_s, cluster=self.cluster,
                )
            except Exception as error:  # recorded for the run; the next run is computed all the same
                log.exception("variables of run %s failed", record.run)
                results = {"error": f"{type(error).__name__}: {error}"}
            finally:
                self.running = None
            self.on_done(record, results)

    def close(self) -> None:
        self._queue.put(None)
