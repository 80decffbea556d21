"""The Acquirer's state machine and the STINS series it puts on the stream."""

import threading

import numpy as np
import pytest

from photonflow import states
from photonflow.acquisition.acquirer import Acquirer, parse_rotation, parse_settings
from photonflow.camera import (
    Abortable,
    Camera,
    Checkable,
    Closable,
    FrameSource,
    KeepsTime,
    Rotation,
    SelfStreamingDetector,
    TakesClientTriggers,
)
from photonflow.errors import ConfigurationError, StateError
from photonflow.simulators.diffraction import DiffractionFrames
from photonflow.simulators.simulated_camera import SimulatedCamera, SimulatedSensor
from photonflow.stream.stins import DataMessage, SeriesEnd, SeriesStart
from tests.helpers.fakes import EventLog, RecordingSender

SENSOR = SimulatedSensor(height=32, width=48, seed=5, serial_number="SIM-T")


def make_acquirer(**settings):
    events = EventLog()
    acquirer = Acquirer(SimulatedCamera(SENSOR), RecordingSender(), events, counter_interval=0.0)
    acquirer.update_settings(**{"frame_count": 5, "exposure": 0.001, "period": 0.002, **settings})
    return acquirer, events


def test_a_series_sends_start_every_frame_in_order_and_end():
    acquirer, events = make_acquirer()
    acquirer.set_series_id(42)
    acquirer.prepare()
    assert acquirer.state == states.STANDBY
    acquirer.start()
    assert acquirer.wait(10)

    messages = acquirer.sender.messages
    start, *data, end = messages
    assert isinstance(start, SeriesStart) and isinstance(end, SeriesEnd)
    assert start.series_id == 42 and start.frame_count == 5 and start.shape == (32, 48)
    assert start.detector["serial_number"] == "SIM-T" and start.detector["count_time"] == 0.001
    expected = DiffractionFrames(acquirer.camera.pattern_settings(acquirer.settings))
    assert [m.frame_number for m in data] == [0, 1, 2, 3, 4]
    for message in data:
        assert isinstance(message, DataMessage)
        np.testing.assert_array_equal(message.to_array(), expected.frame(message.frame_number))
    assert (end.frames_acquired, end.frames_sent, end.end_reason) == (5, 5, "completed")
    assert [m.message_id for m in messages] == list(range(7))
    assert acquirer.state == states.ON and acquirer.frames_acquired == 5
    assert [s for s, _ in events.states] == [states.STANDBY, states.RUNNING, states.ON]
    assert events.counters[-1].frames_acquired == 5


def test_frames_keep_to_the_period():
    acquirer, _ = make_acquirer(frame_count=4, exposure=0.01, period=0.05)
    acquirer.prepare()
    acquirer.start()
    acquirer.wait(10)
    stamps = [m.timestamp for m in acquirer.sender.messages if isinstance(m, DataMessage)]
    gaps = np.diff(stamps)
    assert np.all(gaps > 0.04), gaps


def test_stop_ends_the_series_early_and_says_so():
    acquirer, _ = make_acquirer(frame_count=1000, exposure=0.001, period=0.01)
    acquirer.prepare()
    acquirer.start()
    acquirer.sender.sent.wait(5)
    acquirer.stop()
    assert acquirer.wait(5)
    end = acquirer.sender.messages[-1]
    assert end.end_reason == "stopped" and end.frames_sent < 1000
    assert end.frames_sent == acquirer.frames_acquired
    assert acquirer.state == states.ON


def test_abort_before_start_drops_the_prepared_series():
    acquirer, _ = make_acquirer()
    acquirer.prepare()
    acquirer.abort()
    assert acquirer.state == states.ON
    with pytest.raises(StateError, match="call Prepare first"):
        acquirer.start()


@pytest.mark.parametrize(
    "settings, complaint",
    [
        ({"frame_count": 0}, "frame count must be between 1"),
        ({"exposure": -1.0}, "exposure must be between"),
        ({"trigger_mode": "software"}, "trigger mode 'software' is not supported; choose one of internal"),
    ],
)
def test_bad_values_are_refused_when_written(settings, complaint):
    acquirer, _ = make_acquirer()
    with pytest.raises(ConfigurationError, match=complaint):
        acquirer.update_settings(**settings)


def test_a_period_shorter_than_the_exposure_is_refused_at_prepare():
    acquirer, _ = make_acquirer(exposure=0.01, period=0.005)
    with pytest.raises(ConfigurationError, match="shorter than the exposure"):
        acquirer.prepare()
    assert acquirer.state == states.ON


def test_settings_cannot_change_while_acquiring():
    acquirer, _ = make_acquirer(frame_count=1000, period=0.01)
    acquirer.prepare()
    acquirer.start()
    try:
        with pytest.raises(StateError, match="while acquiring"):
            acquirer.update_settings(frame_count=3)
    finally:
        acquirer.abort()
        acquirer.wait(5)
    assert acquirer.sender.messages[-1].end_reason == "aborted"


def test_a_camera_failure_ends_in_fault_with_the_cause():
    class BrokenCamera(SimulatedCamera):
        def frames(self, settings, stop: threading.Event):
            yield 0, np.zeros(self.frame_shape, np.uint16), 0.0
            raise OSError("sensor link lost")

    events = EventLog()
    acquirer = Acquirer(BrokenCamera(SENSOR), RecordingSender(), events)
    acquirer.prepare()
    acquirer.start()
    status = events.wait_for_state(states.FAULT)
    assert "sensor link lost" in status
    assert acquirer.sender.messages[-1].end_reason == "failed"


def test_the_simulated_sensor_refuses_impossible_geometry():
    with pytest.raises(ConfigurationError, match="pixel type 'float32' is not supported"):
        SimulatedCamera(SimulatedSensor(dtype="float32"))
    with pytest.raises(ConfigurationError, match="frame shape"):
        SimulatedCamera(SimulatedSensor(height=0))


def test_every_vendor_speaks_photonflows_trigger_modes():
    from photonflow.acquisition import andor, dectris, pilatus, tucsen
    from photonflow.camera import TRIGGER_MODES

    cameras = (SimulatedCamera, dectris.DectrisCamera, pilatus.PilatusCamera, andor.AndorCamera,
               tucsen.TucsenCamera)
    for camera in cameras:
        assert "internal" in camera.trigger_modes, camera.__name__
        assert set(camera.trigger_modes) <= TRIGGER_MODES.keys(), camera.__name__


def test_the_simulated_camera_is_given_the_acquirers_client_triggers_because_it_says_it_takes_them():
    camera = SimulatedCamera(SENSOR)
    acquirer = Acquirer(camera, RecordingSender())
    assert isinstance(camera, TakesClientTriggers) and camera.client_triggers is acquirer.client_triggers


def test_each_vendor_camera_declares_how_its_frames_travel_and_what_else_it_can_do():
    from photonflow.acquisition.andor import AndorCamera
    from photonflow.acquisition.dectris import DectrisCamera
    from photonflow.acquisition.pilatus import PilatusCamera
    from photonflow.acquisition.tucsen import TucsenCamera

    capabilities = (FrameSource, SelfStreamingDetector, Checkable, Abortable, Closable, KeepsTime,
                    TakesClientTriggers)
    declared = {camera.__name__: {c.__name__ for c in capabilities if issubclass(camera, c)}
                for camera in (SimulatedCamera, DectrisCamera, PilatusCamera, AndorCamera, TucsenCamera)}
    assert declared == {
        "SimulatedCamera": {"FrameSource", "Checkable", "Closable", "KeepsTime", "TakesClientTriggers"},
        "DectrisCamera": {"SelfStreamingDetector", "Checkable", "Abortable", "Closable"},
        "PilatusCamera": {"FrameSource", "Closable"},
        "AndorCamera": {"FrameSource", "Closable"},
        "TucsenCamera": {"FrameSource", "Checkable", "Abortable", "Closable"},
    }


def test_a_camera_that_hands_frames_over_needs_a_stream_and_one_that_says_neither_is_refused():
    with pytest.raises(ConfigurationError, match="needs a stream to send them on"):
        Acquirer(SimulatedCamera(SENSOR), sender=None)

    class Undeclared(Camera):
        trigger_modes, min_exposure = ("internal",), 1e-6

        def describe(self, settings):
            return {}

        def prepare(self, settings):
            pass

    with pytest.raises(ConfigurationError, match="neither a FrameSource nor a SelfStreamingDetector"):
        Acquirer(Undeclared(), RecordingSender())


def test_the_acquirer_carries_the_series_id_it_was_given_and_never_counts_on_its_own():
    acquirer, _ = make_acquirer(frame_count=1)

    def run_series() -> None:
        acquirer.prepare()
        acquirer.start()
        assert acquirer.wait(10)

    acquirer.set_series_id(7)  # as the Controller writes SeriesId before a series
    run_series()
    run_series()  # nobody gave a new id: the same one again, not 8
    acquirer.set_series_id(8)
    run_series()
    starts = [m.series_id for m in acquirer.sender.messages if isinstance(m, SeriesStart)]
    assert starts == [7, 7, 8] and acquirer.series_id == 8


def test_the_rotation_of_a_scan_is_a_setting_of_the_series_and_empty_clears_it():
    given = '{"frames": 3, "rotation": {"axis": "omega", "start": 1.5, "increment": -0.1}}'
    assert parse_settings(given) == {"frame_count": 3, "rotation": Rotation("omega", 1.5, -0.1)}
    assert parse_rotation('{"axis": "phi", "start": 0, "increment": 0.5}') == Rotation("phi", 0.0, 0.5)
    assert parse_rotation("") is None
    with pytest.raises(ConfigurationError, match="missing key 'increment'"):
        parse_rotation('{"axis": "omega", "start": 0}')
    with pytest.raises(ConfigurationError, match="missing key 'rotation.increment'"):
        parse_settings('{"rotation": {"axis": "omega", "start": 0}}')


def test_a_beamline_that_could_not_be_read_takes_the_series_all_the_same_and_ends_in_alarm_naming_it():
    problem = "demo/beamline/mono/Wavelength did not answer within 1.5 s; using the simulation's default"
    events = EventLog()
    acquirer = Acquirer(SimulatedCamera(SENSOR), RecordingSender(), events, counter_interval=0.0,
                        capture_problems=lambda: (problem,))
    acquirer.update_settings(frame_count=3, exposure=0.001, period=0.002)
    acquirer.prepare()
    assert acquirer.state == states.STANDBY and problem in acquirer.status
    acquirer.start()
    assert acquirer.wait(10)
    assert acquirer.state == states.ALARM and acquirer.frames_acquired == 3
    assert acquirer.status == (f"Series 1 completed: 3 of 3 frames acquired, but the beamline could not be read: "
                               f"{problem}. Ready for the next series.")
    assert acquirer.sender.messages[-1].end_reason == "completed"
