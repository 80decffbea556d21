"""`photonflow demo`: one acquisition through the Controller, end to end, on real servers."""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401 - registers the bitshuffle filter: files from DECTRIS detectors hold bslz4 chunks
import numpy as np
import tango

from photonflow.clients.launcher import wait_for


def wait_for_state(proxy: tango.DeviceProxy, wanted: set[str], timeout: float) -> str:
    def reached():
        state = str(proxy.state())
        return state if state in wanted else None

    try:
        return wait_for(reached, timeout, f"{proxy.dev_name()} in {'/'.join(sorted(wanted))}", interval=0.1)
    except TimeoutError as error:  # what it was in instead says what went wrong
        raise TimeoutError(f"{error}; it is {proxy.state()}: {proxy.status()}") from None


class ProgressBar:
    """A one-line bar on a terminal; a line per 10 % otherwise (logs stay readable)."""

    def __init__(self, total: int, stream=sys.stderr, width: int = 40):
        self.total, self.stream, self.width = total, stream, width  # stream None: quiet
        self.interactive = stream is not None and stream.isatty()
        self._last_decile = -1

    def update(self, done: int, detail: str = "") -> None:
        if self.stream is None:
            return
        fraction = min(1.0, done / self.total) if self.total else 1.0
        if self.interactive:
            filled = int(fraction * self.width)
            bar = "#" * filled + "-" * (self.width - filled)
            self.stream.write(f"\r[{bar}] {done}/{self.total} {detail}   ")
            self.stream.flush()
        elif int(fraction * 10) > self._last_decile:
            self._last_decile = int(fraction * 10)
            self.stream.write(f"  {100 * fraction:5.1f} % ({done}/{self.total}) {detail}\n")

    def close(self) -> None:
        if self.interactive:
            self.stream.write("\n")


def run_acquisition(controller: tango.DeviceProxy, frames: int, exposure: float, period: float,
                    file: str, timeout: float, scan: dict | None = None, quiet: bool = False) -> dict:
    """Configure and start the series, show progress, return the Controller's final numbers.
    ``scan`` ({"axis", "start", "step"}): a continuous scan the Controller runs, the detector
    triggered by the axis' position-compare at every step."""
    wait_for_state(controller, {"ON", "ALARM"}, 60)
    request = {"frames": frames, "exposure": exposure, "period": period, "file": file}
    if scan is not None:
        request["scan"] = scan
    controller.Configure(json.dumps(request))
    started = time.monotonic()
    controller.Start()
    bar = ProgressBar(frames, stream=None if quiet else sys.stderr)
    deadline = started + timeout
    while True:
        state = str(controller.state())
        written = controller.FramesWritten
        elapsed = time.monotonic() - started
        bar.update(written, f"written, {written / elapsed:6.1f} frames/s" if elapsed > 0 else "")
        if state != "RUNNING":  # Start returns with the Controller already RUNNING
            break
        if time.monotonic() > deadline:
            controller.Abort()
            raise TimeoutError(f"the acquisition did not finish within {timeout} s")
        time.sleep(0.1)
    seconds = time.monotonic() - started
    bar.update(controller.FramesWritten)
    bar.close()
    return {
        "frames_requested": frames,
        "frames_acquired": controller.FramesAcquired,
        "frames_received": controller.FramesReceived,
        "frames_written": controller.FramesWritten,
        "missing_frames": controller.MissingFrames,
        "file": controller.LastFile,
        "seconds": round(seconds, 3),
        "state": str(controller.state()),
        "status": controller.status(),
    }


def describe_file(path: str) -> list[str]:
    """What is in the file, as an operator wants to see it: groups, NeXus classes, datasets."""
    lines = [f"{path} ({Path(path).stat().st_size / 1e6:.1f} MB)"]
    with h5py.File(path, "r") as f:
        def visit(name, item):
            depth = name.count("/")
            indent = "  " * (depth + 1)
            label = name.rsplit("/", 1)[-1]
            if isinstance(item, h5py.Group):
                lines.append(f"{indent}{label}/  [{item.attrs.get('NX_class', '')}]")
            elif item.shape == ():
                value = item[()]
                value = value.decode() if isinstance(value, bytes) else value
                lines.append(f"{indent}{label} = {value}{' ' + item.attrs['units'] if 'units' in item.attrs else ''}")
            else:
                lines.append(f"{indent}{label}  {item.dtype} {item.shape}")

        f.visititems(visit)
        data = f["entry/data/data"]
        if data.shape[0]:
            first = data[0]
            lines.append(
                f"  frame 0: min {first.min()}, max {first.max()}, mean {np.mean(first):.2f} counts"
            )
    return lines


def default_file_name() -> str:
    return f"demo/demo_{datetime.now():%Y%m%d_%H%M%S_%f}.h5"


def wait_for_standardized(standardizer: tango.DeviceProxy, recorder_file: str, timeout: float) -> dict:
    """Wait until the Standardizer wrote the file for ``recorder_file``; validate it."""
    from photonflow.standardizing.standard_files import same_series, standardized_path
    from photonflow.standardizing.validation import validate_nexus

    def written():
        return same_series(recorder_file, standardizer.LastFile) or (
            str(standardizer.state()) == "ALARM" and "not standardized" in standardizer.status()
        )

    wait_for(written, timeout, f"{standardizer.dev_name()} to write "
             f"{standardized_path(recorder_file, standardizer.Definition)}", interval=0.2)
    expected = standardizer.LastFile
    if not same_series(recorder_file, expected):
        return {"nexus": "", "definition": standardizer.Definition, "nexus_error": standardizer.status()}
    report = validate_nexus(expected)
    return {
        "nexus": expected,
        "definition": report.definition,
        "nexus_problems": len(report.problems),
        "nexus_false_positives": list(report.false_positives),
        "capture_warnings": list(standardizer.Warnings or []),
    }
