"""The Recorder's blissdata sink against a real embedded Redis (ReJSON + RediSearch): a blissdata
reader in another process follows a running series from get_next_scan to CLOSED and reads the
frames through the published references; a Redis that dies mid-series costs no frame."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401  (the reader's filters)
import numpy as np
import pytest

from photonflow.acquisition.acquirer import Acquirer
from photonflow.errors import ConfigurationError
from photonflow.events import RedisStreamBus, experiment_done_event
from photonflow.events.redis_server import EmbeddedRedis
from photonflow.publishing.blissdata_scan import blissdata_url
from photonflow.publishing.blissdata_sink import BlissdataSink, open_data_store
from photonflow.recording.config import RecorderConfig
from photonflow.recording.recorder import Recorder, RecordingRequest
from photonflow.simulators.simulated_camera import SimulatedCamera, SimulatedSensor
from photonflow.stream.transport import StreamSender
from tests.helpers.waiting import wait_until

pytest.importorskip("blissdata")

REQUIRED_SCAN_INFO = (
    "name", "scan_nb", "type", "title", "npoints", "count_time", "start_time", "end_time", "acquisition_chain",
    "channels", "devices", "data_policy", "save", "filename", "end_reason",
)

# The reader: another process, knowing only the Redis URL. It waits for the next scan, follows it
# to CLOSED, reads every frame through its reference (file, dataset, index) with an SWMR reader
# while the series runs, and reports what it saw, with when it saw each frame's reference.
READER = textwrap.dedent("""
    import json, sys, time
    import h5py, hdf5plugin
    import numpy as np
    from blissdata.redis_engine.store import DataStore
    from blissdata.redis_engine.scan import ScanState
    import blissdata.streams.lima  # the Lima stream plugin loaded before the scan, as a running Flint has it

    store = DataStore(sys.argv[1])
    print("ready", flush=True)
    _, key = store.get_next_scan(timeout=30)
    scan = store.load_scan(key)
    states = [scan.state.name]
    state_times = {scan.state.name: time.time()}
    seen = {}          # frame number -> time its reference was seen
    readable = {}      # frame number -> time its pixels could be read from the file
    sums = {}
    while True:
        scan.update(timeout=0.005)  # returns at once on a state change
        if scan.state.name != states[-1]:
            states.append(scan.state.name)
            state_times[scan.state.name] = time.time()
        if scan.state >= ScanState.PREPARED:
            det = scan.info["photonflow"]["detector"]
            if det + ":image" not in scan.streams:
                # blissdata's load_scan reads the scan's model before its state: loaded while the
                # writer prepared it, the scan says PREPARED with no streams until its next state
                scan = store.load_scan(key)
                continue
            image = scan.streams[det + ":image"]
            count = len(image)
            now = time.time()
            for i in range(count):
                seen.setdefault(i, now)
            saved = image._client._last_index_saved  # frames flushed to the file
            new = [image.get_references(i) for i in range(len(readable), saved + 1)]
            files = {}
            for ref in new:                       # each file opened once for the new frames in it
                if ref.file_path not in files:
                    files[ref.file_path] = h5py.File(ref.file_path, "r", swmr=True, locking=False)
                sums[len(readable)] = int(np.asarray(files[ref.file_path][ref.data_path][ref.index], dtype=np.int64).sum())
                readable[len(readable)] = time.time()
            for f in files.values():
                f.close()
        if scan.state == ScanState.CLOSED:
            break
    det = scan.info["photonflow"]["detector"]
    image = scan.streams[det + ":image"]
    frames = image[0:len(image)]                              # through blissdata, after the end
    refs = image.get_references(slice(0, len(image)))
    epoch = scan.streams["timer:epoch"][:]
    numbers = scan.streams[det + ":frame_number"][:]
    written = dict(zip(numbers.tolist(), epoch.tolist()))
    print(json.dumps({
        "key": key, "states": states, "info": scan.info, "identity": {"name": scan.name, "number": scan.number,
        "data_policy": scan.data_policy, "dataset": scan.dataset, "path": scan.path},
        "streams": sorted(scan.streams), "frame_sums": [int(np.asarray(f, dtype=np.int64).sum()) for f in frames],
        "live_sums": [sums.get(i) for i in range(len(image))],
        "refs": [[r.file_path, r.data_path, r.index] for r in refs],
        "numbers": numbers.tolist(), "timestamps": scan.streams[det + ":timestamp"][:].tolist(),
        "seen_latency": [seen[n] - written[n] for n in written if n in seen],
        "seen_before_stopped": [seen[n] < state_times.get("STOPPED", float("inf")) for n in sorted(written)],
        "read_latency": [readable[n] - written[n] for n in written if n in readable],
    }), flush=True)
""")


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    with EmbeddedRedis(tmp_path_factory.mktemp("redis")) as server:
        open_data_store(server.url)  # blissdata's setup, before a reader waits for scans there
        yield server.url


def start_reader(url: str) -> subprocess.Popen:
    reader = subprocess.Popen([sys.executable, "-c", READER, url], stdout=subprocess.PIPE, text=True)
    assert reader.stdout.readline().strip() == "ready"
    return reader


def reader_result(reader: subprocess.Popen) -> dict:
    try:
        out, _ = reader.communicate(timeout=20)
    finally:
        if reader.poll() is None:
            reader.kill()
            reader.communicate()
    assert reader.returncode == 0
    return json.loads(out.strip().splitlines()[-1])


def run_series(tmp_path: Path, sink: BlissdataSink, series_id: int, frames: int, file: str,
               period: float = 0.01, stop_after: int | None = None, abort: bool = False,
               during=None, frames_per_file: int = 0, stop_acquirer: bool = True,
               blissdata_scan: bool = True) -> tuple[Recorder, Path]:
    sender = StreamSender("tcp://127.0.0.1:*")
    camera = SimulatedCamera(SimulatedSensor(height=32, width=40, seed=series_id, serial_number="SIM-B"))
    acquirer = Acquirer(camera, sender)
    acquirer.update_settings(frame_count=frames, exposure=0.001, period=period)
    acquirer.set_series_id(series_id)
    recorder = Recorder(RecorderConfig(tmp_path, frames_per_file=frames_per_file), sinks=[sink])
    sink.attach(recorder)
    try:
        path = recorder.arm(RecordingRequest(frames, series_id, acquirer.stream_endpoint, file,
                                             blissdata_scan=blissdata_scan))
        acquirer.prepare()
        acquirer.start()
        if stop_after is not None:
            wait_until(lambda: recorder.counters.frames_written >= stop_after, 30, what=f"{stop_after} frames written")
            if during is not None:
                during()
            if abort:
                recorder.abort()
            if stop_acquirer:
                acquirer.stop()
        assert acquirer.wait(30) and recorder.wait(30)
    finally:
        sender.close()
    return recorder, path


def file_frames(path: Path) -> np.ndarray:
    with h5py.File(path, "r") as f:
        return f["entry/data/data"][()]


def test_a_reader_in_another_process_follows_a_series_and_reads_its_frames_by_reference(tmp_path, redis_url):
    sink = BlissdataSink(redis_url, beamline="id00", context=lambda: {"proposal": "mx1234", "sample": "ceo2"})
    reader = start_reader(redis_url)
    try:
        recorder, path = run_series(tmp_path, sink, 41, 40, "bd/series.h5", period=0.02)
        assert sink.wait_idle(10)
        seen = reader_result(reader)
    finally:
        sink.close()
    frames = file_frames(path)
    assert len(frames) == 40 and recorder.counters.frames_written == 40
    assert seen["states"][0] in ("CREATED", "PREPARED", "STARTED") and seen["states"][-1] == "CLOSED"
    assert seen["states"] == sorted(seen["states"], key=["CREATED", "PREPARED", "STARTED", "STOPPED", "CLOSED"].index)
    # the frames through blissdata (from the file the references name) are the file's frames
    assert seen["frame_sums"] == [int(f.astype(np.int64).sum()) for f in frames]
    assert seen["live_sums"] == seen["frame_sums"]  # and so were the ones read while the series ran
    assert seen["refs"][7] == [str(path), "entry/data/data", 7]
    info = seen["info"]
    missing = [key for key in REQUIRED_SCAN_INFO if key not in info]
    assert not missing
    assert info["scan_nb"] == 41 and info["npoints"] == 40 and info["save"] is True
    assert info["filename"] == str(path.with_name("series_bliss.h5")) and info["images_path"] == str(path)
    assert info["end_reason"] == "SUCCESS" and info["photonflow"]["end_reason"] == "completed"
    assert info["proposal"] == "mx1234" and info["sample_name"] == "ceo2" and info["beamline"] == "id00"
    assert info["acquisition_chain"]["timer"]["top_master"] == "timer"
    assert info["channels"]["simulator:image"]["dim"] == 2
    assert seen["identity"] == {"name": "photonflow_series", "number": 41, "data_policy": "ESRF",
                                "dataset": "series_41", "path": str(path.with_name("series_bliss.h5"))}
    assert set(seen["streams"]) == {"timer:epoch", "simulator:image", "simulator:frame_number",
                                    "simulator:timestamp"}
    assert sorted(seen["numbers"]) == list(range(40))
    with h5py.File(path) as f:
        np.testing.assert_allclose(sorted(seen["timestamps"]), np.sort(f["entry/accounting/timestamp"][:40]))
    seen_ms = 1000 * np.array(seen["seen_latency"])
    read_ms = 1000 * np.array(seen["read_latency"])
    in_redis_ms = 1000 * np.array(sink.latencies)
    print(f"\nblissdata latency, frame written -> in Redis: median {np.median(in_redis_ms):.1f} ms, "
          f"max {in_redis_ms.max():.1f} ms")
    print(f"blissdata latency, frame written -> reference seen by the reader: median {np.median(seen_ms):.1f} ms, "
          f"max {seen_ms.max():.1f} ms; -> pixels readable from the file: median {np.median(read_ms):.1f} ms, "
          f"max {read_ms.max():.1f} ms")
    assert sink.publish_errors == 0 and sink.frames_published == 40


def test_a_slow_series_is_published_live_frame_by_frame(tmp_path, redis_url):
    """A frame every 0.25 s: each reference reaches a reader while the series runs, not in one
    jump at its end (a lost wake-up of the publisher once held them all back)."""
    sink = BlissdataSink(redis_url)
    reader = start_reader(redis_url)
    try:
        run_series(tmp_path, sink, 45, 8, "bd/slow.h5", period=0.25)
        assert sink.wait_idle(10)
        seen = reader_result(reader)
    finally:
        sink.close()
    assert sorted(seen["numbers"]) == list(range(8))
    # every frame but the last was seen by the reader before the scan stopped
    assert all(seen["seen_before_stopped"][:-1]), seen["seen_before_stopped"]
    seen_ms = 1000 * np.array(seen["seen_latency"])
    print(f"\nblissdata latency of a slow series (0.25 s a frame), frame written -> reference seen by the reader: "
          f"median {np.median(seen_ms):.1f} ms, max {seen_ms.max():.1f} ms")


def test_a_split_series_is_referenced_in_its_data_files(tmp_path, redis_url):
    sink = BlissdataSink(redis_url)
    reader = start_reader(redis_url)
    try:
        _, path = run_series(tmp_path, sink, 42, 25, "bd/split.h5", period=0.005, frames_per_file=10)
        assert sink.wait_idle(10)
        seen = reader_result(reader)
    finally:
        sink.close()
    assert seen["frame_sums"] == [int(f.astype(np.int64).sum()) for f in file_frames(path)]
    assert seen["refs"][13] == [str(path.with_name("split_data_000002.h5")), "entry/data/data", 3]
    assert seen["info"]["data_policy"] == "no_policy"


def test_an_aborted_series_ends_with_user_abort(tmp_path, redis_url):
    sink = BlissdataSink(redis_url)
    reader = start_reader(redis_url)
    try:
        recorder, path = run_series(tmp_path, sink, 43, 500, "bd/aborted.h5", period=0.01, stop_after=5, abort=True)
        assert sink.wait_idle(10)
        seen = reader_result(reader)
    finally:
        sink.close()
    info = seen["info"]
    assert info["end_reason"] == "USER_ABORT" and info["photonflow"]["end_reason"] == "aborted"
    assert seen["states"][-1] == "CLOSED"
    written = recorder.counters.frames_written
    assert 5 <= written < 500 and info["photonflow"]["counts"]["frames_written"] == written
    assert seen["frame_sums"] == [int(f.astype(np.int64).sum()) for f in file_frames(path)]


# blissdata's stream writers send from threads of their own, which end with Redis' ConnectionError
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_redis_stopped_mid_series_costs_no_frame_and_is_counted(tmp_path):
    server = EmbeddedRedis(tmp_path / "redis")
    url = server.start()
    sink = BlissdataSink(url, timeout=0.5)
    try:
        recorder, path = run_series(tmp_path / "data", sink, 44, 60, "down.h5", period=0.01,
                                    stop_after=10, during=server.stop, stop_acquirer=False)
        assert sink.wait_idle(10)
    finally:
        sink.close()
        server.stop()
    assert recorder.counters.frames_written == 60 and recorder.counters.frames_lost == 0
    assert len(file_frames(path)) == 60
    assert sink.publish_errors >= 1 and "ConnectionError" in sink.last_error
    assert sink.frames_unpublished > 0 and sink.frames_published + sink.frames_unpublished == 60


def test_a_redis_that_answers_nothing_never_holds_the_recorder_up(tmp_path):
    """Redis frozen (SIGSTOP) from the 10th frame: the Recorder writes the whole series while the
    publisher waits on Redis (its timeout, 120 s, is longer than the series may take: a Recorder
    that waited for it would not end); once Redis answers again, every frame is published."""
    server = EmbeddedRedis(tmp_path / "redis")
    url = server.start()
    sink = BlissdataSink(url, timeout=120)
    try:
        recorder, path = run_series(tmp_path / "data", sink, 47, 60, "frozen.h5", period=0.01, stop_after=10,
                                    during=lambda: os.kill(server.pid, signal.SIGSTOP), stop_acquirer=False)
        assert recorder.counters.frames_written == 60 and recorder.counters.frames_lost == 0
        assert len(file_frames(path)) == 60
        assert not sink.wait_idle(0.2)  # the series' end is still waiting for Redis
    finally:
        os.kill(server.pid, signal.SIGCONT)
    try:
        assert sink.wait_idle(30)
    finally:
        sink.close()
        server.stop()
    assert sink.publish_errors == 0 and sink.frames_published == 60


def test_the_recorder_property_defaults_to_the_event_bus_only_when_it_is_redis(monkeypatch):
    from photonflow.publishing.blissdata_scan import url_from_property as blissdata_url

    monkeypatch.setenv("PHOTONFLOW_EVENT_BUS", "kafka://127.0.0.1:9092/events")
    assert blissdata_url("${PHOTONFLOW_EVENT_BUS}") == ""
    monkeypatch.setenv("PHOTONFLOW_EVENT_BUS", "redis://127.0.0.1:6390")
    assert blissdata_url("${PHOTONFLOW_EVENT_BUS}") == "redis://127.0.0.1:6390"
    monkeypatch.setenv("PHOTONFLOW_EVENT_BUS", "redis://127.0.0.1:6390/1")  # the suite's bus: database 1
    assert blissdata_url("${PHOTONFLOW_EVENT_BUS}") == "redis://127.0.0.1:6390"
    assert blissdata_url("redis://127.0.0.1:6391/0") == "redis://127.0.0.1:6391/0"  # as given
    assert blissdata_url("") == ""
    with pytest.raises(ValueError, match="Redis URL"):
        blissdata_url("tcp://127.0.0.1:5555")


def test_blissdata_takes_database_0_of_the_event_bus_server():
    assert blissdata_url("redis://127.0.0.1:6390/1") == "redis://127.0.0.1:6390"
    assert blissdata_url("redis://:secret@bus:6390/3?socket_timeout=2") == "redis://:secret@bus:6390?socket_timeout=2"
    assert blissdata_url("unix:///run/redis.sock?db=1") == "unix:///run/redis.sock"
    assert blissdata_url("kafka://bus:9092/events") == ""


def test_blissdata_sets_up_its_database_itself_beside_a_busy_event_bus(tmp_path):
    from blissdata.redis_engine.store import DataStore

    with EmbeddedRedis(tmp_path / "redis") as server:
        with RedisStreamBus(server.event_bus_url) as bus:
            bus.publish(experiment_done_event("id00", "/data/series_1.nxs", "NXmx", 1, {}))
            store = open_data_store(blissdata_url(server.event_bus_url))
            scan = store.create_scan({"name": "photonflow_series", "number": 1, "data_policy": "no_policy"})
            assert DataStore(server.url).load_scan(scan.key).number == 1
            assert [m.event["filepath"] for m in bus.read()] == ["/data/series_1.nxs"]


def test_a_database_shared_with_the_event_bus_is_refused_with_what_to_do(tmp_path):
    with EmbeddedRedis(tmp_path / "redis") as server:
        with RedisStreamBus(server.url) as bus:  # an event bus on database 0, blissdata's
            bus.publish(experiment_done_event("id00", "/data/series_1.nxs", "NXmx", 1, {}))
            with pytest.raises(ConfigurationError, match=r"put the event bus on another one \(redis://host:port/1\)"):
                open_data_store(blissdata_url(server.url))


def test_a_series_a_scan_engine_publishes_is_no_scan_of_its_own(tmp_path, redis_url):
    """Sardana's series (armed with blissdata_scan false) are frames of Sardana's blissdata scan:
    the Recorder publishes nothing of them, and the next series is published as ever."""
    sink = BlissdataSink(redis_url)
    store = open_data_store(redis_url)
    try:
        run_series(tmp_path, sink, 47, 5, "bd/engine.h5", period=0.005, blissdata_scan=False)
        run_series(tmp_path, sink, 48, 5, "bd/own.h5", period=0.005)
        assert sink.wait_idle(10)
    finally:
        sink.close()
    numbers = {store.load_scan(key).number for key in store.search_existing_scans(name="photonflow_series")[1]}
    assert 48 in numbers and 47 not in numbers
    assert (sink.series_left_to_engine, sink.frames_published, sink.publish_errors) == (1, 5, 0)


def test_blisswriter_writes_a_series_as_a_nexus_dataset_linking_its_frames(tmp_path, redis_url):
    """ESRF's own NeXus writer (blisswriter 3, PyPI), following the Redis as at a BLISS site, writes
    the series into <stem>_bliss.h5: its frames a virtual dataset of photonflow's file."""
    from tests.helpers.blisswriter import BlissWriter

    sink = BlissdataSink(redis_url, beamline="id00", context=lambda: {"title": "loopscan 12 0.01"})
    try:
        with BlissWriter(redis_url) as writer:
            recorder, path = run_series(tmp_path, sink, 46, 12, "bw/series.h5", period=0.01)
            assert sink.wait_idle(10)
            writer.wait_saved(1)
    finally:
        sink.close()
    nexus = path.with_name("series_bliss.h5")
    with h5py.File(nexus, "r") as f, h5py.File(path, "r") as ours:
        entry = f["46.1"]
        assert entry.attrs["NX_class"] == "NXentry" and entry["title"][()].decode() == "loopscan 12 0.01"
        assert entry["start_time"][()].decode() <= entry["end_time"][()].decode()
        frames = entry["instrument/simulator/data"]
        assert frames.is_virtual and {source.file_name for source in frames.virtual_sources()} == {"series.h5"}
        np.testing.assert_array_equal(frames[()], ours["entry/data/data"][()])
        np.testing.assert_array_equal(entry["measurement/simulator"][()], ours["entry/data/data"][()])
        assert entry["measurement/frame_number"][()].tolist() == list(range(12))
        np.testing.assert_allclose(entry["measurement/timestamp"][()], ours["entry/accounting/timestamp"][:12])
        assert entry["measurement/epoch"].attrs["units"] == "s"
        assert entry["instrument/name"][()].decode() == "id00"
