"""The simulated detector on its trigger cable and on its own timing: a frame when, and only when,
a pulse arrives, stamped with the pulse's time; internal frames a period apart, never a burst,
and a series the machine could not keep ends ALARM saying what rate it achieved."""

import threading

import numpy as np
import pytest

from photonflow import states
from photonflow.acquisition.acquirer import Acquirer
from photonflow.errors import ConfigurationError
from photonflow.simulators.diffraction import DiffractionFrames
from photonflow.simulators.frame_timing import SimulatorClock
from photonflow.simulators.simulated_camera import SimulatedCamera, SimulatedSensor
from photonflow.simulators.trigger_line import Pulse
from photonflow.stream.stins import DataMessage, SeriesEnd
from tests.helpers.fakes import EventLog, RecordingSender
from tests.helpers.trigger_line import WatchedTriggerLine

SENSOR = SimulatedSensor(height=24, width=32, seed=7, serial_number="SIM-TRIG")
PULSE_TIMES = [5000.0 + 0.1 * i for i in range(5)]  # the generator's edge times, long after the clock's start


class SteppedClock:
    """Time that moves only when the simulator waits (or a test says so): no sleep, no race."""

    def __init__(self, start: float = 1000.0):
        self.time = start
        self.lock = threading.Lock()

    def now(self) -> float:
        with self.lock:
            return self.time

    def advance(self, seconds: float) -> None:
        with self.lock:
            self.time += seconds

    def wait(self, stop: threading.Event, seconds: float) -> bool:
        self.advance(max(0.0, seconds))
        return stop.is_set()

    def simulator_clock(self) -> SimulatorClock:
        return SimulatorClock(self.now, self.wait)


@pytest.fixture
def trigger_line(tmp_path):
    """A real trigger cable: the generator's end in the test, the camera's input connects to it."""
    line = WatchedTriggerLine(f"ipc://{tmp_path}/run/omega.trigger")
    yield line
    line.close()


def cabled_acquirer(trigger_line, clock, **settings):
    camera = SimulatedCamera(SENSOR, clock.simulator_clock(), trigger_line=trigger_line.address)
    trigger_line.wait_for_inputs(1)
    acquirer = Acquirer(camera, RecordingSender(), counter_interval=0.0)
    acquirer.update_settings(**{"frame_count": 5, "exposure": 0.01, "period": 0.1, **settings})
    return acquirer


def started_on_the_line(trigger_line, **settings):
    """A cabled detector, its series prepared and started."""
    acquirer = cabled_acquirer(trigger_line, SteppedClock(), **settings)
    acquirer.prepare()
    acquirer.start()
    return acquirer


def frames_of(acquirer):
    return [m for m in acquirer.sender.messages if isinstance(m, DataMessage)]


@pytest.mark.parametrize("mode, duration", [("external", 0.01), ("external_enable", 0.02)])
def test_every_pulse_gives_one_frame_stamped_with_its_pulses_time(trigger_line, mode, duration):
    acquirer = started_on_the_line(trigger_line, trigger_mode=mode)
    trigger_line.send_pulses(PULSE_TIMES, width=0.02)
    assert acquirer.wait(10)

    data = frames_of(acquirer)
    assert [m.frame_number for m in data] == [0, 1, 2, 3, 4]
    # the end of each exposure: the pulse's edge + the exposure (external) or the gate's width (enable)
    assert [m.timestamp for m in data] == pytest.approx([t + duration for t in PULSE_TIMES])
    expected = DiffractionFrames(acquirer.camera.pattern_settings(acquirer.settings))
    for message in data:
        np.testing.assert_array_equal(message.to_array(), expected.frame(message.frame_number))
    assert acquirer.state == states.ON


def test_no_pulse_no_frame_and_stop_ends_with_the_frames_taken(trigger_line):
    acquirer = started_on_the_line(trigger_line, frame_count=10, trigger_mode="external")
    trigger_line.send_pulses(PULSE_TIMES[:3])
    for _ in range(500):  # the three frames arrive; then nothing, however long it waits
        if len(frames_of(acquirer)) == 3:
            break
        threading.Event().wait(0.01)
    assert not acquirer.wait(0.3)  # still waiting for pulse 3: no frame is invented
    assert len(frames_of(acquirer)) == 3 and acquirer.state == states.RUNNING

    acquirer.stop()
    assert acquirer.wait(5)
    end = acquirer.sender.messages[-1]
    assert isinstance(end, SeriesEnd)
    assert (end.frames_acquired, end.frames_sent, end.end_reason) == (3, 3, "stopped")
    assert [m.timestamp for m in frames_of(acquirer)] == pytest.approx([t + 0.01 for t in PULSE_TIMES[:3]])
    assert acquirer.state == states.ON


def test_external_start_takes_the_series_on_the_detectors_timing_from_the_first_pulse(trigger_line):
    acquirer = started_on_the_line(trigger_line, frame_count=4, trigger_mode="external_start")
    trigger_line.send_pulses([5000.0])
    assert acquirer.wait(10)
    assert [m.timestamp for m in frames_of(acquirer)] == pytest.approx([5000.01, 5000.11, 5000.21, 5000.31])


def test_pulses_whose_edge_came_before_the_series_are_not_its_own(trigger_line):
    acquirer = cabled_acquirer(trigger_line, SteppedClock(start=1000.0), frame_count=2, trigger_mode="external")
    acquirer.camera.trigger_input.receive(Pulse(0, 900.0, 0.0))  # an earlier scan's, waiting at the input
    acquirer.prepare()
    acquirer.start()
    trigger_line.send_pulses([950.0])  # delivered now, but its edge came before the series
    trigger_line.send_pulses(PULSE_TIMES[:2])
    assert acquirer.wait(10)
    assert [m.timestamp for m in frames_of(acquirer)] == pytest.approx([t + 0.01 for t in PULSE_TIMES[:2]])


def test_an_uncabled_detector_refuses_external_modes_saying_it_has_no_cable():
    acquirer = Acquirer(SimulatedCamera(SENSOR), RecordingSender())
    with pytest.raises(ConfigurationError, match="needs a trigger cable.*SimulationTriggerInput"):
        acquirer.check_settings(trigger_mode="external_enable")
    acquirer.check_settings(trigger_mode="internal")


def test_internal_frames_keep_the_period_from_the_series_start():
    clock = SteppedClock()
    acquirer = Acquirer(SimulatedCamera(SENSOR, clock.simulator_clock()), RecordingSender(), counter_interval=0.0)
    acquirer.update_settings(frame_count=6, exposure=0.001, period=0.002)
    acquirer.prepare()
    start = clock.now()
    acquirer.start()
    assert acquirer.wait(10)
    stamps = [m.timestamp for m in frames_of(acquirer)]
    assert stamps == pytest.approx([start + n * 0.002 + 0.001 for n in range(6)])
    assert acquirer.state == states.ON


class SlowSender(RecordingSender):
    """A send path that takes longer than the period (as a 2 MB frame into a busy Recorder does)."""

    def __init__(self, clock, seconds):
        super().__init__()
        self.clock, self.seconds = clock, seconds

    def send(self, parts, stop=None):
        super().send(parts, stop)
        self.clock.advance(self.seconds)


def test_a_machine_too_slow_for_the_rate_gives_no_burst_and_ends_alarm_with_the_rate_achieved():
    clock = SteppedClock()
    events = EventLog()
    sender = SlowSender(clock, 0.005)  # each frame costs 5 ms to send; the period asked is 2 ms
    acquirer = Acquirer(SimulatedCamera(SENSOR, clock.simulator_clock()), sender, events, counter_interval=0.0)
    acquirer.update_settings(frame_count=100, exposure=0.001, period=0.002)
    acquirer.prepare()
    acquirer.start()
    assert acquirer.wait(10)

    stamps = np.array([m.timestamp for m in frames_of(acquirer)])
    assert len(stamps) == 100  # every frame is taken, none dropped
    gaps = np.diff(stamps)
    assert gaps.min() >= 0.002 - 1e-9, "frames came in a burst to catch up"
    assert gaps == pytest.approx(0.005)  # the times the frames were really taken
    assert acquirer.state == states.ALARM
    assert "the simulated detector achieved 200 Hz of the 500 Hz requested" in acquirer.status
    assert "100 of 100 frames acquired" in acquirer.status
    end = sender.messages[-1]
    assert (end.frames_acquired, end.end_reason) == (100, "completed")


def test_a_short_hiccup_of_the_host_is_not_a_detector_that_cannot_keep_up():
    clock = SteppedClock()
    sender = RecordingSender()
    acquirer = Acquirer(SimulatedCamera(SENSOR, clock.simulator_clock()), sender, counter_interval=0.0)
    acquirer.update_settings(frame_count=5, exposure=0.001, period=0.002)
    acquirer.prepare()
    original = sender.send

    def hiccup(parts, stop=None):  # the second frame's send stalls 10 ms
        original(parts, stop)
        if len(sender.messages) == 3:
            clock.advance(0.010)

    sender.send = hiccup
    acquirer.start()
    assert acquirer.wait(10)
    gaps = np.diff([m.timestamp for m in frames_of(acquirer)])
    assert gaps.min() >= 0.002 - 1e-9
    assert acquirer.state == states.ON
