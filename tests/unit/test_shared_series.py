"""Several Recorders sharing one stream: the distributor deals each frame to exactly one and
announces the series to all; each Recorder writes what it received at its frame numbers; the
master presents the series in frame-number order, the frames no part holds listed and read as 0."""

from __future__ import annotations

import threading

import h5py
import numpy as np
import pytest

from photonflow.recording.config import RecorderConfig
from photonflow.recording.recorder import Recorder, RecordingRequest
from photonflow.recording.shared_series import part_file, strided_runs, write_master
from photonflow.stream.stins import StinsEncoder
from photonflow.stream.transport import ReceiverGone, StreamDistributor, StreamReceiver
from tests.helpers.recording import DETECTOR, SHAPE, frame


def test_runs_of_round_robin_frames_are_strided_mappings():
    assert list(strided_runs(np.array([0, 2, 4, 6, 9, 10]))) == [(0, 2, 4), (9, 1, 2)]
    assert list(strided_runs(np.array([5]))) == [(5, 1, 1)]
    assert list(strided_runs(np.array([], dtype=int))) == []


def test_a_part_file_is_named_after_the_series_file():
    assert part_file("sample1/scan_001.h5", 0) == "sample1/scan_001_r1.h5"
    assert part_file("scan.nxs", 2) == "scan_r3.nxs"


def record_shared(tmp_path, frame_numbers, recorders=2, frame_count=None, stop_part=None):
    """A series sent through a distributor to ``recorders`` Recorders (shared data root); the part
    ``stop_part`` is aborted before the frames come (a Recorder gone). Returns parts, recorders."""
    frame_count = len(frame_numbers) if frame_count is None else frame_count
    distributor = StreamDistributor("tcp://127.0.0.1:*", recorders, send_timeout=5)
    cores = [Recorder(RecorderConfig(tmp_path)) for _ in range(recorders)]
    try:
        parts = [core.arm(RecordingRequest(frame_count, 1, endpoint, part_file("shared.h5", index), share=True))
                 for index, (core, endpoint) in enumerate(zip(cores, distributor.endpoints, strict=True))]
        if stop_part is not None:
            cores[stop_part].abort()
            assert cores[stop_part].wait(10)
        encoder = StinsEncoder()
        distributor.announce(encoder.series_start(1, frame_count, SHAPE, "uint16", DETECTOR))
        for n in frame_numbers:
            distributor.send(encoder.data(1, n, frame(n), 1000.0 + n))
        give_up = threading.Event()
        timer = threading.Timer(2.0, give_up.set)
        timer.start()
        distributor.announce(encoder.series_end(1, frame_count, len(frame_numbers)), give_up)
        timer.cancel()
        for core in cores:
            assert core.wait(10)
    finally:
        distributor.close()
    return parts, cores


def test_two_recorders_share_a_series_and_the_master_presents_it_in_frame_order(tmp_path):
    parts, cores = record_shared(tmp_path, range(20))
    written = [core.counters.frames_written for core in cores]
    assert sum(written) == 20 and all(count > 0 for count in written)  # each frame to exactly one
    assert all(core.state == "ON" for core in cores)  # the others' frames are not missing here
    master = write_master(tmp_path / "shared.h5", parts, 20)
    assert master.missing.size == 0 and master.frames_written == 20
    with h5py.File(master.path, "r") as f:
        data = f["entry/data/data"]
        assert data.is_virtual and data.shape == (20, *SHAPE)
        np.testing.assert_array_equal(data[()], np.stack([frame(n) for n in range(20)]))
        np.testing.assert_array_equal(f["entry/accounting/timestamp"][()], 1000.0 + np.arange(20))
        owners = f["entry/accounting/recorder_of_frame"][()]
        assert sorted(set(owners.tolist())) == [0, 1]
        assert int(f["entry/accounting/frames_written"][()]) == 20
        assert f["entry/accounting/missing_frame_numbers"].shape == (0,)
        assert [name.decode() for name in f["entry/accounting/part_files"][()]] == ["shared_r1.h5", "shared_r2.h5"]
        assert f["entry/instrument/sim"].attrs["NX_class"] == "NXdetector"  # the detector's description, copied
        # few mappings: runs of each part's frames, not one per frame
        assert len(data.virtual_sources()) < 20


def test_frames_nobody_received_are_listed_and_read_as_zero_never_as_another_frame(tmp_path):
    sent = [n for n in range(12) if n not in (3, 4, 9)]
    parts, _ = record_shared(tmp_path, sent, frame_count=12)
    master = write_master(tmp_path / "shared.h5", parts, 12)
    assert master.missing.tolist() == [3, 4, 9]
    with h5py.File(master.path, "r") as f:
        data = f["entry/data/data"][()]
        for n in range(12):
            expected = np.zeros(SHAPE, np.uint16) if n in (3, 4, 9) else frame(n)
            np.testing.assert_array_equal(data[n], expected)
        assert f["entry/accounting/missing_frame_numbers"][()].tolist() == [3, 4, 9]
        assert f["entry/accounting/recorder_of_frame"][()][[3, 4, 9]].tolist() == [-1, -1, -1]


def test_a_recorder_gone_before_the_series_leaves_its_frames_to_the_others(tmp_path):
    parts, cores = record_shared(tmp_path, range(10), stop_part=1)
    assert cores[0].counters.frames_written == 10  # the distributor skipped the output nobody took
    master = write_master(tmp_path / "shared.h5", parts, 10)
    assert master.missing.size == 0 and set(master.owners.tolist()) == {0}
    with h5py.File(master.path, "r") as f:
        np.testing.assert_array_equal(f["entry/data/data"][()], np.stack([frame(n) for n in range(10)]))


def test_the_distributor_announces_to_every_output_and_deals_data_to_one():
    distributor = StreamDistributor("tcp://127.0.0.1:*", 3, send_timeout=2)
    receivers = [StreamReceiver(endpoint) for endpoint in distributor.endpoints]
    try:
        distributor.announce([b"start"])
        for n in range(9):
            distributor.send([str(n).encode()])
        distributor.announce([b"end"])
        seen = []
        for receiver in receivers:
            got = []
            while (message := receiver.receive(2000)) is not None:
                got.append(bytes(message[0]))
                if got[-1] == b"end":
                    break
            seen.append(got)
        assert all(got[0] == b"start" and got[-1] == b"end" for got in seen)
        data = sorted(int(m) for got in seen for m in got[1:-1])
        assert data == list(range(9))  # each exactly once
    finally:
        for receiver in receivers:
            receiver.close()
        distributor.close()


def test_a_distributor_nobody_takes_gives_up_after_its_timeout():
    distributor = StreamDistributor("tcp://127.0.0.1:*", 2, send_timeout=0.2)
    try:
        with pytest.raises(ReceiverGone, match="no receiver took the stream"):
            distributor.send([b"x"])
    finally:
        distributor.close()


class _Part:
    """A Recorder port that only answers check_file and remembers arms (the group's arithmetic)."""

    def __init__(self, name):
        self.name, self.armed = name, []

    def check_file(self, file):
        return f"/data/{file}"

    def arm(self, frames, series_id, endpoint, file, protocol, blissdata_scan=True, share=False):
        self.armed.append((endpoint, file, blissdata_scan, share))
        return f"/data/{file}"


def test_a_group_arms_each_recorder_on_its_own_output_with_its_part_file():
    from photonflow.control.recorder_group import RecorderGroup

    parts = [_Part("r1"), _Part("r2")]
    group = RecorderGroup(parts)
    assert group.arm(10, 7, "tcp://h:1,tcp://h:2", None, "stins") == "/data/series_000007.h5"
    assert [part.armed for part in parts] == [[("tcp://h:1", "series_000007_r1.h5", False, True)],
                                              [("tcp://h:2", "series_000007_r2.h5", False, True)]]


def test_a_group_refuses_a_stream_with_other_than_one_output_per_recorder():
    from photonflow.control.recorder_group import RecorderGroup
    from photonflow.errors import ConfigurationError

    group = RecorderGroup([_Part("r1"), _Part("r2"), _Part("r3")])
    with pytest.raises(ConfigurationError, match="2 output\\(s\\) for 3 Recorders: set the Acquirer's StreamOutputs"):
        group.arm(10, 1, "tcp://h:1,tcp://h:2", "x.h5", "stins")


def test_a_recorder_that_takes_nothing_holds_the_others_up_no_longer_than_its_buffer():
    """One output never read (a Recorder stuck on its disk): the sends go on to the other, never
    waiting out the timeout; read at last, each message arrived exactly once."""
    distributor = StreamDistributor("tcp://127.0.0.1:*", 2, high_water_mark=16, send_timeout=1)
    stuck, reading = StreamReceiver(distributor.endpoints[0], 16), StreamReceiver(distributor.endpoints[1], 16)
    got: dict[str, list[int]] = {"stuck": [], "reading": []}
    done = threading.Event()

    def read():
        while (message := reading.receive(200)) is not None or not done.is_set():
            if message is not None:
                got["reading"].append(int(bytes(message[0])))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for n in range(3000):
            distributor.send([str(n).encode(), bytes(4096)])  # ReceiverGone here would be a stall
        done.set()
        reader.join(30)
        while (message := stuck.receive(500)) is not None:
            got["stuck"].append(int(bytes(message[0])))
    finally:
        done.set()
        for receiver in (stuck, reading):
            receiver.close()
        distributor.close()
    assert sorted(got["stuck"] + got["reading"]) == list(range(3000))
    assert len(got["reading"]) > len(got["stuck"])  # the one that reads took the most
