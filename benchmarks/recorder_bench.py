"""Recorder throughput: a STINS stream in, an HDF5/NeXus file out, against bare loops doing the least.

What it measures
    A list of cases (``make_cases``), each a frame shape and pixel type, a stream encoding
    (``raw`` or ``bslz4``), a number of frames per run, durable (fsync) or not, per-frame
    values or not, and the ratio it must reach. Every case has three sides, the Recorder
    and two bare loops; every ratio is against ``bare_stream``, the same stream taken by the
    least code that can write it:

    ``recorder_<case>``: a producer in another process (multiprocessing, spawn) makes 16
    distinct simulated diffraction frames, and for ``bslz4`` compresses each of them once
    with ``photonflow.stream.bslz4.compress`` (all outside the clock). For every run it
    binds a ``StreamSender`` on ``tcp://127.0.0.1:*`` and, on a go signal, sends
    series_start, N data messages (the 16 payloads cycled; bslz4 ones as STINS
    ``encoding="bslz4"`` payloads, the bytes as they are) and series_end. This process has
    armed a ``Recorder`` (``photonflow.recording.recorder``) on that endpoint; the clock
    runs from the go until ``Recorder.wait()`` returns, i.e. until the recorder's thread
    has closed the file (and fsynced it, for durable cases); the producer keeps its sender
    open until then (see ``producer_main``). A bslz4 series is written as
    it comes, no recompression: the Recorder creates its dataset with the bitshuffle
    filter and writes each payload as a chunk.

    ``bare_stream_<case>``: the same producer and series as the Recorder's, received in this
    process by a plain ZeroMQ PULL socket and a loop that decodes each header (``json.loads``;
    the CBOR map for DECTRIS stream v2, with photonflow's CBOR reader) and writes the chunk
    with ``write_direct_chunk`` where the frame number says, into a dataset of the series'
    final size; per-frame values are kept in memory and written once at the end; closed, then
    fsynced for durable cases. No checks, no accounting, no second thread: the floor any
    receiver of this stream pays on this machine, and what the issue-21 targets compare with.

    ``bare_h5py_<case>``: the same N payloads (the same bytes, from memory) written by a
    plain loop: ``h5py.File``, ``create_dataset`` with chunks (1, H, W) (for bslz4 with
    ``compression=hdf5plugin.Bitshuffle(nelems=0, cname="lz4")``),
    ``dset.id.write_direct_chunk`` per frame, close, then fsync for durable cases. This is
    the ceiling for "these chunks into an HDF5 file" on this machine and file system, with no
    stream at all: ``ratio_to_memory_loop`` says how far the stream (its loopback TCP copies,
    on the same two cores as the writer) is from it.

    Durable cases (no suffix) time until the file is *on disk*: the Recorder fsyncs every
    file it closes (a series it reports written survives a power cut), and the bare loops
    fsync too. The Recorder also starts the disk writing while frames still come
    (``photonflow/recording/writeback.py``), so its closing fsync has little left, where
    a bare loop writes everything and then waits for the disk: that overlap is why a
    durable ratio can exceed 1. ``_page_cache`` skips the fsync (and the writeback) on every
    side and times until the data is in the page cache only: the Recorder's CPU per frame
    against the bare stream loop's, nothing else.

    This process hosts the Recorder, so ``main`` sets it up as the ``PhotonflowRecorder``
    server sets up its own (``photonflow.allocator.reuse_frame_buffers``: received frame
    buffers are reused rather than faulted in afresh), and the Recorder has the live preview
    every server has (``LivePreview``, 5 images a second). The server's other sinks (the
    blissdata publisher, the fan-out) need a Redis and consumers: ``make bench-pipeline``
    runs them.

    The cases: ``1065x1030_uint16`` (raw, durable), ``1065x1030_uint16_page_cache``
    (informational), ``2162x2068_uint32`` (raw, durable: Eiger 4M geometry, 17.9 MB frames,
    150 per run = 2.7 GB), ``1065x1030_uint16_bslz4`` (durable; ~0.4 MB chunks, ~5.5x
    smaller than the frame), ``1062x1028_uint16_bslz4_dectris_v2`` (durable: EIGER2 1M
    geometry, the producer speaks a DCU's stream v2 (CBOR start/image/end, each chunk under
    tag 56500, encoded with ``photonflow.stream.dectris`` as the simulated DCU does) and the
    Recorder reads it with protocol ``dectris-v2``), ``256x256_uint16`` (raw, durable: the
    per-frame cost, with 10000 small frames), page-cache twins of the bslz4 and 256x256 cases
    (where the per-frame cost shows undiluted by the disk), and ``256x256_uint16_10_scalars``
    (every frame carries 10 per-frame values in its STINS ``metadata``, which the Recorder
    writes under ``<detector>/frame_metadata`` and the bare loops write once at the end).

    Every run is checked outside the clock: the Recorder wrote all N frames, none missing,
    duplicated or rejected, state ON; both files hold (N, H, W); sampled frames read back
    through h5py (hdf5plugin loaded, so bslz4 chunks are decompressed by the HDF5 filter)
    equal the original uncompressed frames; for bslz4 the on-disk chunk
    (``dset.id.read_direct_chunk``) is byte for byte the payload that was sent.

How to read it
    One JSON line per side and case. ``seconds`` is the best (minimum) of the timed runs
    (``statistic`` says how many, after one untimed warm-up run per side), ``runs_seconds``
    lists them all. The 2162x2068 case has its own count, ``--big-repeats`` (each of its
    runs writes 2.7 GB), to cut if the bench must be shorter; with the defaults the whole
    bench takes ~4 minutes here. ``ratio`` is a side's frames per second over the bare
    stream loop's for the same case (1.0 for that loop itself): 1.0 means the Recorder's
    checks, accounting and threads cost nothing on top of receiving and writing. ``median_seconds`` and
    ``ratio_median`` (the bare median over the recorder's) show how far the typical run is
    from the best one; the targets are judged on ``ratio``. ``gb_per_s`` counts the bytes
    written (the compressed chunks for bslz4), ``uncompressed_gb_per_s`` the frames they
    hold. ``cpu_seconds`` is the CPU time (user + system, from ``/proc``) of the best run:
    for the recorder side split into the producer process (its Python send loop and its
    ZeroMQ I/O thread) and this process (ZeroMQ's receiving I/O thread, and the rest: the
    Recorder's receive and write threads, or the bare stream loop), for the memory loop the
    loop's (``bare_loop``);
    ``cpu_cores`` is the total over ``seconds``. The kernel's writeback threads are in
    neither.
    ``target_ratio`` is the ratio the case must reach (null: informational) and ``met``
    whether it did (null without a target); ``targets`` names the issue behind each target.

    The targets: issue 2 asked ratio >= 0.8 for 1065x1030 uint16 (durable); issue 3 asks
    >= 0.9 for 1065x1030 uint16 raw, 2162x2068 uint32 raw and 1065x1030 uint16 bslz4 (all
    durable); issue 4 >= 0.9 for the DECTRIS stream v2 bslz4 path; issue 21 >= 0.95 for every
    case, durable and page cache, and >= 0.9 with 10 per-frame values. (Issues 2-4 judged the
    ratio against the memory loop; since issue 21 every ratio is against the bare stream
    loop.) The last line is the summary: every target with its case, ratio and ``met``, then
    ``all_met``, and the informational ratios.

Fairness: all cases write into the same directory (a temporary directory inside
``--dir``, removed at the end) and no case reads a file another case wrote. The three sides
of a case run interleaved, their order rotating from one repeat to the next, and each
run's file is deleted just before the next run starts its clock (see ScratchDirectory for
why). Timings on a small VM are noisy (runs 2-4 times slower than usual come and go with
the host's memory management, and other processes may share the cores), hence the best of
several runs; ``runs_seconds`` shows the spread. On a 2-core machine the stream sides
share the cores between the producer (its kernel TCP send), ZeroMQ's receiving I/O thread
and the receiver's threads, while the memory loop has a core to itself. That cost is not
small: when this was written, the stream alone (the same producer
into a receive-and-decode loop, nothing written) took ~0.5 s for the 2.2 GB of the
1065x1030 case and ~0.65 s for the 2.7 GB of the 2162x2068 case, as long as or longer
than the bare loop's page-cache writes of the same bytes (~0.45 s and ~0.55 s), and
~0.6-1.0 CPU-seconds on the two cores the writer needs too. A producer on another host
(as in production) would leave only the receiving half of that cost here.

Run:  .venv/bin/python benchmarks/recorder_bench.py [--repeats 5] [--cases NAME ...]
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
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np
import zmq

from photonflow import states
from photonflow.allocator import reuse_frame_buffers
from photonflow.recording.config import RecorderConfig
from photonflow.recording.nexus_writer import make_durable
from photonflow.recording.recorder import Recorder, RecordingRequest
from photonflow.recording.sinks import LivePreview
from photonflow.simulators.diffraction import DiffractionFrames, PatternSettings
from photonflow.stream import bslz4, dectris
from photonflow.stream.cbor import Tag, cbor_loads
from photonflow.stream.stins import StinsEncoder
from photonflow.stream.transport import StreamSender

DISTINCT_FRAMES = 16
SPOT_CHECKS = 6
RECORD_TIMEOUT_S = 120.0
DETECTOR = {"name": "bench", "model": "DiffractionFrames", "description": "simulated diffraction frames"}
DATA_PATH = "entry/data/data"  # the NXdata link to the detector's frames, whatever the detector's name
RAW, BSLZ4 = "raw", "bslz4"
SCALARS = 10  # per-frame values of the scalar case (issue 21)
STINS, DECTRIS_V2 = "stins", "dectris-v2"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------------- cases


@dataclass(frozen=True)
class Target:
    ratio: float
    issue: int


@dataclass(frozen=True)
class Case:
    """One benchmark case: what is streamed and written, how often, and what it must reach."""

    shape: tuple[int, int]
    dtype: str
    encoding: str  # RAW or BSLZ4: how the producer sends the frames (and the file stores them)
    frames: int  # per run
    durable: bool  # fsync the file before the clock stops
    targets: tuple[Target, ...] = ()  # empty: informational
    repeats: int = 0  # timed runs; 0: --repeats
    protocol: str = STINS  # the stream's message format: STINS, or DECTRIS_V2 (a DCU's)
    scalars: int = 0  # per-frame values each data message carries (STINS ``metadata``)

    @property
    def name(self) -> str:
        suffix = ("_bslz4" if self.encoding == BSLZ4 else "") + ("_dectris_v2" if self.protocol == DECTRIS_V2 else "")
        suffix += f"_{self.scalars}_scalars" if self.scalars else ""
        return frame_label(self.shape, self.dtype) + suffix + ("" if self.durable else "_page_cache")

    @property
    def scalar_names(self) -> tuple[str, ...]:
        return scalar_names(self.scalars)

    @property
    def frame_key(self) -> tuple:
        """What the producer makes: cases with the same key share a producer and frames."""
        return (self.shape, self.dtype, self.encoding)

    @property
    def target_ratio(self) -> float | None:
        """The strictest target, the one ``met`` is about."""
        return max((t.ratio for t in self.targets), default=None)


def frame_label(shape: tuple[int, int], dtype: str) -> str:
    return f"{shape[0]}x{shape[1]}_{dtype}"


def scalar_names(count: int) -> tuple[str, ...]:
    return tuple(f"value_{k}" for k in range(count))


def scalar_values(frame_number: int, names: tuple[str, ...]) -> dict[str, float]:
    """The per-frame values frame ``frame_number`` carries: distinct, exact in float64, checkable."""
    return {name: frame_number + k / 16 for k, name in enumerate(names)}


def series_values(case: Case) -> dict[str, np.ndarray]:
    """Every frame's per-frame values of a series of ``case``, by name (what the files must hold)."""
    frames = np.arange(case.frames, dtype=np.float64)
    return {name: frames + k / 16 for k, name in enumerate(case.scalar_names)}


def make_cases(args: argparse.Namespace) -> list[Case]:
    detector_1m, eiger_1m, eiger_4m, small = (1065, 1030), (1062, 1028), (2162, 2068), (256, 256)
    every_case = Target(0.95, 21)  # issue 21: the bare stream loop's speed, whatever the frames
    cases = [
        Case(detector_1m, "uint16", RAW, args.frames, True, (Target(0.8, 2), Target(0.9, 3), every_case)),
        Case(detector_1m, "uint16", RAW, args.frames, False, (every_case,)),
        Case(eiger_4m, "uint32", RAW, args.big_frames, True, (Target(0.9, 3), every_case), repeats=args.big_repeats),
        Case(detector_1m, "uint16", BSLZ4, args.bslz4_frames, True, (Target(0.9, 3), every_case)),
        Case(detector_1m, "uint16", BSLZ4, args.bslz4_frames, False, (every_case,)),
        Case(eiger_1m, "uint16", BSLZ4, args.bslz4_frames, True, (Target(0.9, 4), every_case), protocol=DECTRIS_V2),
        Case(small, "uint16", RAW, args.small_frames, True, (every_case,)),
        Case(small, "uint16", RAW, args.small_frames, False, (every_case,)),
        Case(small, "uint16", RAW, args.small_frames, True, (Target(0.9, 21),), scalars=SCALARS),
    ]
    cases = [case for case in cases if case.frames > 0]
    if args.cases:
        unknown = set(args.cases) - {case.name for case in cases}
        if unknown:
            raise SystemExit(f"unknown case(s) {', '.join(sorted(unknown))}; known: {', '.join(c.name for c in cases)}")
        cases = [case for case in cases if case.name in args.cases]
    return cases


# ---------------------------------------------------------------------------- frames


def make_frames(shape: tuple[int, int], dtype: str, count: int = DISTINCT_FRAMES) -> list[np.ndarray]:
    """``count`` distinct, reproducible frames: the same in the producer and in this process."""
    frames = DiffractionFrames(PatternSettings(height=shape[0], width=shape[1], dtype=dtype))
    return [frames.frame(n) for n in range(count)]


def make_payloads(frames: list[np.ndarray], encoding: str) -> list:
    """What goes on the wire and into the chunks: the frames themselves, or their bslz4 chunks."""
    if encoding == BSLZ4:
        return [bslz4.compress(frame) for frame in frames]
    return frames


def digest(payloads: list) -> str:
    """A fingerprint of the payload bytes, to prove both processes hold the same payloads."""
    h = hashlib.sha256()
    for payload in payloads:
        h.update(memoryview(payload).cast("B"))
    return h.hexdigest()


# ---------------------------------------------------------------------------- producer


def producer_main(conn, shape: tuple[int, int], dtype: str, encoding: str) -> None:
    """The producer process: make (and compress) the frames once, then serve one series per request.

    Protocol over ``conn``: ("series", count, series_id, protocol, scalars) -> replies ("bound", endpoint),
    waits for "go", sends the series, replies ("sent", seconds), then keeps the sender open
    until "release"; ("quit",) ends it.

    "sent" only means every message is in ZeroMQ's send queue (up to the high-water mark,
    256 messages: 4.6 GB of 2162x2068 uint32 frames), not that the Recorder has it. Closing
    the socket then would leave ZeroMQ 2 s (``StreamSender``'s linger) to deliver the rest
    and drop what the Recorder has not taken by then: the series would never end. So the
    sender stays open until this process says the Recorder is done.

    A DECTRIS stream v2 series is encoded whole before the go, outside the clock, as the
    payloads are compressed once: a DCU has its messages ready in hardware, and encoding
    copies each chunk into its CBOR message, CPU this 2-core machine would otherwise take
    from the Recorder on behalf of the detector.
    """
    reuse_frame_buffers()
    payloads = make_payloads(make_frames(shape, dtype), encoding)
    conn.send(("ready", digest(payloads)))
    while True:
        request = conn.recv()
        if request[0] == "quit":
            return
        _, count, series_id, protocol, scalars = request
        sender = StreamSender("tcp://127.0.0.1:*")
        try:
            if protocol == DECTRIS_V2:
                messages = dectris_v2_series(payloads, shape, dtype, encoding, count, series_id)
            conn.send(("bound", sender.endpoint))
            if conn.recv() != "go":
                return
            start = time.perf_counter()
            if protocol == DECTRIS_V2:
                for message in messages:
                    sender.send(message)
                del messages
            else:
                send_series(sender, payloads, shape, dtype, encoding, count, series_id, scalar_names(scalars))
            conn.send(("sent", time.perf_counter() - start))
            conn.recv()  # "release": the recorder has finished (or given up)
        finally:
            sender.close()


def send_series(
    sender: StreamSender, payloads: list, shape: tuple[int, int], dtype: str, encoding: str, count: int,
    series_id: int, names: tuple[str, ...] = (),
) -> None:
    """A STINS series; with ``names``, every frame carries those per-frame values."""
    encoder = StinsEncoder()
    sender.send(encoder.series_start(series_id, count, shape, dtype, DETECTOR, encoding=encoding, frame_metadata=names))
    for n in range(count):  # bslz4 payloads are precompressed bytes: the encoder takes them as they are
        metadata = scalar_values(n, names) if names else None
        sender.send(
            encoder.data(series_id, n, payloads[n % len(payloads)], time.time(), encoding, shape, dtype, metadata)
        )
    sender.send(encoder.series_end(series_id, count, count))


def dectris_v2_series(
    payloads: list, shape: tuple[int, int], dtype: str, encoding: str, count: int, series_id: int,
) -> list[list[bytes]]:
    """A series as a DECTRIS DCU sends it on stream v2 (CBOR), the bslz4 chunks as they are."""
    start = dectris.encode_start_v2(series_id, shape, count, {"description": "bench EIGER2"}, image_dtype=dtype)
    images = [dectris.encode_image_v2(series_id, n, payloads[n % len(payloads)], encoding, shape, dtype)
              for n in range(count)]
    return [start, *images, dectris.encode_end_v2(series_id)]


class Producer:
    """This process's handle on a producer process for one kind of frame."""

    def __init__(self, shape: tuple[int, int], dtype: str, encoding: str):
        context = multiprocessing.get_context("spawn")
        self._conn, child_conn = context.Pipe()
        self._process = context.Process(
            target=producer_main, args=(child_conn, shape, dtype, encoding),
            name=f"producer-{frame_label(shape, dtype)}-{encoding}",
        )
        self._process.start()
        child_conn.close()

    @property
    def pid(self) -> int:
        return self._process.pid

    def payloads_digest(self) -> str:
        """Wait until the producer has made its payloads; returns their fingerprint."""
        return self._expect("ready")

    def _expect(self, what: str, timeout: float = RECORD_TIMEOUT_S):
        if not self._conn.poll(timeout):
            raise RuntimeError(f"producer did not answer {what!r} within {timeout} s")
        kind, value = self._conn.recv()
        if kind != what:
            raise RuntimeError(f"producer answered {kind!r}, expected {what!r}")
        return value

    def bind(self, count: int, series_id: int, protocol: str = STINS, scalars: int = 0) -> str:
        """Have the producer bind a fresh sender for a series; returns its endpoint."""
        self._conn.send(("series", count, series_id, protocol, scalars))
        return self._expect("bound")

    def go(self) -> None:
        self._conn.send("go")

    def wait_sent(self) -> float:
        """Wait until the producer has queued the whole series; returns its sending time."""
        return self._expect("sent")

    def release(self) -> None:
        """Let the producer close the series' sender (the Recorder has all it will get)."""
        self._conn.send("release")

    def close(self) -> None:
        try:
            self._conn.send(("quit",))
        except OSError:
            pass
        self._process.join(10)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join()


@dataclass
class FrameSet:
    """One kind of frame, in this process and in its producer process."""

    frames: list[np.ndarray]  # uncompressed, to compare with what the files hold
    payloads: list  # what is sent and written: the frames, or their bslz4 chunks
    chunks: list[bytes]  # the payloads as bytes, for the bare loop and the chunk checks
    producer: Producer


def frame_set(case: Case, cache: dict) -> FrameSet:
    """The frames of ``case`` and a producer serving them; shared by cases that send the same."""
    key = case.frame_key
    if key not in cache:
        producer = Producer(case.shape, case.dtype, case.encoding)  # makes its frames while we make ours
        frames = make_frames(case.shape, case.dtype)
        payloads = make_payloads(frames, case.encoding)
        cache[key] = FrameSet(frames, payloads, [bytes(memoryview(p).cast("B")) for p in payloads], producer)
        if producer.payloads_digest() != digest(payloads):
            raise RuntimeError(f"the producer's {case.name} payloads differ from this process's")
    return cache[key]


# ---------------------------------------------------------------------------- CPU time


def cpu_times(pid: int | str) -> tuple[float, float]:
    """(all threads, ZeroMQ I/O threads) CPU seconds (user + system) of a process so far.

    A process's own stat counts its exited threads too; the ZeroMQ I/O threads live as
    long as the ZeroMQ context, so their per-thread stats span the run.
    """
    def seconds(stat_path: Path) -> float:
        fields = stat_path.read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime

    base = Path(f"/proc/{pid}")
    total = seconds(base / "stat")
    zmq_io = 0.0
    for task in (base / "task").iterdir():
        try:
            if (task / "comm").read_text().startswith("ZMQbg/IO"):
                zmq_io += seconds(task / "stat")
        except OSError:  # the thread ended meanwhile
            pass
    return total, zmq_io


def cpu_delta(before: tuple[float, float], after: tuple[float, float]) -> tuple[float, float]:
    return after[0] - before[0], after[1] - before[1]


# ---------------------------------------------------------------------------- runs


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


@dataclass
class Run:
    seconds: float
    cpu_seconds: dict[str, float]


def run_recorder(case: Case, frames: FrameSet, scratch: ScratchDirectory, series_id: int) -> Run:
    """One timed recorder run: go -> file closed (and on disk if durable). Verifies the file."""
    name = f"recorder_{case.name}_{series_id}.h5"
    # with the live preview every PhotonflowRecorder has (5 Hz, 512x512 at most): its per-frame cost counts
    recorder = Recorder(RecorderConfig(scratch.directory, durable=case.durable), sinks=[LivePreview()])
    endpoint = frames.producer.bind(case.frames, series_id, case.protocol, case.scalars)
    path = recorder.arm(RecordingRequest(case.frames, series_id, endpoint, name, case.protocol))
    scratch.start_run(path)
    ours, theirs = cpu_times("self"), cpu_times(frames.producer.pid)
    start = time.perf_counter()
    frames.producer.go()
    finished = recorder.wait(RECORD_TIMEOUT_S)
    seconds = time.perf_counter() - start
    if not finished:
        recorder.abort()
        raise RuntimeError(f"the recorder did not finish {case.frames} frames within {RECORD_TIMEOUT_S} s")
    cpu = stream_cpu(frames, ours, theirs, "recorder_zmq_io", "recorder_threads")
    verify_recorder(recorder, case)
    verify_file(path, DATA_PATH, case, frames, f"entry/instrument/{DETECTOR['name']}/frame_metadata")
    return Run(seconds, cpu)


def stream_cpu(frames: FrameSet, ours: tuple, theirs: tuple, io_name: str, rest_name: str) -> dict[str, float]:
    """After a stream run: once the producer has sent it all, the CPU seconds both processes
    spent since ``ours``/``theirs``, split into their ZeroMQ I/O threads and the rest; then
    the producer may close its sender."""
    frames.producer.wait_sent()
    ours_total, ours_zmq = cpu_delta(ours, cpu_times("self"))
    theirs_total, theirs_zmq = cpu_delta(theirs, cpu_times(frames.producer.pid))
    frames.producer.release()
    return {
        "producer_python": theirs_total - theirs_zmq,
        "producer_zmq_io": theirs_zmq,
        io_name: ours_zmq,
        rest_name: ours_total - ours_zmq,
    }


def run_bare_stream(case: Case, frames: FrameSet, scratch: ScratchDirectory, series_id: int) -> Run:
    """One timed bare stream run: the same producer and series as the Recorder's, taken by a
    plain PULL socket in a loop that writes each chunk where its frame number says."""
    path = scratch.directory / f"bare_stream_{case.name}_{series_id}.h5"
    endpoint = frames.producer.bind(case.frames, series_id, case.protocol, case.scalars)
    socket = zmq.Context.instance().socket(zmq.PULL)
    socket.setsockopt(zmq.RCVTIMEO, int(RECORD_TIMEOUT_S * 1000))
    socket.setsockopt(zmq.LINGER, 0)
    socket.connect(endpoint)
    scratch.start_run(path)
    ours, theirs = cpu_times("self"), cpu_times(frames.producer.pid)
    try:
        start = time.perf_counter()
        frames.producer.go()
        receive_series(socket, path, case)
        if case.durable:
            make_durable(path)
        seconds = time.perf_counter() - start
    finally:
        socket.close()
    cpu = stream_cpu(frames, ours, theirs, "receiver_zmq_io", "bare_loop")
    verify_file(path, "data", case, frames, "frame_metadata")
    return Run(seconds, cpu)


def receive_series(socket: zmq.Socket, path: Path, case: Case) -> None:
    """The bare receiving loop: a message, its header decoded, its chunk written, until the end.

    No checks, no accounting, no queue between threads: the least any receiver must do to
    put the stream's frames in their places. Per-frame values are kept in memory and written
    once, at the end (the cheapest way there is). Raises zmq.Again if the stream stalls.
    """
    filters = hdf5plugin.Bitshuffle(nelems=0, cname="lz4") if case.encoding == BSLZ4 else {}
    decode = bare_dectris_v2 if case.protocol == DECTRIS_V2 else bare_stins
    values = {name: np.full(case.frames, np.nan) for name in case.scalar_names}
    with h5py.File(path, "w") as f:
        dset = f.create_dataset(
            "data", shape=(case.frames, *case.shape), chunks=(1, *case.shape), dtype=case.dtype, **filters
        )
        write_chunk = dset.id.write_direct_chunk
        while True:
            kind, number, payload, metadata = decode(socket.recv_multipart(copy=False))
            if kind == "data":
                write_chunk((number, 0, 0), payload)
                if metadata:
                    for name, value in metadata.items():
                        values[name][number] = value
            elif kind == "end":
                break
        for name, array in values.items():
            f[f"frame_metadata/{name}"] = array


def bare_stins(parts: list) -> tuple[str, int, memoryview | None, dict | None]:
    """(kind, frame number, payload, per-frame values) of a STINS message: its JSON header, no checks."""
    header = json.loads(parts[0].bytes)
    kind = header["message_type"]
    if kind == "data":
        return "data", header["frame_number"], parts[1].buffer, header.get("metadata")
    return ("end" if kind == "series_end" else "start"), -1, None, None


def bare_dectris_v2(parts: list) -> tuple[str, int, memoryview | None, dict | None]:
    """The same of a DECTRIS stream v2 message: its CBOR map, the chunk inside tag 56500."""
    message = cbor_loads(parts[0])
    message = message.value if isinstance(message, Tag) else message  # self-described CBOR
    kind = message["type"]
    if kind == "image":
        pixels = next(iter(message["data"].values())).value[1]  # 40([[h, w], typed array])
        return "data", message["image_id"], pixels.value.value[2], None  # typed(56500([alg, size, bytes]))
    return kind, -1, None, None


def run_bare(case: Case, frames: FrameSet, scratch: ScratchDirectory, run: int) -> Run:
    """One timed bare h5py run: create, write every chunk directly (and the per-frame values
    at once, from memory), close (then fsync if durable)."""
    path = scratch.directory / f"bare_{case.name}_{run}.h5"
    chunks = frames.chunks
    filters = hdf5plugin.Bitshuffle(nelems=0, cname="lz4") if case.encoding == BSLZ4 else {}
    values = series_values(case)
    scratch.start_run(path)
    before = cpu_times("self")
    start = time.perf_counter()
    with h5py.File(path, "w") as f:
        dset = f.create_dataset(
            "data", shape=(case.frames, *case.shape), chunks=(1, *case.shape), dtype=case.dtype, **filters
        )
        write_chunk = dset.id.write_direct_chunk
        for i in range(case.frames):
            write_chunk((i, 0, 0), chunks[i % len(chunks)])
        for name, array in values.items():
            f[f"frame_metadata/{name}"] = array
    if case.durable:
        make_durable(path)
    seconds = time.perf_counter() - start
    total, _ = cpu_delta(before, cpu_times("self"))
    verify_file(path, "data", case, frames, "frame_metadata")
    return Run(seconds, {"bare_loop": total})


def verify_recorder(recorder: Recorder, case: Case) -> None:
    """All frames received and written, none missing, duplicated or rejected."""
    c = recorder.counters
    problems = []
    if recorder.state != states.ON:
        problems.append(f"state {recorder.state}: {recorder.status}")
    if (c.frames_received, c.frames_written) != (case.frames, case.frames):
        problems.append(f"received {c.frames_received}, written {c.frames_written}, expected {case.frames}")
    if c.missing_frames or c.duplicate_frames or c.messages_rejected:
        problems.append(f"missing {c.missing_frames}, duplicate {c.duplicate_frames}, rejected {c.messages_rejected}")
    if problems:
        raise RuntimeError(f"recorder_{case.name}: " + "; ".join(problems))


def verify_file(path: Path, dataset: str, case: Case, frames: FrameSet, values_group: str = "") -> None:
    """Shape right, sampled frames equal the originals, bslz4 chunks byte-identical to the payloads,
    every per-frame value (in ``values_group``) the one sent."""
    problems = []
    count = case.frames
    with h5py.File(path, "r") as f:
        for name, sent in series_values(case).items():
            if not np.array_equal(f[f"{values_group}/{name}"][()], sent):
                problems.append(f"per-frame values {name} differ from those sent")
        data = f[dataset]
        if data.shape != (count, *case.shape):
            problems.append(f"dataset shape {data.shape}, expected {(count, *case.shape)}")
        for n in spot_check_indices(count):
            k = n % len(frames.frames)
            if not np.array_equal(data[n], frames.frames[k]):
                problems.append(f"frame {n} read back differs from the frame sent")
            if case.encoding == BSLZ4:
                mask, chunk = data.id.read_direct_chunk((n, 0, 0))
                if mask != 0 or chunk != frames.chunks[k]:
                    problems.append(f"chunk {n} on disk (filter mask {mask}) is not the payload sent")
    if problems:
        raise RuntimeError(f"{path} is wrong: " + "; ".join(problems))


def spot_check_indices(count: int) -> list[int]:
    rng = np.random.default_rng(count)
    picks = {0, 1, count // 2, count - 1, *rng.integers(0, count, SPOT_CHECKS).tolist()}
    return sorted(n for n in picks if 0 <= n < count)


# ---------------------------------------------------------------------------- reporting


SIDES = ("bare_h5py", "bare_stream", "recorder")  # bare_stream is every ratio's baseline


@dataclass
class Side:
    case: Case
    side: str  # one of SIDES
    statistic: str
    chunk_bytes: float  # mean bytes written per frame
    runs: list[Run] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.side}_{self.case.name}"

    @property
    def best(self) -> Run:
        return min(self.runs, key=lambda run: run.seconds)

    @property
    def frames_per_s(self) -> float:
        return self.case.frames / self.best.seconds

    @property
    def median_seconds(self) -> float:
        return float(np.median([run.seconds for run in self.runs]))

    def line(self, baseline: Side, memory_loop: Side) -> dict:
        case, best = self.case, self.best
        frame_bytes = case.shape[0] * case.shape[1] * np.dtype(case.dtype).itemsize
        ratio = self.frames_per_s / baseline.frames_per_s
        targeted = self.side == "recorder" and case.targets
        cpu_total = sum(best.cpu_seconds.values())
        return {
            "case": self.name,
            "frames": case.frames,
            "frame_shape": list(case.shape),
            "dtype": case.dtype,
            "encoding": case.encoding,
            "durable": case.durable,
            "seconds": round(best.seconds, 4),
            "frames_per_s": round(self.frames_per_s, 1),
            "gb_per_s": round(case.frames * self.chunk_bytes / best.seconds / 1e9, 3),
            "uncompressed_gb_per_s": round(case.frames * frame_bytes / best.seconds / 1e9, 3),
            "ratio": round(ratio, 3),
            "ratio_to_memory_loop": round(self.frames_per_s / memory_loop.frames_per_s, 3),
            "median_seconds": round(self.median_seconds, 4),
            "ratio_median": round(baseline.median_seconds / self.median_seconds, 3),
            "target_ratio": case.target_ratio if targeted else None,
            "met": ratio >= case.target_ratio if targeted else None,
            "targets": [
                {"issue": t.issue, "target_ratio": t.ratio, "met": ratio >= t.ratio} for t in case.targets
            ] if targeted else [],
            "statistic": self.statistic,
            "runs_seconds": [round(run.seconds, 4) for run in self.runs],
            "cpu_seconds": {key: round(value, 2) for key, value in best.cpu_seconds.items()},
            "cpu_cores": round(cpu_total / best.seconds, 2),
        }


def emit(line: dict) -> None:
    print(json.dumps(line), flush=True)


# ---------------------------------------------------------------------------- main


def benchmark_case(
    case: Case, default_repeats: int, scratch: ScratchDirectory, first_series: int, cache: dict
) -> list[Side]:
    """The three sides of one case (the bare loop from memory, the bare stream loop, the
    Recorder), interleaved, their order rotating from one run to the next."""
    frames = frame_set(case, cache)
    repeats = case.repeats or default_repeats
    statistic = f"best of {repeats} (after 1 warm-up)"
    if repeats < default_repeats:  # the big case, cut short with --big-repeats
        gigabytes = case.frames * case.shape[0] * case.shape[1] * np.dtype(case.dtype).itemsize / 1e9
        statistic += f"; fewer than --repeats {default_repeats} (--big-repeats): {gigabytes:.1f} GB per run"
    chunk_bytes = float(np.mean([len(chunk) for chunk in frames.chunks]))
    sides = [Side(case, name, statistic, chunk_bytes) for name in SIDES]
    series_id = first_series
    for run in range(repeats + 1):  # run 0 is the warm-up
        shift = run % len(sides)
        for side in sides[shift:] + sides[:shift]:
            if side.side == "bare_h5py":
                result = run_bare(case, frames, scratch, run)
            elif side.side == "bare_stream":
                result = run_bare_stream(case, frames, scratch, series_id)
            else:
                result = run_recorder(case, frames, scratch, series_id)
            series_id += 1
            if run > 0:
                side.runs.append(result)
    return sides


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1000, help="frames per run, 1065x1030 raw cases (default 1000)")
    parser.add_argument(
        "--big-frames", type=int, default=150, help="frames per run, 2162x2068 uint32; 0 skips it (default 150)"
    )
    parser.add_argument(
        "--big-repeats", type=int, default=5,
        help="timed runs of the 2162x2068 case (2.7 GB each), after one warm-up (default 5)",
    )
    parser.add_argument(
        "--bslz4-frames", type=int, default=2000, help="frames per run, 1065x1030 bslz4; 0 skips it (default 2000)"
    )
    parser.add_argument(
        "--small-frames", type=int, default=10000, help="frames per run, 256x256; 0 skips it (default 10000)"
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per case, after one warm-up (default 5)")
    parser.add_argument("--cases", nargs="+", metavar="NAME", help="run only these cases (e.g. 2162x2068_uint32)")
    parser.add_argument(
        "--dir", type=Path, default=None, help="directory to write into (a temporary directory is made inside it)"
    )
    parser.add_argument("--markdown", type=Path, help="also write the results as the README's table into this file")
    args = parser.parse_args(argv)
    if args.frames < 0 or args.big_frames < 0 or args.bslz4_frames < 0 or args.small_frames < 0:
        parser.error("frame counts must be >= 0 (0 skips the case)")
    if args.repeats < 1 or args.big_repeats < 1:
        parser.error("--repeats and --big-repeats must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    reuse_frame_buffers()  # this process hosts the Recorder: set it up as PhotonflowRecorder does
    cases = make_cases(args)
    scratch = ScratchDirectory(args.dir)
    cache: dict = {}
    targets, informational, rows = [], {}, []
    try:
        for index, case in enumerate(cases):
            memory_loop, bare, recorder = benchmark_case(case, args.repeats, scratch, 1000 * (index + 1), cache)
            for side in (memory_loop, bare):
                emit(side.line(bare, memory_loop))
            line = recorder.line(bare, memory_loop)
            emit(line)
            rows.append(table_row(case, memory_loop.line(bare, memory_loop), bare.line(bare, memory_loop), line))
            if case.targets:
                targets += [{"case": line["case"], "ratio": line["ratio"], **target} for target in line["targets"]]
            else:
                informational[line["case"]] = line["ratio"]
            if all(other.frame_key != case.frame_key for other in cases[index + 1:]):
                cache.pop(case.frame_key).producer.close()  # no later case needs it: free its memory
        emit(
            {
                "case": "summary",
                "targets": targets,
                "all_met": all(t["met"] for t in targets) if targets else None,
                "informational_ratios": informational,
                "statistic": f"best of {args.repeats} (2162x2068: {args.big_repeats}), each after 1 warm-up",
                "directory": str(scratch.directory.parent),
                "cpus": os.cpu_count(),
            }
        )
    finally:
        for frames in cache.values():
            frames.producer.close()
        scratch.remove()
    if args.markdown:
        args.markdown.write_text(MARKDOWN_HEADER + "".join(rows))
    return 0


MARKDOWN_HEADER = (
    "| case | memory loop frames/s | bare stream frames/s | Recorder frames/s | Recorder GB/s | "
    "**Recorder / bare stream** | target |\n|---|---|---|---|---|---|---|\n"
)


def table_row(case: Case, memory_loop: dict, bare: dict, recorder: dict) -> str:
    """The case as a row of the README's performance table (``--markdown``)."""
    target = f"≥ {case.target_ratio:g}" + (" ✓" if recorder["met"] else " ✗") if case.targets else "–"
    return (
        f"| {case.name} | {memory_loop['frames_per_s']:.0f} | {bare['frames_per_s']:.0f} | "
        f"{recorder['frames_per_s']:.0f} | {recorder['gb_per_s']:.2f} | **{recorder['ratio']:.3f}** | {target} |\n"
    )


if __name__ == "__main__":
    sys.exit(main())
