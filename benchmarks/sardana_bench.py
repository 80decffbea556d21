"""What photonflow adds to each point of a Sardana step scan.

The demo suite and a real Sardana (Pool + MacroServer + Door) run as separate processes, as
``make up SARDANA=1`` starts them. The same ``ascan`` (samx, 20 points, 10 ms) runs with two
measurement groups: one holding a counter of Sardana's own ``DummyCounterTimerController``
(Sardana's cost: motion, the acquisition loop, recorders; its dummy 2D channel computes a
large image per point and is slower than photonflow, so it is no baseline) and one holding the
photonflow channel (one series armed per scan, one frame triggered per point, the frame's
reference as the value; then, references off, the frame itself once it is flushed). The
difference per point is photonflow's overhead (target < 20 ms with references), arming included; each scan
runs once untimed, then ``REPEATS`` times, and the median is kept.

Run:  .venv/bin/python benchmarks/sardana_bench.py     (or make bench-sardana)
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import h5py

from photonflow.clients.launcher import Suite
from photonflow.clients.sardana_setup import SCAN_RECORDER, start_sardana
from photonflow.deployment import load_deployment_file

REPOSITORY = Path(__file__).resolve().parents[1]
POINTS, EXPOSURE, REPEATS = 20, 0.01, 3
DUMMY = "dummy_ct"
VALUES = "mg_pf_values"  # the photonflow channel with references off, as a group made with defmeas is


def main() -> int:
    var_dir = Path(tempfile.mkdtemp(prefix="sardana_bench_"))
    os.environ["PHOTONFLOW_DATA_ROOT"] = str(var_dir / "data")
    os.environ["PHOTONFLOW_CONFIG_DIR"] = str(REPOSITORY / "config")
    deployment = load_deployment_file(REPOSITORY / "config" / "demo.yaml")
    suite = Suite("", var_dir)
    try:
        suite.start_event_bus()
        suite.start_deployment(deployment, var_dir / "tango.db")
        import taurus
        from sardana.taurus.core.tango.sardana import registerExtensions

        taurus.Factory("tango").set_default_tango_host(suite.tango_host)  # Sardana's elements by short name

        registerExtensions()
        sardana = start_sardana(suite, deployment)
        pool = taurus.Device(suite.device_url(sardana.pool))
        pool.CreateController(["CTExpChannel", "DummyCounterTimerController.py", "DummyCounterTimerController",
                               f"{DUMMY}_ctrl"])
        pool.CreateElement(["CTExpChannel", f"{DUMMY}_ctrl", "1", DUMMY])
        door = taurus.Device(suite.device_url(sardana.door))
        scans = var_dir / "scans"
        scans.mkdir()
        channel = next(iter(sardana.channels))

        def run(*macro) -> float:
            started = time.monotonic()
            door.runMacro(macro[0], list(macro[1:]), synch=True)
            elapsed = time.monotonic() - started
            state = str(door.getAttribute("State").read().value).split(".")[-1]
            if state != "ON":
                raise RuntimeError(f"{macro}: {door.getAttribute('Error').read().value}")
            return elapsed

        references = next(iter(sardana.groups))  # photonflow's group: value references on
        for macro in (["senv", "ScanDir", [str(scans)]], ["senv", "ScanFile", ["scan.h5"]],
                      ["senv", "ScanRecorder", [SCAN_RECORDER]], ["defmeas", "mg_dummy", [DUMMY]],
                      ["defmeas", VALUES, [channel]], ["set_meas_conf", "ValueRefEnabled", "False", [channel], VALUES]):
            run(*macro)
        scan = ["ascan", "samx", "0", str(0.01 * (POINTS - 1)), str(POINTS - 1), str(EXPOSURE)]
        times = {}
        for group in ("mg_dummy", references, VALUES):
            run("senv", "ActiveMntGrp", [group])
            run(*scan)  # not timed: every timed scan then starts with the same move back to 0
            times[group] = [run(*scan) for _ in range(REPEATS)]
        with h5py.File(scans / "scan.h5", "r") as f:
            last = f[sorted(f, key=lambda name: int(name[5:]))[-1]]
            copied = last["measurement"][channel].shape
        sardana_s = statistics.median(times["mg_dummy"])
        photonflow_s = statistics.median(times[references])
        values_s = statistics.median(times[VALUES])
        figures = {
            "points": POINTS, "exposure_s": EXPOSURE,
            "scan_with_sardana_dummy_counter_s": round(sardana_s, 3),
            "scan_with_photonflow_s": round(photonflow_s, 3),
            "photonflow_overhead_per_point_ms": round((photonflow_s - sardana_s) / POINTS * 1000, 1),
            "target_overhead_per_point_ms": 20,
            # value mode: each point waits for its frame to be flushed to the file (~0.2 s at most), then
            # Sardana copies it as float64 into its own scan file
            "scan_with_photonflow_value_mode_s": round(values_s, 3),
            "photonflow_value_mode_overhead_per_point_ms": round((values_s - sardana_s) / POINTS * 1000, 1),
            "all_scans_s": {group: [round(t, 3) for t in values] for group, values in times.items()},
            "frames_copied_in_last_scan_file": list(copied),
        }
        print(json.dumps(figures, indent=2))
        return 0
    finally:
        suite.stop()


if __name__ == "__main__":
    sys.exit(main())
