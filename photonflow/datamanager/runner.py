"""Computing a run's variables, in a process of its own, as DAMNIT's ``ctxrunner`` does.

:func:`run_variables` starts ``python -m photonflow.datamanager.runner '<json>'`` (a context file
is the user's code: it must never crash or block the DataManager) and waits for it, or not. In
that process the context is loaded, its variables computed in dependency order, each in a worker
thread with a timeout: an exception, a hang or an unsupported result is recorded for that cell
and the others still run; a variable whose dependency failed or was skipped is not computed.
``cluster=True`` variables go to a Dask scheduler when its address is given, else run locally.

Results go to a :class:`ResultSink` (the run catalogue by default, any ``module:factory``
called with ``(catalogue_dir, proposal)`` otherwise) and to ``<output_dir>/p<proposal>_r<run>.h5``
in DAMNIT's layout (``.reduced``, ``.preview``, ``.errors``, one group per variable with its full
``data``), written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import argparse
import fnmatch
import importlib
import inspect
import json
import logging
import os
import subprocess
import sys
import threading
import time
import uuid
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
            cluster: str | None = None) -> Results:
    """Computes every variable of ``context`` for ``run``, in dependency order."""
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
            except Exception as error:  # noqa: BLE001 - recorded for this cell; the others still run
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


def report_results(results: Results, context: ContextFile, sink: ResultSink) -> None:
    """Each stored cell's table value (or error) to the sink, with the variable's description."""
    for name in results.names:
        var = context.vars[name]
        if var.transient:
            continue
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
            if cell.bold is not None:
                attributes["bold"] = bool(cell.bold)
            if cell.background is not None:
                attributes["background"] = "#" + bytes(cell.background).hex()
            sink.set_variable(results.run, name, summary, summary=cell.summary, attributes=attributes)
        elif name in results.errors:
            error = results.errors[name]
            attributes["state"] = "skipped" if isinstance(error, Skip) else (
                "timeout" if isinstance(error, VariableTimeout) else "failed")
            sink.set_variable(results.run, name, None, summary=var.summary,
                              error=f"{type(error).__name__}: {error}", attributes=attributes)


def _make_sink(path: str | None, catalogue_dir: str, proposal: str) -> ResultSink:
    module_name, _, attribute = (path or DEFAULT_SINK).partition(":")
    factory = getattr(importlib.import_module(module_name), attribute)
    return factory(Path(catalogue_dir), proposal)


def process_run(arguments: dict[str, Any]) -> dict[str, Any]:
    """What the separate process does: load, compute, write the HDF5 file, report to the sink."""
    run = RunData.from_dict(arguments["run"])
    proposal = str(arguments["proposal"])
    if not run.proposal:
        run.proposal = proposal
    context = load_context(arguments["context"]).filter(only=arguments.get("only"))
    try:
        results = execute(context, run, timeout_s=float(arguments.get("timeout_s", 60)),
                          cluster=arguments.get("cluster"))
    finally:
        run.close()
    output = save_results(results, Path(arguments["output_dir"]), proposal, provenance=context.path)
    sink = _make_sink(arguments.get("sink"), arguments["catalogue_dir"], proposal)
    report_results(results, context, sink)
    close = getattr(sink, "close", None)
    if callable(close):
        close()
    return {
        "run": run.number, "file": str(output),
        "computed": sorted(results.cells),
        "errors": {name: f"{type(e).__name__}: {e}" for name, e in results.errors.items() if not isinstance(e, Skip)},
        "skipped": {name: str(e) for name, e in results.errors.items() if isinstance(e, Skip)},
        "where": results.where, "notes": results.notes,
        "values": {name: _json_value(cell.get_summary()) for name, cell in results.cells.items()},
    }


def _json_value(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return f"{value.dtype}: {value.shape}"
    return _plain(value) if isinstance(value, np.generic) else value


def run_variables(context_path, run: dict[str, Any] | RunData, catalogue_dir, proposal, output_dir, *,
                  only=None, timeout_s: float = 60, cluster: str | None = None, sink: str | None = None,
                  wait: bool = True, process_timeout: float | None = None) -> dict[str, Any]:
    """Computes a run's variables in a separate process (``python -m photonflow.datamanager.runner``).

    ``run``: a :class:`RunData` or its dict (``number``, ``proposal``, ``role``, ``node``,
    ``sample``, ``raw_file``, ``nexus``). ``sink``: ``"module:factory"`` of the result sink,
    the run catalogue when None. ``cluster``: a Dask scheduler address for ``cluster=True``
    variables. With ``wait``, returns the process's summary (``file``, ``computed``, ``errors``,
    ``skipped``, ``values``, ``notes``) or ``{"failed": ...}`` when the process itself failed
    (a context refused at load: file, line and reason); without, ``{"pid", "process"}``.
    """
    run_dict = run.to_dict() if isinstance(run, RunData) else dict(run)
    arguments = {"context": str(Path(context_path).resolve()), "run": run_dict,
                 "catalogue_dir": str(catalogue_dir), "proposal": str(proposal), "output_dir": str(output_dir),
                 "only": list(only) if only else None, "timeout_s": timeout_s, "cluster": cluster, "sink": sink}
    command = [sys.executable, "-m", "photonflow.datamanager.runner", json.dumps(arguments)]
    if not wait:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        return {"pid": process.pid, "process": process}
    try:
        completed = subprocess.run(command, capture_output=True, text=True, timeout=process_timeout, check=False)
    except subprocess.TimeoutExpired as expired:
        return {"run": run_dict.get("number"), "failed": f"the variables process did not finish within "
                f"{process_timeout:g} s and was killed", "log": expired.stderr or ""}
    return parse_output(completed.returncode, completed.stdout, completed.stderr, run_dict.get("number"))


def parse_output(returncode: int, stdout: str, stderr: str, run: int | None = None) -> dict[str, Any]:
    """The summary a variables process printed (its last stdout line), or why it failed."""
    lines = [line for line in (stdout or "").splitlines() if line.strip()]
    if lines:
        try:
            summary = json.loads(lines[-1])
            summary["log"] = stderr
            return summary
        except json.JSONDecodeError:
            pass
    return {"run": run, "failed": f"the variables process ended with code {returncode}", "log": stderr}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Compute a run's context variables (photonflow DataManager)")
    parser.add_argument("arguments", help="JSON: context, run, catalogue_dir, proposal, output_dir, "
                                          "only, timeout_s, cluster, sink")
    options = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")
    arguments = json.loads(options.arguments)
    try:
        summary = process_run(arguments)
        code = 0
    except Exception as error:  # noqa: BLE001 - reported to the caller as the process's outcome
        log.error("%s", error)
        summary = {"run": arguments.get("run", {}).get("number"), "failed": str(error),
                   "reason": getattr(error, "reason", type(error).__name__)}
        code = 1
    print(json.dumps(summary, default=str), flush=True)
    sys.stderr.flush()
    os._exit(code)  # variables that hung are abandoned threads: do not wait for them


if __name__ == "__main__":
    main()
