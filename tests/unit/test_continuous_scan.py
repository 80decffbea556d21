"""The continuous-scan core: the plan's numbers and refusals, and a scan run through plain-Python
ports (the beamline simulator's motor model on a clock the test moves)."""

import math

import pytest

from photonflow.control.continuous_scan import (
    ContinuousScan,
    DetectorLimits,
    MotorLimits,
    ScanAborted,
    plan_scan,
)
from photonflow.errors import ConfigurationError, StateError
from tests.helpers.scan import PortDetectors, PortGenerator, PortMotor, advancing
from tests.helpers.waiting import ManualClock

OMEGA = MotorLimits("omega", maximum_velocity=90.0, acceleration=360.0, low=-360.0, high=360.0,
                    position=0.0, velocity=30.0, unit="deg")


def test_a_plan_runs_up_to_the_velocity_of_one_step_per_period_and_triggers_every_step():
    plan = plan_scan(0.0, 0.1, 100, 0.001, 0.002, OMEGA)
    assert plan.velocity == pytest.approx(50.0)
    ramp = 50.0**2 / (2 * 360.0)  # v²/2a
    assert plan.run_up == pytest.approx(ramp + 50.0 * 0.1)  # plus 0.1 s of settling at constant velocity
    assert plan.run_up_start == pytest.approx(-plan.run_up)
    assert plan.end == pytest.approx(10.0)  # the range is frames x step
    assert plan.run_down_end == pytest.approx(10.0 + plan.run_down)
    assert plan.trigger_positions[:3] == pytest.approx((0.0, 0.1, 0.2))
    assert plan.trigger_positions[-1] == pytest.approx(9.9) and len(plan.trigger_positions) == 100
    assert plan.pulse_width == 0.001
    ramp_time = 50.0 / 360.0 + 0.1
    assert plan.duration == pytest.approx(plan.approach_time + 2 * ramp_time + 100 * 0.002)
    # to the run-up start at its own 30 deg/s: 8.47 deg, reaching 30 deg/s after 1.25 deg
    assert plan.approach_time == pytest.approx(30.0 / 360.0 + plan.run_up / 30.0)


def test_a_negative_step_scans_downwards_with_the_run_up_above_the_start():
    plan = plan_scan(10.0, -0.5, 20, 0.01, 0.02, OMEGA)
    assert plan.direction == -1.0
    assert plan.run_up_start == pytest.approx(10.0 + plan.run_up)
    assert plan.end == pytest.approx(0.0) and plan.run_down_end == pytest.approx(-plan.run_down)
    assert plan.trigger_positions[1] == pytest.approx(9.5)


def test_a_scan_too_fast_for_the_motor_is_refused_with_the_limit_and_what_to_change():
    slow = MotorLimits("omega", 30.0, 360.0, -360.0, 360.0, unit="deg")
    with pytest.raises(ConfigurationError) as refused:
        plan_scan(0.0, 0.1, 100, 0.001, 0.002, slow)
    assert str(refused.value) == (
        "omega: 0.1 deg per 0.002 s frame needs 50 deg/s, above its maximum 30 deg/s: take a period of at "
        "least 0.0034 s or a step of at most 0.06 deg"
    )
    plan_scan(0.0, 0.1, 100, 0.001, 0.0034, slow)  # what it says works
    plan_scan(0.0, 0.06, 100, 0.001, 0.002, slow)


def test_a_run_up_beyond_a_soft_limit_is_refused_naming_the_limit():
    near = MotorLimits("omega", 90.0, 360.0, low=-5.0, high=360.0, unit="deg")
    with pytest.raises(ConfigurationError, match=r"beyond the soft limit -5 deg: move the scan at least 3.5 deg"):
        plan_scan(0.0, 0.1, 100, 0.001, 0.002, near)  # the run-up starts at -8.47 deg
    with pytest.raises(ConfigurationError, match="beyond the soft limit 360 deg"):
        plan_scan(300.0, 0.1, 700, 0.001, 0.002, OMEGA)  # 300 + 70 deg


def test_a_period_shorter_than_the_detector_follows_is_refused():
    with pytest.raises(ConfigurationError, match="take a period of at least 0.0025 s"):
        plan_scan(0.0, 0.1, 100, 0.001, 0.002, OMEGA, DetectorLimits(minimum_period=0.0025))
    with pytest.raises(ConfigurationError, match="take a period of at least 0.0011 s"):
        plan_scan(0.0, 0.1, 100, 0.001, 0.001, OMEGA, DetectorLimits(dead_time=0.0001))


def test_only_one_frame_per_pulse_modes_scan_and_a_gate_must_close_before_the_next():
    with pytest.raises(ConfigurationError, match="trigger mode 'external_start' does not; choose external or"):
        plan_scan(0.0, 0.1, 100, 0.001, 0.002, OMEGA, trigger_mode="external_start")
    with pytest.raises(ConfigurationError, match="the gate is the exposure .* lower the exposure"):
        plan_scan(0.0, 0.1, 100, 0.002, 0.002, OMEGA, trigger_mode="external_enable")
    assert plan_scan(0.0, 0.1, 100, 0.0015, 0.002, OMEGA, trigger_mode="external_enable").pulse_width == 0.0015
    # an edge only: a frame as long as the period still gets pulses that do not touch
    assert plan_scan(0.0, 0.1, 100, 0.002, 0.002, OMEGA).pulse_width == 0.001


class Rig:
    """A scan over the port motor, generator and detectors, on one journal and one clock."""

    def __init__(self, step=0.1, frames=100, period=0.002, fail_after=None, error=lambda index: 0.0,
                 frames_limit=None, then=None):
        self.clock, self.journal = ManualClock(), []
        self.motor = PortMotor(self.clock, self.journal)
        self.generator = PortGenerator(self.motor, self.journal, error, fail_after)
        self.detectors = PortDetectors(self.generator, self.journal, frames_limit)
        limits = MotorLimits.read("omega", self.motor)
        self.plan = plan_scan(0.0, step, frames, period / 2, period, limits)
        self.scan = ContinuousScan(self.plan, self.motor, self.generator, self.detectors, clock=self.clock,
                                   wait=advancing(self.clock, then and (lambda now: then(self, now))))


def test_a_scan_moves_to_the_run_up_arms_the_generator_starts_the_detectors_then_crosses_at_velocity():
    rig = Rig()
    outcome = rig.scan.run()
    plan = rig.plan
    assert rig.journal == [
        ("motor.move_to", plan.run_up_start),
        ("generator.arm", 0.0, 0.1, 100, 0.001),
        "detectors.start",
        ("motor.set_velocity", pytest.approx(50.0)),
        ("motor.move_to", plan.run_down_end),
        ("motor.set_velocity", 30.0),  # its own again
        "generator.disarm",
    ]
    assert outcome.pulses_sent == outcome.frames_acquired == 100
    assert outcome.captured_positions[37] == pytest.approx(3.7)
    assert outcome.largest_deviation < 0.001  # the encoder's resolution, in steps
    assert outcome.stopped_at == pytest.approx(plan.run_down_end)
    assert outcome.problems == ()


def test_a_generator_that_stops_halfway_ends_the_series_with_the_frames_taken_and_says_so():
    rig = Rig(fail_after=37)
    outcome = rig.scan.run()
    assert outcome.pulses_sent == outcome.frames_acquired == 37
    assert "detectors.stop" in rig.journal and "detectors.abort" not in rig.journal  # the file closes normally
    assert outcome.problems == (
        f"the trigger generator sent 37 of 100 pulses; omega stopped at {round(rig.plan.run_down_end, 4):g} deg",
    )


def test_a_motor_that_stops_halfway_ends_the_series_naming_where_it_stopped():
    def stall(rig, now):
        if rig.motor.position() > 3.75 and rig.detectors.running and rig.motor.model.moving:
            rig.motor.model.stop()  # a motor fault: it brakes on its own
    rig = Rig(then=stall)
    outcome = rig.scan.run()
    assert 37 < outcome.pulses_sent < 100 and outcome.frames_acquired == outcome.pulses_sent
    sent, where = outcome.pulses_sent, round(outcome.stopped_at, 4)
    assert outcome.problems == (f"the trigger generator sent {sent} of 100 pulses; omega stopped at {where:g} deg",)
    assert "detectors.stop" in rig.journal


def test_a_captured_position_more_than_5_percent_of_the_step_off_is_a_problem_naming_it():
    rig = Rig(error=lambda index: 0.0061 if index == 12 else 0.002 * math.sin(index))
    outcome = rig.scan.run()
    assert outcome.largest_deviation == pytest.approx(0.061)
    assert outcome.problems == (
        "pulse 12 captured omega at 1.2061 deg, 6.1% of the 0.1 deg step from 1.2 deg (at most 5%)",
    )


def test_fewer_frames_than_pulses_is_a_problem_and_the_waiting_detector_is_stopped():
    rig = Rig(frames_limit=95)
    outcome = rig.scan.run()
    assert (outcome.pulses_sent, outcome.frames_acquired) == (100, 95)
    assert outcome.problems == ("the detector took 95 frames of the 100 pulses sent",)
    assert "detectors.stop" in rig.journal


def test_abort_stops_the_motor_disarms_the_generator_and_aborts_the_detectors():
    def abort_midway(rig, now):
        if rig.motor.position() > 5.0 and not rig.scan.aborted:
            rig.scan.abort()
    rig = Rig(then=abort_midway)
    with pytest.raises(ScanAborted, match="the omega scan was aborted"):
        rig.scan.run()
    assert {"motor.stop", "generator.disarm", "detectors.abort"} <= set(rig.journal)
    assert rig.journal.index("motor.stop") < rig.journal.index("detectors.abort")
    assert ("motor.set_velocity", 30.0) == rig.journal[-2]  # its own speed again
    assert rig.motor.position() < rig.plan.end


def test_a_failure_before_the_detectors_start_stops_the_motor_and_starts_nothing():
    rig = Rig()

    def refuse(*_):
        raise ConfigurationError("Arm: 'width' must be a positive number")
    rig.generator.arm = refuse
    with pytest.raises(ConfigurationError, match="width"):
        rig.scan.run()
    assert "detectors.start" not in rig.journal and "detectors.abort" not in rig.journal
    assert rig.journal[-2:] == ["motor.stop", "generator.disarm"]


def test_a_scan_does_not_start_while_its_motor_moves():
    rig = Rig()
    rig.motor.move_to(20.0)
    with pytest.raises(StateError, match="omega is moving"):
        rig.scan.run()



def test_a_stop_while_the_detectors_start_does_not_cross_and_ends_the_series():
    rig = Rig()
    start = rig.detectors.start

    def start_then_stop():
        start()
        rig.scan.stop()  # the operator's Stop comes while the detectors start
    rig.detectors.start = start_then_stop
    outcome = rig.scan.run()
    assert ("motor.move_to", rig.plan.run_down_end) not in rig.journal
    assert outcome.pulses_sent == 0 and outcome.problems == () and outcome.stopped_by_operator
    assert "detectors.stop" in rig.journal
