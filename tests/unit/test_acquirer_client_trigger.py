"""Trigger mode ``client``: one frame per SoftwareTrigger, whenever the client (a Sardana scan) sends it."""

import time

import numpy as np
import pytest

from photonflow import states
from photonflow.acquisition.acquirer import Acquirer
from photonflow.errors import StateError
from photonflow.simulators.diffraction import DiffractionFrames
from photonflow.simulators.simulated_camera import SimulatedCamera, SimulatedSensor
from photonflow.stream.stins import DataMessage, SeriesEnd
from tests.helpers.fakes import EventLog, RecordingSender
from tests.helpers.waiting import wait_until

SENSOR = SimulatedSensor(height=16, width=24, seed=3)


def make_acquirer(**settings):
    acquirer = Acquirer(SimulatedCamera(SENSOR), RecordingSender(), EventLog(), counter_interval=0.0)
    acquirer.update_settings(**{"frame_count": 3, "exposure": 0.001, "period": 0.001,
                                "trigger_mode": "client", **settings})
    return acquirer


def data_messages(acquirer):
    return [m for m in acquirer.sender.messages if isinstance(m, DataMessage)]


def wait_frames(acquirer, count, timeout=30.0):
    wait_until(lambda: len(data_messages(acquirer)) >= count, timeout, what=f"{count} frames sent")
    return len(data_messages(acquirer))


def test_each_software_trigger_takes_one_frame_and_nothing_comes_without_one():
    acquirer = make_acquirer()
    acquirer.prepare()
    acquirer.software_trigger()  # before Start: kept, used by the first frame
    acquirer.start()
    assert wait_frames(acquirer, 1) == 1
    time.sleep(0.1)  # time for a frame without a trigger to show; load can only hide one, never fake it
    assert len(data_messages(acquirer)) == 1 and acquirer.state == states.RUNNING  # waits for the client
    acquirer.software_trigger()
    assert wait_frames(acquirer, 2) == 2
    acquirer.software_trigger()
    assert acquirer.wait(5)
    expected = DiffractionFrames(acquirer.camera.pattern_settings(acquirer.settings))
    frames = data_messages(acquirer)
    assert [m.frame_number for m in frames] == [0, 1, 2]
    for message in frames:
        np.testing.assert_array_equal(message.to_array(), expected.frame(message.frame_number))
    end = acquirer.sender.messages[-1]
    assert isinstance(end, SeriesEnd) and end.end_reason == "completed"
    assert acquirer.state == states.ON


def test_stop_while_waiting_for_a_trigger_ends_the_series_at_once():
    acquirer = make_acquirer(frame_count=10)
    acquirer.prepare()
    acquirer.start()
    acquirer.software_trigger()
    assert wait_frames(acquirer, 1) == 1
    acquirer.stop()
    assert acquirer.wait(2)
    end = acquirer.sender.messages[-1]
    assert isinstance(end, SeriesEnd) and (end.frames_sent, end.end_reason) == (1, "stopped")


def test_software_trigger_is_refused_in_another_mode_or_when_idle():
    acquirer = make_acquirer(trigger_mode="internal")
    acquirer.prepare()
    with pytest.raises(StateError, match="trigger mode 'client'"):
        acquirer.software_trigger()
    idle = make_acquirer()
    with pytest.raises(StateError, match="prepared or running"):
        idle.software_trigger()
