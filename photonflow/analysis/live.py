"""The live analysis: a worker that takes frames as they stream (a Recorder's push fan-out, or an
output of the Acquirer), never by re-reading files, analyses each one (``frame_analysis``) and
hands the result to its sinks (a results file, the event bus, a device's events).

Frames flow through ZeroMQ, one worker per stream; the job engine (Dask) keeps the per-run jobs:
a per-frame task on Dask would cost its scheduler a round trip per frame (milliseconds at
hundreds of frames a second), where a worker on the stream costs nothing between frames.

``ResultsFile`` keeps a series' results in HDF5 by frame number, as the Standardizer puts them
under an NXprocess (Jungfraujoch writes its per-image results into its NXmx files alike):
``entry/process/spot_finding/spots`` (an NXdata: silx plots it), ``entry/process/roi/<name>``,
``entry/process/integration/{q, I}``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import h5py
import numpy as np

import photonflow
from photonflow import states
from photonflow.analysis.frame_analysis import (
    AnalysisSettings,
    FrameAnalyzer,
    FrameResult,
    geometry_from_description,
)
from photonflow.core import CoreListener, StatefulCore
from photonflow.errors import PhotonflowError
from photonflow.stream.stins import DataMessage, SeriesEnd, SeriesStart, decode
from photonflow.stream.transport import StreamReceiver
from photonflow.throttle import Throttle

log = logging.getLogger(__name__)

SPOTS = "spot_finding/spots"  # in a results file's NXprocess
SPOTS_LONG_NAME = "spots found in each frame, by frame number (-1: not analysed)"
RECEIVE_POLL_MS = 100
# A fan-out drops what a worker that is behind has no room for, a series' end too: a series whose
# stream has been silent this long after a frame is closed for its sinks as cut off.
END_IDLE = 2.0


class ResultSink(Protocol):
    def series_started(self, start: SeriesStart, analyzer: FrameAnalyzer) -> None: ...
    def frame_analysed(self, result: FrameResult) -> None: ...
    def series_ended(self, end: SeriesEnd | None) -> None: ...


@dataclass
class AnalysisCounters:
    series_id: int = 0
    frames_analysed: int = 0  # in the current or last series
    messages_rejected: int = 0  # in the current or last series (a series with any ends ALARM)
    last_spots: int = -1
    latency_median_ms: float = 0.0  # frame timestamp -> result handed to every sink, this series
    latency_p99_ms: float = 0.0


class LiveAnalysis(StatefulCore):
    """Analyses every frame of the stream(s) at ``endpoints`` on a thread of its own (``start``):
    INIT until it can analyse (libraries loaded, stream connected), ON waiting for a series,
    RUNNING during one, ALARM after a series with rejected messages.

    ``latencies``: seconds from each frame's timestamp (when the detector made it) to its result
    handed to every sink, the last 100 000."""

    def __init__(self, endpoints: str | Sequence[str] | Callable[[], str], settings: AnalysisSettings,
                 sinks: Sequence[ResultSink],
                 clock: Callable[[], float] = time.time, listener: CoreListener | None = None,
                 counter_interval: float = 0.1, monotonic: Callable[[], float] = time.monotonic):
        # INIT until pyFAI is loaded (~1 s) and the stream connected: frames sent before would wait
        super().__init__(listener, states.INIT, "Loading the analysis (pyFAI) and connecting to the stream.")
        self.counters = AnalysisCounters()
        self._counter_throttle = Throttle(counter_interval, time.monotonic)
        self.settings = settings
        self.sinks = list(sinks)
        self.clock = clock
        self.monotonic = monotonic
        self._last_message = 0.0
        # a function: the stream's address, asked (again until it answers) by the analysis thread,
        # e.g. from a Recorder that is still starting
        self._endpoints = endpoints
        self._receiver: StreamReceiver | None = None if callable(endpoints) else StreamReceiver(endpoints)
        self._receiver_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._analyzer: FrameAnalyzer | None = None
        self._last_analyzer: tuple[tuple, FrameAnalyzer] | None = None
        self._series_id: int | None = None
        self.frames_analysed = 0
        self.messages_rejected = 0
        self.last_error = ""
        self.series_ended = 0
        self.latencies: deque[float] = deque(maxlen=100_000)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="live-analysis", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        self._stop.set()
        with self._receiver_lock:
            if self._receiver is not None:
                self._receiver.wake()
        if self._thread is not None:
            self._thread.join(timeout)
        with self._receiver_lock:
            if self._receiver is not None:
                self._receiver.close()

    def _connect(self) -> StreamReceiver | None:
        """The receiver, once the stream's address is known (None when stopped first)."""
        source = self._endpoints
        said = ""
        while not self._stop.is_set():
            state, reason = states.INIT, "no address yet"
            try:
                endpoint = source() if callable(source) else source
            except PhotonflowError as error:  # a setting to fix (e.g. no fan-out): FAULT, asked again
                endpoint, state, reason = "", states.FAULT, f"{error} (asked again every second)"
            except Exception as error:  # noqa: BLE001 - the source (a Tango peer) not answering yet
                endpoint, reason = "", f"waiting for the stream's address: {type(error).__name__}: {error}"
            if endpoint:
                with self._receiver_lock:
                    if not self._stop.is_set():
                        self._receiver = StreamReceiver(endpoint)
                    return self._receiver
            if reason != said:
                said = reason
                self._set_state(state, reason[0].upper() + reason[1:])
            self._stop.wait(1.0)
        return None

    def _run(self) -> None:
        _warm_up()
        receiver = self._receiver or self._connect()
        if receiver is None:
            return
        if self.state in (states.INIT, states.FAULT):
            self._set_state(states.ON, "Waiting for a series on the stream.")
        while not self._stop.is_set():
            parts = receiver.receive(RECEIVE_POLL_MS)
            if parts is None:
                self.end_if_silent()
            else:
                self.take(parts)

    def take(self, parts) -> None:
        """One message as it came off the stream: a malformed one is counted, never a crash."""
        try:
            self.handle(decode(parts))
        except (PhotonflowError, ValueError) as error:
            self.messages_rejected += 1
            self.counters.messages_rejected += 1
            self.last_error = f"message rejected: {error}"
            log.warning("%s", self.last_error)
        except Exception as error:  # an analysis that fails (pyFAI, a sink): said, and the next series may do
            log.exception("live analysis failed")
            self._analyzer = None
            self._set_state(states.FAULT, f"The analysis failed: {type(error).__name__}: {error}. "
                                          "It takes the next series.")

    def handle(self, message) -> None:
        """One decoded stream message (the receiving thread, or a test)."""
        self._last_message = self.monotonic()
        if isinstance(message, SeriesStart):
            if message.shape is None:
                raise ValueError("a series_start without the frame shape cannot be analysed")
            self._end_series(None)
            self._analyzer = self._analyzer_for(message)
            self._series_id = message.series_id
            if self._receiver is not None:  # a worker behind holds RECEIVE_BUFFER_BYTES of frames, not 1000
                self._receiver.fit_to_frames(int(np.prod(message.shape)) * np.dtype(message.dtype or "uint16").itemsize)
            if self._analyzer.missing_geometry:
                log.warning("series %s: no I(q), the series gives no %s", message.series_id,
                            ", ".join(self._analyzer.missing_geometry))
            for sink in self.sinks:
                sink.series_started(message, self._analyzer)
            self.latencies.clear()
            self.counters = AnalysisCounters(series_id=message.series_id)
            missing = (f"; no I(q): the series gives no {', '.join(self._analyzer.missing_geometry)}"
                       if self._analyzer.missing_geometry else "")
            self._set_state(states.RUNNING, f"Analysing series {message.series_id}{missing}.")
            self._report(force=True)
        elif isinstance(message, DataMessage):
            if self._analyzer is None or message.series_id != self._series_id:
                raise ValueError(f"frame {message.frame_number} of series {message.series_id} came without "
                                 "its series_start")
            result = self._analyzer.analyse(message.frame_number, message.to_array())
            result.timestamp = message.timestamp
            for sink in self.sinks:
                sink.frame_analysed(result)
            self.frames_analysed += 1
            self.latencies.append(self.clock() - message.timestamp)
            self.counters.frames_analysed += 1
            self.counters.last_spots = result.spots
            self._report()
        elif isinstance(message, SeriesEnd):
            self._end_series(message)

    def _analyzer_for(self, start: SeriesStart) -> FrameAnalyzer:
        """The series' analyzer: the last one when the frame shape, geometry and saturation are the
        same (pyFAI's tables take 40 ms to build, 200 ms on a busy host: the frames of a series
        would wait for them), else a new one."""
        assert start.shape is not None  # handle() refuses a series_start without it
        geometry, missing = geometry_from_description(start.detector)
        key = (tuple(start.shape), start.detector.get("saturation_value"), missing,
               tuple(sorted((geometry or {}).items())))
        if self._last_analyzer is None or self._last_analyzer[0] != key:
            self._last_analyzer = (key, FrameAnalyzer(self.settings, start.shape, start.detector))
        return self._last_analyzer[1]

    def end_if_silent(self) -> None:
        """A series whose end never came (dropped by a fan-out) is closed once the stream has been
        silent END_IDLE seconds: its results file is complete, not left open until the next."""
        if self._analyzer is not None and self.monotonic() - self._last_message >= END_IDLE:
            log.warning("series %s: no end came %.0f s after its last message: closed as cut off", self._series_id,
                        END_IDLE)
            self._end_series(None)

    def _end_series(self, end: SeriesEnd | None) -> None:
        if self._analyzer is None:
            return
        for sink in self.sinks:
            sink.series_ended(end)
        self._analyzer, self._series_id = None, None
        self.series_ended += 1
        self._report(force=True)
        counters = self.counters
        summary = (f"Series {counters.series_id}: {counters.frames_analysed} frames analysed, latency median "
                   f"{counters.latency_median_ms:.1f} ms, p99 {counters.latency_p99_ms:.1f} ms")
        if end is not None and counters.frames_analysed < end.frames_sent:
            summary += f"; {end.frames_sent - counters.frames_analysed} of the {end.frames_sent} sent not analysed"
        if counters.messages_rejected:
            self._set_state(states.ALARM, f"{summary}; {counters.messages_rejected} message(s) rejected, "
                                          f"last: {self.last_error}.")
        else:
            self._set_state(states.ON, summary + ".")

    def _report(self, force: bool = False) -> None:
        if not (force or self._counter_throttle.ready()):
            return
        if self.latencies:
            milliseconds = 1000 * np.asarray(self.latencies)
            self.counters.latency_median_ms = float(np.median(milliseconds))
            self.counters.latency_p99_ms = float(np.percentile(milliseconds, 99))
        self.listener.counters_changed(replace(self.counters))


def _warm_up() -> None:
    """Import pyFAI and scipy before the first series (~1 s): its frames are not kept waiting."""
    import pyFAI.integrator.azimuthal  # noqa: F401
    import scipy.ndimage  # noqa: F401


class ResultsFile:
    """A series' results in an HDF5 file of their own, by frame number (a frame not analysed:
    spots -1, sums and I(q) NaN). ``path_for(start)`` names the file (None: not kept)."""

    def __init__(self, path_for: Callable[[SeriesStart], Path | None]):
        self.path_for = path_for
        self.last_path: Path | None = None
        self._file: h5py.File | None = None
        self._analyzer: FrameAnalyzer | None = None
        self._frames = 0

    def series_started(self, start: SeriesStart, analyzer: FrameAnalyzer) -> None:
        self.series_ended(None)
        path = self.path_for(start)
        if path is None:
            return
        frames = max(start.frame_count, 1)
        f = h5py.File(path, "w-", libver="v110")
        entry = f.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        process = entry.create_group("process")
        process.attrs["NX_class"] = "NXprocess"
        process["program"] = "photonflow live analysis"
        process["version"] = photonflow.__version__
        settings = analyzer.settings
        parameters = process.create_group("parameters")
        parameters.attrs["NX_class"] = "NXcollection"
        parameters["spot_sigma"], parameters["spot_min_pixels"] = settings.spot_sigma, settings.spot_min_pixels
        parameters["npt"] = settings.npt
        parameters["missing_geometry"] = ", ".join(analyzer.missing_geometry)
        spot_finding = process.create_group("spot_finding")
        spot_finding.attrs.update({"NX_class": "NXdata", "signal": "spots"})
        spot_finding.create_dataset("spots", shape=(frames,), maxshape=(None,), dtype=np.int64, fillvalue=-1)
        spot_finding["spots"].attrs["long_name"] = SPOTS_LONG_NAME
        rois = process.create_group("roi")
        rois.attrs["NX_class"] = "NXcollection"
        for roi in settings.rois:
            rois.create_dataset(roi.name, shape=(frames,), maxshape=(None,), dtype=np.float64, fillvalue=np.nan)
            rois[roi.name].attrs["region"] = [roi.top, roi.left, roi.height, roi.width]
        if analyzer.geometry is not None and settings.npt:
            integration = process.create_group("integration")
            integration.attrs["NX_class"] = "NXdata"
            integration.attrs["signal"] = "I"
            integration.create_dataset("I", shape=(frames, settings.npt), maxshape=(None, settings.npt),
                                       dtype=np.float64, fillvalue=np.nan, chunks=(1, settings.npt))
        self._file, self._frames, self.last_path, self._analyzer = f, frames, path, analyzer

    def frame_analysed(self, result: FrameResult) -> None:
        f = self._file
        if f is None:
            return
        process = f["entry/process"]
        if result.frame_number >= self._frames:
            self._frames = result.frame_number + 1
            for dataset in _per_frame(process):
                dataset.resize(self._frames, axis=0)
        process[SPOTS][result.frame_number] = result.spots
        for name, total in result.roi_sums.items():
            process["roi"][name][result.frame_number] = total
        if result.intensity is not None and "integration" in process:
            integration = process["integration"]
            if "q" not in integration and self._analyzer is not None and self._analyzer.q is not None:
                integration["q"] = self._analyzer.q
                integration["q"].attrs["units"] = "1/nm"
                integration.attrs["axes"] = [".", "q"]
            integration["I"][result.frame_number] = result.intensity

    def series_ended(self, end: SeriesEnd | None) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _per_frame(process: h5py.Group):
    yield process[SPOTS]
    yield from process["roi"].values()
    if "integration" in process:
        yield process["integration/I"]


RESULTS_SUFFIX = "_live.h5"  # a series' results file, beside the file its Recorder writes
# how long the standardized file waits for a worker to close a series' results: one far behind
# (the demo's 1000 frames of 1M pixels) ends its series 4-8 s after the Recorder (its buffer, then
# END_IDLE when the fan-out dropped the end); a file still being written cannot be opened by
# the readers of the NXmx (HDF5's lock), so its link would read as broken
RESULTS_WAIT = 10.0


def results_beside(data_file: str | Path) -> Path:
    """Where the live analysis of the series written to ``data_file`` keeps its results."""
    path = Path(data_file)
    return path.with_name(path.stem + RESULTS_SUFFIX)


def closed_results(path: Path, deadline: float, monotonic: Callable[[], float] = time.monotonic) -> str:
    """Wait until the worker has closed ``path`` (until then HDF5's lock keeps readers out), at
    most until ``deadline``; "" once it is closed, else why it cannot be read."""
    while True:
        try:
            with h5py.File(path, "r"):
                return ""
        except OSError as error:
            if monotonic() >= deadline:
                return str(error)
            time.sleep(0.05)


def merge_part_results(target: h5py.Group, name: str, master: h5py.File, master_path: Path, output: Path,
                       wait: float = RESULTS_WAIT, monotonic: Callable[[], float] = time.monotonic) -> tuple[str, ...]:
    """``target/name``: one NXprocess of the results of a series several Recorders shared, in
    frame order, as ``write_master`` presents their frames: each per-frame dataset a virtual
    dataset mapping every frame to the results of the part that holds it (a frame no part holds,
    or its worker did not analyse, reads as the fill: spots -1, sums and I(q) NaN). A part's
    results are waited for up to ``wait`` s until their worker has closed them. Returns what
    could not be merged (empty: all)."""
    from photonflow.recording.shared_series import part_paths, strided_runs

    owners = master["entry/accounting/recorder_of_frame"][()]
    parts = part_paths(master, master_path)
    problems, layouts = [], {}
    deadline = monotonic() + wait
    for index, part in enumerate(parts):
        results = results_beside(part)
        if not results.is_file():
            problems.append(f"no live results for part {index + 1} ({part.name})")
            continue
        why = closed_results(results, deadline, monotonic)
        if why:
            problems.append(f"the live results of part {index + 1} ({results.name}) are still being written: {why}")
            continue
        with h5py.File(results, "r") as f:
            layouts[index] = _results_layout(f["entry/process"])
    if not layouts:
        return tuple(problems)
    first = min(layouts)
    reference = layouts[first]
    process = target.create_group(name)
    process.attrs["NX_class"] = "NXprocess"
    process["program"] = "photonflow live analysis"
    process["version"] = photonflow.__version__
    with h5py.File(results_beside(parts[first]), "r") as f:
        f.copy(f["entry/process/parameters"], process, "parameters")
        if "integration/q" in f["entry/process"]:
            process.create_group("integration").attrs.update({"NX_class": "NXdata", "signal": "I",
                                                               "axes": [".", "q"]})
            process["integration/q"] = f["entry/process/integration/q"][()]
            process["integration/q"].attrs["units"] = "1/nm"
    frames = owners.size
    if reference["rois"]:
        process.create_group("roi").attrs["NX_class"] = "NXcollection"
    process.create_group("spot_finding").attrs.update({"NX_class": "NXdata", "signal": "spots"})
    datasets = {SPOTS: (np.int64, -1)} | {f"roi/{roi}": (np.float64, np.nan) for roi in reference["rois"]}
    if "integration" in process and reference["npt"]:
        datasets["integration/I"] = (np.float64, np.nan)
    for path, (dtype, fill) in datasets.items():
        shape = (frames, reference["npt"]) if path == "integration/I" else (frames,)
        layout = h5py.VirtualLayout(shape=shape, dtype=dtype)
        for index, described in layouts.items():
            if path not in described["lengths"]:
                continue
            length = described["lengths"][path]
            source = h5py.VirtualSource(os.path.relpath(results_beside(parts[index]), output.parent),
                                        f"entry/process/{path}", shape=(length, *shape[1:]))
            held = np.flatnonzero(owners == index)
            for start, step, count in strided_runs(held[held < length]):
                stop = start + step * (count - 1) + 1
                layout[start:stop:step] = source[start:stop:step]
        process.create_virtual_dataset(path, layout, fillvalue=fill)
    process[SPOTS].attrs["long_name"] = SPOTS_LONG_NAME
    return tuple(problems)


def _results_layout(process: h5py.Group) -> dict:
    """What a results file holds: its ROI names, I(q) bins, and each per-frame dataset's length."""
    lengths = {SPOTS: process[SPOTS].shape[0]}
    lengths.update({f"roi/{roi}": process[f"roi/{roi}"].shape[0] for roi in process["roi"]})
    npt = 0
    if "integration/I" in process:
        lengths["integration/I"] = process["integration/I"].shape[0]
        npt = process["integration/I"].shape[1]
    return {"rois": list(process["roi"]), "npt": npt, "lengths": lengths}
