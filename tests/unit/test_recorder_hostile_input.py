"""Input from a sender or an operator that is wrong, huge or cut short: refused at the door with
a reason, counted, and never a FAULT, a lost series or memory the configuration did not allow."""

import json
import tracemalloc

import h5py
import numpy as np
import pytest

from photonflow import states
from photonflow.errors import ConfigurationError
from photonflow.recording.config import RecorderConfig
from photonflow.recording.recorder import Recorder
from photonflow.recording.request import RecordingRequest, parse_recording_request
from photonflow.recording.series import frame_ranges
from photonflow.stream import maxiv
from photonflow.stream.stins import StinsEncoder
from tests.helpers.fakes import EventLog
from tests.helpers.recording import DETECTOR, SHAPE, arm, frame, send_series


@pytest.fixture
def recorder(tmp_path):
    return Recorder(RecorderConfig(tmp_path / "data", counter_interval=0.0), listener=EventLog())


def with_header(parts, **changes):
    """The message with some of its STINS header fields replaced (as a faulty sender would)."""
    header = json.loads(parts[0])
    header.update(changes)
    return [json.dumps(header).encode(), *parts[1:]]


@pytest.mark.parametrize(
    "changes, complaint",
    [
        ({"series_id": 10**30}, "'series_id' must be 0 to 9223372036854775807, got 1000000000000000000000000000000"),
        ({"endpoint": "garbage"}, "'endpoint' 'garbage' is not a ZeroMQ address such as tcp://127.0.0.1:5555"),
        ({"endpoint": ["tcp://127.0.0.1:5555", "tcp://nowhere"]}, "'endpoint' 'tcp://nowhere' is not a ZeroMQ address"),
    ],
)
def test_arm_refuses_values_no_stream_can_have(changes, complaint):
    request = {"frames": 10, "series_id": 1, "endpoint": "tcp://127.0.0.1:5555", **changes}
    with pytest.raises(ConfigurationError) as caught:
        parse_recording_request(json.dumps(request))
    assert complaint in str(caught.value)


def test_arm_refuses_json_nested_too_deeply_with_an_example_of_what_it_takes():
    with pytest.raises(ConfigurationError) as caught:
        parse_recording_request("[" * 100_000 + "]" * 100_000)
    assert "Arm needs a JSON object such as" in str(caught.value) and "nested too deeply" in str(caught.value)


def test_arm_refuses_more_frames_than_the_recorder_takes_naming_the_property(tmp_path, stream):
    recorder = Recorder(RecorderConfig(tmp_path, max_frames=1000))
    with pytest.raises(ConfigurationError) as caught:
        recorder.arm(RecordingRequest(10**30, 1, stream.endpoint, "huge.h5"))
    assert "at most 1000 (property MaxFramesPerSeries)" in str(caught.value)
    assert recorder.state == states.ON and not (tmp_path / "huge.h5").exists()


def test_arm_refuses_a_split_into_more_data_files_than_a_master_maps(tmp_path, stream):
    recorder = Recorder(RecorderConfig(tmp_path, frames_per_file=1))
    with pytest.raises(ConfigurationError) as caught:
        recorder.arm(RecordingRequest(100_000, 1, stream.endpoint, "split.h5"))
    assert "would make 100000 data files; at most 1000: set FramesPerFile to at least 100" in str(caught.value)


def test_a_frame_number_beyond_the_armed_count_is_rejected_and_the_series_completes(recorder, stream):
    path = arm(recorder, stream, 3)
    encoder = StinsEncoder()
    stream.send(encoder.series_start(1, 0, SHAPE, "uint16", DETECTOR))  # the sender does not say how many
    for n in (0, 2**63 - 1, 10**7, 1, 2):
        stream.send(encoder.data(1, n, frame(n % 7), 5.0))
    stream.send(encoder.series_end(1, 3, 3))
    assert recorder.wait(10)
    assert recorder.state == states.ON, recorder.status
    assert recorder.counters.messages_rejected == 2 and recorder.counters.frames_written == 3
    with h5py.File(path, "r") as f:
        assert f["entry/data/data"].shape == (3, *SHAPE)
        assert f["entry/accounting/receive_time"].shape == (3,)
        np.testing.assert_array_equal(f["entry/data/data"][1], frame(1))


def test_a_frame_number_of_2_to_the_63_in_stins_is_rejected_with_the_limit(recorder, stream):
    arm(recorder, stream, 2)
    encoder = StinsEncoder()
    stream.send(encoder.series_start(1, 2, SHAPE, "uint16", DETECTOR))
    stream.send(with_header(encoder.data(1, 0, frame(0), 5.0), frame_number=2**63))
    stream.send(encoder.data(1, 0, frame(0), 5.0))
    stream.send(encoder.data(1, 1, frame(1), 5.0))
    stream.send(encoder.series_end(1, 2, 2))
    assert recorder.wait(10)
    assert recorder.state == states.ON
    assert recorder.counters.messages_rejected == 1
    assert "beyond the 2 frames armed" in recorder.status


def test_memory_stays_bounded_by_the_armed_count_whatever_the_sender_claims(recorder, stream):
    path = arm(recorder, stream, 2)
    encoder = StinsEncoder()
    tracemalloc.start()
    try:
        stream.send(encoder.series_start(1, 0, SHAPE, "uint16", DETECTOR))
        stream.send(encoder.data(1, 0, frame(0), 5.0))
        stream.send(encoder.data(1, 10**7, frame(1), 5.0))
        stream.send(encoder.series_end(1, 10**7, 10**7))  # claims ten million frames were sent
        assert recorder.wait(10)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2_000_000, f"{peak} bytes at the peak for a 2-frame series"
    assert recorder.state == states.ALARM and recorder.counters.missing_frames == 1
    with h5py.File(path, "r") as f:
        assert f["entry/accounting/missing_frame_numbers"][()].tolist() == [1]
        assert f["entry/accounting/frames_sent"][()] == 10**7
        assert f["entry/data/data"].shape[0] == 1


def test_a_rejected_series_start_ends_in_alarm_with_its_reason_and_no_earlier_file(recorder, stream):
    first = arm(recorder, stream, 2, name="first.h5")
    send_series(stream, range(2))
    assert recorder.wait(10) and recorder.last_file == str(first)
    arm(recorder, stream, 2, name="second.h5", series_id=2)
    encoder = StinsEncoder()
    stream.send(with_header(encoder.series_start(2, 2, SHAPE, "uint16", DETECTOR), dtype="complex128"))
    for n in range(2):
        stream.send(encoder.data(2, n, frame(n), 5.0))
    stream.send(encoder.series_end(2, 2, 2))
    assert recorder.wait(10)
    assert recorder.state == states.ALARM
    assert "no file: the series was never started, last rejection:" in recorder.status
    assert "2 frame(s) missing: 0-1" in recorder.status
    assert recorder.last_file == ""
    assert recorder.counters.missing_frames == 2 and recorder.counters.frames_written == 0


def test_a_series_whose_end_never_comes_is_closed_once_every_armed_frame_is_in(tmp_path, stream):
    recorder = Recorder(RecorderConfig(tmp_path, end_timeout=0.3))
    path = arm(recorder, stream, 4)
    send_series(stream, range(4), end=False)
    assert recorder.wait(10), recorder.status
    assert recorder.state == states.ON, recorder.status
    assert "completed_without_end" in recorder.status
    with h5py.File(path, "r") as f:
        assert f["entry/accounting/end_reason"][()].decode() == "completed_without_end"
        assert f["entry/accounting/frames_written"][()] == 4
        np.testing.assert_array_equal(f["entry/data/data"][3], frame(3))


def test_a_series_still_missing_frames_is_not_closed_by_the_end_timeout(tmp_path, stream):
    recorder = Recorder(RecorderConfig(tmp_path, end_timeout=0.1))
    arm(recorder, stream, 4)
    send_series(stream, range(3), end=False, frame_count=4)
    assert not recorder.wait(1.0)
    assert recorder.state == states.RUNNING
    recorder.abort()
    assert recorder.wait(10)


def test_the_armed_count_is_expected_and_the_detectors_own_count_kept_beside_it(recorder, stream):
    path = arm(recorder, stream, 9)
    send_series(stream, range(9), frame_count=100_000)  # a DCU announcing nimages x ntrigger
    assert recorder.wait(10)
    assert recorder.state == states.ON, recorder.status
    with h5py.File(path, "r") as f:
        accounting = f["entry/accounting"]
        assert (accounting["frames_requested"][()], accounting["frames_announced"][()]) == (9, 100_000)
        assert accounting["missing_frames"][()] == 0


def test_a_maxiv_series_carries_the_armed_series_id_into_the_file(recorder, stream):
    path = recorder.arm(RecordingRequest(2, 42, stream.endpoint, "maxiv.h5", protocol="maxiv"))
    stream.send(maxiv.encode_start(0))
    for n in range(2):
        stream.send(maxiv.encode_image(n + 1, n, frame(n)))
    stream.send(maxiv.encode_end(3))
    assert recorder.wait(10)
    with h5py.File(path, "r") as f:
        assert f["entry/series_id"][()] == 42
        assert f["entry/accounting/series_id"][()] == 42


def test_missing_frames_read_as_ranges():
    assert frame_ranges(np.array([0, 1, 2, 5, 7, 8])) == "0-2, 5, 7-8"
    assert frame_ranges(np.arange(0, 40, 2), shown=2) == "0, 2 and 18 more range(s)"
