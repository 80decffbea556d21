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

    **With the live analysis** (``--analysis`` runs, in the same run): each Recorder also relays
    its frames on its push fan-out (``FanOutEvery`` 1) to a ``LiveAnalysis`` process of its own
    (spot count, I(q) with pyFAI at ``NPT`` bins, one ROI sum; one thread each: the workers are
    the parallelism, as they would be one per Recorder host). The fan-out never slows a
    Recorder: a worker that is behind misses frames (counted; its ZeroMQ buffer holds 64 MB of
    frames, 122 of these, as in production, not ZeroMQ's default 1000). The producer is paced at
    ``ANALYSIS_RATE`` frames/s, above what one worker analyses, so the figure is the frames
    *analysed* per second across the workers (all frames are recorded): the analysis capacity
    that N Recorders, each with its worker, give, as the ratio to one.

    **Live results on Redis** (``latency`` runs, 1 and 2 Recorders): as with the analysis, plus
    an embedded Redis: each Recorder publishes its series as a blissdata scan and its worker
    publishes each frame's results into that scan (``live:*`` streams). The producer is paced at
    ``LATENCY_RATE`` frames/s per Recorder, a rate each worker sustains; the figure is the
    latency from a frame leaving the producer (its timestamp) to its results acknowledged by
    Redis, median, 99th percentile and maximum over ``LATENCY_FRAMES`` frames, and the first
    frames' apart: a series' first results wait for its scan, which the Recorder makes at the
    series' start, and a worker's first series for pyFAI's tables (later series of the same
    geometry reuse them); so the 99th percentile from a second into the series too.

    On this 2-core machine the producer (the detector's side) takes a share of the CPU too:
    N Recorders (and workers) share what it leaves.

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
ANALYSIS_FRAMES = int(os.environ.get("BENCH_SCALE_ANALYSIS_FRAMES", 1500))
ANALYSIS_RATE = 500.0  # frames/s the producer sends at with the analysis on
NPT = 500
LATENCY_FRAMES = int(os.environ.get("BENCH_SCALE_LATENCY_FRAMES", 1500))
LATENCY_RATE = 50.0  # frames/s per Recorder (and its worker) in the latency runs
DESCRIPTION = {"name": "bench", "model": "bench", "x_pixel_size": 75e-6, "y_pixel_size": 75e-6, "count_time": 0.001,
               "beam_center_x": 256.5, "beam_center_y": 240.5, "distance": 0.1, "incident_wavelength": 0.7e-10,
               "saturation_value": 65534}


def frames() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [rng.poisson(3.0, SHAPE).astype(np.uint16) for _ in range(16)]


def producer_main(conn, outputs: int, frames_total: int, rate: float) -> None:
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
    idle_cpu = time.process_time()  # what the series costs, not the imports before it
    distributor.announce(encoder.series_start(1, frames_total, SHAPE, "uint16", DESCRIPTION))
    start = time.perf_counter()
    for n in range(frames_total):
        if rate:  # paced: frame n leaves at n / rate
            delay = start + n / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        distributor.send(encoder.data(1, n, made[n % 16], time.time()))
    distributor.announce(encoder.series_end(1, frames_total, frames_total))
    conn.send(("sent", time.process_time() - idle_cpu))
    conn.recv()  # open until the Recorders are done: ZeroMQ delivers what is queued
    distributor.close()


def recorder_name(index: int) -> str:
    return f"bench/recorder/{index}"


def recorder_main(conn, folder: str, endpoint: str, index: int, frames_total: int, fan_out: bool,
                  redis_url: str = "") -> None:
    from photonflow.allocator import reuse_frame_buffers
    from photonflow.publishing.blissdata_sink import BlissdataSink
    from photonflow.recording.config import RecorderConfig
    from photonflow.recording.recorder import Recorder, RecordingRequest
    from photonflow.recording.shared_series import part_file
    from photonflow.recording.sinks import StreamFanOut

    reuse_frame_buffers()
    sinks = [StreamFanOut("push", 1, "tcp://127.0.0.1:*")] if fan_out else []
    endpoint_out = sinks[0].endpoint if sinks else ""
    blissdata = BlissdataSink(redis_url, live_results_of=recorder_name(index)) if redis_url else None
    sinks += [blissdata] if blissdata else []
    recorder = Recorder(RecorderConfig(folder, durable=False, journal_name=f"bench{index}"), sinks=sinks)
    if blissdata:
        blissdata.attach(recorder)
    conn.send(endpoint_out)
    conn.recv()  # its worker is connected
    path = recorder.arm(RecordingRequest(frames_total, 1, endpoint, part_file("scale.h5", index), share=True))
    idle_cpu = time.process_time()
    conn.send(str(path))
    assert recorder.wait(600)
    conn.send((time.perf_counter(), recorder.counters.frames_written, recorder.state, time.process_time() - idle_cpu))
    conn.recv()
    if blissdata:
        blissdata.close(30)  # the scan is closed once its worker sealed the results


def analysis_main(conn, endpoint: str, redis_url: str = "", index: int = 0) -> None:
    """One live analysis worker on a Recorder's fan-out: every frame it gets, analysed, on one
    core (pyFAI's OpenMP held to one thread): the workers, one per Recorder, are the parallelism."""
    os.environ["OMP_NUM_THREADS"] = "1"  # before pyFAI is imported
    from photonflow.analysis.frame_analysis import AnalysisSettings, parse_rois
    from photonflow.analysis.live import LiveAnalysis
    from photonflow.publishing.blissdata_results import BlissdataResults, ResultChannels, declared_results

    results = BlissdataResults(redis_url, recorder_name(index), ResultChannels(NPT, ("centre",))) if redis_url else None
    while results is not None and declared_results(redis_url, recorder_name(index)) is None:
        time.sleep(0.01)  # registered before the Recorder's scan is made
    live = LiveAnalysis(endpoint, AnalysisSettings(npt=NPT, rois=parse_rois(["centre 192 192 128 128"])),
                        [results] if results else [])
    live.start()
    while live.state != "ON":  # pyFAI imported, connected
        time.sleep(0.05)
    idle_cpu = time.process_time()
    conn.send("ready")
    analysed, last_frame_at = 0, time.perf_counter()
    while live.series_ended < 1:  # (a series_end the fan-out dropped: closed END_IDLE s after its last frame)
        time.sleep(0.005)
        if live.frames_analysed != analysed:
            analysed, last_frame_at = live.frames_analysed, time.perf_counter()
    if results is not None:  # the latency is then to the results in Redis
        results.wait_idle(30)
    latencies = np.asarray(results.latencies if results is not None else live.latencies) * 1000
    conn.send((last_frame_at, live.frames_analysed, float(np.median(latencies)) if latencies.size else 0.0,
               float(np.percentile(latencies, 99)) if latencies.size else 0.0, time.process_time() - idle_cpu,
               results.results_published if results is not None else 0,
               float(latencies.max()) if latencies.size else 0.0, latencies[:5].round(1).tolist(),
               # a second into the series (each worker gets LATENCY_RATE frames a second): past its start
               float(np.percentile(latencies[int(LATENCY_RATE):], 99)) if latencies.size > LATENCY_RATE else 0.0))
    live.close()
    if results is not None:
        results.close()


def run(recorders: int, analysis: bool = False, redis_url: str = "") -> dict:
    from photonflow.recording.shared_series import write_master

    frames_total = LATENCY_FRAMES if redis_url else ANALYSIS_FRAMES if analysis else FRAMES
    rate = LATENCY_RATE * recorders if redis_url else ANALYSIS_RATE if analysis else 0.0
    context = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="scale_bench_") as folder:
        producer_end, producer_conn = context.Pipe()
        producer = context.Process(target=producer_main, args=(producer_conn, recorders, frames_total, rate))
        producer.start()
        endpoints = producer_end.recv()
        pipes, processes, workers = [], [], []
        for index, endpoint in enumerate(endpoints):
            mine, theirs = context.Pipe()
            process = context.Process(target=recorder_main, args=(theirs, folder, endpoint, index, frames_total,
                                                                  analysis, redis_url))
            process.start()
            pipes.append(mine)
            processes.append(process)
        for index, pipe in enumerate(pipes):
            fan_out = pipe.recv()
            if analysis:
                mine, theirs = context.Pipe()
                worker = context.Process(target=analysis_main, args=(theirs, fan_out, redis_url, index))
                worker.start()
                assert mine.recv() == "ready"
                workers.append((mine, worker))
            pipe.send("go")
        parts = [Path(pipe.recv()) for pipe in pipes]
        start = time.perf_counter()
        producer_end.send("go")
        ends = [pipe.recv() for pipe in pipes]
        seconds = max(end[0] for end in ends) - start
        analysed = [pipe.recv() for pipe, _ in workers]
        _, producer_cpu = producer_end.recv()
        producer_end.send("release")
        for pipe in pipes:
            pipe.send("done")
        for process in (producer, *processes, *(worker for _, worker in workers)):
            process.join(30)
        written = [end[1] for end in ends]
        started = time.perf_counter()
        summary = write_master(Path(folder) / "scale.h5", parts, frames_total)
        master_seconds = time.perf_counter() - started
        assert summary.missing.size == 0 and summary.frames_written == frames_total, (summary.missing, written)
    result = {"recorders": recorders, "frames": frames_total, "seconds": round(seconds, 3),
              "frames_per_s": round(frames_total / seconds, 1), "frames_each": written,
              "states": [end[2] for end in ends], "master_seconds": round(master_seconds, 3),
              "cpu_s": {"producer": round(producer_cpu, 2), "recorders": [round(end[3], 2) for end in ends]}}
    if analysis:
        analysis_seconds = max(done[0] for done in analysed) - start
        total = sum(done[1] for done in analysed)
        result.update(analysed_each=[done[1] for done in analysed], analysed=total,
                      analysed_per_s=round(total / analysis_seconds, 1),
                      latency_median_ms=[round(done[2], 1) for done in analysed],
                      latency_p99_ms=[round(done[3], 1) for done in analysed])
        result["cpu_s"]["workers"] = [round(done[4], 2) for done in analysed]
        if redis_url:
            result.update(paced_at_frames_per_s=rate, results_in_redis=sum(done[5] for done in analysed),
                          latency_max_ms=[round(done[6], 1) for done in analysed],
                          first_5_frames_ms=[done[7] for done in analysed],
                          latency_p99_after_1s_ms=[round(done[8], 1) for done in analysed])
    return result


def main() -> None:
    only_latency = "--latency" in sys.argv  # the live results to Redis only
    only_analysis = "--analysis" in sys.argv  # the analysis runs only
    recording = [] if only_latency or only_analysis else [run(n) for n in RECORDERS]
    for result in recording:
        result["ratio_to_1"] = round(result["frames_per_s"] / recording[0]["frames_per_s"], 2)
    analysing = [] if only_latency else [run(n, analysis=True) for n in RECORDERS]
    for result in analysing:
        result["analysed_ratio_to_1"] = round(result["analysed_per_s"] / analysing[0]["analysed_per_s"], 2)
    from photonflow.events.redis_server import EmbeddedRedis
    from photonflow.publishing.blissdata_scan import open_data_store

    to_redis = []
    if not only_analysis:
        with tempfile.TemporaryDirectory(prefix="scale_bench_redis_") as folder, EmbeddedRedis(folder) as redis:
            open_data_store(redis.url)
            to_redis = [run(n, analysis=True, redis_url=redis.url) for n in (1, 2)]
    megabytes = SHAPE[0] * SHAPE[1] * 2 / 1e6
    print(json.dumps({"frame_shape": SHAPE, "frame_megabytes": megabytes, "cores": os.cpu_count(),
                      "recording": recording, "with_live_analysis": {"paced_at_frames_per_s": ANALYSIS_RATE,
                                                                      "runs": analysing},
                      "live_results_to_redis": {"latency": "frame sent -> its results acknowledged by Redis",
                                                "runs": to_redis}}, indent=2))


if __name__ == "__main__":
    main()
