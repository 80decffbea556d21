"""Recorder throughput: a STINS stream in, an HDF5/NeXus file out, against a bare h5py loop.

What it measures
    ``recorder_<H>x<W>_uint16``: a producer in another process (multiprocessing, spawn)
    pre-generates 16 distinct simulated diffraction frames, binds a ``StreamSender`` on
    ``tcp://127.0.0.1:*`` and, on a go signal, sends series_start, N data messages (the 16
    frames cycled) and series_end with the STINS encoder. This process has armed a
    ``Recorder`` on that endpoint; the clock runs from the go until ``Recorder.wait()``
    returns, i.e. until the recorder's thread has closed the file. Outside the clock the
    run is checked: all N frames written, none missing, none rejected, and a few frames
    read back from the file equal the bytes that were sent.

    ``bare_h5py_<H>x<W>_uint16``: the same N frames (the same bytes, from memory) written by
    a plain loop: ``h5py.File``, ``create_dataset`` with chunks (1, H, W),
    ``dset.id.write_direct_chunk`` per frame, close. This is the ceiling for "frames into
    an HDF5 file" on this machine and file system.

    Each shape runs twice. The headline cases (no suffix) time until the file is *on
    disk*: the Recorder fsyncs every file it closes (a series it reports written survives
    a power cut), and the bare loop fsyncs too. The ``_page_cache`` cases skip the fsync
    on both sides and time until the data is in the page cache only; on this 2-core VM
    that shows the CPU cost of the two loopback TCP copies the stream adds, which the
    bare loop does not pay (the producer shares the two cores with the Recorder).

How to read it
    One JSON line per case. ``seconds`` is the best (minimum) of ``--repeats`` timed runs
    (``statistic`` says so; ``runs_seconds`` lists them all), after one untimed warm-up run
    per case. ``ratio`` is the recorder's frames per second over the bare loop's for the
    same frame shape (1.0 for the bare loop itself): 1.0 means streaming and bookkeeping
    cost nothing on top of the HDF5 writes. The last line is the summary for the
    1065x1030 uint16 frame: ``ratio`` (durable, the target being >= 0.8) and
    ``ratio_page_cache``.

Fairness: all cases write into the same directory (a temporary directory inside
``--dir``, removed at the end) and no case reads a file another case wrote. Cases run
interleaved, their order alternating from one repeat to the next, and each run's file
is deleted just before the next run starts its clock (see ScratchDirectory for why).
Timings on a small VM are noisy (runs 2-4 times slower than usual come and go with the
host's memory management), hence the best of several runs; ``runs_seconds`` shows the
spread. On a 2-core machine the recorder case shares the cores between the producer
(its kernel TCP send), ZeroMQ's receiving I/O thread and the recorder's thread, while
the bare loop has a core to itself: the ratio includes that cost.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from photonflow import states
from photonflow.recording.nexus_writer import make_durable
from photonflow.recording.recorder import Recorder, RecordingRequest
from photonflow.simulators.diffraction import DiffractionFrames, PatternSettings
from photonflow.stream.stins import StinsEncoder
from photonflow.stream.transport import StreamSender

TARGET_RATIO = 0.8
TARGET_SHAPE = (1065, 1030)
SMALL_SHAPE = (256, 256)
DTYPE = "uint16"
DISTINCT_FRAMES = 16
SPOT_CHECKS = 6
RECORD_TIMEOUT_S = 300.0
DETECTOR = {"name": "bench", "model": "DiffractionFrames", "description": "simulated diffraction frames"}


# ---------------------------------------------------------------------------- frames


def make_frames(shape: tuple[int, int], dtype: str, count: int = DISTINCT_FRAMES) -> list[np.ndarray]:
    """``count`` distinct, reproducible frames: the same in the producer and in this process."""
    frames = DiffractionFrames(PatternSettings(height=shape[0], width=shape[1], dtype=dtype))
    return [frames.frame(n) for n in range(count)]


def digest(frames: list[np.ndarray]) -> str:
    """A fingerprint of the frame bytes, to prove both processes hold the same frames."""
    h = hashlib.sha256()
    for frame in frames:
        h.update(frame.tobytes())
    return h.hexdigest()


def frame_label(shape: tuple[int, int], dtype: str) -> str:
    return f"{shape[0]}x{shape[1]}_{dtype}"


# ---------------------------------------------------------------------------- producer


def producer_main(conn, shape: tuple[int, int], dtype: str) -> None:
    """The producer process: make frames once, then serve one series per request.

    Protocol over ``conn``: ("series", count, series_id) -> replies ("bound", endpoint),
    waits for "go", sends the series, replies ("sent", seconds); ("quit",) ends it.
    """
    frames = make_frames(shape, dtype)
    conn.send(("ready", digest(frames)))
    while True:
        request = conn.recv()
        if request[0] == "quit":
            return
        _, count, series_id = request
        sender = StreamSender("tcp://127.0.0.1:*")
        try:
            conn.send(("bound", sender.endpoint))
            if conn.recv() != "go":
                return
            start = time.perf_counter()
            send_series(sender, frames, count, series_id)
            conn.send(("sent", time.perf_counter() - start))
        finally:
            sender.close()


def send_series(sender: StreamSender, frames: list[np.ndarray], count: int, series_id: int) -> None:
    encoder = StinsEncoder()
    shape, dtype = frames[0].shape, frames[0].dtype.name
    sender.send(encoder.series_start(series_id, count, shape, dtype, DETECTOR))
    for n in range(count):
        sender.send(encoder.data(series_id, n, frames[n % len(frames)], time.time()))
    sender.send(encoder.series_end(series_id, count, count))


class Producer:
    """This process's handle on a producer process for one frame shape."""

    def __init__(self, shape: tuple[int, int], dtype: str):
        context = multiprocessing.get_context("spawn")
        self._conn, child_conn = context.Pipe()
        self._process = context.Process(
            target=producer_main, args=(child_conn, shape, dtype), name=f"producer-{frame_label(shape, dtype)}"
        )
        self._process.start()
        child_conn.close()

    def frames_digest(self) -> str:
        """Wait until the producer has made its frames; returns their fingerprint."""
        return self._expect("ready")

    def _expect(self, what: str, timeout: float = RECORD_TIMEOUT_S):
        if not self._conn.poll(timeout):
            raise RuntimeError(f"producer did not answer {what!r} within {timeout} s")
        kind, value = self._conn.recv()
        if kind != what:
            raise RuntimeError(f"producer answered {kind!r}, expected {what!r}")
        return value

    def bind(self, count: int, series_id: int) -> str:
        """Have the producer bind a fresh sender for a series; returns its endpoint."""
        self._conn.send(("series", count, series_id))
        return self._expect("bound")

    def go(self) -> None:
        self._conn.send("go")

    def wait_sent(self) -> float:
        """Wait until the producer has sent the whole series; returns its sending time."""
        return self._expect("sent")

    def close(self) -> None:
        try:
            self._conn.send(("quit",))
        except OSError:
            pass
        self._process.join(10)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join()


# ---------------------------------------------------------------------------- cases


class ScratchDirectory:
    """The temporary directory all cases write into; keeps only the latest run's file.

    A run's file is deleted just before the next run starts its clock rather than right
    after its own run. On a VM that returns freed memory to its host (this one has a
    virtio balloon), writing into pages that have sat free for even half a second can be
    several times slower, so whichever case came after an idle gap would pay for it.
    Freed just in time, the pages are reused warm by either case.
    """

    def __init__(self, parent: Path | None):
        self.directory = Path(tempfile.mkdtemp(prefix="recorder_bench_", dir=parent))
        self._files: list[Path] = []

    def start_run(self, path: Path) -> None:
        """Delete the earlier runs' files; ``path`` is the file of the run about to start."""
        for old in self._files:
            old.unlink(missing_ok=True)
        self._files = [path]

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


def run_recorder(
    producer: Producer, frames: list[np.ndarray], count: int, scratch: ScratchDirectory, series_id: int,
    durable: bool,
) -> float:
    """One timed recorder run: go -> file closed (and on disk if ``durable``). Verifies the file."""
    name = f"recorder_{frame_label(frames[0].shape, frames[0].dtype.name)}_{series_id}.h5"
    recorder = Recorder(scratch.directory, durable=durable)
    endpoint = producer.bind(count, series_id)
    path = recorder.arm(RecordingRequest(count, series_id, endpoint, name))
    scratch.start_run(path)
    start = time.perf_counter()
    producer.go()
    finished = recorder.wait(RECORD_TIMEOUT_S)
    seconds = time.perf_counter() - start
    if not finished:
        recorder.abort()
        raise RuntimeError(f"the recorder did not finish {count} frames within {RECORD_TIMEOUT_S} s")
    producer.wait_sent()
    verify_recording(recorder, path, frames, count)
    return seconds


def verify_recording(recorder: Recorder, path: Path, frames: list[np.ndarray], count: int) -> None:
    """All frames written, none missing or rejected, and sampled frames equal what was sent."""
    c = recorder.counters
    problems = []
    if recorder.state != states.ON:
        problems.append(f"state {recorder.state}: {recorder.status}")
    if (c.frames_received, c.frames_written) != (count, count):
        problems.append(f"received {c.frames_received}, written {c.frames_written}, expected {count}")
    if c.missing_frames or c.duplicate_frames or c.messages_rejected:
        problems.append(
            f"missing {c.missing_frames}, duplicate {c.duplicate_frames}, rejected {c.messages_rejected}"
        )
    with h5py.File(path, "r") as f:
        data = f[f"entry/instrument/{DETECTOR['name']}/data"]
        if data.shape != (count, *frames[0].shape):
            problems.append(f"dataset shape {data.shape}, expected {(count, *frames[0].shape)}")
        for n in spot_check_indices(count):
            if not np.array_equal(data[n], frames[n % len(frames)]):
                problems.append(f"frame {n} in the file differs from the frame sent")
    if problems:
        raise RuntimeError(f"recording {path} is wrong: " + "; ".join(problems))


def spot_check_indices(count: int) -> list[int]:
    rng = np.random.default_rng(count)
    picks = {0, 1, count // 2, count - 1, *rng.integers(0, count, SPOT_CHECKS).tolist()}
    return sorted(n for n in picks if 0 <= n < count)


def run_bare(
    chunks: list[bytes], shape: tuple[int, int], dtype: str, count: int, scratch: ScratchDirectory, run: int,
    durable: bool,
) -> float:
    """One timed bare h5py run: create, write every chunk directly, close (then fsync if ``durable``)."""
    path = scratch.directory / f"bare_{frame_label(shape, dtype)}_{run}.h5"
    scratch.start_run(path)
    start = time.perf_counter()
    with h5py.File(path, "w") as f:
        dset = f.create_dataset("data", shape=(count, *shape), chunks=(1, *shape), dtype=dtype)
        write_chunk = dset.id.write_direct_chunk
        for i in range(count):
            write_chunk((i, 0, 0), chunks[i % len(chunks)])
    if durable:
        make_durable(path)
    return time.perf_counter() - start


# ---------------------------------------------------------------------------- reporting


@dataclass
class CaseResult:
    case: str
    frames: int
    shape: tuple[int, int]
    dtype: str
    runs_seconds: list[float]

    @property
    def seconds(self) -> float:
        return min(self.runs_seconds)

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.seconds

    def line(self, baseline: CaseResult) -> dict:
        frame_bytes = self.shape[0] * self.shape[1] * np.dtype(self.dtype).itemsize
        return {
            "case": self.case,
            "frames": self.frames,
            "frame_shape": list(self.shape),
            "dtype": self.dtype,
            "seconds": round(self.seconds, 4),
            "frames_per_s": round(self.frames_per_s, 1),
            "gb_per_s": round(self.frames * frame_bytes / self.seconds / 1e9, 3),
            "ratio": round(self.frames_per_s / baseline.frames_per_s, 3),
            "statistic": f"best of {len(self.runs_seconds)} (after 1 warm-up)",
            "runs_seconds": [round(s, 4) for s in self.runs_seconds],
        }


def emit(line: dict) -> None:
    print(json.dumps(line), flush=True)


# ---------------------------------------------------------------------------- main


def benchmark_shape(
    shape: tuple[int, int], count: int, repeats: int, scratch: ScratchDirectory, first_series: int, durable: bool
) -> tuple[CaseResult, CaseResult]:
    """Bare and recorder cases for one frame shape, interleaved, alternating their order."""
    producer = Producer(shape, DTYPE)  # makes its frames while this process makes the same
    try:
        frames = make_frames(shape, DTYPE)
        chunks = [frame.tobytes() for frame in frames]
        if producer.frames_digest() != digest(frames):
            raise RuntimeError("the producer's frames differ from this process's frames")
        label = frame_label(shape, DTYPE) + ("" if durable else "_page_cache")
        bare = CaseResult(f"bare_h5py_{label}", count, shape, DTYPE, [])
        recorder = CaseResult(f"recorder_{label}", count, shape, DTYPE, [])
        series_id = first_series
        for run in range(repeats + 1):  # run 0 is the warm-up
            order = ("bare", "recorder") if run % 2 == 0 else ("recorder", "bare")
            for case in order:
                if case == "bare":
                    seconds = run_bare(chunks, shape, DTYPE, count, scratch, run, durable)
                    target = bare
                else:
                    seconds = run_recorder(producer, frames, count, scratch, series_id, durable)
                    series_id += 1
                    target = recorder
                if run > 0:
                    target.runs_seconds.append(seconds)
        return bare, recorder
    finally:
        producer.close()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1000, help="frames per run for 1065x1030 (default 1000)")
    parser.add_argument(
        "--small-frames", type=int, default=10000, help="frames per run for 256x256; 0 skips that case (default 10000)"
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per case, after one warm-up (default 5)")
    parser.add_argument(
        "--dir", type=Path, default=None, help="directory to write into (a temporary directory is made inside it)"
    )
    args = parser.parse_args(argv)
    if args.frames < 1 or args.repeats < 1 or args.small_frames < 0:
        parser.error("--frames and --repeats must be >= 1, --small-frames >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    scratch = ScratchDirectory(args.dir)
    try:
        shapes = [(TARGET_SHAPE, args.frames)]
        if args.small_frames:
            shapes.append((SMALL_SHAPE, args.small_frames))
        ratios = {}
        series = 1000
        for shape, count in shapes:
            for durable in (True, False):
                bare, recorder = benchmark_shape(shape, count, args.repeats, scratch, series, durable)
                series += 1000
                emit(bare.line(bare))
                emit(recorder.line(bare))
                if shape == TARGET_SHAPE:
                    ratios[durable] = recorder.frames_per_s / bare.frames_per_s
        emit(
            {
                "case": "summary",
                "frame_shape": list(TARGET_SHAPE),
                "dtype": DTYPE,
                "ratio": round(ratios[True], 3),
                "ratio_page_cache": round(ratios[False], 3),
                "target_ratio": TARGET_RATIO,
                "met": ratios[True] >= TARGET_RATIO,
                "statistic": f"best of {args.repeats} (after 1 warm-up)",
                "directory": str(scratch.directory.parent),
                "cpus": os.cpu_count(),
            }
        )
    finally:
        scratch.remove()
    return 0


if __name__ == "__main__":
    sys.exit(main())
