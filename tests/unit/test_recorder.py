"""The Recorder core over a real ZeroMQ socket and real HDF5 files (no Tango)."""

import json

import h5py
import numpy as np
import pytest

from photonflow import states
from photonflow.errors import ConfigurationError, FilePathError, RecordingError, StateError
from photonflow.recording.config import RecorderConfig
from photonflow.recording.recorder import Recorder
from photonflow.recording.request import RecordingRequest, parse_recording_request
from photonflow.stream.stins import StinsEncoder
from photonflow.stream.transport import RECEIVE_BUFFER_BYTES, StreamReceiver
from tests.helpers.fakes import EventLog
from tests.helpers.recording import DETECTOR, SHAPE, arm, frame, send_series


@pytest.fixture
def recorder(tmp_path):
    events = EventLog()
    return Recorder(RecorderConfig(tmp_path / "data", counter_interval=0.0), listener=events)


def test_every_frame_sent_is_in_the_file_in_nexus_layout(recorder, stream):
    path = arm(recorder, stream, 10)
    send_series(stream, range(10))
    assert recorder.wait(10)
    assert recorder.state == states.ON
    assert (recorder.counters.frames_received, recorder.counters.frames_written, recorder.counters.missing_frames) == (10, 10, 0)
    with h5py.File(path, "r") as f:
        assert f.attrs["default"] == "entry"
        entry = f["entry"]
        assert entry.attrs["NX_class"] == "NXentry" and entry.attrs["default"] == "data"
        detector = entry["instrument/sim"]
        assert detector.attrs["NX_class"] == "NXdetector"
        assert detector["x_pixel_size"][()] == 75e-6 and detector["x_pixel_size"].attrs["units"] == "m"
        assert detector["detector_specific/trigger_mode"][()] == b"internal"
        data = detector["data"]
        assert data.chunks == (1, *SHAPE)
        assert entry["data"].attrs["signal"] == "data"
        assert entry["data/data"] == data  # the NXdata plot is the detector's data itself
        for n in range(10):
            np.testing.assert_array_equal(data[n], frame(n))
        assert "start_time" in entry and "end_time" in entry
        accounting = entry["accounting"]
        assert accounting["frames_written"][()] == 10 and accounting["missing_frames"][()] == 0
        assert accounting["end_reason"][()] == b"completed"


def test_out_of_order_frames_land_at_their_index_and_duplicates_are_dropped(recorder, stream):
    path = arm(recorder, stream, 4)
    encoder = StinsEncoder()
    stream.send(encoder.series_start(1, 4, SHAPE, "uint16", DETECTOR))
    for n in (2, 0, 3, 0, 1):
        stream.send(encoder.data(1, n, frame(n), 0.0))
    stream.send(encoder.series_end(1, 4, 4))
    recorder.wait(10)
    assert recorder.counters.duplicate_frames == 1 and recorder.counters.frames_written == 4
    assert recorder.counters.frames_received == 5
    with h5py.File(path, "r") as f:
        for n in range(4):
            np.testing.assert_array_equal(f["entry/data/data"][n], frame(n))


def test_a_missing_frame_is_listed_in_the_file_and_raises_alarm(recorder, stream):
    path = arm(recorder, stream, 5)
    encoder = StinsEncoder()
    stream.send(encoder.series_start(1, 5, SHAPE, "uint16", DETECTOR))
    for n in (0, 1, 3, 4):
        stream.send(encoder.data(1, n, frame(n), 0.0))
    stream.send(encoder.series_end(1, 5, 5))
    recorder.wait(10)
    assert recorder.state == states.ALARM and "1 frame(s) missing: 2" in recorder.status
    assert recorder.counters.missing_frames == 1
    with h5py.File(path, "r") as f:
        assert list(f["entry/accounting/missing_frame_numbers"][()]) == [2]
        np.testing.assert_array_equal(f["entry/data/data"][3], frame(3))


def test_a_malformed_message_mid_series_is_counted_and_reported_not_fatal(recorder, stream):
    path = arm(recorder, stream, 3)
    encoder = StinsEncoder()
    stream.send(encoder.series_start(1, 3, SHAPE, "uint16", DETECTOR))
    stream.send(encoder.data(1, 0, frame(0), 0.0))
    stream.send([b"{broken"])
    stream.send([json.dumps({"version": 9, "message_type": "data"}).encode()])
    stream.send(encoder.data(1, 1, np.zeros((2, 2), np.uint16), 0.0))  # shape differs from series_start
    stream.send(encoder.data(99, 1, frame(1), 0.0))  # another series
    stream.send(encoder.data(1, 10**9, frame(1), 0.0))  # beyond the announced frame count
    stream.send(encoder.data(1, 1, frame(1), 0.0))
    stream.send(encoder.data(1, 2, frame(2), 0.0))
    stream.send(encoder.series_end(1, 3, 3))
    recorder.wait(10)
    assert recorder.counters.messages_rejected == 5
    assert recorder.counters.frames_written == 3 and recorder.state == states.ON
    assert any("unsupported STINS version 9" in status for _, status in recorder.listener.states)
    with h5py.File(path, "r") as f:
        assert f["entry/accounting/messages_rejected"][()] == 5
        assert f["entry/data/data"].shape[0] == 3
        np.testing.assert_array_equal(f["entry/data/data"][2], frame(2))


def test_per_frame_values_land_by_frame_number_and_unannounced_ones_are_refused(recorder, stream):
    path = arm(recorder, stream, 4)
    encoder = StinsEncoder()
    stream.send(encoder.series_start(1, 4, SHAPE, "uint16", DETECTOR, frame_metadata=("start_angle", "flux")))
    for n in (3, 0, 1):  # out of order; frame 2 carries no values
        stream.send(encoder.data(1, n, frame(n), 0.0, metadata={"start_angle": 10 + 0.5 * n, "flux": 1e12 * n}))
    stream.send(encoder.data(1, 2, frame(2), 0.0, metadata={"omega": 1.0}))  # not announced: refused
    stream.send(encoder.data(1, 2, frame(2), 0.0))
    stream.send(encoder.series_end(1, 4, 4))
    assert recorder.wait(10)
    assert recorder.counters.messages_rejected == 1 and recorder.counters.frames_written == 4
    assert any("frame 2 carries metadata omega that series_start did not announce" in status
               for _, status in recorder.listener.states)
    with h5py.File(path, "r") as f:
        values = f["entry/instrument/sim/frame_metadata"]
        assert values.attrs["NX_class"] == "NXcollection"
        np.testing.assert_array_equal(values["start_angle"][()], [10.0, 10.5, np.nan, 11.5])
        np.testing.assert_array_equal(values["flux"][()], [0.0, 1e12, np.nan, 3e12])
        assert values["start_angle"].attrs["units"] == "deg" and "units" not in values["flux"].attrs


def test_stop_without_series_end_leaves_a_readable_file(recorder, stream):
    path = arm(recorder, stream, 100)
    send_series(stream, range(3), frame_count=100, end=False)
    recorder.listener.wait_for_state(states.RUNNING)
    # wait until the three frames are in, then stop as an operator would
    deadline_ok = False
    for _ in range(100):
        if recorder.counters.frames_written == 3:
            deadline_ok = True
            break
        recorder.wait(0.05)
    assert deadline_ok
    recorder.stop()
    assert recorder.wait(5)
    with h5py.File(path, "r") as f:
        assert f["entry/data/data"].shape == (3, *SHAPE)
        assert f["entry/accounting/end_reason"][()] == b"stopped"


def test_an_existing_file_is_refused_and_left_untouched(recorder, stream, tmp_path):
    existing = tmp_path / "data" / "taken.h5"
    existing.parent.mkdir(parents=True, exist_ok=True)
    existing.write_bytes(b"precious")
    with pytest.raises(FilePathError, match="already exists; photonflow never overwrites"):
        arm(recorder, stream, 1, "taken.h5")
    assert existing.read_bytes() == b"precious"
    assert recorder.state == states.ON


def test_a_file_created_behind_the_recorders_back_faults_without_damage(recorder, stream, tmp_path):
    path = arm(recorder, stream, 2, "race.h5")
    path.write_bytes(b"someone else's")
    # Only series_start: once in FAULT the Recorder stops reading, and further sends would wait.
    stream.send(StinsEncoder().series_start(1, 2, SHAPE, "uint16", DETECTOR))
    status = recorder.listener.wait_for_state(states.FAULT)
    assert str(path) in status
    assert path.read_bytes() == b"someone else's"


def test_paths_outside_the_data_root_are_refused(recorder, stream):
    with pytest.raises(FilePathError, match="outside the data root") as caught:
        arm(recorder, stream, 1, "../escape.h5")
    assert caught.value.reason == "FileOutsideDataRoot"
    with pytest.raises(FilePathError, match="outside the data root"):
        arm(recorder, stream, 1, "/etc/passwd.h5")


def test_a_directory_that_cannot_be_made_is_reported(recorder, stream, tmp_path):
    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "data" / "blocker").write_text("a file, not a directory")
    with pytest.raises(RecordingError, match="cannot create the directory"):
        arm(recorder, stream, 1, "blocker/inner/scan.h5")


def test_the_template_names_the_file_when_none_is_given(tmp_path, stream):
    recorder = Recorder(RecorderConfig(tmp_path, "run_{series_id:03d}.h5"))
    path = recorder.arm(RecordingRequest(1, 12, stream.endpoint))
    assert path == tmp_path.resolve() / "run_012.h5"
    recorder.abort()
    recorder.wait(5)


def test_arming_twice_is_refused(recorder, stream):
    arm(recorder, stream, 1, "one.h5")
    with pytest.raises(StateError, match="already recording"):
        arm(recorder, stream, 1, "two.h5")
    recorder.abort()
    recorder.wait(5)


@pytest.mark.parametrize(
    "text, complaint",
    [
        ("nope", "Arm needs a JSON object"),
        ('{"frames": 1, "series_id": 1}', "missing key 'endpoint'"),
        ('{"frames": "1", "series_id": 1, "endpoint": "tcp://x:1"}', "'frames' must be int"),
        ('{"frames": 1, "series_id": 1, "endpoint": "tcp://x:1", "colour": 1}', "unknown key(s) colour"),
    ],
)
def test_arm_requests_are_validated(text, complaint):
    with pytest.raises(ConfigurationError) as caught:
        parse_recording_request(text)
    assert complaint in str(caught.value)


class WatchedReceiver(StreamReceiver):
    """The real receiver, keeping what its receive buffer was fitted to."""

    fitted: list[int] = []

    def fit_to_frames(self, frame_bytes: int) -> int:
        messages = super().fit_to_frames(frame_bytes)
        self.fitted.append((frame_bytes, messages))
        return messages


def test_the_receive_buffer_is_fitted_in_bytes_to_the_frames_the_series_announces(tmp_path, stream):
    WatchedReceiver.fitted = []
    recorder = Recorder(RecorderConfig(tmp_path / "data"), receiver_factory=WatchedReceiver)
    shape, big = (1000, 1000), np.full((1000, 1000), 7, np.uint32)  # 4 MB frames: 16 of them in 64 MB
    path = recorder.arm(RecordingRequest(2, 1, stream.endpoint, "big.h5"))
    encoder = StinsEncoder()
    stream.send(encoder.series_start(1, 2, shape, "uint32", DETECTOR))
    for n in range(2):
        stream.send(encoder.data(1, n, big + n, 0.0))
    stream.send(encoder.series_end(1, 2, 2))
    assert recorder.wait(10) and recorder.state == states.ON
    assert WatchedReceiver.fitted == [(4_000_000, RECEIVE_BUFFER_BYTES // 4_000_000)]
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["entry/data/data"][1], big + 1)


def test_after_a_series_nothing_counts_as_waiting_for_the_disk(recorder, stream):
    arm(recorder, stream, 5)
    send_series(stream, range(5))
    assert recorder.wait(10) and recorder.state == states.ON
    assert (recorder.counters.queue_depth, recorder.counters.queue_megabytes) == (0, 0.0)
