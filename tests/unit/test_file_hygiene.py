"""What data managers check in every file: one text storage, UTC times with Z, NeXus booleans,
units on every physical value, unknown counts said to be unknown, and any detector value kept."""

import json

import h5py
import numpy as np

from photonflow import states
from photonflow.recording.recorder import Recorder
from photonflow.stream.stins import StinsEncoder
from tests.helpers.recording import SHAPE, arm, frame
from tests.helpers.waiting import wait_until

ODD_DETECTOR = {
    "model": "Odd",
    "x_pixel_size": 75e-6,
    "serial_number": {"module": 3, "board": [1, 2]},  # an object where NeXus wants text
    "count_time": [0.001, "s"],  # a mixed list where a number belongs
    "flatfield_applied": 1,
    "pixel_mask_applied": False,
    "incident_energy": 12400.0,
    "user_data": {"sample": "lysozyme", "nested": {"depth": [1, [2, 3]]}},
    "huge": 2**70,
    "thresholds": [4000.0, 8000.0],
}




def record(tmp_path, stream, detector, end=True):
    recorder = Recorder(tmp_path)
    path = arm(recorder, stream, 2)
    encoder = StinsEncoder()
    stream.send(encoder.series_start(1, 2, SHAPE, "uint16", detector))
    for n in range(2):
        stream.send(encoder.data(1, n, frame(n), 5.0))
    if end:
        stream.send(encoder.series_end(1, 2, 2))
    assert recorder.wait(10)
    return recorder, path


def test_a_detector_description_with_nested_values_is_kept_as_json_text_not_a_fault(tmp_path, stream):
    recorder, path = record(tmp_path, stream, ODD_DETECTOR)
    assert recorder.state == states.ON, recorder.status
    with h5py.File(path, "r") as f:
        detector = f["entry/instrument/odd"]
        assert json.loads(detector["serial_number"][()]) == {"module": 3, "board": [1, 2]}
        assert json.loads(detector["count_time"][()]) == [0.001, "s"]
        specific = detector["detector_specific"]
        assert json.loads(specific["user_data"][()]) == ODD_DETECTOR["user_data"]
        assert specific["huge"][()].decode() == str(2**70)
        np.testing.assert_array_equal(specific["thresholds"][()], [4000.0, 8000.0])
        assert specific["incident_energy"].attrs["units"] == "eV"
        np.testing.assert_array_equal(f["entry/data/data"][1], frame(1))


def test_applied_fields_are_nexus_booleans(tmp_path, stream):
    _, path = record(tmp_path, stream, ODD_DETECTOR)
    with h5py.File(path, "r") as f:
        detector = f["entry/instrument/odd"]
        assert detector["flatfield_applied"].dtype == np.bool_ and detector["flatfield_applied"][()]
        assert detector["pixel_mask_applied"].dtype == np.bool_ and not detector["pixel_mask_applied"][()]


def test_every_text_field_is_variable_length_utf8_and_times_are_utc_with_z(tmp_path, stream):
    _, path = record(tmp_path, stream, {"model": "Plain"})
    with h5py.File(path, "r") as f:
        for name in ("entry/start_time", "entry/end_time", "entry/accounting/end_reason"):
            info = h5py.check_string_dtype(f[name].dtype)
            assert info is not None and info.encoding == "utf-8" and info.length is None, name
        for name in ("entry/start_time", "entry/end_time"):
            assert f[name][()].decode().endswith("Z"), name
        assert f["entry/accounting/end_reason"][()].decode() == "completed"


def test_unknown_counts_say_so_in_the_file(tmp_path, stream):
    recorder = Recorder(tmp_path)
    path = arm(recorder, stream, 2)
    encoder = StinsEncoder()
    stream.send(encoder.series_start(1, 2, SHAPE, "uint16", {"model": "Plain"}))
    stream.send(encoder.data(1, 0, frame(0), 5.0))
    wait_until(lambda: recorder.counters.frames_written >= 1, 30, what="the first frame written")
    recorder.stop()  # ended by the operator: the sender's counts never came
    assert recorder.wait(10)
    with h5py.File(path, "r") as f:
        frames_sent = f["entry/accounting/frames_sent"]
        assert frames_sent[()] == -1
        assert frames_sent.attrs["description"] == "-1: unknown (the stream did not say)"
