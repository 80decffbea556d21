"""The ``photonflow`` command: deploy configuration, run the demo, start/stop the suite.

    photonflow config apply FILE [--dry-run] [--prune]   write a deployment (YAML or dsconfig JSON) to the database
    photonflow config export --dsconfig FILE   a deployment YAML as dsconfig JSON (for json2tango)
    photonflow demo [--frames N]               one acquisition end to end, then SUMMARY {...}
    photonflow up [--starter] / photonflow down  the whole suite, for Jive, Astor, Taurus or Sardana
    photonflow events tail [--url URL]         the "experiment done" events, as JSON lines
    photonflow standardize cbf DIR -o FILE     a PILATUS CBF series as an NXmx file
    photonflow reprocess --proposal P RUN...   runs' variables again, with the context as it is now
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import sys
import time
import traceback
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import tango

from photonflow.clients.demo import (
    default_file_name,
    describe_file,
    run_acquisition,
    wait_for_standardized,
    wait_for_state,
)
from photonflow.clients.launcher import (
    EVENT_BUS_VARIABLE,
    JOB_ENGINE_VARIABLE,
    STARTER_BINARY,
    Suite,
    executable,
    prepare_environment,
    register_starter,
    running_suite,
    servers_running_on_this_host,
    starter_binary,
    var_directory,
)
from photonflow.clients.tango_database import apply_deployment
from photonflow.deployment import (
    EMBEDDED_EVENT_BUS,
    load_deployment_file,
    with_instance,
    with_live_analysis,
    with_recorders,
)
from photonflow.dsconfig_json import is_dsconfig, load_dsconfig, to_dsconfig
from photonflow.errors import ConfigurationError, EventBusError, EventServerError, FilePathError
from photonflow.events.bus import DEFAULT_STREAM, RedisStreamBus, parse_bus_url
from photonflow.events.redis_server import redacted
from photonflow.standardizing.mapping import check_mappings

DEMO_DEFAULTS = {"frames": 1000, "exposure": 0.001, "period": 0.002, "step": 0.0, "sample": ""}
TOMOGRAPHY_STRUCTURE = "structures/tomography.yaml"  # beside the deployment (config/)


def _database(tango_host: str) -> tango.Database:
    """The database at ``tango_host`` (host:port): this process's TANGO_HOST as Tango reads it (several
    hosts included), another one by its first host."""
    if not tango_host:
        raise ConfigurationError("TANGO_HOST is not set: say which Tango database to write to (host:port)")
    if tango_host == os.environ.get("TANGO_HOST"):
        return tango.Database()
    host, port = tango_host.split(",")[0].rsplit(":", 1)
    return tango.Database(host, int(port))


def _load_any(path: str):
    """A deployment from photonflow's YAML or from a dsconfig JSON file."""
    try:
        text = Path(path).read_text()
    except OSError as error:
        raise ConfigurationError(f"cannot read {path}: {error.strerror}") from None
    if is_dsconfig(path, text):
        return load_dsconfig(text, path)
    return load_deployment_file(path)


def command_config_apply(args) -> int:
    prepare_environment(var_directory(), args.file)
    deployment = _load_any(args.file)
    check_mappings(deployment)
    tango_host = os.environ.get("TANGO_HOST") or deployment.tango_host
    if deployment.tango_host and deployment.tango_host.lower() != tango_host.lower():
        print(f"{args.file} names tango_host {deployment.tango_host}; writing to TANGO_HOST={tango_host}",
              file=sys.stderr)
    changes = apply_deployment(_database(tango_host), deployment, dry_run=args.dry_run, prune=args.prune)
    verb = "would change" if args.dry_run else "changed"
    print(f"{args.file}: {verb} {len(changes)} item(s) in the Tango database at {tango_host}")
    for change in changes:
        print(f"  {change.describe()}")
    return 0


def command_config_export(args) -> int:
    prepare_environment(var_directory(), args.config)
    deployment = load_deployment_file(args.config)
    document = to_dsconfig(deployment, source=str(Path(args.config).resolve()))
    text = json.dumps(document, indent=2) + "\n"
    if args.dsconfig == "-":
        sys.stdout.write(text)
        return 0
    Path(args.dsconfig).write_text(text)
    count = sum(len(server.devices) for server in deployment.servers)
    print(f"{args.dsconfig}: {len(deployment.servers)} server(s), {count} device(s) as dsconfig JSON; apply it with "
          f"'json2tango -w {args.dsconfig}' (or 'photonflow config apply {args.dsconfig}')")
    if deployment.starter:
        print("  (the starter: section has no place in dsconfig: 'photonflow config apply' of the YAML writes it)")
    return 0


def _deployment(config: str, instance: str | None = None, recorders: int = 1, analysis: bool = False):
    """The configuration's deployment, its servers run as ``instance`` when one is given, with
    ``recorders`` Recorders sharing the Controller's stream, each with a live-analysis worker
    when ``analysis``."""
    deployment = load_deployment_file(config)
    deployment = with_instance(deployment, instance) if instance else deployment
    deployment = with_recorders(deployment, recorders)
    return with_live_analysis(deployment) if analysis else deployment


def _start_suite(config: str, var_dir: Path, database_name: str, starter: bool = False,
                 own_database: bool = False, instance: str | None = None,
                 recorders: int = 1, analysis: bool = False) -> tuple[Suite, object]:
    """Event bus and database (each embedded unless configured), configuration, then every server.
    ``own_database``: always an embedded database of its own (the demo), never TANGO_HOST's."""
    prepare_environment(var_dir, config)
    if starter:  # before anything starts: a Starter would take another suite's processes for ours
        _refuse_servers_running_elsewhere(_deployment(config, instance, recorders, analysis))
    suite = Suite("" if own_database else os.environ.get("TANGO_HOST", ""), var_dir)
    try:
        simulators = load_deployment_file(config, simulators_only=True)
        suite.start_event_bus(simulators.event_bus)
        if simulators.event_bus == EMBEDDED_EVENT_BUS:
            print(f"Started the embedded event bus (Redis streams, with ReJSON and RediSearch) at "
                  f"{EVENT_BUS_VARIABLE}={redacted(suite.event_bus)}")
        else:
            print(f"Using the event bus at {EVENT_BUS_VARIABLE}={suite.event_bus}")
        for name, value in suite.start_simulators(simulators).items():
            print(f"Simulated hardware up: {name}={value}")
        deployment = _deployment(config, instance, recorders, analysis)
        check_mappings(deployment)  # a mapping's mistake is named before any server starts
        if any(d.tango_class == "PhotonflowDataManager" for s in deployment.servers for d in s.devices):
            address = suite.start_job_engine()
            print(f"Started the job engine (Dask scheduler and 2 workers) at {JOB_ENGINE_VARIABLE}={address}")
            deployment = _deployment(config, instance, recorders, analysis)  # its properties may name the engine
        if not suite.tango_host:
            suite.start_database(var_dir / "tango" / database_name)
            print(f"Started an embedded Tango database (pytango-db, SQLite) at TANGO_HOST={suite.tango_host}")
        else:
            print(f"Using the Tango database at TANGO_HOST={suite.tango_host}")
        changes = apply_deployment(suite.database(), deployment)
        print(f"Applied {config}: {len(changes)} change(s)")
        for change in changes:
            print(f"  {change.describe()}")
        started = time.monotonic()
        if starter:
            deployment = _start_with_starter(suite, deployment)
        already_running = suite.start_servers(deployment)
        for server in already_running:
            print(f"{server.name} is already running on this database: using it as it is "
                  "(property changes reach it after Init or a restart)")
        launched = [s.name for s in deployment.servers if s not in already_running]
        if launched:
            elapsed = time.monotonic() - started
            print(f"Started {len(launched)} device servers in {elapsed:.1f} s: " + ", ".join(launched))
    except BaseException:
        suite.stop()
        raise
    return suite, deployment


def _refuse_servers_running_elsewhere(deployment) -> None:
    """A Tango Starter finds its servers by ``<executable> <instance>`` in the host's process table: a
    server of that name another suite runs here would be taken for ours ("running but not responding")."""
    running = servers_running_on_this_host(deployment.servers)
    if running:
        names = ", ".join(f"{name} (pid {pid})" for name, pid in running.items())
        raise ConfigurationError(
            f"{names} already run(s) on this computer, started by another suite or by hand: the Tango Starter "
            "would take them for this suite's. Give this suite an instance of its own: make up STARTER=1 "
            "INSTANCE=<name> (photonflow up --starter --instance <name>), or stop the other suite")


def _start_with_starter(suite: Suite, deployment):
    """Register this computer's Starter (tango/admin/<host>, StartDsPath: this environment's bin) and,
    when the Tango Starter is installed, have it start the `starter:` servers level by level. Returns
    the deployment of the servers left for photonflow to start (all of them without the Starter)."""
    hosts = sorted({entry.host for entry in deployment.starter})
    if not hosts:
        raise ConfigurationError("--starter needs a 'starter:' section in the configuration (each server's level)")
    if len(hosts) > 1:
        raise ConfigurationError(f"--starter runs one Starter, on this computer; the configuration names {hosts}")
    host, bin_directory = hosts[0], str(Path(sys.executable).parent)
    added = register_starter(suite.database(), host, bin_directory)
    print(f"{'Registered' if added else 'Kept'} Starter/{host} (device tango/admin/{host}, "
          f"StartDsPath {bin_directory})")
    binary = starter_binary()
    if binary is None:
        print(f"The Tango Starter is not installed ({STARTER_BINARY}; apt install tango-starter): "
              "photonflow starts the servers itself")
        return deployment
    proxy = suite.start_starter(host, binary)
    print(f"Started the Tango Starter {binary} {host}")
    suite.start_levels(deployment, proxy, on_level=lambda level, servers: print(
        f"Starter level {level}: {', '.join(servers)} up"))
    controlled = {entry.server for entry in deployment.starter if entry.level > 0}
    return replace(deployment, servers=tuple(s for s in deployment.servers if s.name not in controlled))


class DemoRefused(ConfigurationError):
    """The demo would share its folder with a demo or a suite already running there."""


@contextlib.contextmanager
def _demo_lock(var_dir: Path):
    """The demo's folder is its own while it runs: ``run/demo.lock`` is held (flock, so a demo
    that died leaves no stale lock) and names its pid; a second demo, or a suite that `make up`
    started in the folder (same trigger lines, data and database), is refused at once."""
    run = var_dir / "run"
    run.mkdir(parents=True, exist_ok=True)
    if (run / "suite.json").exists():
        raise DemoRefused(f"a suite is up in {var_dir} ({run / 'suite.json'}): run 'make down' first, or set "
                          "PHOTONFLOW_VAR to another folder for the demo")
    with open(run / "demo.lock", "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "unknown"
            raise DemoRefused(f"a demo is already running in {var_dir} (pid {holder}, {run / 'demo.lock'}): wait "
                              "for it to end, or set PHOTONFLOW_VAR to another folder") from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        try:
            yield
        finally:
            lock.truncate(0)


def _failure_reason(error: BaseException) -> str:
    if isinstance(error, tango.DevFailed):
        return f"{error.args[0].reason}: {error.args[0].desc.strip()}"
    if isinstance(error, KeyboardInterrupt):
        return "interrupted (Ctrl-C)"
    return f"{type(error).__name__}: {error}" if not isinstance(error, ConfigurationError) else str(error)


def command_demo(args) -> int:
    """The demo, which always ends with ``SUMMARY {...}``: a failure's too, with state and reason
    (the traceback goes to var/log/demo.log, not over the summary)."""
    var_dir = var_directory()
    try:
        with _demo_lock(var_dir):
            summary = _run_demo(args, var_dir)
    except (Exception, KeyboardInterrupt) as error:  # noqa: BLE001 - every ending of the demo gets its SUMMARY
        refused = isinstance(error, DemoRefused)
        summary = {"state": "REFUSED" if refused else "FAILED", "reason": _failure_reason(error)}
        if not refused:
            log = var_dir / "log" / "demo.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            with open(log, "a") as out:
                out.write(f"{datetime.now().isoformat()} demo failed\n{traceback.format_exc()}\n")
            summary["log"] = str(log)
        print(f"photonflow: demo {summary['state'].lower()}: {summary['reason']}", file=sys.stderr)
    print("SUMMARY " + json.dumps(summary), flush=True)
    standardized = summary.get("nexus_problems", 0) == 0 and "nexus_error" not in summary
    return 0 if summary["state"] == "ON" and summary.get("missing_frames", 0) == 0 and standardized else 1


def _run_demo(args, var_dir: Path) -> dict:
    """Start the demo's own suite (its own embedded database even when TANGO_HOST names another
    suite's, whose properties it must never change), run it, stop everything it started."""
    if os.environ.get("TANGO_HOST"):
        print(f"TANGO_HOST={os.environ['TANGO_HOST']} is left alone: the demo runs on an embedded database of its own")
    suite, deployment = _start_suite(args.config, var_dir, "demo.db", own_database=True, recorders=args.recorders,
                                    analysis=args.analysis)
    try:
        controller = tango.DeviceProxy(suite.device_url(deployment.device("PhotonflowController").name))
        controller.set_timeout_millis(15000)
        # the command line first, then the configuration's `demo:` (what that detector can do)
        chosen = {key: getattr(args, key) if getattr(args, key) is not None else deployment.demo.get(key, default)
                  for key, default in DEMO_DEFAULTS.items()}
        standardizer = _device_of(suite, deployment, "PhotonflowStandardizer")
        if standardizer is not None and standardizer.Definition == "NXtomo":
            structure = Path(args.config).resolve().parent / TOMOGRAPHY_STRUCTURE
            return _demo_tomography(suite, deployment, standardizer, controller, chosen, str(structure),
                                    args.timeout)
        return _demo_series(args, suite, deployment, controller, standardizer, chosen)
    finally:
        suite.stop()
        print("Stopped every process the demo started.")


def _demo_series(args, suite: Suite, deployment, controller, standardizer, chosen: dict) -> dict:
    """One series through the Controller (a continuous rotation scan of its first scan axis, when
    the deployment has one), then its NeXus file."""
    scan = _demo_scan(deployment, chosen)
    what = f"{chosen['frames']} frames (exposure {chosen['exposure']} s, period {chosen['period']} s)"
    if scan is not None:
        what += (f" over {scan['axis']} {scan['start']:g} to {scan['start'] + chosen['frames'] * scan['step']:g} deg "
                 f"({scan['step']:g} deg per frame, triggered by its position-compare)")
    datamanager = _device_of(suite, deployment, "PhotonflowDataManager")
    if datamanager is not None and chosen["sample"]:
        datamanager.SetExperiment(json.dumps(_demo_experiment(chosen)))
        datamanager.SetRole("data")  # the demo's rotation is the experiment's data, not a dark or a flat
        print(f"Sample: {chosen['sample']}, role data ({datamanager.dev_name()} SetExperiment, SetRole)")
    workers = _analysis_workers_ready(suite, deployment)
    print(f"Acquiring {what} through {controller.dev_name()} ...")
    summary = run_acquisition(controller, chosen["frames"], chosen["exposure"], chosen["period"],
                              args.file or default_file_name(), args.timeout, scan=scan)
    summary["recorders"] = len(deployment.device("PhotonflowController").properties.get("Recorder") or [])
    if summary["file"] and Path(summary["file"]).exists():
        print("File written:")
        for line in describe_file(summary["file"]):
            print(line)
    print(f"Controller: {summary.pop('status')}")
    if standardizer is not None and summary["file"]:
        summary.update(wait_for_standardized(standardizer, summary["file"], 120))
        _show_standardized(summary)
        print(f"Standardizer: {standardizer.status()}")
    if datamanager is not None and summary["file"]:
        summary.update(_catalogued(datamanager, summary["file"]))
    if workers and summary["file"]:
        summary["live_analysis"] = _live_analysis_summary(workers, args.timeout)
    return summary


def _analysis_workers_ready(suite: Suite, deployment, timeout: float = 60) -> list[tango.DeviceProxy]:
    """The deployment's live-analysis workers, once each is ON: INIT while pyFAI loads and its
    stream connects, when the start of a series sent to it would be lost."""
    workers = _devices_of(suite, deployment, "PhotonflowAnalysis")
    for worker in workers:
        wait_for_state(worker, {"ON"}, timeout)
    return workers


def _live_analysis_summary(workers: list, timeout: float) -> dict:
    """What the live-analysis workers did with the series: frames analysed, where the results
    are, and the latency from each frame made to its result (handed on; in Redis)."""
    deadline = time.monotonic() + min(timeout, 60)
    while time.monotonic() < deadline and any(str(w.state()) in ("RUNNING", "INIT") for w in workers):
        time.sleep(0.1)  # a worker ends its series once it has analysed the last frame it got
    summary = {
        "frames_analysed": sum(w.FramesAnalysed for w in workers),
        "results": [w.ResultsFile for w in workers],
        "latency_median_ms": [round(w.LatencyMedian, 1) for w in workers],
        "latency_p99_ms": [round(w.LatencyP99, 1) for w in workers],
        "results_in_redis": sum(w.BlissdataResultsPublished for w in workers),
        "to_redis_ms": [[round(float(v), 1) for v in (w.BlissdataLatency if w.BlissdataLatency is not None else [])]
                        for w in workers],
        "states": [str(w.state()) for w in workers],
    }
    print(f"Live analysis: {summary['frames_analysed']} frames analysed by {len(workers)} worker(s); "
          f"frame made -> result median {summary['latency_median_ms']} ms, p99 {summary['latency_p99_ms']} ms; "
          f"-> in Redis (median, p99) {summary['to_redis_ms']} ms")
    return summary


def _demo_experiment(chosen: dict) -> dict:
    """The demo's experiment: its own proposal, today's session, the configured sample."""
    return {"proposal": "demo0001", "session": datetime.now().strftime("%Y%m%d"), "sample": chosen["sample"]}


def _demo_scan(deployment, chosen: dict) -> dict | None:
    """The demo's rotation: the Controller's first ``ScanAxes`` axis from 0 by ``step`` per frame."""
    spec = deployment.device("PhotonflowController")
    axes = spec.properties.get("ScanAxes") or []
    if not axes or not chosen.get("step"):
        return None
    return {"axis": axes[0].split()[0], "start": 0.0, "step": float(chosen["step"])}


def _variables_computed(datamanager, catalogue, runs: list[int]) -> bool:
    """Every run has variables and none waits for its turn: a processing job's ``*_file`` can reach
    the run table before the context's variables are computed, so a variable alone is not enough."""
    return all(catalogue.variables(run) for run in runs) and datamanager.VariablesStatus == "idle, 0 waiting"


def _catalogued(datamanager, raw_file: str = "", timeout: float = 120, run: int | None = None) -> dict:
    """The demo's run as the DataManager catalogued it (the one of ``raw_file``, or number ``run``):
    its number, the catalogue, its run-table row and which variables were computed and which failed
    (why), once they are (or ``timeout`` passed)."""
    from photonflow.datamanager.catalogue import Catalogue

    deadline = time.monotonic() + timeout
    path = ""
    while time.monotonic() < deadline and not path:
        path = datamanager.CataloguePath
        time.sleep(0.1)
    if not path:
        return {"run": None, "catalogue": ""}
    catalogue = Catalogue(Path(path).parent, Path(path).stem)
    record = None
    while time.monotonic() < deadline:
        record = next((r for r in catalogue.runs() if r.raw_file == raw_file or r.run == run), None)
        if record is not None and record.nexus_file and _variables_computed(datamanager, catalogue, [record.run]):
            break
        time.sleep(0.2)
    if record is None:
        return {"run": None, "catalogue": path}
    row = next((row for row in catalogue.table() if row.get("run") == record.run), {})
    print("Run table row:")
    for key, value in row.items():
        print(f"  {key}: {value}")
    return {"run": record.run, "catalogue": path, "variables": _variables_outcome(catalogue, record.run)}


def _variables_outcome(catalogue, run: int) -> dict:
    """Which of the run's variables were computed, which the context skipped as not applying to
    this run (its ``Skip``: an NXtomo has no diffraction geometry) and which failed, with why."""
    outcome: dict = {"computed": [], "skipped": {}, "failed": {}}
    for name, variable in catalogue.variable_records(run).items():
        error = variable["error"]
        if not error:
            outcome["computed"].append(name)
        else:
            outcome["skipped" if error.startswith("Skip:") else "failed"][name] = error
    return outcome


def _demo_tomography(suite: Suite, deployment, standardizer, controller, chosen: dict, structure: str,
                     timeout: float) -> dict:
    """One tomography, the structure run through the DataManager (darks, flats, projections); the
    Standardizer joins them in one NXtomo."""
    from photonflow.clients.sequencer import Beamline, run_tomography, tomography_overrides

    datamanager = _device_of(suite, deployment, "PhotonflowDataManager")
    if datamanager is None:
        raise ConfigurationError(f"{structure} runs through a PhotonflowDataManager: the deployment has none")
    prefix = standardizer.get_property("DevicePrefix")["DevicePrefix"][0]
    overrides = tomography_overrides(projections=chosen["frames"], exposure=chosen["exposure"],
                                     period=chosen["period"])
    print(f"Tomography {structure} through {datamanager.dev_name()}: darks (shutter closed), flats (sample out), "
          f"{chosen['frames']} projections while the sample turns ...")
    if not chosen["sample"]:
        raise ConfigurationError("the tomography names the sample it turns: give --sample, or `sample:` in the "
                                 "deployment's `demo:` section")
    experiment = _demo_experiment(chosen)
    summary = run_tomography(datamanager, controller, standardizer, Beamline(prefix, suite.device_url), structure,
                             experiment, overrides, timeout)
    _show_standardized(summary)
    print(f"Standardizer: {standardizer.status()}")
    if summary.get("run") is not None:  # the projections' run: the one the NXtomo is the standardized file of
        summary.update(_catalogued(datamanager, run=summary["run"]))
    return summary


def _show_standardized(summary: dict) -> None:
    if summary.get("nexus"):
        print(f"Standardized file ({summary['definition']}, {summary['nexus_problems']} validation problem(s) "
              "against the official NXDL):")
        for false_positive in summary.get("nexus_false_positives", []):
            print(f"  not a problem of the file: {false_positive}")
        for line in describe_file(summary["nexus"]):
            print(line)


def _device_of(suite: Suite, deployment, tango_class: str, suffix: str = "") -> tango.DeviceProxy | None:
    """A proxy to the deployment's first device of ``tango_class`` (whose name ends in ``suffix``)."""
    return next(iter(_devices_of(suite, deployment, tango_class, suffix)), None)


def _devices_of(suite: Suite, deployment, tango_class: str, suffix: str = "") -> list[tango.DeviceProxy]:
    """Proxies to every device of ``tango_class`` (whose name ends in ``suffix``) the deployment has."""
    proxies = []
    for server in deployment.servers:
        for device in server.devices:
            if device.tango_class == tango_class and device.name.endswith(suffix):
                proxies.append(tango.DeviceProxy(suite.device_url(device.name)))
                proxies[-1].set_timeout_millis(15000)
    return proxies


def _panel_commands(deployment) -> str:
    """How to open the operator panels on this deployment, one command a line, each runnable as
    printed (the tools are in the suite's environment, not on PATH)."""
    controllers = [d.name for s in deployment.servers for d in s.devices if d.tango_class == "PhotonflowController"]
    lines = [f"  {executable('photonflow-panel')} {controller}      (Controller: state, counters, the Configure "
             "form, the live image, the run table)" for controller in controllers[:1]]
    motors = [d.name for s in deployment.servers for d in s.devices if d.tango_class == "SimulatedMotor"]
    if motors:
        prefix = motors[0].rsplit("/", 1)[0]
        lines.append(f"  {executable('photonflow-beamline')} --prefix {prefix}   (motors, monochromator, "
                     "shutter, ring current trend)")
    return "".join(f"{line}\n" for line in lines)


def command_up(args) -> int:
    var_dir = var_directory(args.instance)
    state_file = var_dir / "run" / "suite.json"
    if state_file.exists():
        down = f"make down INSTANCE={args.instance}" if args.instance else "make down"
        raise ConfigurationError(f"the suite seems to be up already ({state_file}); run '{down}' first")
    suite, deployment = _start_suite(args.config, var_dir, "suite.db", starter=args.starter, instance=args.instance,
                                     recorders=args.recorders, analysis=args.analysis)
    sardana_text = "  Sardana: make down, then make up SARDANA=1 (a Pool and a MacroServer with a Door, "\
        "photonflow's controllers, motors and macros)\n"
    try:
        # every server, also the Starter's
        deployment = _deployment(args.config, args.instance, args.recorders, args.analysis)
        web_text = _start_web(suite, deployment)
        _analysis_workers_ready(suite, deployment)
        if args.sardana:
            from photonflow.clients.sardana_setup import start_sardana, usage

            sardana = start_sardana(suite, deployment)
            sardana_text = usage(sardana, suite.tango_host, suite.event_bus) + "\n"
    finally:
        suite.save(state_file)  # whatever started is stopped by make down
    down = f"make down INSTANCE={args.instance}" if args.instance else "make down"
    print(f"\nThe suite is up. Use it with:\n  export TANGO_HOST={suite.tango_host}\n"
          f"{web_text}{_panel_commands(deployment)}"
          f"  photonflow events tail --follow     (the experiment-done events on {redacted(suite.event_bus)})\n"
          f"{sardana_text}"
          "  (or jive, or a Taurus form on any device)\n"
          f"Stop it with: {down}")
    return 0


def command_down(args) -> int:
    var_dir = var_directory(args.instance)
    state_file = var_dir / "run" / "suite.json"
    if not state_file.exists():
        print("Nothing to stop: the suite is not up.")
        return 0
    suite = Suite.load(state_file, var_dir)
    suite.stop()
    state_file.unlink()
    print(f"Stopped {len(suite.processes) or 'all'} processes of the suite at TANGO_HOST={suite.tango_host}.")
    return 0


def command_run_structure(args) -> int:
    """A whole data structure on the simulated beamline: start the suite (as the demo does), run
    every acquisition through the DataManager and the Controller, print the run table."""
    from photonflow.clients.sequencer import Beamline, run_structure
    from photonflow.datamanager.catalogue import Catalogue
    from photonflow.datamanager.policy import check_name
    from photonflow.datamanager.structure import load_structure

    structure = str(Path(args.structure).resolve())
    load_structure(structure)  # a typo in the file's name or its content: said before anything is started or created
    for what in ("proposal", "session", "sample"):
        check_name(getattr(args, what), what)
    var_dir = var_directory()
    suite, deployment = _start_suite(args.config, var_dir, "structure.db")
    try:
        controller = _device_of(suite, deployment, "PhotonflowController")
        datamanager = _device_of(suite, deployment, "PhotonflowDataManager")
        if datamanager is None:
            raise ConfigurationError(f"{args.config} has no PhotonflowDataManager to run a structure with")
        omega = next(d.name for s in deployment.servers for d in s.devices if d.tango_class == "SimulatedMotor")
        experiment = {"proposal": args.proposal, "session": args.session, "sample": args.sample}
        started = time.monotonic()
        done = run_structure(datamanager, controller, Beamline(omega.rsplit("/", 1)[0], suite.device_url), structure,
                             experiment, args.timeout)
        datamanager.WaitIdle(60)
        catalogue_path = datamanager.CataloguePath
        catalogue = Catalogue(Path(catalogue_path).parent, Path(catalogue_path).stem)
        deadline = time.monotonic() + 120  # the variables of the last runs
        while time.monotonic() < deadline and not _variables_computed(datamanager, catalogue,
                                                                       [step["run"] for step in done]):
            time.sleep(0.5)
        while time.monotonic() < deadline and any(  # processing the roles started (e.g. integration)
                job["state"] in ("queued", "running") for job in json.loads(datamanager.Jobs)):
            time.sleep(0.5)
        datamanager.WaitIdle(10)
        rows = {row["run"]: row for row in catalogue.table()}
        unfinished = [step["run"] for step in done
                      if not catalogue.run(step["run"]).nexus_file or not catalogue.variables(step["run"])]
        print("Run table:")
        for step in done:
            row = rows.get(step["run"], {})
            values = {k: v for k, v in row.items() if k not in ("raw_file", "nexus_file", "start", "end")}
            print("  " + json.dumps(values, default=str))
        summary = {"structure": structure, "acquisitions": len(done), "runs": [step["run"] for step in done],
                   "roles": sorted({step["role"] for step in done}), "catalogue": catalogue_path,
                   "seconds": round(time.monotonic() - started, 1),
                   "unfinished": unfinished,
                   "state": "ON" if all(step["state"] == "ON" for step in done) and not unfinished else "ALARM"}
        if unfinished:
            print(f"Runs {unfinished} have no standardized file or no computed variables after "
                  f"{time.monotonic() - started:.0f} s: see the Standardizer's and the DataManager's logs in "
                  f"{var_dir / 'log'}", file=sys.stderr)
    finally:
        suite.stop()
        print("Stopped every process the sequence started.")
    print("SUMMARY " + json.dumps(summary))
    return 0 if summary["state"] == "ON" else 1


def command_tomo(args) -> int:
    """A tomography on a running suite (make up DETECTOR=tomo): the tomography structure through
    its DataManager, the options overriding the structure's values."""
    from photonflow.clients.sequencer import TOMOGRAPHY_OPTIONS, Beamline, run_tomography, tomography_overrides

    tango_host = os.environ.get("TANGO_HOST")
    if not tango_host:
        suite = running_suite()
        if suite is None:
            raise ConfigurationError("TANGO_HOST is not set and no suite is up: run 'make up DETECTOR=tomo' first")
        tango_host = suite.tango_host

    def url(name: str) -> str:
        return name if "://" in name else f"tango://{tango_host}/{name}"

    devices = []
    for name in (args.datamanager, args.standardizer):
        proxy = tango.DeviceProxy(url(name))
        proxy.set_timeout_millis(15000)
        devices.append(proxy)
    datamanager, standardizer = devices
    controller = tango.DeviceProxy(url(datamanager.get_property("Controller")["Controller"][0]))
    controller.set_timeout_millis(15000)
    prefix = standardizer.get_property("DevicePrefix")["DevicePrefix"][0]
    overrides = tomography_overrides(**{key: getattr(args, key) for key in (*TOMOGRAPHY_OPTIONS, "sample_out")})
    experiment = {"proposal": args.proposal, "session": args.session, "sample": args.sample_name}
    structure = str(Path(args.structure).resolve())  # as the DataManager sees it: on this computer
    summary = run_tomography(datamanager, controller, standardizer, Beamline(prefix, url), structure, experiment,
                             overrides, args.timeout)
    print("SUMMARY " + json.dumps(summary))
    return 0 if summary["state"] == "ON" and summary.get("nexus") and summary.get("nexus_problems") == 0 else 1


def _event_bus_url(args) -> str:
    """--url, else PHOTONFLOW_EVENT_BUS, else the bus of the suite 'photonflow up' started."""
    if args.url:
        return args.url
    if os.environ.get(EVENT_BUS_VARIABLE):
        return os.environ[EVENT_BUS_VARIABLE]
    suite = running_suite()
    if suite is not None and suite.event_bus:
        return suite.event_bus
    raise ConfigurationError(
        f"which event bus? Give --url redis://host:port, set {EVENT_BUS_VARIABLE}, or start the suite (make up)"
    )


def command_events_tail(args) -> int:
    url = _event_bus_url(args)
    if parse_bus_url(url).scheme != "redis":
        raise ConfigurationError(
            f"{url}: 'events tail' reads Redis streams; read a Kafka topic with Kafka's own tools "
            "(kafka-console-consumer)"
        )
    since = args.since
    with RedisStreamBus(url, stream=args.stream) as bus:
        try:
            while True:
                messages = bus.read(since=since, count=100, block_ms=1000 if args.follow else None)
                for message in messages:
                    print(json.dumps({"id": message.id, "event": message.event}), flush=True)
                    since = message.id
                if not messages and not args.follow:
                    return 0
        except KeyboardInterrupt:
            return 0


def catalogue_folder(datamanager_properties: dict[str, list[str]]) -> str:
    """Where a DataManager keeps its proposals' catalogues: its CatalogueDirectory, else
    <DataRoot>/catalogue ("" when it says neither)."""
    def first(name: str) -> str:
        return (datamanager_properties.get(name) or [""])[0]

    return first("CatalogueDirectory") or (str(Path(first("DataRoot")) / "catalogue") if first("DataRoot") else "")


def _start_web(suite: Suite, deployment) -> str:
    """The web page beside the suite, following its DataManager's catalogues, its Controller and
    first Recorder; a line saying where it is (empty without a DataManager)."""
    devices = {d.tango_class: d for s in deployment.servers for d in s.devices}
    datamanager = devices.get("PhotonflowDataManager")
    if datamanager is None:
        return ""
    folder = Path(catalogue_folder(datamanager.properties) or "var/data/catalogue").resolve()
    controller = devices.get("PhotonflowController")
    recorders = (controller.properties.get("Recorder") or [""]) if controller else [""]
    address = suite.start_web(folder, controller.name if controller else "", recorders[0], datamanager.name)
    return (f"  {address}     (the web page: run tables, the series under way; a comment needs the token in "
            f"{suite.web_token_file})\n")


def _variables_settings(args) -> tuple[Path, Path, str]:
    """The catalogue folder, the context file and the job engine for ``reprocess``: as given, else
    the deployment's DataManager's (its CatalogueDirectory or <DataRoot>/catalogue, its ContextFile)."""
    prepare_environment(var_directory(), args.config)
    properties: dict[str, list[str]] = {}
    if not (args.catalogue and args.context):
        properties = load_deployment_file(args.config).device("PhotonflowDataManager").properties

    def first(name: str) -> str:
        return (properties.get(name) or [""])[0]

    catalogue = args.catalogue or catalogue_folder(properties)
    context = args.context or first("ContextFile")
    if not context:
        raise ConfigurationError(f"which context file? Give --context FILE ({args.config}'s DataManager has no "
                                 "ContextFile)")
    return Path(catalogue).resolve(), Path(context).resolve(), first("JobEngine") or "local"


def command_reprocess(args) -> int:
    """Runs' variables computed again with the context as it is now, each run in a supervised
    process (a run that fails or times out is reported, the next one goes on); no suite needed."""
    from photonflow.datamanager.catalogue import Catalogue
    from photonflow.datamanager.policy import check_name
    from photonflow.datamanager.variables_launcher import VariablesInProcess

    check_name(args.proposal, "proposal")
    if any(run < 1 for run in args.runs):
        raise ConfigurationError(f"run numbers start at 1 (got {' '.join(map(str, args.runs))})")
    if not args.timeout > 0:
        raise ConfigurationError(f"--timeout must be a positive number of seconds, not {args.timeout:g}")
    catalogue_directory, context, job_engine = _variables_settings(args)
    if not (catalogue_directory / f"{args.proposal}.sqlite").exists():  # never a catalogue created by a typo
        raise ConfigurationError(f"proposal {args.proposal} has no catalogue in {catalogue_directory} (give "
                                 "--catalogue DIR, the folder of <proposal>.sqlite)")
    if not context.is_file():
        raise ConfigurationError(f"the context file {context} does not exist")
    with Catalogue(catalogue_directory, args.proposal) as catalogue:
        records = {run: catalogue.run(run) for run in dict.fromkeys(args.runs)}
    missing = [str(run) for run, record in records.items() if record is None]
    if missing:
        raise ConfigurationError(f"run(s) {', '.join(missing)} not in the catalogue of {args.proposal}")
    launcher = VariablesInProcess(context, catalogue_directory, job_engine, run_timeout_s=args.timeout)
    outcomes = {}
    try:
        for run, record in records.items():
            summary = launcher.compute(record)
            if summary.get("failed"):
                outcomes[run] = {"failed": summary["failed"]}
                print(f"run {run}: variables not computed: {summary['failed']}", flush=True)
            else:
                outcomes[run] = {key: summary.get(key) for key in ("computed", "errors", "skipped", "removed")}
                print(f"run {run}: computed {', '.join(summary['computed']) or 'nothing'}"
                      + "".join(f"; {name} failed: {error}" for name, error in summary["errors"].items())
                      + (f"; removed {', '.join(summary['removed'])}" if summary.get("removed") else ""), flush=True)
    finally:
        launcher.close()
    print("SUMMARY " + json.dumps({"proposal": args.proposal, "context": str(context), "runs": outcomes}))
    return 1 if any("failed" in outcome for outcome in outcomes.values()) else 0


def command_standardize_cbf(args) -> int:
    from photonflow.standardizing.cbf import standardize_cbf  # fabio and pynxtools: only for this command
    from photonflow.standardizing.validation import validate_nexus

    output, data = standardize_cbf(args.directory, args.output, args.beamline, args.sample)
    print(f"{output} (frames in {data.name})")
    report = validate_nexus(output)
    for false_positive in report.false_positives:
        print(f"  not a problem of the file: {false_positive}")
    if report.valid:
        print(f"{output.name}: valid {report.definition}")
        return 0
    print(f"{output.name}: not valid {report.definition or 'NeXus'}: {len(report.problems)} problem(s)")
    for problem in report.problems:
        print(f"  {problem}")
    return 1


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="photonflow", description=__doc__.split("\n")[0])
    commands = root.add_subparsers(dest="command", required=True)

    config = commands.add_parser("config", help="Tango database configuration")
    config_commands = config.add_subparsers(dest="config_command", required=True)
    apply = config_commands.add_parser(
        "apply", help="write a deployment to the database (idempotent): photonflow's YAML, or dsconfig JSON "
                      "(a .json file, or one starting with '{')")
    apply.add_argument("file")
    apply.add_argument("--dry-run", action="store_true", help="only print what would change")
    apply.add_argument(
        "--prune", action="store_true",
        help="also delete what the file no longer has, as json2tango does: devices of its servers and "
             "properties of its devices and classes (not polled_attr, logging_*, nor names starting with _)")
    apply.set_defaults(handler=command_config_apply)
    export = config_commands.add_parser(
        "export", help="write a deployment YAML as dsconfig JSON (json2tango applies it)")
    export.add_argument("--dsconfig", required=True, metavar="FILE", help="the JSON file to write ('-': stdout)")
    export.add_argument("--config", default="config/demo.yaml", help="the deployment YAML (default config/demo.yaml)")
    export.set_defaults(handler=command_config_export)

    demo = commands.add_parser("demo", help="run one acquisition end to end")
    demo.add_argument("--config", default="config/demo.yaml")
    for name, kind in (("frames", int), ("exposure", float), ("period", float), ("step", float), ("sample", str)):
        demo.add_argument(f"--{name}", type=kind,
                          help=f"default: the configuration's demo: {name}, else {DEMO_DEFAULTS[name]}"
                          + (" (degrees per frame of the rotation scan; 0: none)" if name == "step" else "")
                          + (" (what is in the beam: the DataManager's Sample, the NeXus /entry/sample/name)"
                             if name == "sample" else ""))
    demo.add_argument("--file", help="data file, relative to the data root")
    recorders_help = ("Recorders sharing the detector's stream, each frame to one of them, each writing its part "
                      "file, the Controller a master joining them in frame order (default 1)")
    demo.add_argument("--recorders", type=int, default=1, help=recorders_help)
    analysis_help = ("a live-analysis worker beside each Recorder: spot count, I(q) (pyFAI) and ROI sums of every "
                     "frame, into <file>_live.h5, the NXmx (entry/live_analysis) and the series' blissdata scan")
    demo.add_argument("--analysis", action="store_true", help=analysis_help)
    demo.add_argument("--timeout", type=float, default=600)
    demo.set_defaults(handler=command_demo)

    up = commands.add_parser("up", help="start the database and every server in the background")
    up.add_argument("--config", default="config/demo.yaml")
    up.add_argument("--sardana", action="store_true",
                    help="also start Sardana (Pool, MacroServer, Door) with photonflow's controllers and macros")
    up.add_argument("--starter", action="store_true",
                    help="register this computer's Tango Starter (Astor) and let it start the servers of the "
                         "configuration's starter: section, level by level")
    instance_help = ("the servers' instance (Executable/<instance>) instead of the configuration's, and the "
                     "suite's folder var/<instance> unless PHOTONFLOW_VAR says: two suites on one host")
    up.add_argument("--instance", help=instance_help)
    up.add_argument("--recorders", type=int, default=1, help=recorders_help)
    up.add_argument("--analysis", action="store_true", help=analysis_help)
    up.set_defaults(handler=command_up)
    down = commands.add_parser("down", help="stop what 'up' started")
    down.add_argument("--instance", help="the instance 'up' was given (its folder var/<instance>)")
    down.set_defaults(handler=command_down)

    events = commands.add_parser("events", help="the event bus")
    events_commands = events.add_subparsers(dest="events_command", required=True)
    tail = events_commands.add_parser(
        "tail", help="print the experiment-done events as JSON lines: {\"id\": ..., \"event\": {...}}"
    )
    tail.add_argument("--url", help=f"redis://host:port (default: ${EVENT_BUS_VARIABLE}, else the suite's bus)")
    tail.add_argument("--since", default="0-0",
                      help="print the events after this stream id (default 0-0: every event kept; $: only new ones)")
    tail.add_argument("--stream", default=DEFAULT_STREAM, help=f"default {DEFAULT_STREAM}")
    tail.add_argument("--follow", "-f", action="store_true", help="keep waiting for new events (Ctrl-C ends)")
    tail.set_defaults(handler=command_events_tail)

    structure = commands.add_parser("run-structure", help="run a data structure description on the simulated "
                                    "beamline through the DataManager; print the run table")
    structure.add_argument("structure", metavar="FILE", help="e.g. config/structures/eff_energy_scan.yaml")
    structure.add_argument("--config", default="config/demo.yaml", help="the deployment to start")
    structure.add_argument("--proposal", default="demo0001")
    structure.add_argument("--session", default=datetime.now().strftime("%Y%m%d"))
    structure.add_argument("--sample", default="sample1")
    structure.add_argument("--timeout", type=float, default=600, help="seconds per acquisition")
    structure.set_defaults(handler=command_run_structure)

    tomo = commands.add_parser("tomo", help="a tomography (darks, flats, projections) on a running suite: the "
                               "tomography structure through the DataManager, one NXtomo")
    tomo.add_argument("--structure", default=f"config/{TOMOGRAPHY_STRUCTURE}", metavar="FILE",
                      help=f"the tomography's data structure description (default config/{TOMOGRAPHY_STRUCTURE})")
    tomo.add_argument("--datamanager", default="tomo/photonflow/datamanager", help="the DataManager that runs it")
    tomo.add_argument("--standardizer", default="tomo/photonflow/standardizer", help="the Standardizer that writes "
                      "the NXtomo (its DevicePrefix: the beamline's devices)")
    for name, kind, meaning in (
        ("projections", int, "frames while the sample turns (the data acquisition)"),
        ("darks", int, "frames, shutter closed"), ("flats", int, "frames, sample out"), ("exposure", float, "s"),
        ("period", float, "s"), ("start_angle", float, "deg"), ("end_angle", float, "deg"),
        ("sample_out", float, "the sample translation's position for the flats"),
    ):
        tomo.add_argument(f"--{name.replace('_', '-')}", dest=name, type=kind,
                          help=f"{meaning} (default: the structure's)")
    tomo.add_argument("--sample-name", default="sample", help="the sample (the data policy's folder and the NXtomo's "
                      "sample/name): letters, digits, - _ . (default sample)")
    tomo.add_argument("--proposal", default="tomo0001")
    tomo.add_argument("--session", default=datetime.now().strftime("%Y%m%d"))
    tomo.add_argument("--timeout", type=float, default=1800, help="seconds per acquisition")
    tomo.set_defaults(handler=command_tomo)

    reprocess = commands.add_parser("reprocess", help="compute runs' variables again with the context as it is "
                                    "now (a variable it no longer has leaves those runs); then SUMMARY {...}")
    reprocess.add_argument("runs", metavar="RUN", type=int, nargs="+", help="run numbers")
    reprocess.add_argument("--proposal", required=True, help="whose catalogue")
    reprocess.add_argument("--config", default="config/demo.yaml",
                           help="the deployment whose DataManager's catalogue and context are used by default")
    reprocess.add_argument("--catalogue", metavar="DIR", help="the folder of <proposal>.sqlite (default: the "
                           "DataManager's CatalogueDirectory, else <DataRoot>/catalogue)")
    reprocess.add_argument("--context", metavar="FILE",
                           help="the context file (default: the DataManager's ContextFile)")
    reprocess.add_argument("--timeout", type=float, default=600,
                           help="seconds every variable of one run may take together (default 600)")
    reprocess.set_defaults(handler=command_reprocess)

    standardize = commands.add_parser("standardize", help="standardized NeXus files from existing data")
    standardize_commands = standardize.add_subparsers(dest="standardize_command", required=True)
    cbf = standardize_commands.add_parser(
        "cbf", help="a folder of PILATUS CBF images (one rotation series) as an NXmx file; the frames go to "
                    "<FILE stem>_data.h5 beside it"
    )
    cbf.add_argument("directory", metavar="DIR", help="the folder of *.cbf images (miniCBF headers)")
    cbf.add_argument("-o", "--output", required=True, metavar="FILE", help="the NXmx file to write (never overwritten)")
    cbf.add_argument("--beamline", help="the beamline's name (source and instrument name; default: unknown)")
    cbf.add_argument("--sample", help="the sample's name (default: unknown)")
    cbf.set_defaults(handler=command_standardize_cbf)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.handler(args)
    except (ConfigurationError, FilePathError, EventBusError, EventServerError, TimeoutError, RuntimeError,
            FileNotFoundError) as error:
        print(f"photonflow: error: {error}", file=sys.stderr)
        return 2
    except tango.DevFailed as error:
        print(f"photonflow: error: {error.args[0].reason}: {error.args[0].desc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
