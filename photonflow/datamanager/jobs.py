"""Processing jobs on a real job engine: Dask distributed.

The embedded default is a ``dask scheduler`` and N ``dask worker`` processes that photonflow
starts itself on 127.0.0.1 (free ports, logs under a run directory); a facility points the
DataManager at its own scheduler (``tcp://host:port``) or at Slurm through dask-jobqueue
(``slurm://queue``). Whatever the engine, jobs go through a :class:`JobBoard` that names them and
reports their state (queued, running, done, failed, cancelled), error and log, and cancels them.

Example::

    engine = engine_from_url("embedded", run_dir=Path("var/dask"))
    client = client_for(engine.start())
    board = JobBoard(client)
    job = board.submit("integrate run 12", integrate_azimuthally, nxmx, output)
    board.wait(job, timeout=600); print(board.state(job), board.job(job)["error"])
    client.close(); engine.stop()
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from concurrent.futures import CancelledError
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, urlparse

import psutil

from photonflow.errors import ConfigurationError, PhotonflowError, StateError

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
JOB_STATES = (QUEUED, RUNNING, DONE, FAILED, CANCELLED)
EVENT_TOPIC = "photonflow-jobs"  # the scheduler's event log carries each job's start and end
LOG_TAIL_LINES = 30


class JobEngineError(PhotonflowError):
    """The job engine (Dask scheduler or workers) did not start, or cannot be reached."""

    reason = "JobEngineNotStarted"


class JobEngineLost(JobEngineError):
    """The scheduler stopped answering: jobs cannot be submitted or followed until it is back."""

    reason = "JobEngineLost"


class JobEngine(Protocol):
    """What the DataManager needs of an engine: start it (its scheduler's address), stop it."""

    def start(self) -> str: ...

    def stop(self) -> None: ...


def dask_command() -> list[str]:
    """The ``dask`` command line of this Python environment (next to ``sys.executable``)."""
    beside = Path(sys.executable).with_name("dask")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("dask")
    if found:
        return [found]
    return [sys.executable, "-m", "dask"]


class EmbeddedDask:
    """A ``dask scheduler`` and ``workers`` ``dask worker`` processes on ``host`` (loopback unless
    the suite binds elsewhere), each its own process (and process group), their logs and the
    scheduler file under ``run_dir``. Their web services (health, metrics, call stacks; served
    even with ``--no-dashboard``) listen on ``host`` too, on free ports, never on 0.0.0.0.

    The scheduler binds a free port (``--port 0``) and announces its address in
    ``run_dir/scheduler.json``, so no port is guessed; ``start`` returns once the scheduler
    reports every worker, and raises :class:`JobEngineError` with the logs' tails otherwise.
    """

    def __init__(self, run_dir: Path, workers: int = 2, threads_per_worker: int = 1, *,
                 startup_timeout: float = 60.0, dask: list[str] | None = None, host: str = "127.0.0.1"):
        if workers < 1 or threads_per_worker < 1:
            raise ConfigurationError(
                f"an embedded Dask needs at least 1 worker of 1 thread, got {workers} x {threads_per_worker}")
        self.run_dir = Path(run_dir)
        self.workers = workers
        self.threads_per_worker = threads_per_worker
        self.host = host
        self.startup_timeout = startup_timeout
        self.dask = list(dask) if dask else dask_command()
        self.address: str | None = None
        self._processes: dict[str, subprocess.Popen] = {}
        self._logs: dict[str, Path] = {}
        self._lock = threading.Lock()

    @property
    def scheduler_file(self) -> Path:
        return self.run_dir / "scheduler.json"

    @property
    def processes(self) -> dict[str, subprocess.Popen]:
        """The scheduler and worker processes it started, each leading its own process group."""
        return dict(self._processes)

    @property
    def pids(self) -> list[int]:
        """The started processes and every process they started (a worker's nanny spawns the worker)."""
        found = []
        for process in self._processes.values():
            try:
                parent = psutil.Process(process.pid)
                found += [parent.pid] + [child.pid for child in parent.children(recursive=True)]
            except psutil.NoSuchProcess:
                continue
        return found

    def start(self) -> str:
        with self._lock:
            if self.address is not None:
                raise StateError(f"the embedded Dask is already running at {self.address}: stop it first")
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.scheduler_file.unlink(missing_ok=True)
            try:
                web = ["--no-dashboard", "--dashboard-address", f"{self.host}:0"]
                self._spawn("scheduler", ["scheduler", "--host", self.host, "--port", "0", *web,
                                          "--scheduler-file", str(self.scheduler_file)])
                address = self._wait_for_scheduler()
                for index in range(self.workers):
                    self._spawn(f"worker-{index}", [
                        "worker", address, "--host", self.host, "--nworkers", "1",
                        "--nthreads", str(self.threads_per_worker), *web,
                        "--name", f"photonflow-{index}", "--local-directory", str(self.run_dir / "workers"),
                    ])
                self._wait_for_workers(address)
            except BaseException:
                self._terminate_all()
                raise
            self.address = address
            return address

    def stop(self) -> None:
        """Retire the workers, close the scheduler, then terminate (and kill) what is left."""
        with self._lock:
            if self.address is not None and self._processes:
                try:
                    self._shutdown_gracefully(self.address)
                except Exception:  # the processes are ended below whatever happened
                    logging.getLogger(__name__).debug("graceful Dask shutdown failed", exc_info=True)
            self._terminate_all()
            self.address = None

    def log_tail(self, name: str, lines: int = LOG_TAIL_LINES) -> str:
        path = self._logs.get(name)
        if path is None or not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def __enter__(self) -> EmbeddedDask:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _spawn(self, name: str, arguments: list[str]) -> None:
        log = self.run_dir / f"{name}.log"
        self._logs[name] = log
        with open(log, "ab") as output:
            try:
                self._processes[name] = subprocess.Popen(
                    [*self.dask, *arguments], stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    cwd=self.run_dir, start_new_session=True,
                )
            except OSError as error:
                raise JobEngineError(f"cannot start dask {name} ({' '.join(self.dask)}): {error}") from error

    def _failure(self, name: str, what: str) -> JobEngineError:
        tail = self.log_tail(name)
        return JobEngineError(f"{what}; the end of {self._logs.get(name)}:\n{tail}" if tail
                              else f"{what}; {self._logs.get(name)} is empty")

    def _check_alive(self) -> None:
        for name, process in self._processes.items():
            code = process.poll()
            if code is not None:
                raise self._failure(name, f"dask {name} exited with code {code} while starting")

    def _wait_for_scheduler(self) -> str:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                address = json.loads(self.scheduler_file.read_text())["address"]
                if address:
                    return address
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.1)
        raise self._failure("scheduler", f"the dask scheduler did not announce itself within {self.startup_timeout} s")

    def _wait_for_workers(self, address: str) -> None:
        from distributed import Client

        deadline = time.monotonic() + self.startup_timeout
        with Client(address, timeout=self.startup_timeout, set_as_default=False) as client:
            while time.monotonic() < deadline:
                self._check_alive()
                connected = len(client.scheduler_info(n_workers=-1)["workers"])
                if connected >= self.workers:
                    return
                time.sleep(0.2)
            connected = len(client.scheduler_info(n_workers=-1)["workers"])
        name = next((n for n in self._processes if n.startswith("worker")), "scheduler")
        raise self._failure(name, f"only {connected} of {self.workers} dask workers joined {address} "
                                  f"within {self.startup_timeout} s")

    @staticmethod
    def _shutdown_gracefully(address: str) -> None:
        from distributed import Client

        with Client(address, timeout=10, set_as_default=False) as client:
            workers = list(client.scheduler_info(n_workers=-1)["workers"])
            if workers:
                client.retire_workers(workers, close_workers=True, remove=True)
            client.shutdown()

    def _terminate_all(self, grace: float = 10.0) -> None:
        """SIGTERM each process group, wait, SIGKILL whatever is left (nanny children included)."""
        processes = list(self._processes.items())
        everything: list[psutil.Process] = []
        for _, process in processes:
            try:
                parent = psutil.Process(process.pid)
                everything += [parent, *parent.children(recursive=True)]
            except psutil.NoSuchProcess:
                pass
        for _, process in processes:
            if process.poll() is None:
                _signal_group(process.pid, signal.SIGTERM)
        _, alive = psutil.wait_procs(everything, timeout=grace)
        for leftover in alive:
            try:
                leftover.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(alive, timeout=grace)
        for _, process in processes:
            if process.poll() is None:
                _signal_group(process.pid, signal.SIGKILL)
            process.wait(timeout=grace)
        self._processes.clear()


def _signal_group(pid: int, signum: int) -> None:
    try:
        os.killpg(pid, signum)  # each process leads its own session (start_new_session)
    except (ProcessLookupError, PermissionError):
        pass


@dataclass
class ExternalScheduler:
    """A scheduler the facility runs: photonflow only connects to it, and never stops it."""

    address: str

    def start(self) -> str:
        return self.address

    def stop(self) -> None:
        pass


@dataclass
class SlurmEngine:
    """Workers as Slurm jobs through dask-jobqueue's ``SLURMCluster`` (``pip install dask-jobqueue``;
    not a photonflow dependency). ``options`` go to ``SLURMCluster`` (cores, memory, walltime,
    account, ...); ``jobs`` is the number of Slurm jobs to scale to."""

    queue: str
    jobs: int = 1
    options: dict[str, Any] = field(default_factory=dict)
    cluster: Any = None

    def start(self) -> str:
        try:
            from dask_jobqueue import SLURMCluster
        except ImportError as error:
            raise JobEngineError("a slurm:// job engine needs dask-jobqueue: pip install dask-jobqueue") from error
        settings = {"cores": 1, "memory": "4GB", **self.options}
        self.cluster = SLURMCluster(queue=self.queue, **settings)
        self.cluster.scale(jobs=self.jobs)
        return self.cluster.scheduler_address

    def stop(self) -> None:
        if self.cluster is not None:
            self.cluster.close()
            self.cluster = None


def engine_from_url(url: str, run_dir: Path | None = None, *, workers: int = 2,
                    threads_per_worker: int = 1) -> JobEngine:
    """The engine a configuration names:

    - ``embedded``: :class:`EmbeddedDask` under ``run_dir`` with ``workers`` x ``threads_per_worker``;
    - ``tcp://host:port``: the facility's running scheduler (:class:`ExternalScheduler`);
    - ``slurm://queue?jobs=2&cores=4&memory=16GB&walltime=01:00:00``: :class:`SlurmEngine`
      (dask-jobqueue, imported only when started).
    """
    text = (url or "").strip()
    if text == "embedded":
        if run_dir is None:
            raise ConfigurationError("the embedded job engine needs a run directory for its logs")
        return EmbeddedDask(run_dir, workers, threads_per_worker)
    parsed = urlparse(text)
    if parsed.scheme in ("tcp", "tls") and parsed.hostname and parsed.port:
        return ExternalScheduler(text)
    if parsed.scheme == "slurm" and parsed.netloc:
        options: dict[str, Any] = {key: values[-1] for key, values in parse_qs(parsed.query).items()}
        try:
            jobs = int(options.pop("jobs", 1))
            if "cores" in options:
                options["cores"] = int(options["cores"])
        except ValueError as error:
            raise ConfigurationError(f"job engine {url!r}: jobs and cores must be whole numbers") from error
        return SlurmEngine(parsed.netloc, jobs, options)
    raise ConfigurationError(
        f"job engine {url!r} is not understood: use 'embedded', 'tcp://host:port' or 'slurm://queue'")


def client_for(address: str, timeout: float = 30.0):
    """A ``distributed.Client`` connected to ``address``; the caller closes it."""
    from distributed import Client

    try:
        return Client(address, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError) as error:
        raise JobEngineError(f"cannot reach the Dask scheduler at {address}: {error}") from error


class _ThreadLog(logging.Handler):
    """The log records of one thread (the job's), as text."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.thread = threading.get_ident()
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread:
            self.lines.append(self.format(record))


def run_job(job_id: str, function: Callable, args: tuple, kwargs: dict):
    """What a worker runs: the job, announced on the scheduler's event log when it starts and
    ends, with its log records (INFO and above) and its error."""
    from distributed import get_worker

    worker = get_worker()
    worker.log_event(EVENT_TOPIC, {"job": job_id, "event": RUNNING, "worker": worker.address, "time": time.time()})
    handler = _ThreadLog()
    root = logging.getLogger()
    ours = logging.getLogger("photonflow")
    if ours.getEffectiveLevel() > logging.INFO:  # a worker logs WARNING and above: the job's INFO is kept
        ours.setLevel(logging.INFO)
    root.addHandler(handler)
    try:
        result = function(*args, **kwargs)
    except BaseException as error:
        worker.log_event(EVENT_TOPIC, {
            "job": job_id, "event": FAILED, "time": time.time(), "error": f"{type(error).__name__}: {error}",
            "log": "\n".join(handler.lines + [traceback.format_exc()]),
        })
        raise
    finally:
        root.removeHandler(handler)
    worker.log_event(EVENT_TOPIC, {"job": job_id, "event": DONE, "time": time.time(), "log": "\n".join(handler.lines)})
    return result


@dataclass
class _Job:
    job_id: str
    name: str
    future: Any
    submitted: float
    cancelled: bool = False
    lost: str = ""  # why it ended with its scheduler; empty: not lost


class JobBoard:
    """Named jobs on a Dask client: state, error, log, result, cancel.

    A job is ``queued`` until a worker starts it (the worker says so on the scheduler's event
    log), ``running`` until it ends ``done`` or ``failed``; ``cancelled`` once cancelled (a task
    already running on a worker thread finishes there, but its result is dropped).
    """

    def __init__(self, client=None, clock: Callable[[], float] = time.time, *, address: str = "",
                 connect_timeout: float = 10.0, answer_timeout: float = 5.0):
        """``client``: a connected Dask client; or ``address``: the scheduler, connected on first use
        and again whenever it was lost (a restarted scheduler is used without restarting photonflow)."""
        if client is None and not address:
            raise ConfigurationError("a job board needs a Dask client or a scheduler address")
        self._client = client
        self.address = address
        self.connect_timeout = connect_timeout
        self.answer_timeout = answer_timeout  # seconds a question to the scheduler may take
        self.clock = clock
        self._jobs: dict[str, _Job] = {}
        self._lock = threading.Lock()
        self._connecting = threading.Lock()

    @property
    def connected(self) -> bool:
        """Whether the scheduler answers now, as far as the client knows (no call is made)."""
        client = self._client
        return client is not None and client.status == "running"

    @property
    def client(self):
        """The Dask client; connected again when the scheduler was lost. A scheduler that does not
        answer is said at once (JobEngineLost), never waited for under a caller's lock."""
        with self._connecting:
            client = self._client
            if client is not None and client.status == "running":
                return client
            if client is not None:
                self._client = None
                self._lose_jobs(f"lost with the job engine (the Dask scheduler {self.address or 'in use'} stopped)")
                threading.Thread(target=_close_quietly, args=(client,), name="dask-close", daemon=True).start()
            where = self.address or "the job engine"
            if not self.address:
                raise JobEngineLost(f"the Dask scheduler stopped answering; {where} cannot be reconnected: "
                                    "Init the DataManager once it runs again")
            problem = _unreachable(self.address)
            if problem:
                raise JobEngineLost(f"the Dask scheduler at {self.address} does not answer ({problem}): start it "
                                    "again (or set the DataManager's JobEngine); it is reconnected on next use")
            self._client = client_for(self.address, timeout=self.connect_timeout)
            return self._client

    def close(self) -> None:
        """Close the client this board connected (one it was given is its owner's to close)."""
        with self._connecting:
            client, self._client = self._client, None
        if client is not None and self.address:
            _close_quietly(client)

    def _lose_jobs(self, why: str) -> None:
        """The jobs of a lost scheduler end failed with ``why``: their results went with it."""
        with self._lock:
            for job in self._jobs.values():
                # the client cancels what its scheduler took with it: only a job cancelled here stays cancelled
                if not job.lost and not job.cancelled and job.future.status not in ("finished", "error"):
                    job.lost = why

    def submit(self, name: str, function: Callable, *args, **kwargs) -> str:
        job_id = f"{_slug(name)}-{uuid.uuid4().hex[:8]}"
        future = self.client.submit(run_job, job_id, function, args, kwargs, key=job_id, pure=False)
        with self._lock:
            self._jobs[job_id] = _Job(job_id, name, future, self.clock())
        return job_id

    def state(self, job_id: str) -> str:
        job = self._job(job_id)
        if not job.lost and not self.connected:
            _ = self.client  # a scheduler lost since: its jobs are failed with the reason, or it is said
        if job.lost:
            return FAILED
        status = job.future.status
        if job.cancelled or status == "cancelled":
            return CANCELLED
        if status == "finished":
            return DONE
        if status == "error":
            return FAILED
        return RUNNING if RUNNING in self._events().get(job_id, {}) else QUEUED

    def job(self, job_id: str) -> dict:
        """One job: id, name, state, submitted/started/ended times (Unix), worker, error, log."""
        job = self._job(job_id)
        return self._describe(job, self._events().get(job_id, {}))

    def jobs(self) -> list[dict]:
        events = self._events()
        with self._lock:
            listed = list(self._jobs.values())
        return [self._describe(job, events.get(job.job_id, {})) for job in listed]

    def result(self, job_id: str, timeout: float | None = None):
        """The job's return value (waits); its exception if it failed."""
        return self._job(job_id).future.result(timeout=timeout)

    def wait(self, job_id: str, timeout: float | None = None) -> str:
        """Wait until the job ends (done, failed or cancelled), at most ``timeout`` s; its state."""
        job = self._job(job_id)
        try:
            job.future.exception(timeout=timeout)  # waits without fetching the result
        except (TimeoutError, CancelledError):
            pass
        return self.state(job_id)

    def cancel(self, job_id: str) -> None:
        """Cancel a queued or running job; a job that already ended keeps its state."""
        job = self._job(job_id)
        if job.future.status in ("finished", "error"):
            return
        job.cancelled = True
        job.future.cancel()

    def _job(self, job_id: str) -> _Job:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise ConfigurationError(f"there is no job {job_id!r}; known jobs: {', '.join(self._jobs) or 'none'}")
        return job

    def _events(self) -> dict[str, dict[str, dict]]:
        """Per job, its events (running, done, failed) from the scheduler's event log."""
        client = self.client
        try:  # Client.get_events' own call, with a deadline: a scheduler that hangs is said, not waited for
            log = client.sync(client.scheduler.events, topic=EVENT_TOPIC, callback_timeout=self.answer_timeout)
        except (TimeoutError, OSError) as error:
            raise JobEngineLost(f"the Dask scheduler at {self.address or 'in use'} did not answer within "
                                f"{self.answer_timeout} s ({type(error).__name__}: {error}): check it (a stopped or "
                                "overloaded scheduler), restart it if needed; it is tried again on next use") from None
        found: dict[str, dict[str, dict]] = {}
        for _, message in log:
            if isinstance(message, dict) and "job" in message:
                found.setdefault(message["job"], {})[message["event"]] = message
        return found

    def _describe(self, job: _Job, events: dict[str, dict]) -> dict:
        state = self.state(job.job_id)
        ended = events.get(DONE) or events.get(FAILED) or {}
        error = ended.get("error", "") or job.lost
        if state == FAILED and not error:
            error = _error_text(job.future)
        return {
            "id": job.job_id, "name": job.name, "state": state, "submitted": job.submitted,
            "started": events.get(RUNNING, {}).get("time"), "ended": ended.get("time"),
            "worker": events.get(RUNNING, {}).get("worker", ""), "error": error, "log": ended.get("log", ""),
        }


def _error_text(future) -> str:
    try:
        error = future.exception(timeout=5)
    except Exception as failure:  # noqa: BLE001 - describing an error must not raise another
        return f"{type(failure).__name__}: {failure}"
    return f"{type(error).__name__}: {error}" if error is not None else ""


def _close_quietly(client) -> None:
    """Close a client whose scheduler is gone (closing may wait for it: never on a caller's thread)."""
    try:
        client.close(timeout=10)
    except Exception:  # the scheduler is gone: whatever closing says changes nothing
        logging.getLogger(__name__).debug("closing a lost Dask client failed", exc_info=True)


def _unreachable(address: str, timeout: float = 1.0) -> str:
    """Why nothing accepts connections at the scheduler's ``address`` (tcp://host:port); "" when
    something does. A closed port is refused at once, where a Dask client would retry for its timeout."""
    parsed = urlparse(address)
    if not parsed.hostname or not parsed.port:
        return ""  # not a host:port address: the Dask client says what is wrong
    try:
        with socket.create_connection((parsed.hostname, parsed.port), timeout=timeout):
            return ""
    except OSError as error:
        return error.strerror or str(error)


def _slug(name: str) -> str:
    text = "".join(c if c.isalnum() or c in "-_." else "-" for c in name.strip())
    return text.strip("-")[:60] or "job"
