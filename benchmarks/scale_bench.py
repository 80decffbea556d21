"""Several Recorders on one stream: frames per second with 1, 2 and 3 Recorders, as ratios to one
Recorder, from one run (``make bench-scale``).

What it measures
    A producer process binds a ``StreamDistributor`` with N outputs (the Acquirer's, when its
    StreamOutputs is N) and, on a go, sends one series of ``FRAMES`` frames (16 distinct
    simulated-looking frames of ``SHAPE`` uint16, made before the clock): series_start to every
    output, each frame to one output with room, series_end to every output. N Recorder processes
    (each as the ``PhotonflowRecorder`` server sets itself up: frame buffers reused) are armed with
    ``share`` on their outputs, each writing its part into the same folder (page cache: no fsync,
    so the figure is the CPU's, not the disk's). The clock runs from the go until the last
    Recorder has closed its part; then the master is written (timed apart) and checked: every
    frame in it, in frame order.

    frames/s = FRAMES / seconds; ``ratio_to_1`` = frames/s with N / frames/s with 1, the same run.

    Not yet: the live per-frame analysis each Recorder should also do (issue 23, part 3); these
    are the recording figures alone. On this 2-core machine the producer (the detector's side)
    takes a core's share too: N Recorders share what it leaves.

The model for N hosts (README, "Several Recorders"): each host records what one Recorder does
here, until the network (a 10 GbE link takes ~1.1 GB/s) or the shared file system's write rate
is reached: rate(N hosts) = min(N x per-host rate, link rate x links, file system rate).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPOSITORY = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPOSITORY))

FRAMES = int(os.environ.get("BENCH_SCALE_FRAMES", 4000))
SHAPE = (512, 512)
RECORDERS = (1, 2, 3)


def frames() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [rng.poisson(3.0, SHAPE).astype(np.uint16) for _ in range(16)]


def producer_main(conn, outputs: int) -> None:
    from photonflow.allocator import reuse_frame_buffers
    from photonflow.stream.stins import StinsEncoder
    from photonflow.stream.transport import StreamDistributor

    reuse_frame_buffers()
    made = frames()
    distributor = StreamDistributor("tcp://127.0.0.1:*", outputs)
    conn.send(distributor.endpoints)
    if conn.recv() != "go":
        return
    encoder = StinsEncoder()
    detector = {"name": "bench", "model": "bench", "x_pixel_size": 75e-6, "y_pixel_size": 75e-6, "count_time": 0.001}
    distributor.announce(encoder.series_start(1, FRAMES, SHAPE, "uint16", detector))
    for n in range(FRAMES):
        distributor.send(encoder.data(1, n, made[n % 16], time.time()))
    distributor.announce(encoder.series_end(1, FRAMES, FRAMES))
    conn.send("sent")
    conn.recv()  # open until the Recorders are done: ZeroMQ delivers what is queued
    distributor.close()


def recorder_main(conn, folder: str, endpoint: str, index: int) -> None:
    from photonflow.allocator import reuse_frame_buffers
    from photonflow.recording.config import RecorderConfig
    from photonflow.recording.recorder import Recorder, RecordingRequest
    from photonflow.recording.shared_series import part_file

    reuse_frame_buffers()
    recorder = Recorder(RecorderConfig(folder, durable=False, journal_name=f"bench{index}"))
    path = recorder.arm(RecordingRequest(FRAMES, 1, endpoint, part_file("scale.h5", index), share=True))
    conn.send(str(path))
    assert recorder.wait(600)
    conn.send((time.perf_counter(), recorder.counters.frames_written, recorder.state))


def run(recorders: int) -> dict:
    from photonflow.recording.shared_series import write_master

    context = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="scale_bench_") as folder:
        producer_end, producer_conn = context.Pipe()
        producer = context.Process(target=producer_main, args=(producer_conn, recorders))
        producer.start()
        endpoints = producer_end.recv()
        pipes, processes, parts = [], [], []
        for index, endpoint in enumerate(endpoints):
            mine, theirs = context.Pipe()
            process = context.Process(target=recorder_main, args=(theirs, folder, endpoint, index))
            process.start()
            pipes.append(mine)
            processes.append(process)
        parts = [Path(pipe.recv()) for pipe in pipes]
        start = time.perf_counter()
        producer_end.send("go")
        ends = [pipe.recv() for pipe in pipes]
        seconds = max(end for end, _, _ in ends) - start
        producer_end.recv()
        producer_end.send("release")
        for process in (producer, *processes):
            process.join(30)
        written = [count for _, count, _ in ends]
        started = time.perf_counter()
        summary = write_master(Path(folder) / "scale.h5", parts, FRAMES)
        master_seconds = time.perf_counter() - started
        assert summary.missing.size == 0 and summary.frames_written == FRAMES, (summary.missing, written)
    return {"recorders": recorders, "seconds": round(seconds, 3), "frames_per_s": round(FRAMES / seconds, 1),
            "frames_each": written, "states": [state for _, _, state in ends],
            "master_seconds": round(master_seconds, 3)}


def main() -> None:
    results = [run(n) for n in RECORDERS]
    one = results[0]["frames_per_s"]
    for result in results:
        result["ratio_to_1"] = round(result["frames_per_s"] / one, 2)
    megabytes = SHAPE[0] * SHAPE[1] * 2 / 1e6
    print(json.dumps({"frames": FRAMES, "frame_shape": SHAPE, "frame_megabytes": megabytes,
                      "cores": os.cpu_count(), "runs": results}, indent=2))


if __name__ == "__main__":
    main()
