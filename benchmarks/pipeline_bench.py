"""Whole-pipeline throughput: small frames through the real Tango servers, end to end.

What it measures
    ``pipeline_<H>x<W>_uint16``: a pytango-db database, the embedded event bus (Redis, on
    which the Recorder publishes every series as a blissdata scan) and every device server of
    the demo (Acquirer, Recorder, Controller, Standardizer, DataManager, the simulated
    beamline), each its own process, started with ``photonflow.clients.launcher.Suite`` as
    ``make demo`` starts them, into a temporary var directory (removed at the end). The deployment is
    derived at run time from ``config/demo.yaml``: the same servers and devices, with the
    simulated detector's ``ImageWidth``/``ImageHeight`` set to the frame shape (256x256),
    the Recorder's ``FanOutAddress`` empty (no second output) and its ``DataRoot`` in the
    temporary directory; the derived YAML is written there and loaded with
    ``load_deployment_file``.

    Each run goes through the Controller as an operator's client does: ``Configure`` (JSON
    with frames, exposure, period, file), ``Start``, then poll the state until it is no
    longer RUNNING. Requested: ``--frames`` frames (20000) every ``--period`` s (0.0004 s,
    i.e. 2500 frames/s) with ``--exposure`` s (0.0001 s).

    ``frames_per_s`` is the sustained rate at which frames reached the Recorder:
    ``(frames - 1) / (receive_time[last] - receive_time[first])`` from the file's
    ``/entry/accounting/receive_time`` (written by the Recorder as each frame is dequeued).
    ``wall_frames_per_s`` is frames over the wall time (``seconds``) from calling ``Start``
    to the Controller leaving RUNNING, polled every 20 ms (it includes arming, preparing
    the camera, the file open and close with its fsync, and the end-of-series check).
    ``max_gap_ms``/``max_detector_gap_ms`` and ``*_latency_ms`` tell which side paused.

    Between series the bench waits ``--settle`` s (0.5) after the Controller is ON: a
    Recorder re-armed within ~0.1 s of its last series end keeps that series' receive
    thread alive (see the report that came with this script), which would be measured too.

    Every run is checked: FramesAcquired == FramesReceived == FramesWritten == frames,
    MissingFrames 0, Controller state ON, and the file's accounting agrees.

    The Standardizer runs as in the demo, with ``LOGGED_ATTRIBUTES`` (10) of the beamline's
    attributes polled at ``LOGGED_RATE`` (10 Hz) through every series (a mapping derived from
    ``config/standard/mx.yaml``). ``runs_standardized_after_s``: seconds from the series' end to
    its NXmx file written (event, post-exposure capture, writing, checked by polling LastFile
    every 5 ms); the ``standardize_after_1000_*`` case measures it after 1000-frame series
    (target: under 1 s).

    The DataManager runs as in the demo too: it catalogues every run and computes its
    variables while the next series streams. ``runs_catalogued_after_s``: seconds from the
    series' end until its catalogue lists the Recorder's file (None: never, which fails
    ``met``), read from the catalogue (SQLite) the DataManager's ``CataloguePath`` names.

    ``cpu_seconds`` is the CPU time (user + system) each process used during the run
    (``/proc/<pid>/stat``), ``cpu_busy`` the same divided by the wall time (1.0 = one core);
    with ``--threads`` the Acquirer's and Recorder's CPU is also broken down per thread
    (``/proc/<pid>/task/*/stat``; ZeroMQ names its I/O thread ``ZMQbg/IO/0``).

How to read it
    One JSON line per case (best run of ``--repeats`` after one untimed warm-up series,
    ``runs_frames_per_s`` lists them all), then a summary line with
    ``target_frames_per_s`` 2000 and ``met`` (best run's sustained rate >= target, and every
    run complete). The VM is noisy: compare runs, not single numbers.

Run:  .venv/bin/python benchmarks/pipeline_bench.py [--frames 20000] [--repeats 3] [--threads]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import tango
import yaml

from photonflow.clients.launcher import Suite, wait_for
from photonflow.datamanager.catalogue import Catalogue
from photonflow.deployment import load_deployment_file

REPOSITORY = Path(__file__).resolve().parents[1]
DEMO_CONFIG = REPOSITORY / "config" / "demo.yaml"
MX_MAPPING = REPOSITORY / "config" / "standard" / "mx.yaml"
LOGGED_ATTRIBUTES, LOGGED_RATE = 10, 10.0  # beamline attributes the Standardizer logs during each series, Hz
TARGET_FRAMES_PER_S = 2000.0
SHAPE = (256, 256)
DTYPE = "uint16"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------------- deployment


def derive_deployment(var_dir: Path, data_root: Path, shape: tuple[int, int]) -> Path:
    """config/demo.yaml with the frame shape, no fan-out and every data root in ``var_dir``."""
    config = yaml.safe_load(DEMO_CONFIG.read_text())
    seen = set()
    for classes in config["servers"].values():
        for tango_class, devices in classes.items():
            for spec in devices.values():
                properties = spec.setdefault("properties", {})
                if tango_class == "SimulatorAcquirer":
                    properties["ImageHeight"], properties["ImageWidth"] = shape
                    seen.add("acquirer")
                elif tango_class == "PhotonflowRecorder":
                    properties["FanOutAddress"] = ""
                    properties["DataRoot"] = str(data_root)
                    seen.add("recorder")
                elif tango_class == "PhotonflowStandardizer":
                    properties["DataRoot"] = str(data_root)
                    properties["MappingFile"] = str(derive_mapping(var_dir))
                    seen.add("standardizer")
                elif tango_class == "PhotonflowDataManager":
                    properties["DataRoot"] = str(data_root)  # its catalogue too: never the repository's var/
                    seen.add("datamanager")
    if seen != {"acquirer", "recorder", "standardizer", "datamanager"}:
        raise RuntimeError(f"{DEMO_CONFIG} lacks a SimulatorAcquirer, PhotonflowRecorder, PhotonflowStandardizer "
                           "or PhotonflowDataManager")
    path = var_dir / "pipeline_bench.yaml"
    path.write_text(
        f"# Derived by {Path(__file__).name} from {DEMO_CONFIG}\n" + yaml.safe_dump(config, sort_keys=False)
    )
    return path


def derive_mapping(var_dir: Path) -> Path:
    """config/standard/mx.yaml with LOGGED_ATTRIBUTES of its attributes polled at LOGGED_RATE Hz
    through the exposure: the Standardizer at work while the frames are taken."""
    mapping = yaml.safe_load(MX_MAPPING.read_text())
    entries = [entry for fields in mapping["components"].values() for entry in fields.values()]
    entries += [entry for axes in mapping["axes"].values() for entry in axes.values()]
    logged = [entry for entry in entries if "attribute" in entry][:LOGGED_ATTRIBUTES]
    if len(logged) < LOGGED_ATTRIBUTES:
        raise RuntimeError(f"{MX_MAPPING} maps fewer than {LOGGED_ATTRIBUTES} attributes")
    for entry in logged:
        entry["capture"], entry["rate"] = ["pre", "during", "post"], LOGGED_RATE
    path = var_dir / "pipeline_bench_mapping.yaml"
    header = f"# Derived by {Path(__file__).name} from {MX_MAPPING}\n"
    path.write_text(header + yaml.safe_dump(mapping, sort_keys=False))
    return path


# ---------------------------------------------------------------------------- CPU accounting


def _stat_fields(path: str) -> tuple[str, int]:
    """(comm, utime + stime in ticks) of a /proc/.../stat file."""
    with open(path) as f:
        text = f.read()
    comm = text[text.index("(") + 1 : text.rindex(")")]
    fields = text[text.rindex(")") + 2 :].split()
    return comm, int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15 of stat)


def process_cpu(pid: int) -> float:
    return _stat_fields(f"/proc/{pid}/stat")[1] / CLOCK_TICKS


def thread_cpu(pid: int) -> dict[int, tuple[str, float]]:
    result = {}
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            comm, ticks = _stat_fields(f"/proc/{pid}/task/{task}/stat")
        except (OSError, ValueError):
            continue  # the thread ended meanwhile
        result[int(task)] = (comm, ticks / CLOCK_TICKS)
    return result


def python_thread_names(pid: int) -> dict[int, str]:
    """Native thread id -> Python thread name, from ``py-spy dump`` if it is installed."""
    py_spy = Path(sys.executable).parent / "py-spy"
    if not py_spy.exists():
        found = shutil.which("py-spy")
        if found is None:
            return {}
        py_spy = Path(found)
    try:
        output = subprocess.run(
            [str(py_spy), "dump", "--pid", str(pid)], capture_output=True, text=True, timeout=20
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    return {int(tid): name for tid, name in re.findall(r'^Thread (\d+) \([^)]*\): "([^"]*)"', output, re.M)}


class ThreadSampler:
    """Per-thread CPU of some processes during a run, sampled every ``interval`` s.

    Threads that end during the run (the Acquirer's series thread, the Recorder's receive
    and write threads) keep their last sample, so their CPU is counted too (up to one
    interval short). Once, ``name_after`` s in, py-spy names the Python threads.
    """

    def __init__(self, pids: dict[str, int], interval: float = 0.2, name_after: float = 1.5):
        self.pids, self.interval, self.name_after = pids, interval, name_after
        self.baseline = {name: thread_cpu(pid) for name, pid in pids.items()}
        self.latest = {name: dict(sample) for name, sample in self.baseline.items()}
        self.names: dict[str, dict[int, str]] = {name: {} for name in pids}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="thread-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        started = time.monotonic()
        named = False
        while not self._stop.wait(self.interval):
            self._sample()
            if not named and time.monotonic() - started >= self.name_after:
                named = True
                for name, pid in self.pids.items():
                    self.names[name] = python_thread_names(pid)

    def _sample(self) -> None:
        for name, pid in self.pids.items():
            try:
                self.latest[name].update(thread_cpu(pid))
            except OSError:
                pass

    def stop(self, min_seconds: float = 0.05) -> dict[str, list[dict]]:
        """Threads that used at least ``min_seconds`` of CPU, busiest first, per process."""
        self._stop.set()
        self._thread.join()
        self._sample()
        result = {}
        for name in self.pids:
            rows = []
            for tid, (comm, seconds) in self.latest[name].items():
                used = seconds - self.baseline[name].get(tid, (comm, 0.0))[1]
                if used >= min_seconds:
                    label = self.names[name].get(tid, comm)
                    rows.append({"tid": tid, "thread": label, "cpu_s": round(used, 2)})
            result[name] = sorted(rows, key=lambda row: -row["cpu_s"])
        return result


# ---------------------------------------------------------------------------- one run


def run_series(
    controller: tango.DeviceProxy, frames: int, exposure: float, period: float, file: str, timeout: float,
    settle: float = 0.5,
) -> tuple[float, str]:
    """Configure, Start, poll until the Controller leaves RUNNING; returns (wall seconds, state)."""
    wait_for(lambda: str(controller.state()) in ("ON", "ALARM"), 60, "Controller ON")
    time.sleep(settle)
    controller.Configure(json.dumps({"frames": frames, "exposure": exposure, "period": period, "file": file}))
    start = time.perf_counter()
    controller.Start()
    deadline = start + timeout
    while True:
        state = str(controller.state())
        if state != "RUNNING":  # Start returns with the Controller already RUNNING
            break
        if time.perf_counter() > deadline:
            controller.Abort()
            raise TimeoutError(f"the series of {frames} frames did not end within {timeout} s")
        time.sleep(0.02)
    return time.perf_counter() - start, state


def check_run(controller: tango.DeviceProxy, recorder: tango.DeviceProxy, frames: int, state: str) -> dict:
    """The Controller's and the Recorder's counters, and the file's accounting."""
    counts = {
        "frames_acquired": controller.FramesAcquired,
        "frames_received": controller.FramesReceived,
        "frames_written": controller.FramesWritten,
        "missing_frames": controller.MissingFrames,
        "frames_lost": recorder.FramesLost,
        "messages_rejected": recorder.MessagesRejected,
        "duplicate_frames": recorder.DuplicateFrames,
    }
    path = controller.LastFile
    with h5py.File(path, "r") as f:
        accounting = f["entry/accounting"]
        receive = accounting["receive_time"][()]
        timestamps = accounting["timestamp"][()]
        file_counts = {
            "file_frames_written": int(accounting["frames_written"][()]),
            "file_missing_frames": int(accounting["missing_frames"][()]),
            "file_end_reason": accounting["end_reason"][()].decode(),
        }
        data_shape = f["entry/data/data"].shape
    problems = []
    if state != "ON":
        problems.append(f"state {state}: {controller.status()}")
    if not counts["frames_acquired"] == counts["frames_received"] == counts["frames_written"] == frames:
        problems.append(f"acquired/received/written {counts['frames_acquired']}/{counts['frames_received']}/"
                        f"{counts['frames_written']}, expected {frames}")
    if counts["missing_frames"] or counts["frames_lost"] or counts["messages_rejected"]:
        problems.append(f"missing {counts['missing_frames']}, lost {counts['frames_lost']}, "
                        f"rejected {counts['messages_rejected']}")
    if data_shape != (frames, *SHAPE) or receive.size != frames or np.isnan(receive).any():
        problems.append(f"file holds {data_shape}, {np.count_nonzero(~np.isnan(receive))} receive times")
    if file_counts != {"file_frames_written": frames, "file_missing_frames": 0, "file_end_reason": "completed"}:
        problems.append(f"file accounting {file_counts}")
    receive_span = float(np.nanmax(receive) - np.nanmin(receive)) if receive.size > 1 else float("nan")
    return {**counts, **file_counts, "path": path, "receive_span_s": receive_span, "receive": receive,
            "timestamps": timestamps, "problems": problems}


def gaps(receive: np.ndarray, timestamps: np.ndarray) -> dict:
    """Where pauses came from: arrivals at the Recorder (``receive_time``) against the
    detector's own time stamps (``timestamp``, the same host clock). A pause in both is the
    Acquirer's; a pause in arrivals only, or a growing latency, is the Recorder's side."""
    if receive.size < 2:
        return {}
    arrivals = np.diff(np.sort(receive))
    sent = np.diff(timestamps)  # by frame number: the order the simulator made them
    latency = receive - timestamps
    return {
        "max_gap_ms": round(float(arrivals.max()) * 1e3, 1),
        "pauses_over_10ms_s": round(float(arrivals[arrivals > 0.010].sum()), 3),
        "max_detector_gap_ms": round(float(sent.max()) * 1e3, 1),
        "detector_pauses_over_10ms_s": round(float(sent[sent > 0.010].sum()), 3),
        "median_latency_ms": round(float(np.median(latency)) * 1e3, 2),
        "max_latency_ms": round(float(latency.max()) * 1e3, 1),
    }


# ---------------------------------------------------------------------------- cases


def wait_standardized(standardizer: tango.DeviceProxy, recorder_file: str, series_end: float) -> float | None:
    """Seconds from the series' end (the Controller left RUNNING) until the Standardizer's NXmx
    for it exists: event delivery, post-exposure capture and writing. None if it never came."""
    expected = str(Path(recorder_file).with_suffix(".nxs"))
    try:
        wait_for(lambda: standardizer.LastFile == expected, 60, f"{expected} written", interval=0.005)
    except TimeoutError:
        return None
    return round(time.perf_counter() - series_end, 3)


def wait_catalogued(datamanager: tango.DeviceProxy, recorder_file: str, series_end: float) -> float | None:
    """Seconds from the series' end until the DataManager's catalogue lists a run of the
    Recorder's file (None if it never did): the DataManager at work beside the frames. Its
    CataloguePath is asked each time: it opens the catalogue at its first run."""
    def catalogued() -> bool:
        catalogue_path = Path(datamanager.CataloguePath)
        with Catalogue(catalogue_path.parent, catalogue_path.stem) as catalogue:
            return catalogue.run_of_file(str(Path(recorder_file).resolve())) is not None
    try:
        wait_for(catalogued, 60, f"{recorder_file} catalogued", interval=0.05)
    except TimeoutError:
        return None
    return round(time.perf_counter() - series_end, 3)


def run_case(
    case: str, controller: tango.DeviceProxy, recorder: tango.DeviceProxy, standardizer: tango.DeviceProxy,
    datamanager: tango.DeviceProxy, pids: dict[str, int],
    frames: int, exposure: float, period: float, repeats: int, threads: bool, settle: float,
) -> dict:
    """``repeats`` checked series; the JSON line of the best (highest sustained rate) run."""
    frame_bytes = SHAPE[0] * SHAPE[1] * np.dtype(DTYPE).itemsize
    timeout = 60 + 5 * frames * max(period, 1 / TARGET_FRAMES_PER_S)
    runs = []
    for run in range(1, repeats + 1):
        cpu_before = {name: process_cpu(pid) for name, pid in pids.items()}
        sampler = ThreadSampler({n: pids[n] for n in ("acquirer", "recorder")}) if threads else None
        seconds, state = run_series(controller, frames, exposure, period, f"{case}_{run}.h5", timeout, settle)
        ended = time.perf_counter()
        thread_rows = sampler.stop() if sampler else None
        if sampler:  # more than one means a stale receiver of an earlier series is still pulling frames
            thread_rows["recorder_receive_threads"] = list(sampler.names["recorder"].values()).count("recorder-receive")
        cpu = {name: round(process_cpu(pid) - cpu_before[name], 2) for name, pid in pids.items()}
        check = check_run(controller, recorder, frames, state)
        standardized_after = wait_standardized(standardizer, check["path"], ended)
        catalogued_after = wait_catalogued(datamanager, check["path"], ended)
        runs.append({
            "seconds": seconds,
            "frames_per_s": (frames - 1) / check["receive_span_s"],
            "wall_frames_per_s": frames / seconds,
            "state": state,
            "check": check,
            "cpu": cpu,
            "threads": thread_rows,
            "gaps": gaps(check["receive"], check["timestamps"]),
            "standardized_after_s": standardized_after,
            "catalogued_after_s": catalogued_after,
        })
        Path(check["path"]).unlink(missing_ok=True)  # 2.6 GB per 20000 frames: keep the disk free
        Path(check["path"]).with_suffix(".nxs").unlink(missing_ok=True)
    best = max(runs, key=lambda r: r["frames_per_s"])
    check = best["check"]
    line = {
        "case": case,
        "frames": frames,
        "frame_shape": list(SHAPE),
        "dtype": DTYPE,
        "exposure": exposure,
        "period": period,
        "requested_frames_per_s": round(1 / period, 1),
        "frames_per_s": round(best["frames_per_s"], 1),
        "gb_per_s": round(best["frames_per_s"] * frame_bytes / 1e9, 4),
        "ratio": round(best["frames_per_s"] / TARGET_FRAMES_PER_S, 3),
        "wall_frames_per_s": round(best["wall_frames_per_s"], 1),
        "seconds": round(best["seconds"], 3),
        "receive_span_s": round(check["receive_span_s"], 3),
        "frames_acquired": check["frames_acquired"],
        "frames_received": check["frames_received"],
        "frames_written": check["frames_written"],
        "missing_frames": check["missing_frames"],
        "frames_lost": check["frames_lost"],
        "state": best["state"],
        **best["gaps"],
        "cpu_seconds": best["cpu"],
        "cpu_cores_busy": {k: round(v / best["seconds"], 2) for k, v in best["cpu"].items()},
        "statistic": f"best of {len(runs)} (after 1 warm-up series)",
        "runs_frames_per_s": [round(r["frames_per_s"], 1) for r in runs],
        "runs_wall_frames_per_s": [round(r["wall_frames_per_s"], 1) for r in runs],
        "runs_seconds": [round(r["seconds"], 3) for r in runs],
        "runs_complete": [not r["check"]["problems"] for r in runs],
        "logged_attributes": f"{LOGGED_ATTRIBUTES} at {LOGGED_RATE:g} Hz",
        "runs_standardized_after_s": [r["standardized_after_s"] for r in runs],
        "runs_catalogued_after_s": [r["catalogued_after_s"] for r in runs],
    }
    problems = [p for r in runs for p in r["check"]["problems"]]
    if problems:
        line["problems"] = problems
    if threads:
        line["threads_cpu_s"] = best["threads"]
    return line


# ---------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20000, help="frames per series (default 20000)")
    parser.add_argument("--period", type=float, default=0.0004, help="frame period in s (default 0.0004)")
    parser.add_argument("--exposure", type=float, default=0.0001, help="exposure in s (default 0.0001)")
    parser.add_argument("--repeats", type=int, default=3, help="timed series per case after one warm-up (default 3)")
    parser.add_argument("--warmup-frames", type=int, default=2000, help="frames of the untimed warm-up series")
    parser.add_argument(
        "--no-unthrottled", action="store_true",
        help="skip the headroom case (period = exposure: the simulator sends as fast as it can)",
    )
    parser.add_argument("--settle", type=float, default=0.5, help="seconds to wait between series (default 0.5)")
    parser.add_argument("--threads", action="store_true", help="also report per-thread CPU of Acquirer and Recorder")
    parser.add_argument("--keep", action="store_true", help="keep the temporary var directory (logs, database)")
    parser.add_argument("--dir", type=Path, default=None, help="parent of the temporary var directory")
    args = parser.parse_args(argv)
    if args.frames < 2 or args.repeats < 1 or args.period < args.exposure or args.exposure <= 0:
        parser.error("need --frames >= 2, --repeats >= 1, 0 < --exposure <= --period")
    return args


def emit(line: dict) -> None:
    print(json.dumps(line), flush=True)


@contextlib.contextmanager
def bench_suite(name: str, folder: str | None, keep: bool):
    """The derived demo deployment running in a temporary folder of its own (its data root, its
    database, its trigger line: PHOTONFLOW_VAR), stopped and removed (unless ``keep``) afterwards."""
    var_dir = Path(tempfile.mkdtemp(prefix=f"{name}_", dir=folder))
    data_root = var_dir / "data"
    data_root.mkdir()
    os.environ["PHOTONFLOW_VAR"] = str(var_dir)
    suite = Suite("", var_dir)
    try:
        suite.start_event_bus()  # as make demo: the Recorder publishes each series on it (blissdata)
        deployment = load_deployment_file(derive_deployment(var_dir, data_root, SHAPE))
        suite.start_deployment(deployment, var_dir / "tango" / f"{name}.db")
        yield suite, deployment
    finally:
        suite.stop()
        if keep:
            print(f"kept {var_dir}", file=sys.stderr)
        else:
            shutil.rmtree(var_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    label = f"{SHAPE[0]}x{SHAPE[1]}_{DTYPE}"
    with bench_suite("pipeline_bench", args.dir, args.keep) as (suite, deployment):
        pids = {p.name.split("/")[0].removeprefix("Photonflow").lower(): p.pid for p in suite.processes}
        pids["bench"] = os.getpid()
        controller = tango.DeviceProxy(suite.device_url(deployment.device("PhotonflowController").name))
        recorder = tango.DeviceProxy(suite.device_url(deployment.device("PhotonflowRecorder").name))
        standardizer = tango.DeviceProxy(suite.device_url(deployment.device("PhotonflowStandardizer").name))
        datamanager = tango.DeviceProxy(suite.device_url(deployment.device("PhotonflowDataManager").name))
        datamanager.set_timeout_millis(15000)
        acquirer = tango.DeviceProxy(suite.device_url(deployment.device("SimulatorAcquirer").name))
        for proxy in (controller, recorder, acquirer, standardizer):
            proxy.set_timeout_millis(15000)
        if tuple(acquirer.FrameShape) != SHAPE or recorder.FanOutEndpoint:
            raise RuntimeError(f"the servers did not take the derived deployment: frame shape "
                               f"{list(acquirer.FrameShape)}, fan-out {recorder.FanOutEndpoint!r}")

        run_series(controller, args.warmup_frames, args.exposure, args.period, "warmup.h5", 60 + args.warmup_frames,
                   args.settle)
        cases = [(f"pipeline_{label}", args.period)]
        if not args.no_unthrottled and args.period > args.exposure:
            cases.append((f"pipeline_{label}_unthrottled", args.exposure))
        lines = []
        for case, period in cases:
            line = run_case(case, controller, recorder, standardizer, datamanager, pids, args.frames,
                            args.exposure, period, args.repeats, args.threads, args.settle)
            emit(line)
            lines.append(line)
        standardize = run_case(f"standardize_after_1000_{label}", controller, recorder, standardizer,
                               datamanager, pids, 1000, args.exposure, args.period, args.repeats, False,
                               args.settle)
        emit(standardize)
        main_line = lines[0]
        complete = all(all(line["runs_complete"]) for line in lines)
        catalogued = all(t is not None for line in (*lines, standardize) for t in line["runs_catalogued_after_s"])
        emit({
            "case": "summary",
            "frame_shape": list(SHAPE),
            "dtype": DTYPE,
            "requested_frames_per_s": main_line["requested_frames_per_s"],
            "frames_per_s": main_line["frames_per_s"],
            "target_frames_per_s": int(TARGET_FRAMES_PER_S),
            "ratio": main_line["ratio"],
            "headroom_frames_per_s": lines[1]["frames_per_s"] if len(lines) > 1 else None,
            "all_runs_complete": complete,
            "every_run_catalogued": catalogued,
            "met": complete and catalogued and main_line["frames_per_s"] >= TARGET_FRAMES_PER_S,
            "logged_attributes": main_line["logged_attributes"],
            "standardized_after_1000_frames_s": min(
                (t for t in standardize["runs_standardized_after_s"] if t is not None), default=None),
            "standardize_target_s": 1.0,
            "cpus": os.cpu_count(),
        })
        return 0


if __name__ == "__main__":
    sys.exit(main())
