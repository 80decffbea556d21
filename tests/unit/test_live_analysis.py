"""The live analysis on a real ZeroMQ stream: each frame's spots, ROI sums and I(q) are kept by
frame number, equal to an offline run of the same functions on the same frames; a malformed
message is counted and the series goes on."""

from __future__ import annotations

import h5py
import numpy as np

from photonflow.analysis.frame_analysis import AnalysisSettings, FrameAnalyzer, parse_rois
from photonflow.analysis.live import LiveAnalysis, ResultsFile
from photonflow.simulators.diffraction import DiffractionFrames
from photonflow.stream.stins import StinsEncoder
from photonflow.stream.transport import StreamSender
from tests.helpers.analysis import DESCRIPTION, GEOMETRY
from tests.helpers.waiting import wait_until

SETTINGS = AnalysisSettings(npt=400, rois=parse_rois(["beam 240 280 40 40"]))


def test_every_frame_is_analysed_as_an_offline_run_of_the_same_functions_would(tmp_path):
    frames = DiffractionFrames(GEOMETRY)
    sender = StreamSender("tcp://127.0.0.1:*")
    results = ResultsFile(lambda start: tmp_path / f"series_{start.series_id}_live.h5")
    live = LiveAnalysis(sender.endpoint, SETTINGS, [results])
    live.start()
    encoder = StinsEncoder()
    try:
        sender.send(encoder.series_start(4, 12, (GEOMETRY.height, GEOMETRY.width), "uint16", DESCRIPTION))
        sender.send([b"not a STINS header"])  # counted, never a crash, never the end of the series
        for n in range(12):
            sender.send(encoder.data(4, n, frames.frame(n), 1000.0 + n))
        sender.send(encoder.series_end(4, 12, 12))
        wait_until(lambda: live.series_ended == 1, 60, what="the series analysed")
    finally:
        live.close()
        sender.close()
    assert live.frames_analysed == 12 and live.messages_rejected == 1
    offline = FrameAnalyzer(SETTINGS, (GEOMETRY.height, GEOMETRY.width), DESCRIPTION)
    expected = [offline.analyse(n, frames.frame(n)) for n in range(12)]
    with h5py.File(tmp_path / "series_4_live.h5", "r") as f:
        process = f["entry/process"]
        assert process["spot_finding/spots"][()].tolist() == [result.spots for result in expected]
        np.testing.assert_array_equal(process["roi/beam"][()], [result.roi_sums["beam"] for result in expected])
        np.testing.assert_array_equal(process["integration/q"][()], offline.q)
        np.testing.assert_array_equal(process["integration/I"][()], np.stack([r.intensity for r in expected]))
    assert max(live.latencies) > 0  # frame timestamps are in the past: what the latency figure measures


def test_a_frame_without_its_series_start_is_rejected_and_counted(tmp_path):
    sender = StreamSender("tcp://127.0.0.1:*")
    live = LiveAnalysis(sender.endpoint, SETTINGS, [])
    live.start()
    try:
        sender.send(StinsEncoder().data(9, 0, np.zeros((4, 4), np.uint16), 0.0))
        wait_until(lambda: live.messages_rejected == 1, 30, what="the frame rejected")
    finally:
        live.close()
        sender.close()
    assert "came without its series_start" in live.last_error and live.frames_analysed == 0


def test_the_nxmx_links_the_live_results_of_its_series_when_there_are_some(tmp_path):
    from types import SimpleNamespace

    from photonflow.standardizing.nexus import link_live_analysis

    raw = tmp_path / "raw" / "scan_001.h5"
    raw.parent.mkdir()
    recorded = SimpleNamespace(path=raw)
    output = tmp_path / "scan_001.nxs"
    with h5py.File(output, "w") as f:
        assert not link_live_analysis(f.create_group("entry"), output, recorded)  # no analysis: no link
    with h5py.File(raw.with_name("scan_001_live.h5"), "w") as results:
        results["entry/process/spot_finding/spots"] = np.array([3, 1, 4])
    with h5py.File(tmp_path / "again.nxs", "w") as f:
        assert link_live_analysis(f.create_group("entry"), tmp_path / "again.nxs", recorded)
    with h5py.File(tmp_path / "again.nxs", "r") as f:
        assert f["entry/live_analysis/spot_finding/spots"][()].tolist() == [3, 1, 4]
        assert f["entry"].get("live_analysis", getlink=True).filename == "raw/scan_001_live.h5"  # moves with the folder


def test_a_series_whose_end_never_comes_is_closed_once_the_stream_is_silent(tmp_path):
    """A fan-out drops what a worker that is behind cannot take, the series' end too: the results
    file is closed anyway, not left open until the next series."""
    from photonflow.analysis.live import END_IDLE
    from photonflow.stream.stins import decode
    from tests.helpers.waiting import ManualClock

    clock = ManualClock(100.0)
    results = ResultsFile(lambda start: tmp_path / "cut.h5")
    live = LiveAnalysis("tcp://127.0.0.1:1", SETTINGS, [results], monotonic=clock)
    encoder = StinsEncoder()
    live.handle(decode(encoder.series_start(5, 3, (GEOMETRY.height, GEOMETRY.width), "uint16", DESCRIPTION)))
    live.handle(decode(encoder.data(5, 0, DiffractionFrames(GEOMETRY).frame(0), 0.0)))
    clock.now += END_IDLE - 0.1
    live.end_if_silent()
    assert live.series_ended == 0  # still within the silence a series may have
    clock.now += 0.2
    live.end_if_silent()
    assert live.series_ended == 1 and live.state == "ON"
    with h5py.File(tmp_path / "cut.h5", "r") as f:  # closed: readable
        assert f["entry/process/spot_finding/spots"][()].tolist()[0] >= 0 and f["entry/process/spot_finding/spots"][1] == -1
    live.close()


def test_a_stream_address_to_fix_is_a_fault_that_clears_once_fixed():
    """A Recorder whose fan-out serves viewers (pub, its default) gives a worker nothing: the worker
    says so in FAULT, asks again, and takes the stream once the Recorder is set right."""
    from photonflow.errors import ConfigurationError

    sender = StreamSender("tcp://127.0.0.1:*")
    fixed = {"now": False}

    def fan_out():
        if not fixed["now"]:
            raise ConfigurationError("the Recorder r has a pub fan-out (viewers): set its FanOutMode push")
        return sender.endpoint

    live = LiveAnalysis(fan_out, SETTINGS, [])
    live.start()
    try:
        wait_until(lambda: live.state == "FAULT", 30, what="the FAULT")
        assert "set its FanOutMode push (asked again every second)" in live.status
        fixed["now"] = True
        wait_until(lambda: live.state == "ON", 30, what="the stream taken")
    finally:
        live.close()
        sender.close()


def test_a_series_ends_alarm_for_its_own_rejected_messages_only():
    live = LiveAnalysis("tcp://127.0.0.1:1", AnalysisSettings(npt=0), [])
    encoder = StinsEncoder()
    frame = np.zeros((8, 8), np.uint16)
    for series, rejected in ((1, True), (2, False)):
        live.take(encoder.series_start(series, 1, (8, 8), "uint16", {}))
        if rejected:
            live.take([b"not a STINS header"])
        live.take(encoder.data(series, 0, frame, 0.0))
        live.take(encoder.series_end(series, 1, 1))
        assert live.state == ("ALARM" if rejected else "ON"), live.status
    assert live.messages_rejected == 1 and live.counters.messages_rejected == 0
    live.close()


def test_a_series_of_the_same_geometry_reuses_the_analyzer_and_a_new_geometry_gets_its_own():
    from photonflow.stream.stins import decode

    live = LiveAnalysis("tcp://127.0.0.1:1", SETTINGS, [])  # fed by hand: never started
    encoder = StinsEncoder()
    shape = (GEOMETRY.height, GEOMETRY.width)
    analyzers = []
    for series, distance in ((1, 0.1), (2, 0.1), (3, 0.2)):
        live.handle(decode(encoder.series_start(series, 1, shape, "uint16", {**DESCRIPTION, "distance": distance})))
        analyzers.append(live._analyzer)
        live.handle(decode(encoder.series_end(series, 0, 0)))
    live.close()
    assert analyzers[1] is analyzers[0]  # pyFAI's tables are not built again for the same geometry
    assert analyzers[2] is not analyzers[0] and analyzers[2].geometry["distance"] == 0.2


def test_a_worker_behind_holds_a_bounded_buffer_of_frames_not_zeromqs_thousand():
    from photonflow.stream.transport import RECEIVE_BUFFER_BYTES

    frames = DiffractionFrames(GEOMETRY)
    sender = StreamSender("tcp://127.0.0.1:*")
    live = LiveAnalysis(sender.endpoint, SETTINGS, [])
    live.start()
    encoder = StinsEncoder()
    try:
        sender.send(encoder.series_start(6, 2, (GEOMETRY.height, GEOMETRY.width), "uint16", DESCRIPTION))
        sender.send(encoder.data(6, 0, frames.frame(0), 0.0))
        wait_until(lambda: live.frames_analysed == 1, 60, what="the first frame analysed")
        held = live._receiver.high_water_mark
    finally:
        live.close()
        sender.close()
    frame_bytes = GEOMETRY.height * GEOMETRY.width * 2
    assert held == RECEIVE_BUFFER_BYTES // frame_bytes  # 83 frames of 600x640 uint16, 64 MB


def test_the_nxmx_links_live_results_once_their_worker_closed_them_and_says_when_it_did_not(tmp_path):
    """A worker still writing a series' results keeps every other reader out (HDF5's lock): the
    link is made once it closed them, never while the NXmx's readers would find it broken."""
    import subprocess
    import sys
    from types import SimpleNamespace

    from photonflow.standardizing.nexus import link_live_analysis

    raw = tmp_path / "scan_002.h5"
    results = tmp_path / "scan_002_live.h5"
    with h5py.File(results, "w") as f:
        f["entry/process/spot_finding/spots"] = np.array([2, 7])
    hold = ("import h5py, sys, time\nf = h5py.File(sys.argv[1], 'a')\nprint('open', flush=True)\n"
            "time.sleep(float(sys.argv[2]))\nf.close()\n")
    for seconds, wait, expect_problem in ((1.0, 20.0, False), (30.0, 0.3, True)):
        worker = subprocess.Popen([sys.executable, "-c", hold, str(results), str(seconds)], stdout=subprocess.PIPE,
                                  text=True)
        try:
            assert worker.stdout.readline().strip() == "open"
            problems: list[str] = []
            output = tmp_path / f"waited_{seconds:g}.nxs"
            with h5py.File(output, "w") as f:
                assert link_live_analysis(f.create_group("entry"), output, SimpleNamespace(path=raw), problems, wait)
            assert bool(problems) == expect_problem, problems
            if not expect_problem:
                with h5py.File(output, "r") as f:  # the worker had closed them: the link reads
                    assert f["entry/live_analysis/spot_finding/spots"][()].tolist() == [2, 7]
            else:
                assert "still being written" in problems[0]
        finally:
            worker.kill()
            worker.communicate()
