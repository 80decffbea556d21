"""The live analysis's results as streams of the series' own blissdata scan, on a real Redis: a
Recorder publishes the scan, its push fan-out feeds a live worker, and the worker's per-frame
results in the scan equal an offline run of the same functions on the frames the Recorder wrote."""

from __future__ import annotations

import time

import h5py
import numpy as np
import pytest

from photonflow.analysis.frame_analysis import AnalysisSettings, FrameAnalyzer, parse_rois
from photonflow.analysis.live import LiveAnalysis
from photonflow.events.redis_server import EmbeddedRedis
from photonflow.publishing.blissdata_results import BlissdataResults, ResultChannels, declared_results
from photonflow.publishing.blissdata_sink import BlissdataSink, open_data_store
from photonflow.recording.config import RecorderConfig
from photonflow.recording.recorder import Recorder, RecordingRequest
from photonflow.recording.sinks import StreamFanOut
from photonflow.simulators.diffraction import DiffractionFrames
from photonflow.stream.stins import StinsEncoder
from photonflow.stream.transport import StreamSender
from tests.helpers.analysis import DESCRIPTION, GEOMETRY
from tests.helpers.waiting import wait_until

pytest.importorskip("blissdata")

SETTINGS = AnalysisSettings(npt=200, rois=parse_rois(["beam 240 280 40 40"]))
CHANNELS = ResultChannels(SETTINGS.npt, ("beam",))
SHAPE = (GEOMETRY.height, GEOMETRY.width)


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    with EmbeddedRedis(tmp_path_factory.mktemp("redis")) as server:
        open_data_store(server.url)
        yield server.url


def record(tmp_path, sink: BlissdataSink, series_id: int, frames: int, fan_out: StreamFanOut | None = None,
           period: float = 0.01):
    """A series of powder frames sent on a real stream, recorded by a real Recorder publishing on
    blissdata (and dealing its frames to ``fan_out``); the file written."""
    sender = StreamSender("tcp://127.0.0.1:*")
    recorder = Recorder(RecorderConfig(tmp_path), sinks=[sink, *([fan_out] if fan_out else [])])
    sink.attach(recorder)
    pattern = DiffractionFrames(GEOMETRY)
    encoder = StinsEncoder()
    try:
        path = recorder.arm(RecordingRequest(frames, series_id, sender.endpoint, f"live/series_{series_id}.h5"))
        sender.send(encoder.series_start(series_id, frames, SHAPE, "uint16", DESCRIPTION))
        for n in range(frames):
            sender.send(encoder.data(series_id, n, pattern.frame(n), time.time()))
            time.sleep(period)
        sender.send(encoder.series_end(series_id, frames, frames))
        assert recorder.wait(30)
    finally:
        sender.close()
    return path


def closed_scan(url: str, key: str):
    from blissdata.redis_engine.scan import ScanState

    store = open_data_store(url)
    scan = store.load_scan(key)
    while scan.state != ScanState.CLOSED:
        scan.update(timeout=1)
    return scan


def test_each_frames_results_are_streams_of_the_series_scan_equal_to_an_offline_run(tmp_path, redis_url):
    recorder_name = "test/live/recorder1"
    results = BlissdataResults(redis_url, recorder_name, CHANNELS)
    fan_out = StreamFanOut("push")
    live = LiveAnalysis(fan_out.endpoint, SETTINGS, [results])
    live.start()
    sink = BlissdataSink(redis_url, live_results_of=recorder_name)
    try:
        wait_until(lambda: declared_results(redis_url, recorder_name) == CHANNELS, 10, what="the worker registered")
        path = record(tmp_path, sink, 31, 24, fan_out)
        assert sink.wait_idle(15) and results.wait_idle(15)
    finally:
        live.close()
        results.close()
        sink.close()
        fan_out.close()
    scan = closed_scan(redis_url, sink.last_scan_key)
    assert results.last_scan_key == sink.last_scan_key  # the worker found the Recorder's scan
    assert scan.info["photonflow"]["live_results"] == "complete"
    assert scan.info["channels"]["live:intensity"]["dim"] == 1 and "live:roi_beam" in scan.info["channels"]
    with h5py.File(path, "r") as f:
        written = f["entry/data/data"][()]
    offline = FrameAnalyzer(SETTINGS, SHAPE, DESCRIPTION)
    expected = {n: offline.analyse(n, frame) for n, frame in enumerate(written)}
    numbers = scan.streams["live:frame_number"][:].tolist()
    assert sorted(numbers) == list(range(24))
    assert scan.streams["live:spots"][:].tolist() == [expected[n].spots for n in numbers]
    np.testing.assert_array_equal(scan.streams["live:roi_beam"][:], [expected[n].roi_sums["beam"] for n in numbers])
    np.testing.assert_array_equal(scan.streams["live:intensity"][:], np.stack([expected[n].intensity for n in numbers]))
    np.testing.assert_array_equal(scan.streams["live:q"][:][0], offline.q)
    assert results.results_published == 24 and results.publish_errors == 0
    analysed_ms = 1000 * np.asarray(live.latencies)
    print(f"\nlive results, frame made -> analysed: median {np.median(analysed_ms):.1f} ms, "
          f"p99 {np.percentile(analysed_ms, 99):.1f} ms")
    milliseconds = 1000 * np.asarray(results.latencies)
    print(f"\nlive results, frame made -> result in Redis: median {np.median(milliseconds):.1f} ms, "
          f"p99 {np.percentile(milliseconds, 99):.1f} ms")


def test_a_registered_worker_that_sends_nothing_holds_the_scan_only_for_the_bounded_wait(tmp_path, redis_url):
    recorder_name = "test/live/recorder2"
    results = BlissdataResults(redis_url, recorder_name, CHANNELS)  # registered, but fed no frame
    sink = BlissdataSink(redis_url, live_results_of=recorder_name, results_wait=0.3)
    try:
        wait_until(lambda: declared_results(redis_url, recorder_name) is not None, 10, what="the worker registered")
        record(tmp_path, sink, 32, 3, period=0)
        assert sink.wait_idle(15)
    finally:
        sink.close()
        results.close()
    scan = closed_scan(redis_url, sink.last_scan_key)
    assert scan.info["photonflow"]["live_results"] == "cut off after 0.3 s" and sink.results_cut_off == 1
    assert scan.info["end_reason"] == "SUCCESS"  # the frames are complete: only the results are not
    assert declared_results(redis_url, recorder_name) is None  # a worker that closed is no longer declared


def test_a_scan_that_declares_no_results_is_reported_not_written(tmp_path, redis_url):
    fan_out = StreamFanOut("push")
    results = BlissdataResults(redis_url, "test/live/elsewhere", CHANNELS)
    live = LiveAnalysis(fan_out.endpoint, SETTINGS, [results])
    live.start()
    sink = BlissdataSink(redis_url)  # a Recorder that declares no live results
    try:
        record(tmp_path, sink, 33, 4, fan_out)
        wait_until(lambda: results.series_unpublished == 1, 15, what="the series reported unpublished")
    finally:
        live.close()
        results.close()
        sink.close()
        fan_out.close()
    assert "declares no live:frame_number" in results.last_error and results.results_published == 0
