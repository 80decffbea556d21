"""A step scan (as Sardana's blissdata recorder describes it) as a blissdata 2 scan, without Sardana:
photonflow's frame references, the scan_info consumers read, a real embedded Redis read back
through blissdata (frames through its lima plugin, from the file), and a Redis that is down."""

from __future__ import annotations

import logging
import socket

import h5py
import numpy as np
import pytest

from photonflow.events.redis_server import EmbeddedRedis
from photonflow.publishing.blissdata_scan import DataPolicy, open_data_store
from photonflow.publishing.blissdata_step_scan import (
    FRAMES,
    MOTOR,
    SCALAR,
    Column,
    PublishHealth,
    StepScan,
    StepScanPublisher,
)
from photonflow.publishing.frame_reference import FrameReference, frame_reference, parse_frame_reference
from tests.helpers.waiting import wait_until

pytest.importorskip("blissdata")

POINTS = 6
FRAME_SHAPE = (8, 10)


def step_scan(file: str = "/data/scans/scan.h5") -> StepScan:
    return StepScan(
        name="ascan", number=17, title="ascan samx 0 0.5 5 0.01", npoints=POINTS, count_time=0.01,
        start_epoch=1_800_000_000.0, file=file,
        columns=[Column("samx", "axis:samx", MOTOR, "samx", unit="mm"),
                 Column("tango://h:1/expchan/ct01/value", "ct01:value", SCALAR, "ct01"),
                 Column("tango://h:1/expchan/pf_controller/value", "pf_controller:image", FRAMES, "pf_controller",
                        shape=FRAME_SHAPE)],
        positioners={"samx": 0.25}, units={"samx": "mm"}, session="demo_ms",
    )


def test_a_frame_reference_reads_back_as_the_file_dataset_and_index():
    text = frame_reference("/data/demo/series_7.h5", 12)
    assert text == "h5file:///data/demo/series_7.h5::/entry/data/data[12]"
    assert parse_frame_reference(text) == FrameReference("/data/demo/series_7.h5", "/entry/data/data", 12)
    assert parse_frame_reference(text.encode()) == FrameReference("/data/demo/series_7.h5", "/entry/data/data", 12)
    assert parse_frame_reference("h5file:///data/x.h5::/entry/data/data") is None  # a whole dataset, no frame
    assert parse_frame_reference("file:///data/x.edf") is None
    assert parse_frame_reference(float("nan")) is None  # a point Sardana never filled


def test_scan_info_says_what_blissdata_consumers_read():
    policy = DataPolicy.from_context({"proposal": "mx1234", "session": "s1", "sample": "ceo2"}, session="demo_ms",
                                     dataset="ascan_17", beamline="id00")
    frames = {"pf_controller:image": FrameReference("/data/series_3.h5", "/entry/data/data", 0)}
    description = step_scan().description(policy, frames)
    info = description.scan_info()
    for key in ("acquisition_chain", "devices", "channels", "start_time", "end_time", "scan_nb", "type", "title",
                "npoints", "count_time", "data_policy", "save", "filename", "positioners"):
        assert key in info, key
    assert (info["scan_nb"], info["type"], info["title"], info["npoints"]) == (17, "ascan", "ascan samx 0 0.5 5 0.01", 6)
    # blisswriter saves the scan beside Sardana's file, the frames' stream linking photonflow's
    assert info["filename"] == "/data/scans/scan_bliss.h5" and info["save"] is True and info["data_writer"] == "nexus"
    assert info["photonflow"]["scan_file"] == "/data/scans/scan.h5"
    assert info["images_path"] == "/data/series_3.h5" and info["photonflow"]["frame_files"] == ["/data/series_3.h5"]
    entry = info["h5maps"]["/data/scans/scan_bliss.h5"]["children"]["17.1"]
    assert entry["children"]["instrument"]["children"]["pf_controller"]["children"]["data"] == {
        "type": "stream", "stream": "pf_controller:image"}
    measurement = entry["children"]["measurement"]["children"]
    assert measurement["samx"] == {"type": "dataset", "attributes": {"units": "mm"},
                                   "value": {"type": "stream", "stream": "axis:samx"}}
    assert measurement["pf_controller"] == {"type": "soft_link", "target_path": "/17.1/instrument/pf_controller/data"}
    assert set(measurement) == {"elapsed_time", "epoch", "samx", "ct01", "pf_controller"}
    chain = info["acquisition_chain"]["timer"]
    assert chain["top_master"] == "timer" and chain["images"] == ["pf_controller:image"]
    assert chain["master"]["scalars"] == ["timer:elapsed_time", "timer:epoch", "axis:samx"]
    assert info["devices"]["timer"]["triggered_devices"] == ["axis", "ct01", "pf_controller"]
    assert info["devices"]["pf_controller"] == {"name": "pf_controller", "channels": ["pf_controller:image"],
                                                "type": "lima"}
    assert info["channels"]["axis:samx"] == {"dim": 0, "display_name": "samx", "unit": "mm"}
    assert info["channels"]["pf_controller:image"]["dim"] == 2
    assert info["positioners"] == {"positioners_start": {"samx": 0.25}, "positioners_units": {"samx": "mm"}}
    assert info["start_time"].startswith("2027-01-15T")  # 1.8e9 s, with its offset
    assert description.identity() == {"name": "ascan", "number": 17, "data_policy": "ESRF", "session": "s1",
                                      "proposal": "mx1234", "collection": "ceo2", "dataset": "ascan_17",
                                      "path": "/data/scans/scan_bliss.h5"}


def test_a_scan_sardana_saves_no_file_of_is_not_saved_by_blisswriter_either():
    policy = DataPolicy.from_context({}, session="demo_ms", dataset="ascan_17", beamline="id00")
    description = step_scan(file="").description(policy, frames={})
    info = description.scan_info()
    assert (info["save"], info["filename"], info["h5maps"], info["data_writer"]) == (False, "", {}, "sardana")
    assert description.identity()["path"] is None


def test_a_2d_channel_without_photonflow_references_is_left_out_once_the_first_point_tells():
    policy = DataPolicy.from_context({}, session="demo_ms", dataset="ascan_17", beamline="id00")
    info = step_scan().description(policy, frames={}).scan_info()
    assert "pf_controller:image" not in info["channels"] and info["data_policy"] == "no_policy"


def test_a_point_without_a_value_is_nan_and_its_epoch_follows_the_start():
    values = step_scan().values({"timestamp": 1.5, "samx": None, "tango://h:1/expchan/ct01/value": 4})
    assert values["timer:epoch"] == 1_800_000_001.5 and values["timer:elapsed_time"] == 1.5
    assert np.isnan(values["axis:samx"]) and values["ct01:value"] == 4.0
    assert "pf_controller:image" not in values


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    with EmbeddedRedis(tmp_path_factory.mktemp("redis")) as server:
        open_data_store(server.url)
        yield server.url


def photonflow_file(path) -> np.ndarray:
    frames = np.arange(POINTS * FRAME_SHAPE[0] * FRAME_SHAPE[1], dtype=np.uint16).reshape(POINTS, *FRAME_SHAPE)
    with h5py.File(path, "w") as f:
        f["entry/data/data"] = frames
    return frames


def test_a_published_step_scan_reads_back_with_its_frames_from_the_file(tmp_path, redis_url):
    from blissdata.redis_engine.scan import ScanState

    frames = photonflow_file(tmp_path / "series_3.h5")
    positions = np.linspace(0, 0.5, POINTS)
    publisher = StepScanPublisher(redis_url, step_scan(str(tmp_path / "scan.h5")),
                                  context=lambda: {"proposal": "mx1234", "sample": "ceo2"})
    for point in range(POINTS):
        publisher.point(point, {"timestamp": 0.1 * point, "samx": positions[point],
                                "tango://h:1/expchan/ct01/value": 10.0 * point,
                                "tango://h:1/expchan/pf_controller/value":
                                    frame_reference(str(tmp_path / "series_3.h5"), point)})
    publisher.end("SUCCESS")
    assert publisher.wait(10) and publisher.health.errors == 0 and publisher.health.scans_published == 1
    scan = open_data_store(redis_url).load_scan(publisher.scan_key)
    assert scan.state == ScanState.CLOSED and (scan.name, scan.number) == ("ascan", 17)
    assert scan.info["end_reason"] == "SUCCESS" and scan.info["proposal"] == "mx1234"
    assert sorted(scan.streams) == ["axis:samx", "ct01:value", "pf_controller:image", "timer:elapsed_time",
                                    "timer:epoch"]
    np.testing.assert_allclose(scan.streams["axis:samx"][:], positions)
    np.testing.assert_allclose(scan.streams["ct01:value"][:], 10.0 * np.arange(POINTS))
    image = scan.streams["pf_controller:image"]
    assert len(image) == POINTS and image.dtype == np.uint16 and image.shape == FRAME_SHAPE
    np.testing.assert_array_equal(np.asarray(image[0:POINTS]), frames)
    assert image.get_references(4).index == 4


def test_a_scan_without_frames_starts_at_once_and_a_stopped_one_ends_as_user_abort(redis_url):
    from blissdata.redis_engine.scan import ScanState

    scan = step_scan()
    scan.columns = scan.columns[:2]
    publisher = StepScanPublisher(redis_url, scan)
    store = open_data_store(redis_url)
    wait_until(lambda: publisher.scan_key, 30, what="the scan created")
    assert store.load_scan(publisher.scan_key).state == ScanState.STARTED  # before any point
    publisher.point(0, {"timestamp": 0.0, "samx": 0.0})
    publisher.end("USER_ABORT")
    assert publisher.wait(10)
    published = store.load_scan(publisher.scan_key)
    assert published.state == ScanState.CLOSED and published.info["end_reason"] == "USER_ABORT"
    assert len(published.streams["axis:samx"]) == 1


def test_a_redis_that_is_down_costs_the_scan_nothing_and_is_warned_about_once(caplog):
    health = PublishHealth()
    with socket.socket() as silent, caplog.at_level(logging.WARNING, logger="photonflow.publishing.blissdata_step_scan"):
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # connections complete but nothing ever answers: the publisher hangs until its timeout
        url = f"redis://127.0.0.1:{silent.getsockname()[1]}"
        for _ in range(2):
            publisher = StepScanPublisher(url, step_scan(), health=health, timeout=2.0)
            for point in range(POINTS):
                publisher.point(point, {"timestamp": 0.0, "samx": 0.0})
            publisher.end("SUCCESS")
            assert not publisher.wait(0)  # the scan's calls only queued: they are back while Redis hangs
            assert publisher.wait(10)
            assert publisher.failure.startswith(f"blissdata publishing of ascan 17 to {url} failed")
    assert health.errors == 2 and health.scans_published == 0 and "Timeout" in health.last_error
    assert len([r for r in caplog.records if "blissdata publishing" in r.getMessage()]) == 1


def test_a_frame_is_told_readable_once_the_recorder_says_it_is_flushed_never_before(tmp_path, redis_url):
    """With the Recorder's FramesFlushed, readers are told a frame is in the file as soon as it is
    (within FLUSHED_POLL), and never sooner: read before, it would be zeros."""
    photonflow_file(tmp_path / "series_4.h5")
    flushed = {"frames": 0}
    publisher = StepScanPublisher(redis_url, step_scan(str(tmp_path / "scan.h5")),
                                  frames_flushed=lambda: flushed["frames"])
    for point in range(3):
        publisher.point(point, {"timestamp": 0.1 * point, "samx": 0.0, "tango://h:1/expchan/ct01/value": 1.0,
                                "tango://h:1/expchan/pf_controller/value":
                                    frame_reference(str(tmp_path / "series_4.h5"), point)})
    store = open_data_store(redis_url)
    wait_until(lambda: publisher.scan_key, 30, what="the scan created")
    wait_until(lambda: "pf_controller:image" in store.load_scan(publisher.scan_key).streams, 30,
               what="the image stream")
    scan = store.load_scan(publisher.scan_key)
    from blissdata.streams.default import Stream

    # the Lima stream's own entries, as a reader's Lima client takes them: last frame written, last readable
    entries = Stream(scan.streams["pf_controller:image"].event_stream)
    told = []

    def readable(frames: int) -> bool:
        count = len(entries)
        if count:
            told.append(int(entries[count - 1]["last_index_saved"]) + 1)
        return bool(told) and told[-1] >= frames

    flushed["frames"] = 2
    wait_until(lambda: readable(2), 30, what="2 frames told readable")
    assert max(told) == 2  # the third is written, not flushed: never told readable
    flushed["frames"] = 3
    wait_until(lambda: readable(3), 30, what="3 frames told readable")
    publisher.end("SUCCESS")
    assert publisher.wait(10) and publisher.health.errors == 0
