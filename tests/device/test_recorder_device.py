"""The Recorder device in a device server of its own without a database (DeviceTestContext): its
commands refuse bad requests with a reason an operator can act on, and a series sent over a real
ZeroMQ stream shows in its counter attributes and its file."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from tango.test_context import DeviceTestContext

from photonflow.devices.recorder import PhotonflowRecorder
from photonflow.stream.transport import StreamSender
from tests.helpers.devices import devfailed, wait_for_state, wait_until
from tests.helpers.recording import frame, send_series


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return tmp_path_factory.mktemp("recorder_device")


@pytest.fixture(scope="module")
def recorder(data_root):
    properties = {"DataRoot": str(data_root), "Blissdata": "", "EventInterval": 0.0}
    with DeviceTestContext(PhotonflowRecorder, properties=properties, host="127.0.0.1", process=True) as device:
        yield device


@pytest.mark.parametrize("request_text, reason, complaint", [
    ("{not json", "InvalidConfiguration", "JSON"),
    (json.dumps({"frames": 2, "series_id": 1, "endpoint": "garbage"}), "InvalidEndpoint", "is not a ZeroMQ address"),
    (json.dumps({"frames": 2, "series_id": 1, "endpoint": "tcp://127.0.0.1:1", "file": "/etc/passwd.h5"}),
     "FileOutsideDataRoot", "outside the data root"),
])
def test_arm_refuses_a_bad_request_with_its_reason(recorder, request_text, reason, complaint):
    error = devfailed(recorder.Arm, request_text)
    assert (error.reason, complaint in error.desc) == (reason, True), error.desc
    assert str(recorder.state()) in ("ON", "ALARM")  # refused at the door: still idle


def test_a_series_shows_in_the_counter_attributes_and_its_file(recorder, data_root):
    stream = StreamSender("tcp://127.0.0.1:*")
    try:
        path = recorder.Arm(json.dumps({"frames": 5, "series_id": 1, "endpoint": stream.endpoint, "file": "five.h5"}))
        assert path == str(data_root.resolve() / "five.h5") and str(recorder.state()) == "RUNNING"
        send_series(stream, range(5))
        wait_until(lambda: recorder.FramesWritten == 5, 30, what="five frames written")
        wait_for_state(recorder, "ON")
    finally:
        stream.close()
    assert (recorder.FramesReceived, recorder.FramesWritten, recorder.MissingFrames) == (5, 5, 0)
    assert recorder.LastFile == path and recorder.CurrentFile == ""
    with h5py.File(path, "r") as f:
        for n in range(5):
            np.testing.assert_array_equal(f["entry/data/data"][n], frame(n))
