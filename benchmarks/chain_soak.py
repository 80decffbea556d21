"""Chain soak: many series back to back through the whole suite, every run followed to its end.

What it measures
    The demo's deployment (``config/demo.yaml``: simulated beamline and detector, Acquirer,
    Recorder, Controller, Standardizer, DataManager with its context file, the job engine and
    the event bus), started as ``make demo`` starts it, into a temporary folder of its own
    (its own embedded database, data root and catalogue; removed at the end unless ``--keep``).
    The DataManager is given an experiment (``SetExperiment``, role ``data``), then ``--series``
    (20) series of ``--frames`` (1000) frames are taken one after the other, each a rotation of
    omega as the demo's, without waiting for the Standardizer or the variables in between: the
    NeXus files and the variables of earlier runs are made while later series are recorded.

    Then, within ``--timeout`` s, every series is followed to the end of the chain:
    ``raw_files`` Recorder files with every frame (their ``entry/accounting``), ``nexus_files``
    complete standardized files, ``runs`` catalogued runs naming them, and
    ``runs_with_all_variables`` runs where every variable of the context is computed (a
    variable the context itself skips for the run, ``Skip:``, counts as computed).
    ``lost`` names each series that did not get all the way, and where it stopped.

How to read it
    One JSON line, then ``met``: every count equals ``--series`` and the DataManager is not in
    ALARM. Seconds are wall time on a shared machine: read the counts, not the time.

Run:  .venv/bin/python benchmarks/chain_soak.py [--series 20] [--frames 1000] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import h5py
import tango

from photonflow.clients.cli import _demo_scan, _start_suite  # the demo's own start-up, as make demo does it
from photonflow.clients.demo import run_acquisition
from photonflow.datamanager.catalogue import Catalogue
from photonflow.datamanager.context import load_context

REPOSITORY = Path(__file__).resolve().parents[1]

DEMO_CONFIG = REPOSITORY / "config" / "demo.yaml"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=20, help="series taken back to back (default 20)")
    parser.add_argument("--frames", type=int, default=1000, help="frames per series (default 1000)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds the chain may take after the last series")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, files, catalogue)")
    parser.add_argument("--dir", type=Path, default=None, help="parent of the temporary folder")
    args = parser.parse_args(argv)
    if args.series < 1 or args.frames < 1:
        parser.error("need --series >= 1 and --frames >= 1")
    return args


def frames_in(raw_file: Path) -> int:
    """Frames the Recorder's file says it wrote (0 when it is not a complete Recorder file)."""
    try:
        with h5py.File(raw_file, "r") as f:
            return int(f["entry/accounting/frames_written"][()])
    except (OSError, KeyError):
        return 0


def follow_chain(datamanager: tango.DeviceProxy, raw_files: list[Path], variables: set[str], frames: int,
                 deadline: float) -> dict:
    """Where each series got to in the chain, once all got to the end or the deadline passed."""
    path = Path(datamanager.CataloguePath)
    while True:
        with Catalogue(path.parent, path.stem) as catalogue:
            by_file = {Path(record.raw_file): record for record in catalogue.runs()}
            stages = {}
            for raw in raw_files:
                record = by_file.get(raw)
                if frames_in(raw) != frames:
                    stages[raw.name] = "Recorder file incomplete"
                elif record is None:
                    stages[raw.name] = "not catalogued"
                elif not record.nexus_file or not Path(record.nexus_file).exists():
                    stages[raw.name] = f"run {record.run}: no standardized file"
                else:
                    cells = catalogue.variable_records(record.run)
                    absent = sorted(variables - set(cells))
                    failed = sorted(name for name, cell in cells.items()
                                    if name in variables and cell["error"] and not cell["error"].startswith("Skip:"))
                    stages[raw.name] = (f"run {record.run}: variables absent {absent}, failed {failed}"
                                        if absent or failed else "done")
        waiting = datamanager.VariablesStatus != "idle, 0 waiting"
        if (all(stage == "done" for stage in stages.values()) and not waiting) or time.monotonic() > deadline:
            return {"stages": stages, "runs": len(by_file), "variables_status": datamanager.VariablesStatus}
        time.sleep(1.0)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="chain_soak_", dir=args.dir))
    os.environ["PHOTONFLOW_VAR"] = str(folder)
    os.environ["PHOTONFLOW_DATA_ROOT"] = str(folder / "data")
    os.environ.pop("TANGO_HOST", None)
    started = time.monotonic()
    try:
        suite, deployment = _start_suite(str(DEMO_CONFIG), folder, "chain_soak.db", own_database=True)
        try:
            def proxy(tango_class: str) -> tango.DeviceProxy:
                device = tango.DeviceProxy(suite.device_url(deployment.device(tango_class).name))
                device.set_timeout_millis(15000)
                return device

            controller, datamanager = proxy("PhotonflowController"), proxy("PhotonflowDataManager")
            context_file = datamanager.get_property("ContextFile")["ContextFile"][0]
            # the names the run table gets: every variable but the transient ones (inputs of others)
            variables = {name for name, var in load_context(context_file).vars.items() if not var.transient}
            demo = deployment.demo
            datamanager.SetExperiment(json.dumps({"proposal": "soak0001", "session": "chain",
                                                  "sample": demo.get("sample") or "CeO2"}))
            datamanager.SetRole("data")
            scan = _demo_scan(deployment, {"step": demo.get("step", 0.0)})
            raw_files, series_seconds = [], []
            for number in range(1, args.series + 1):
                summary = run_acquisition(controller, args.frames, demo.get("exposure", 0.001),
                                          demo.get("period", 0.002), f"chain_{number:03d}.h5",
                                          60 + 10 * args.frames * demo.get("period", 0.002), scan=scan, quiet=True)
                raw_files.append(Path(summary["file"]))
                series_seconds.append(round(summary.get("seconds", 0.0), 2))
            recorded = time.monotonic()
            chain = follow_chain(datamanager, raw_files, variables, args.frames, recorded + args.timeout)
            state, status = str(datamanager.state()), datamanager.status()
        finally:
            suite.stop()
    finally:
        if args.keep:
            print(f"kept {folder}", file=sys.stderr)
        else:
            shutil.rmtree(folder, ignore_errors=True)
    stages = chain["stages"]
    line = {
        "case": f"chain_{args.series}x{args.frames}",
        "series": args.series,
        "raw_files": sum(stage != "Recorder file incomplete" for stage in stages.values()),
        "runs": chain["runs"],
        "nexus_files": sum(stage == "done" or "variables" in stage for stage in stages.values()),
        "runs_with_all_variables": sum(stage == "done" for stage in stages.values()),
        "variables": len(variables),
        "lost": {name: stage for name, stage in stages.items() if stage != "done"},
        "datamanager": state,
        "datamanager_status": status,
        "variables_status": chain["variables_status"],
        "chain_after_last_series_s": round(time.monotonic() - recorded, 1),
        "total_s": round(time.monotonic() - started, 1),
    }
    line["met"] = (not line["lost"] and line["runs"] == args.series and state != "ALARM")
    print(json.dumps(line), flush=True)
    return 0 if line["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
