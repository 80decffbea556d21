"""The simulated position-compare output on a motor model, both on a clock the pulse train's own
waits move: crossing times are exact, whatever the thread's pace."""

from __future__ import annotations

import json
import threading

import pytest

from photonflow.errors import ConfigurationError
from photonflow.position_compare import PositionCompareRequest
from photonflow.simulators.beamline import Motor, PositionCompare
from photonflow.simulators.trigger_line import Pulse
from tests.helpers.waiting import wait_until

RESOLUTION = 1e-4


class Clock:
    """The motor's clock, moved only by the pulse train's waits (``lag``: how late each wait ends)."""

    def __init__(self, now: float = 1000.0, lag: float = 0.0):
        self.now, self.lag = now, lag

    def __call__(self) -> float:
        return self.now

    def wait(self, stop: threading.Event, seconds: float) -> None:
        self.now += seconds + self.lag


class Line:
    """The trigger cable's far end: each pulse, with the clock's time when it was sent."""

    def __init__(self, clock: Clock):
        self.clock, self.pulses, self.sent_at = clock, [], []

    def send(self, pulse: Pulse) -> None:
        self.pulses.append(pulse)
        self.sent_at.append(self.clock.now)


@pytest.fixture
def rig(request):
    """omega at -1 deg, 10 deg/s after a 0.1 s ramp over 0.5 deg, and its position-compare."""
    clock = Clock(lag=getattr(request, "param", 0.0))
    omega = Motor("omega", position=-1.0, velocity=10.0, acceleration=100.0, low=-10, high=10, unit="deg",
                  clock=clock)
    line = Line(clock)
    pcomp = PositionCompare(omega, line.send, RESOLUTION, wait=clock.wait, unix_clock=clock, name="omega_pcomp")
    yield clock, omega, line, pcomp
    pcomp.close()


def cruise_crossing(start: float, position: float) -> float:
    """When the rig's omega, started at ``start`` from -1 deg upwards, passes ``position`` while cruising."""
    return start + 0.1 + (position + 0.5) / 10.0


@pytest.mark.parametrize("rig", [0.0, 0.05], indirect=True, ids=["on time", "the thread 50 ms late"])
def test_each_pulse_fires_at_its_crossing_with_the_encoder_position_there(rig):
    clock, omega, line, pcomp = rig
    start = clock.now
    omega.move_to(3.0)
    pcomp.arm(0.0, 0.2, 10, 0.001)
    assert pcomp.join(timeout=10)
    wanted = [round(0.2 * i, 10) for i in range(10)]
    assert [p.index for p in line.pulses] == list(range(10))
    assert [p.time for p in line.pulses] == pytest.approx([cruise_crossing(start, x) for x in wanted], abs=1e-9)
    assert [p.position for p in line.pulses] == pytest.approx(wanted, abs=RESOLUTION / 2)
    assert all(sent >= pulse.time for sent, pulse in zip(line.sent_at, line.pulses, strict=True))  # never early
    assert list(pcomp.captured_positions) == [p.position for p in line.pulses]
    assert list(pcomp.captured_times) == [p.time for p in line.pulses]
    assert pcomp.pulses_sent == 10 and pcomp.armed_time == start
    assert pcomp.state == "ON" and pcomp.status == "Done: 10 pulses sent, omega 0 to 1.8 deg."


def test_pulses_fire_in_the_steps_direction_only(rig):
    clock, omega, line, pcomp = rig
    omega.move_to(3.0)
    pcomp.arm(2.0, -0.25, 4, 0.001)  # omega moving up crosses 2.0, 1.75... but upwards
    wait_until(lambda: clock.now > 1010, 10, what="the clock past the move up")
    assert pcomp.pulses_sent == 0 and pcomp.state == "STANDBY"
    omega.move_to(0.0)
    assert pcomp.join(timeout=10)
    assert [p.position for p in line.pulses] == pytest.approx([2.0, 1.75, 1.5, 1.25], abs=RESOLUTION / 2)
    assert pcomp.state == "ON"


def test_armed_with_the_motor_at_rest_it_waits_in_standby_then_the_move_fires_it(rig):
    clock, omega, line, pcomp = rig
    pcomp.arm(0.0, 0.5, 3, 0.001)
    wait_until(lambda: clock.now > 1001, 10, what="the clock to move")
    assert pcomp.state == "STANDBY"
    assert pcomp.status == "Armed: 3 pulses every 0.5 deg from 0 deg; waiting for omega to cross 0 deg."
    omega.move_to(2.0)
    assert pcomp.join(timeout=10)
    assert pcomp.captured_positions == pytest.approx([0.0, 0.5, 1.0], abs=RESOLUTION / 2)


def test_overlapping_pulses_are_a_fault_naming_the_width_to_lower(rig):
    clock, omega, line, pcomp = rig
    omega.move_to(3.0)
    pcomp.arm(0.0, 0.2, 10, width=0.03)  # a pulse every 20 ms at 10 deg/s
    assert pcomp.join(timeout=10)
    assert pcomp.pulses_sent == 1 and len(line.pulses) == 1
    assert pcomp.state == "ALARM"
    assert pcomp.status.startswith("pulses overlap: pulse 1 at 0.2 deg came 20 ms after the previous one, "
                                   "within its width of 30 ms: lower the width below 20 ms")
    pcomp.disarm()
    assert pcomp.state == "ON" and pcomp.status.startswith("Disarmed after 1 of 10 pulses. It had stopped: pulses")


def test_a_motor_stopping_short_leaves_the_train_waiting_with_the_pulses_sent_until_disarm(rig):
    clock, omega, line, pcomp = rig
    omega.move_to(0.55)
    pcomp.arm(0.0, 0.2, 10, 0.001)
    wait_until(lambda: clock.now > 1005, 10, what="the clock past the end of the move")
    assert pcomp.pulses_sent == 3 and pcomp.state == "RUNNING"
    assert pcomp.status == "Pulsing: 3 of 10 pulses sent; waiting for omega to cross 0.6 deg."
    pcomp.disarm()
    assert pcomp.state == "ON" and pcomp.status == "Disarmed after 3 of 10 pulses."
    assert pcomp.captured_positions == pytest.approx([0.0, 0.2, 0.4], abs=RESOLUTION / 2)
    assert len(pcomp.captured_times) == 3


def test_re_arming_clears_the_capture_and_a_crossing_before_the_arm_does_not_fire(rig):
    clock, omega, line, pcomp = rig
    omega.move_to(3.0)
    pcomp.arm(0.0, 0.2, 10, 0.001)
    assert pcomp.join(timeout=10)
    pcomp.arm(1.0, 0.2, 5, width=0.002)  # omega already went through 1.0 .. 1.8
    wait_until(lambda: clock.now > 1010, 10, what="the clock to move")
    assert pcomp.pulses_sent == 0 and pcomp.state == "STANDBY"
    assert len(pcomp.captured_positions) == 0 and len(pcomp.captured_times) == 0
    assert pcomp.request == PositionCompareRequest(start=1.0, step=0.2, count=5, width=0.002)
    assert len(line.pulses) == 10


@pytest.mark.parametrize("given, complaint", [
    ({"start": 0, "step": 0, "count": 3, "width": 0.001}, "'step' must not be 0"),
    ({"start": 0, "step": 0.1, "count": 0, "width": 0.001}, "'count' must be 1 to 1000000, got 0"),
    ({"start": 0, "step": 0.1, "count": 3, "width": 0}, "'width' must be a positive number of seconds"),
    ({"start": 0, "step": 0.1, "count": 3}, "missing key 'width'"),
])
def test_an_arm_request_is_refused_naming_the_key(given, complaint):
    with pytest.raises(ConfigurationError) as refused:
        PositionCompareRequest.parse(json.dumps(given))
    assert complaint in str(refused.value)


def test_the_model_checks_its_arguments_as_the_arm_command_does(rig):
    *_, pcomp = rig
    with pytest.raises(ConfigurationError, match="'step' must not be 0"):
        pcomp.arm(0.0, 0.0, 10, 0.001)
    assert pcomp.state == "ON" and pcomp.request is None
