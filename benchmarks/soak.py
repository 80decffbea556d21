"""Soak: a long series of small frames through the Recorder, with its memory watched.

What it measures
    ``soak_<H>x<W>_uint16``: a producer in another process (multiprocessing, spawn)
    pre-generates 16 distinct simulated diffraction frames (256x256 uint16), binds a
    ``StreamSender`` on ``tcp://127.0.0.1:*`` and, on a go signal, sends series_start,
    ``--frames`` data messages (100 000; the 16 frames cycled) and series_end with the
    ``StinsEncoder``, as fast as the Recorder takes them (ZeroMQ back-pressure). This
    process runs a ``Recorder`` core (no Tango; ``durable=False``) armed on that endpoint,
    writing into a temporary directory on the same disk (removed at the end), while a
    thread samples this process's resident memory (``psutil``) and the Recorder's
    ``frames_written`` every 0.1 s.

    ``baseline_rss_mb``: RSS when the series starts (armed, just before the go);
    ``peak_rss_mb``: the highest sample; ``growth_mb`` = peak - baseline.
    ``bound_mb``: the memory the design allows frames to pin while they wait,
    ``min(queue_frames * frame_bytes, queue_megabytes) + batch * frame_bytes + zmq_rcvhwm *
    frame_bytes``: the Recorder's queue (``queue_frames``, default 256 messages, and
    ``queue_megabytes``, default 512 MB, whichever is reached first; the batch its writer holds
    counts in it), the batch its receiving thread decodes while it waits for room (at most
    ``BATCH_MESSAGES``, 64, and half the queue), plus ZeroMQ's receive high-water mark (as
    many messages as fit in 64 MB, at least 16: ``receive_high_water_mark`` in
    ``photonflow/stream/transport.py``; 488 of these frames). This
    process is set up as the Recorder's server sets up its own (``photonflow.allocator``).
    ``ratio`` = growth / bound; ``met`` when ratio <= 1.2 and nothing is lost or missing
    (the Recorder's counters and the file's ``/entry/accounting`` both checked).

    Flat or linear: ``growth_at_25/50/100pct_mb`` is the RSS growth by the time 25, 50 and
    100 % of the frames were written (the highest sample up to then), and
    ``slope_bytes_per_frame`` a least-squares fit of RSS against frames written between 25 %
    and 100 % of the series. A bounded queue gives a plateau within the first second; a
    per-frame leak gives growth proportional to the frame count (``rss_flat``: what grew from
    25 % to 100 % is at most a tenth of the bound). ``mean_queue_depth`` (the Recorder's
    ``queue_depth`` between 10 % and 90 % of the series) shows whether the queue was full, i.e.
    whether the bound was actually reached. ``bookkeeping_mb`` estimates
    what the Recorder keeps per frame by design (a one-byte map of accepted frame numbers, and
    the ``receive_time``/``timestamp`` arrays, 8 + 8 bytes per frame) at the end of the series.

How to read it
    One JSON line for the case, then a summary line. MB are 10**6 bytes. A single run: the
    point is the shape of the memory curve over a long series, not a best time.

Run:  .venv/bin/python benchmarks/soak.py [--frames 100000] [--dir PARENT]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import psutil

from photonflow import states
from photonflow.allocator import reuse_frame_buffers
from photonflow.recording.config import DEFAULT_QUEUE_FRAMES, DEFAULT_QUEUE_MEGABYTES, RecorderConfig
from photonflow.recording.intake import BATCH_MESSAGES
from photonflow.recording.recorder import Recorder, RecordingRequest
from photonflow.simulators.diffraction import DiffractionFrames, PatternSettings
from photonflow.stream.stins import StinsEncoder
from photonflow.stream.transport import StreamSender, receive_high_water_mark

SHAPE = (256, 256)
DTYPE = "uint16"
DISTINCT_FRAMES = 16
SAMPLE_INTERVAL = 0.1
BOUND_TOLERANCE = 1.2
SERIES_ID = 4242
DETECTOR = {"name": "soak", "model": "DiffractionFrames", "description": "simulated diffraction frames"}
MB = 1e6


# ---------------------------------------------------------------------------- producer


def producer_main(conn, shape: tuple[int, int], dtype: str, count: int) -> None:
    """Make the frames, bind, report the endpoint, wait for "go", send the series, report its time."""
    generator = DiffractionFrames(PatternSettings(height=shape[0], width=shape[1], dtype=dtype))
    frames = [generator.frame(n) for n in range(DISTINCT_FRAMES)]
    sender = StreamSender("tcp://127.0.0.1:*")
    try:
        conn.send(("bound", sender.endpoint))
        if conn.recv() != "go":
            return
        start = time.perf_counter()
        encoder = StinsEncoder()
        sender.send(encoder.series_start(SERIES_ID, count, shape, dtype, DETECTOR))
        for n in range(count):
            sender.send(encoder.data(SERIES_ID, n, frames[n % DISTINCT_FRAMES], time.time()))
        sender.send(encoder.series_end(SERIES_ID, count, count))
        conn.send(("sent", time.perf_counter() - start))
        conn.recv()  # keep the socket open until told (LINGER would also do, but be explicit)
    finally:
        sender.close()


# ---------------------------------------------------------------------------- memory sampling


class RssSampler:
    """(seconds, rss bytes, frames written, queue depth) every ``interval`` s, in a thread."""

    def __init__(self, recorder: Recorder, interval: float = SAMPLE_INTERVAL):
        self._process = psutil.Process()
        self._recorder = recorder
        self._interval = interval
        self._stop = threading.Event()
        self.samples: list[tuple[float, int, int, int]] = []
        self._start = time.perf_counter()
        self.sample()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()

    def sample(self) -> None:
        self.samples.append(
            (
                time.perf_counter() - self._start,
                self._process.memory_info().rss,
                self._recorder.counters.frames_written,
                self._recorder.counters.queue_depth,  # as of the Recorder's last counter notification
            )
        )

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.sample()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


def growth_by_fraction(samples: np.ndarray, baseline: int, frames: int, fraction: float) -> float:
    """The highest RSS growth seen until ``fraction`` of the frames were written."""
    reached = np.nonzero(samples[:, 2] >= fraction * frames)[0]
    upto = reached[0] + 1 if reached.size else len(samples)
    return float(samples[:upto, 1].max() - baseline)


def slope_bytes_per_frame(samples: np.ndarray, frames: int, low: float = 0.25) -> float:
    """Least-squares slope of RSS against frames written, over [low, 100 %] of the series."""
    window = samples[(samples[:, 2] >= low * frames) & (samples[:, 2] <= frames)]
    if len(window) < 3 or np.ptp(window[:, 2]) == 0:
        return float("nan")
    slope, _ = np.polyfit(window[:, 2].astype(float), window[:, 1].astype(float), 1)
    return float(slope)


def bookkeeping_bytes(frames: int, recorder: Recorder | None = None) -> dict:
    """What the Recorder keeps per frame by design, at the end of a series of ``frames``.

    The map of accepted frame numbers (``Series.accepted``: one byte per frame, grown by
    doubling) and the per-frame ``receive_time``/``timestamp`` float64 arrays of the writer
    (8 + 8 bytes per frame of capacity, also grown by doubling, so briefly held twice).
    Measured on the Recorder's own objects when they can be reached, else estimated alike.
    """
    series = getattr(recorder, "_series", None) if recorder is not None else None
    accepted = getattr(series, "accepted", None)
    map_bytes = accepted.nbytes if accepted is not None else 1 << max(10, (frames - 1).bit_length())
    capacity = 1 << max(6, (frames - 1).bit_length())
    arrays_bytes = 2 * 8 * capacity
    return {"set_bytes": map_bytes, "arrays_bytes": arrays_bytes, "grow_transient_bytes": arrays_bytes}


# ---------------------------------------------------------------------------- checks


def check(recorder: Recorder, path: Path, frames: int) -> dict:
    c = recorder.counters
    with h5py.File(path, "r") as f:
        accounting = f["entry/accounting"]
        receive = accounting["receive_time"][()]
        in_file = {name: int(accounting[name][()]) for name in
                   ("frames_received", "frames_written", "missing_frames", "frames_lost", "duplicate_frames",
                    "messages_rejected")}
        in_file["end_reason"] = accounting["end_reason"][()].decode()
        in_file["missing_frame_numbers"] = int(accounting["missing_frame_numbers"].shape[0])
        in_file["receive_times"] = int(np.count_nonzero(~np.isnan(receive)))
        data_shape = f["entry/data/data"].shape
    problems = []
    if recorder.state != states.ON:
        problems.append(f"state {recorder.state}: {recorder.status}")
    if (c.frames_received, c.frames_written) != (frames, frames):
        problems.append(f"received {c.frames_received}, written {c.frames_written}, expected {frames}")
    if c.missing_frames or c.frames_lost or c.duplicate_frames or c.messages_rejected:
        problems.append(f"missing {c.missing_frames}, lost {c.frames_lost}, duplicate {c.duplicate_frames}, "
                        f"rejected {c.messages_rejected}")
    expected_file = {"frames_received": frames, "frames_written": frames, "missing_frames": 0, "frames_lost": 0,
                     "duplicate_frames": 0, "messages_rejected": 0, "end_reason": "completed",
                     "missing_frame_numbers": 0, "receive_times": frames}
    if in_file != expected_file:
        problems.append(f"file accounting {in_file}")
    if data_shape != (frames, *SHAPE):
        problems.append(f"dataset shape {data_shape}")
    span = float(np.nanmax(receive) - np.nanmin(receive))
    return {"problems": problems, "receive_span_s": span, "file_accounting": in_file}


# ---------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=100_000, help="frames in the series (default 100000)")
    parser.add_argument("--queue-frames", type=int, default=DEFAULT_QUEUE_FRAMES,
                        help=f"the Recorder's queue_frames (default {DEFAULT_QUEUE_FRAMES})")
    parser.add_argument("--dir", type=Path, default=None, help="parent of the temporary data directory")
    parser.add_argument("--samples", type=Path, default=None,
                        help="also write the samples (seconds, rss bytes, frames written, queue depth) "
                        "to this JSON file")
    parser.add_argument("--timeout", type=float, default=600, help="give up after this many seconds")
    args = parser.parse_args(argv)
    if args.frames < 8 or args.queue_frames < 1:
        parser.error("--frames must be >= 8, --queue-frames >= 1")
    return args


def emit(line: dict) -> None:
    print(json.dumps(line), flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    reuse_frame_buffers()  # this process hosts the Recorder: set it up as PhotonflowRecorder does
    frames = args.frames
    frame_bytes = SHAPE[0] * SHAPE[1] * np.dtype(DTYPE).itemsize
    directory = Path(tempfile.mkdtemp(prefix="soak_", dir=args.dir))
    context = multiprocessing.get_context("spawn")
    conn, child_conn = context.Pipe()
    producer = context.Process(target=producer_main, args=(child_conn, SHAPE, DTYPE, frames), name="soak-producer")
    producer.start()
    child_conn.close()
    try:
        if not conn.poll(120):
            raise RuntimeError("the producer did not bind within 120 s")
        kind, endpoint = conn.recv()
        recorder = Recorder(RecorderConfig(directory, durable=False, queue_frames=args.queue_frames))
        path = recorder.arm(RecordingRequest(frames, SERIES_ID, endpoint, "soak.h5"))
        time.sleep(0.3)  # connected and settled: the baseline is the armed, idle Recorder
        sampler = RssSampler(recorder)
        baseline = sampler.samples[0][1]
        start = time.perf_counter()
        conn.send("go")
        finished = recorder.wait(args.timeout)
        seconds = time.perf_counter() - start
        sampler.stop()
        if not finished:
            recorder.abort()
            raise RuntimeError(f"the Recorder did not finish {frames} frames within {args.timeout} s")
        if not conn.poll(30):
            raise RuntimeError("the producer did not report the series sent")
        conn.recv()
        outcome = check(recorder, path, frames)

        samples = np.array(sampler.samples, dtype=np.float64)  # columns: seconds, rss, frames written, queue
        if args.samples is not None:
            args.samples.write_text(json.dumps(sampler.samples))
        peak = int(samples[:, 1].max())
        growth = peak - baseline
        queue_bytes = min(args.queue_frames * frame_bytes, DEFAULT_QUEUE_MEGABYTES * 1_000_000)
        batch_frames = min(BATCH_MESSAGES, max(1, args.queue_frames // 2))
        bound = queue_bytes + (batch_frames + receive_high_water_mark(frame_bytes)) * frame_bytes
        growth_at = {p: growth_by_fraction(samples, baseline, frames, p / 100) for p in (25, 50, 100)}
        slope = slope_bytes_per_frame(samples, frames)
        bookkeeping = bookkeeping_bytes(frames, recorder)
        bookkeeping_total = bookkeeping["set_bytes"] + bookkeeping["arrays_bytes"]
        frames_per_s = (frames - 1) / outcome["receive_span_s"]
        # Flat: what grew between 25 % and 100 % of the series is small against the bound.
        late_growth = growth_at[100] - growth_at[25]
        flat = late_growth <= 0.1 * bound
        ratio = growth / bound
        middle = samples[(samples[:, 2] >= 0.1 * frames) & (samples[:, 2] <= 0.9 * frames)]
        c = recorder.counters
        met = ratio <= BOUND_TOLERANCE and not outcome["problems"]
        line = {
            "case": f"soak_{SHAPE[0]}x{SHAPE[1]}_{DTYPE}",
            "frames": frames,
            "frame_shape": list(SHAPE),
            "dtype": DTYPE,
            "frame_bytes": frame_bytes,
            "frames_per_s": round(frames_per_s, 1),
            "gb_per_s": round(frames_per_s * frame_bytes / 1e9, 3),
            "seconds": round(seconds, 2),
            "baseline_rss_mb": round(baseline / MB, 1),
            "peak_rss_mb": round(peak / MB, 1),
            "final_rss_mb": round(int(samples[-1, 1]) / MB, 1),
            "growth_mb": round(growth / MB, 1),
            "bound_mb": round(bound / MB, 1),
            "bound": f"min({args.queue_frames} x {frame_bytes} B, {DEFAULT_QUEUE_MEGABYTES} MB) queue"
                     f" + {batch_frames} being queued x {frame_bytes} B"
                     f" + {receive_high_water_mark(frame_bytes)} zmq rcvhwm x {frame_bytes} B",
            "ratio": round(ratio, 3),
            "growth_at_25pct_mb": round(growth_at[25] / MB, 1),
            "growth_at_50pct_mb": round(growth_at[50] / MB, 1),
            "growth_at_100pct_mb": round(growth_at[100] / MB, 1),
            "growth_25_to_100pct_mb": round(late_growth / MB, 1),
            "growth_by_10pct_mb": [
                round(growth_by_fraction(samples, baseline, frames, p / 100) / MB, 1) for p in range(10, 101, 10)
            ],
            "slope_bytes_per_frame": round(slope, 1),
            "rss_flat": flat,
            "mean_queue_depth": round(float(middle[:, 3].mean()), 1) if len(middle) else None,
            "queue_frames": args.queue_frames,
            "bookkeeping_mb": round(bookkeeping_total / MB, 2),
            "bookkeeping_accepted_map_mb": round(bookkeeping["set_bytes"] / MB, 2),
            "bookkeeping_arrays_mb": round(bookkeeping["arrays_bytes"] / MB, 2),
            "bookkeeping_share_of_growth": round(bookkeeping_total / growth, 3) if growth > 0 else None,
            "bookkeeping_bytes_per_frame": round(bookkeeping_total / frames, 1),
            "frames_received": c.frames_received,
            "frames_written": c.frames_written,
            "missing_frames": c.missing_frames,
            "frames_lost": c.frames_lost,
            "messages_rejected": c.messages_rejected,
            "state": recorder.state,
            "file_accounting": outcome["file_accounting"],
            "samples": len(samples),
            "met": met,
        }
        if outcome["problems"]:
            line["problems"] = outcome["problems"]
        emit(line)
        emit({
            "case": "summary",
            "frames": frames,
            "growth_mb": line["growth_mb"],
            "bound_mb": line["bound_mb"],
            "ratio": line["ratio"],
            "target_ratio": BOUND_TOLERANCE,
            "rss_flat": flat,
            "missing_frames": c.missing_frames,
            "frames_lost": c.frames_lost,
            "met": met,
            "directory": str(directory.parent),
            "cpus": os.cpu_count(),
        })
        return 0
    finally:
        try:
            conn.send("quit")
        except OSError:
            pass
        producer.join(10)
        if producer.is_alive():
            producer.terminate()
            producer.join()
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
