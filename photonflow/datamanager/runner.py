"""Computing a run's variables, in a process of its own, as DAMNIT's ``ctxrunner`` does.

:func:`run_variables` starts ``python -m photonflow.datamanager.runner '<json>'`` (a context file
is the user's code: it must never crash or block the DataManager) and waits for it, or not. In
that process the context is loaded, its variables computed in dependency order, each in a worker
thread with a timeout: an exception, a hang or an unsupported result is recorded for that cell
and the others still run; a variable whose dependency failed or was skipped is not computed.
``cluster=True`` variables go to a Dask scheduler when its address is given, else run locally.
``sys.exit()`` in a variable fails that variable only.

The process is supervised (:class:`SupervisedRunner`): a session of its own, killed with all it
started at the run's deadline or when the DataManager closes. A runner that dies (``os._exit``, a
signal) or times out is reported for its run with where it was (the variable, its file and line),
and the run's cells it had not stored carry that reason. :func:`list_variables` loads a context the
same way, for ``ReloadContext``: the DataManager's process never runs the context's code.

Results go to a :class:`ResultSink` (the run catalogue by default, any ``module:factory``
called with ``(catalogue_dir, proposal)`` otherwise) and to ``<output_dir>/p<proposal>_r<run>.h5``
in DAMNIT's layout (``.reduced``, ``.preview``, ``.errors``, one group per variable with its full
``data``), written under a temporary name and renamed when complete. Each cell is stored as
soon as it is computed; once the run is done, its cells of variables the context no longer has
are deleted.
"""

from __future__ import annotations

import argparse
import fnmatch
import importlib
import inspect
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from photonflow.datamanager.context import (
    Cell,
    ContextFile,
    DependencyError,
    RunData,
    Skip,
    _is_figure,
    _plain,
    load_context,
)
from photonflow.errors import ConfigurationError

log = logging.getLogger(__name__)

DEFAULT_SINK = "photonflow.datamanager.catalogue:Catalogue"


class ResultSink(Protocol):
    """Where each cell's value or error goes: the run catalogue's ``set_variable``."""

    def set_variable(self, run: int, name: str, value: Any, *, summary: str | None = None,
                     error: str | None = None, attributes: dict | None = None) -> None: ...


class VariableTimeout(TimeoutError):
    """A variable that did not finish in time; its thread is abandoned."""


@dataclass
class Results:
    """What one execution produced: cells by name, errors (exceptions, Skip) by name, and where
    each variable ran."""

    run: int
    names: tuple[str, ...]
    cells: dict[str, Cell] = field(default_factory=dict)
    errors: dict[str, BaseException] = field(default_factory=dict)
    where: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _call_with_timeout(function, timeout_s: float, name: str):
    outcome: dict[str, Any] = {}

    def target():
        try:
            outcome["value"] = function()
        except BaseException as error:  # noqa: BLE001 - the variable's own error, recorded for its cell
            outcome["error"] = error

    worker = threading.Thread(target=target, name=f"variable-{name}", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        raise VariableTimeout(f"{name} did not finish within {timeout_s:g} s (abandoned)")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _arguments(var, run: RunData, results: dict[str, Any], errors: dict[str, BaseException],
               context: ContextFile) -> dict[str, Any]:
    """The keyword arguments from var#/meta#/mymdc# annotations; raises Skip or DependencyError
    when a dependency has no result."""
    kwargs: dict[str, Any] = {}
    missing: list[str] = []
    parameters = inspect.signature(var.func).parameters
    for argument, annotation in var.annotations().items():
        if annotation.startswith("var#"):
            pattern = annotation.removeprefix("var#")
            matches = fnmatch.filter(results, pattern)
            if matches == [pattern]:
                kwargs[argument] = results[pattern]
            elif matches and pattern not in context.vars:
                kwargs[argument] = {match: results[match] for match in matches}
            elif parameters[argument].default is inspect.Parameter.empty:
                missing += fnmatch.filter(context.vars, pattern)
        else:
            kwargs[argument] = run.argument(annotation)
    if missing:
        failed = {dep: errors.get(dep) for dep in missing}
        reasons = "; ".join(f"{dep}: {type(e).__name__ if e else 'no data'}{f': {e}' if e else ''}"
                            for dep, e in failed.items())
        if all(isinstance(e, Skip) or e is None for e in failed.values()):
            raise Skip(f"skipped because a dependency has no result ({reasons})")
        raise DependencyError(f"not computed because a dependency failed ({reasons})")
    return kwargs


def _evaluate_on_worker(context_path: str, name: str, run: dict[str, Any], kwargs: dict[str, Any]) -> Cell:
    """A cluster variable, on a Dask worker: the context is loaded there from its path."""
    run_data = RunData.from_dict(run)
    try:
        return load_context(context_path).vars[name].evaluate(run_data, kwargs)
    finally:
        run_data.close()


def _cluster_client(address: str | None, notes: list[str]):
    if not address:
        return None
    try:
        from distributed import Client

        return Client(address, timeout=10)
    except Exception as error:  # noqa: BLE001 - no cluster: the variables still run, locally
        notes.append(f"the Dask scheduler at {address} could not be reached ({error}); "
                     "cluster variables computed locally")
        return None


def execute(context: ContextFile, run: RunData, *, timeout_s: float = 60.0,
            cluster: str | None = None, progress: Callable[[str, str, Results], None] | None = None) -> Results:
    """Computes every variable of ``context`` for ``run``, in dependency order. ``progress(step,
    name, results)`` is told ``"computing"`` before each variable and ``"computed"`` once its cell
    or error is in ``results`` (the runner stores it at once: a run stopped later keeps what was done)."""
    told = progress or (lambda step, name, results: None)
    results = Results(run.number, tuple(context.vars))
    values: dict[str, Any] = {}
    client = None
    if any(var.cluster for var in context.vars.values()):
        client = _cluster_client(cluster, results.notes)
        if not cluster:
            results.notes.append("no Dask scheduler given: cluster variables computed locally")
    try:
        for name in context.ordered_vars():
            var = context.vars[name]
            started = time.perf_counter()
            told("computing", name, results)
            try:
                kwargs = _arguments(var, run, values, results.errors, context)
                if var.cluster and client is not None:
                    results.where[name] = f"cluster {cluster}"
                    future = client.submit(_evaluate_on_worker, context.path, name, run.to_dict(), kwargs,
                                           pure=False, key=f"{name}-r{run.number}-{uuid.uuid4().hex[:8]}")
                    try:
                        cell = future.result(timeout=timeout_s)
                    except TimeoutError:
                        future.cancel()
                        raise VariableTimeout(f"{name} did not finish within {timeout_s:g} s on the cluster "
                                              "(cancelled)") from None
                else:
                    results.where[name] = "local"
                    cell = _call_with_timeout(lambda v=var, k=kwargs: v.evaluate(run, k), timeout_s, name)
            # sys.exit() in a variable (SystemExit) fails that variable only; the others still run
            except (Exception, SystemExit) as error:  # noqa: BLE001 - recorded for this cell
                if isinstance(error, Skip):
                    log.info("skipped %s: %s", name, error)
                else:
                    log.error("could not compute %s: %s: %s", name, type(error).__name__, error)
                results.errors[name] = error
            else:
                if not var.transient:
                    results.cells[name] = cell
                if cell.data is not None:
                    values[name] = cell.data
            results.seconds[name] = time.perf_counter() - started
            told("computed", name, results)
    finally:
        if client is not None:
            client.close()
    for name, var in context.vars.items():  # transient results are never stored, nor their errors
        if var.transient:
            results.errors.pop(name, None)
    return results


def _figure_to_array(figure) -> np.ndarray:
    figure.canvas.draw()
    return np.asarray(figure.canvas.buffer_rgba())


def _h5_value(value: Any) -> Any:
    return _figure_to_array(value) if _is_figure(value) else value


def save_results(results: Results, output_dir: Path, proposal: str, provenance: str = "") -> Path:
    """Writes ``p<proposal>_r<run>.h5`` under a temporary name, renamed when complete. Variables
    this execution did not compute (reprocessing a few) keep their earlier results."""
    import h5py

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    final = output_dir / f"p{proposal}_r{results.run}.h5"
    temporary = output_dir / f".{final.name}.{uuid.uuid4().hex[:8]}.writing"
    try:
        with h5py.File(temporary, "w") as f:
            f.attrs["provenance"] = provenance
            f.attrs["run"] = results.run
            f.attrs["proposal"] = proposal
            reduced, preview, errors = (f.create_group(g) for g in (".reduced", ".preview", ".errors"))
            for name, cell in results.cells.items():
                summary = cell.get_summary()
                if summary is not None:
                    reduced.create_dataset(name, data=summary).attrs.update(cell.summary_attrs())
                if cell.preview is not None:
                    preview[name] = _h5_value(cell.preview)
                if cell.data is not None:
                    group = f.create_group(name)
                    group["data"] = _h5_value(cell.data)
                    if cell.units:
                        group["data"].attrs["units"] = cell.units
            for name, error in results.errors.items():
                errors.create_dataset(name, data=str(error)).attrs["type"] = type(error).__name__
            if final.exists():
                with h5py.File(final, "r") as earlier:
                    for group_name in (".reduced", ".preview", ".errors"):
                        for name in earlier.get(group_name, {}):
                            if name not in results.names:
                                earlier.copy(earlier[group_name][name], f[group_name], name)
                    for name in earlier:
                        if not name.startswith(".") and name not in results.names:
                            earlier.copy(earlier[name], f, name)
        os.replace(temporary, final)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return final


def _kind(summary: Any) -> str:
    if isinstance(summary, str):
        return "text"
    if isinstance(summary, bool):
        return "bool"
    return "number" if isinstance(summary, (int, float)) else "array"


def report_cell(results: Results, context: ContextFile, sink: ResultSink, name: str) -> bool:
    """One variable's table value (or error) to the sink, with its description; False for a
    transient variable or one with nothing to say yet."""
    var = context.vars[name]
    if var.transient:
        return False
    attributes = {"title": var.title, "description": var.description, "units": var.units,
                  "tags": list(var.tags) if var.tags else [], "where": results.where.get(name, ""),
                  "seconds": round(results.seconds.get(name, 0.0), 6)}
    if name in results.cells:
        cell = results.cells[name]
        summary = cell.get_summary()
        if isinstance(summary, np.ndarray):
            summary = f"{summary.dtype}: {summary.shape}"
        attributes["units"] = cell.units
        attributes["type"] = _kind(summary)
        if isinstance(cell.data, np.ndarray) and cell.data.size > 1:  # the whole array is in the run's file:
            attributes["shape"] = list(cell.data.shape)  # a run table can plot it (I(q), an image)
        if cell.bold is not None:
            attributes["bold"] = bool(cell.bold)
        if cell.background is not None:
            attributes["background"] = "#" + bytes(cell.background).hex()
        sink.set_variable(results.run, name, summary, summary=cell.summary, attributes=attributes)
        return True
    if name in results.errors:
        error = results.errors[name]
        attributes["state"] = "skipped" if isinstance(error, Skip) else (
            "timeout" if isinstance(error, VariableTimeout) else "failed")
        sink.set_variable(results.run, name, None, summary=var.summary,
                          error=f"{type(error).__name__}: {error}", attributes=attributes)
        return True
    return False


def report_results(results: Results, context: ContextFile, sink: ResultSink) -> None:
    """Each stored cell's table value (or error) to the sink, with the variable's description."""
    for name in results.names:
        report_cell(results, context, sink, name)


def _make_sink(path: str | None, catalogue_dir: str, proposal: str) -> ResultSink:
    module_name, _, attribute = (path or DEFAULT_SINK).partition(":")
    factory = getattr(importlib.import_module(module_name), attribute)
    return factory(Path(catalogue_dir), proposal)


def _stored_names(context: ContextFile) -> list[str]:
    return [name for name, var in context.vars.items() if not var.transient]


def process_run(arguments: dict[str, Any], tell: Callable[[dict], None] = lambda event: None) -> dict[str, Any]:
    """What the separate process does: load, compute (each cell stored as soon as it is known),
    write the HDF5 file, delete the run's cells of variables the context no longer has. ``tell``
    gets the supervisor's events: the variables loaded, the one being computed, each one stored."""
    run = RunData.from_dict(arguments["run"])
    proposal = str(arguments["proposal"])
    if not run.proposal:
        run.proposal = proposal
    whole = load_context(arguments["context"])
    context = whole.filter(only=arguments.get("only"))
    tell({"event": "loaded", "variables": _stored_names(context)})
    sink = _make_sink(arguments.get("sink"), arguments["catalogue_dir"], proposal)

    def progress(step: str, name: str, results: Results) -> None:
        if step == "computing":
            tell({"event": "computing", "name": name, "line": context.vars[name].line})
        elif report_cell(results, context, sink, name):
            tell({"event": "stored", "name": name})

    try:
        results = execute(context, run, timeout_s=float(arguments.get("timeout_s", 60)),
                          cluster=arguments.get("cluster"), progress=progress)
    finally:
        run.close()
    output = save_results(results, Path(arguments["output_dir"]), proposal, provenance=context.path)
    remove = getattr(sink, "remove_variables_except", None)
    removed = remove(run.number, _stored_names(whole)) if callable(remove) else []
    close = getattr(sink, "close", None)
    if callable(close):
        close()
    return {
        "run": run.number, "file": str(output),
        "computed": sorted(results.cells),
        "errors": {name: f"{type(e).__name__}: {e}" for name, e in results.errors.items() if not isinstance(e, Skip)},
        "skipped": {name: str(e) for name, e in results.errors.items() if isinstance(e, Skip)},
        "removed": sorted(removed or []),
        "where": results.where, "notes": results.notes,
        "values": {name: _json_value(cell.get_summary()) for name, cell in results.cells.items()},
    }


def _json_value(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return f"{value.dtype}: {value.shape}"
    return _plain(value) if isinstance(value, np.generic) else value


LOAD_TIMEOUT_S = 60.0  # loading a context takes about a second: one still loading after this hangs
LOG_TAIL_LINES = 200  # of a runner's log, kept for its summary ("log")


def _exit_reason(returncode: int) -> str:
    if returncode < 0:
        return f"runner killed by signal {signal.Signals(-returncode).name}"
    return f"runner exited with code {returncode}"


class SupervisedRunner:
    """A runner process in a session (process group) of its own, so that it and whatever it
    started are killed together: at its deadline, or when the DataManager closes (no orphans).
    Its JSON lines (its standard output; the context's own prints go to its log) are collected
    as they come, so a runner that dies or hangs still says how far it got; its log goes to
    this process's log."""

    def __init__(self, command: list[str], timeout_s: float | None, what: str, context: str):
        self.what, self.timeout_s, self.context = what, timeout_s, context
        self.events: list[dict] = []
        self.log_tail: deque[str] = deque(maxlen=LOG_TAIL_LINES)
        self._stopped = threading.Event()
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                        start_new_session=True)
        self._readers = [threading.Thread(target=self._read_events, name=f"{what} events", daemon=True),
                         threading.Thread(target=self._read_log, name=f"{what} log", daemon=True)]
        for reader in self._readers:
            reader.start()

    def _read_events(self) -> None:
        for line in self.process.stdout or ():
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(event, dict):
                self.events.append(event)

    def _read_log(self) -> None:
        for line in self.process.stderr or ():
            self.log_tail.append(line.rstrip())
            log.info("%s: %s", self.what, line.rstrip())

    def stop(self) -> None:
        """Kills the runner and what it started (the DataManager closes)."""
        self._stopped.set()
        self._kill()

    def _kill(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):  # the whole group has ended already
            pass

    def outcome(self) -> dict[str, Any]:
        """Waits for the runner (up to its deadline): its summary, or ``failed`` saying why and
        where (the variable being computed, with its file and line), the ``variables`` it loaded
        (None: it never loaded the context) and those ``stored`` before it ended."""
        try:
            self.process.wait(self.timeout_s)
            killed = ""
        except subprocess.TimeoutExpired:
            killed = f"timed out after {self.timeout_s:g} s"
        self._kill()  # whatever it started goes with it
        self.process.wait()
        for reader in self._readers:
            reader.join(10)
        for pipe in (self.process.stdout, self.process.stderr):
            if pipe is not None:
                pipe.close()
        loaded = next((event["variables"] for event in self.events if event.get("event") == "loaded"), None)
        progress = {"variables": loaded, "log": "\n".join(self.log_tail),
                    "stored": [event["name"] for event in self.events if event.get("event") == "stored"]}
        summary = next((event for event in reversed(self.events) if "event" not in event), None)
        if summary is not None:
            return {**progress, **summary}
        if self._stopped.is_set():
            killed = "stopped before it finished (the DataManager was closed or initialised again)"
        computing = next((event for event in reversed(self.events) if event.get("event") == "computing"), None)
        if loaded is None:
            where = f" while loading {self.context}"
        elif computing is not None:
            where = f" while computing {computing['name']} ({self.context}:{computing['line']})"
        else:
            where = ""
        return {**progress, "failed": (killed or _exit_reason(self.process.returncode)) + where}


def _runner_command(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "photonflow.datamanager.runner", *arguments]


def list_variables(context_path: str | os.PathLike, timeout_s: float = LOAD_TIMEOUT_S) -> list[str]:
    """The names of a context's variables, loaded in a process of its own (a context that crashes
    or hangs while loading never takes the caller with it); refused with ConfigurationError
    naming the file and line, or how the loading process ended."""
    path = str(Path(context_path).resolve())
    outcome = SupervisedRunner(_runner_command("--list", path), timeout_s, f"loading {path}", path).outcome()
    if "failed" in outcome:
        raise ConfigurationError(outcome["failed"], reason=outcome.get("reason") or "ContextProcessFailed")
    return list(outcome["variables"])


def run_variables(context_path, run: dict[str, Any] | RunData, catalogue_dir, proposal, output_dir, *,
                  only=None, timeout_s: float = 60, cluster: str | None = None, sink: str | None = None,
                  wait: bool = True, process_timeout: float | None = None,
                  started: Callable[[SupervisedRunner], None] | None = None) -> dict[str, Any]:
    """Computes a run's variables in a separate process (``python -m photonflow.datamanager.runner``).

    ``run``: a :class:`RunData` or its dict (``number``, ``proposal``, ``role``, ``node``,
    ``sample``, ``raw_file``, ``nexus``). ``sink``: ``"module:factory"`` of the result sink,
    the run catalogue when None. ``cluster``: a Dask scheduler address for ``cluster=True``
    variables. ``timeout_s``: per variable; ``process_timeout``: the whole run, after which the
    runner's process group is killed. ``started`` gets the :class:`SupervisedRunner` (to stop it).
    With ``wait``, returns the process's summary (``file``, ``computed``, ``errors``, ``skipped``,
    ``removed``, ``values``, ``notes``) or ``{"failed": ...}`` when the process itself failed (a
    context refused at load: file, line and reason; a crash; the timeout), the run's cells not
    stored then carrying that reason; without, ``{"pid", "process"}``.
    """
    run_dict = run.to_dict() if isinstance(run, RunData) else dict(run)
    context = str(Path(context_path).resolve())
    arguments = {"context": context, "run": run_dict,
                 "catalogue_dir": str(catalogue_dir), "proposal": str(proposal), "output_dir": str(output_dir),
                 "only": list(only) if only else None, "timeout_s": timeout_s, "cluster": cluster, "sink": sink}
    command = _runner_command(json.dumps(arguments))
    if not wait:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        return {"pid": process.pid, "process": process}
    number = run_dict.get("number", run_dict.get("run"))
    runner = SupervisedRunner(command, process_timeout, f"variables of run {number}", context)
    if started is not None:
        started(runner)
    summary = runner.outcome()
    summary["run"] = number
    if "failed" in summary:
        log.error("variables of run %s not computed: %s", number, summary["failed"])
        summary["marked"] = _mark_not_computed(summary, arguments)
    return summary


def _mark_not_computed(summary: dict[str, Any], arguments: dict[str, Any]) -> list[str]:
    """The run's cells a failed runner did not store carry its reason, so the run table says why:
    the variables it loaded, else the ones asked for, else those the run table already has."""
    stored = set(summary.get("stored") or ())
    try:
        sink = _make_sink(arguments.get("sink"), arguments["catalogue_dir"], arguments["proposal"])
    except Exception:  # the failure is reported all the same, only not in the cells
        log.exception("could not open the result sink to record why the variables were not computed")
        return []
    try:
        names = summary.get("variables")
        if names is None:
            known = getattr(sink, "variable_names", None)
            names = arguments.get("only") or (known(of_context=True) if callable(known) else [])
        names = [name for name in names if name not in stored]
        state = "timeout" if summary["failed"].startswith("timed out") else "failed"
        for name in names:
            sink.set_variable(summary["run"], name, None, error=summary["failed"], attributes={"state": state})
    finally:
        close = getattr(sink, "close", None)
        if callable(close):
            close()
    return names


def _protocol_stream():
    """The standard output, kept for the supervisor's JSON lines; what the context prints goes
    to the log (the standard error) instead."""
    protocol = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    return protocol


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Compute a run's context variables (photonflow DataManager)")
    parser.add_argument("arguments", help="JSON: context, run, catalogue_dir, proposal, output_dir, "
                                          "only, timeout_s, cluster, sink (with --list: a context file)")
    parser.add_argument("--list", action="store_true", help="only load the context file and print its variables")
    options = parser.parse_args(argv)
    protocol = _protocol_stream()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")

    def tell(event: dict) -> None:
        protocol.write(json.dumps(event, default=str) + "\n")
        protocol.flush()

    run = None
    try:
        if options.list:
            summary: dict[str, Any] = {"variables": sorted(load_context(options.arguments).vars)}
        else:
            arguments = json.loads(options.arguments)
            run = RunData.from_dict(arguments["run"]).number
            summary = process_run(arguments, tell)
        code = 0
    except Exception as error:  # noqa: BLE001 - reported to the caller as the process's outcome
        log.error("%s", error)
        summary = {"run": run, "failed": str(error), "reason": getattr(error, "reason", type(error).__name__)}
        code = 1
    tell(summary)
    sys.stderr.flush()
    os._exit(code)  # variables that hung are abandoned threads: do not wait for them


if __name__ == "__main__":
    main()
