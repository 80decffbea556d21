"""Hardware-synchronised continuous scans: the motor crosses the scan at constant velocity and a
position-compare output triggers the detector at every step, as IcePAP/PandABox flyscans do
(BLISS ``fscan``, Sardana ``ascanct``).

``plan_scan`` turns what the operator asks (start, step per frame, frames, exposure, period) into
what the hardware must do: the velocity, a run-up long enough to reach it and settle before the
first trigger, a run-down after the last frame, the trigger positions and the time it all takes;
it refuses, before anything moves, a scan the motor or the detector cannot do, saying what to
change. ``ContinuousScan`` runs a plan through two ports (``MotorPort``, ``TriggerGeneratorPort``)
and the detector side (``ScanDetectors``: the Recorder and the Acquirer as the Controller drives
them), and tells in a ``ScanOutcome`` what really happened: pulses, captured encoder positions,
the largest deviation from start + i * step, where the motor stopped. Nothing here imports Tango;
time is an injected clock and every wait an injected function.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from photonflow.errors import ConfigurationError, PhotonflowError, StateError
from photonflow.requests import Request, value

log = logging.getLogger(__name__)

MOVING = "MOVING"  # a motor's state while it moves, as Tango names it
SETTLING_TIME = 0.1  # s at constant velocity before the first trigger and after the last frame: the servo settles
DEVIATION_LIMIT = 0.05  # a captured position further than this fraction of the step from start + i*step is a problem
GRACE_TIME = 2.0  # s without a new pulse (or frame) once the motor is at rest before the scan is declared short
POLL_INTERVAL = 0.05  # s between readings of the motor, the generator and the detector while the scan runs
MOVE_MARGIN = 10.0  # s beyond twice its computed duration that the move to the run-up start may take
# one frame per pulse; external_start takes a single edge for the whole series, which ties no frame to a position
SCAN_TRIGGER_MODES = ("external", "external_enable")


@dataclass(frozen=True)
class ScanRequest(Request):
    """Configure's ``scan``: which axis turns while the frames are taken, from where, by how much
    per frame; the range is frames x step."""

    command = "Configure's scan"
    example = {"axis": "omega", "start": 0.0, "step": 0.1}

    axis: str = value(doc="the scan axis, as the Controller's ScanAxes names it (e.g. omega)")
    start: float = value(doc="the position of the first frame's trigger")
    step: float = value(doc="the move per frame, signed (its sign is the direction of the scan), not 0")

    def check(self) -> None:
        if self.step == 0:
            raise ConfigurationError("'scan.step' must not be 0: give the move per frame, signed for the direction")


@dataclass(frozen=True)
class MotorLimits:
    """What a scan needs to know of its motor, read when the scan is planned."""

    axis: str
    maximum_velocity: float
    acceleration: float
    low: float  # soft limits
    high: float
    position: float = 0.0  # where it is now: the start of the move to the run-up start
    velocity: float = 0.0  # its own speed, for that move (0: its maximum)
    unit: str = ""

    @classmethod
    def read(cls, axis: str, motor: MotorPort) -> MotorLimits:
        low, high = motor.soft_limits()
        return cls(axis, motor.maximum_velocity(), motor.acceleration(), low, high, motor.position(),
                   motor.velocity(), motor.unit())


@dataclass(frozen=True)
class DetectorLimits:
    """How fast the detector follows triggers: its shortest period and its dead time after an exposure."""

    minimum_period: float = 0.0
    dead_time: float = 0.0


@dataclass(frozen=True)
class ScanPlan:
    """What the hardware does for one scan; positions in the motor's unit, times in seconds."""

    axis: str
    unit: str
    start: float
    step: float
    frames: int
    exposure: float
    period: float
    trigger_mode: str
    velocity: float  # during the frames: |step| / period
    acceleration: float
    run_up: float  # distance before start: v²/2a to reach the velocity, plus the settling margin
    run_down: float  # distance after the last frame's end, to settle and stop
    run_up_start: float
    run_down_end: float
    pulse_width: float  # the trigger's width; with external_enable the gate, so the exposure
    approach_time: float  # the move to the run-up start at the motor's own speed
    duration: float  # approach + run-up + frames x period + run-down

    @property
    def direction(self) -> float:
        return math.copysign(1.0, self.step)

    @property
    def end(self) -> float:
        """Where the last frame ends: the range is frames x step."""
        return self.start + self.frames * self.step

    def trigger_position(self, index: int) -> float:
        return self.start + index * self.step

    @property
    def trigger_positions(self) -> tuple[float, ...]:
        return tuple(self.trigger_position(i) for i in range(self.frames))

    def describe(self) -> dict[str, float | str]:
        """The plan as the Controller's Configuration shows it."""
        return {"velocity": self.velocity, "run_up_start": self.run_up_start, "run_down_end": self.run_down_end,
                "pulse_width": self.pulse_width, "duration": self.duration, "unit": self.unit}


def plan_scan(start: float, step: float, frames: int, exposure: float, period: float, motor: MotorLimits,
              detector: DetectorLimits = DetectorLimits(), trigger_mode: str = "external",
              settling_time: float = SETTLING_TIME) -> ScanPlan:
    """The plan of a scan, or ConfigurationError naming the limit it crosses and what to change."""
    axis, unit = motor.axis, f" {motor.unit}" if motor.unit else ""
    if step == 0 or not math.isfinite(step):
        raise ConfigurationError(f"{axis}: the step must be a non-zero number, got {step}")
    if frames < 1:
        raise ConfigurationError(f"{axis}: a scan needs at least 1 frame, got {frames}")
    if trigger_mode not in SCAN_TRIGGER_MODES:
        raise ConfigurationError(
            f"a scan triggers one frame per step: trigger mode {trigger_mode!r} does not; "
            f"choose {' or '.join(SCAN_TRIGGER_MODES)}"
        )
    needed = max(detector.minimum_period, exposure + detector.dead_time)
    if period < needed:
        raise ConfigurationError(
            f"{axis}: a period of {period:g} s is shorter than the detector follows "
            f"({exposure:g} s exposure, shortest period {needed:g} s): take a period of at least "
            f"{_significant(needed, up=True):g} s or a shorter exposure"
        )
    if trigger_mode == "external_enable" and exposure >= period:
        raise ConfigurationError(
            f"{axis}: with external_enable the gate is the exposure ({exposure:g} s) and must end before the "
            f"next one opens, a period ({period:g} s) later: lower the exposure or lengthen the period"
        )
    velocity = abs(step) / period
    if velocity > motor.maximum_velocity:
        raise ConfigurationError(
            f"{axis}: {abs(step):g}{unit} per {period:g} s frame needs {velocity:g}{unit}/s, above its maximum "
            f"{motor.maximum_velocity:g}{unit}/s: take a period of at least "
            f"{_significant(abs(step) / motor.maximum_velocity, up=True):g} s or a step of at most "
            f"{_significant(motor.maximum_velocity * period, up=False):g}{unit}"
        )
    if not motor.acceleration > 0:
        raise ConfigurationError(f"{axis}: its acceleration is {motor.acceleration:g}{unit}/s²; set a positive one")
    direction = math.copysign(1.0, step)
    ramp = velocity**2 / (2 * motor.acceleration)
    run_up = run_down = ramp + velocity * settling_time
    run_up_start = start - direction * run_up
    run_down_end = start + frames * step + direction * run_down
    _check_soft_limits(motor, run_up_start, run_down_end, unit)
    ramp_time = velocity / motor.acceleration + settling_time
    approach_time = _move_time(abs(run_up_start - motor.position), motor.velocity or motor.maximum_velocity,
                               motor.acceleration)
    return ScanPlan(
        axis=axis, unit=motor.unit, start=start, step=step, frames=frames, exposure=exposure, period=period,
        trigger_mode=trigger_mode, velocity=velocity, acceleration=motor.acceleration, run_up=run_up,
        run_down=run_down, run_up_start=run_up_start, run_down_end=run_down_end,
        # an edge only marks the frame (the detector counts its own exposure): kept apart from the next
        pulse_width=exposure if exposure < period else period / 2,
        approach_time=approach_time, duration=approach_time + 2 * ramp_time + frames * period,
    )


def _check_soft_limits(motor: MotorLimits, run_up_start: float, run_down_end: float, unit: str) -> None:
    lowest, highest = min(run_up_start, run_down_end), max(run_up_start, run_down_end)
    for beyond, limit, excess in ((lowest < motor.low, motor.low, motor.low - lowest),
                                  (highest > motor.high, motor.high, highest - motor.high)):
        if beyond:
            raise ConfigurationError(
                f"{motor.axis}: with its run-up and run-down the scan moves from {run_up_start:g} to "
                f"{run_down_end:g}{unit}, beyond the soft limit {limit:g}{unit}: move the scan at least "
                f"{_significant(excess, up=True):g}{unit} away from it, or scan slower (a longer period "
                "shortens the run-up)"
            )


def _move_time(distance: float, velocity: float, acceleration: float) -> float:
    """A trapezoidal move's duration (triangular when it never reaches ``velocity``)."""
    if distance <= 0:
        return 0.0
    if velocity**2 / acceleration >= distance:
        return 2 * math.sqrt(distance / acceleration)
    return velocity / acceleration + distance / velocity


def _significant(number: float, up: bool) -> float:
    """``number`` to two significant figures, rounded up (a minimum to give) or down (a maximum)."""
    if number <= 0:
        return number
    exponent = math.floor(math.log10(number)) - 1
    scaled = number / 10**exponent
    scaled = math.ceil(scaled - 1e-9) if up else math.floor(scaled + 1e-9)
    return round(scaled * 10**exponent, max(0, -exponent))


class MotorPort(Protocol):
    """The scan axis (a SimulatedMotor, an IcePAP axis...)."""

    def position(self) -> float: ...
    def velocity(self) -> float: ...
    def set_velocity(self, velocity: float) -> None: ...
    def maximum_velocity(self) -> float: ...
    def acceleration(self) -> float: ...
    def soft_limits(self) -> tuple[float, float]: ...
    def unit(self) -> str: ...
    def move_to(self, position: float) -> None: ...
    def stop(self) -> None: ...
    def state(self) -> str: ...


class TriggerGeneratorPort(Protocol):
    """The position-compare output that triggers the detector and latches the encoder."""

    def arm(self, start: float, step: float, count: int, width: float) -> None: ...
    def disarm(self) -> None: ...
    def pulses_sent(self) -> int: ...
    def captured_positions(self) -> list[float]: ...


class ScanDetectors(Protocol):
    """The detector side of a scan, as the Controller drives it."""

    def start(self) -> None:
        """Arm the Recorder and start the Acquirer, which then waits for the pulses."""

    def frames_acquired(self) -> int: ...

    def stop(self) -> None:
        """End the series with the frames taken (the Recorder closes its file normally)."""

    def abort(self) -> None: ...


class ScanAborted(PhotonflowError):
    """The scan was aborted (by the operator or a failure); motor, generator and detectors were told."""

    reason = "ScanAborted"


@dataclass(frozen=True)
class ScanOutcome:
    """What the scan did, as the hardware recorded it."""

    plan: ScanPlan
    pulses_sent: int
    frames_acquired: int
    captured_positions: tuple[float, ...]
    largest_deviation: float  # the largest |captured - (start + i*step)|, in steps
    stopped_at: float  # where the motor came to rest
    stopped_by_operator: bool = False
    problems: tuple[str, ...] = ()


def deviations(plan: ScanPlan, captured: tuple[float, ...]) -> list[float]:
    """Each captured position's distance from start + i*step, in steps."""
    return [abs(position - plan.trigger_position(i)) / abs(plan.step) for i, position in enumerate(captured)]


class ContinuousScan:
    """Runs one plan: motor to the run-up start -> generator armed -> detectors started -> motor at
    the scan velocity to the run-down end -> pulses and frames followed -> velocity restored and
    generator disarmed. A failure anywhere aborts all of them; ``abort`` does so at once, ``stop``
    ends the scan early with the frames taken."""

    def __init__(self, plan: ScanPlan, motor: MotorPort, generator: TriggerGeneratorPort, detectors: ScanDetectors,
                 clock: Callable[[], float] = time.monotonic, wait: Callable[[float], object] | None = None,
                 grace_time: float = GRACE_TIME, poll_interval: float = POLL_INTERVAL):
        self.plan, self.motor, self.generator, self.detectors = plan, motor, generator, detectors
        self._clock = clock
        self._interrupted = threading.Event()
        self._wait = wait or self._interrupted.wait
        self.grace_time = grace_time + 3 * plan.period
        self.poll_interval = poll_interval
        self._aborted = False
        self._stopped = False

    def run(self) -> ScanOutcome:
        plan, motor = self.plan, self.motor
        if motor.state() == MOVING:
            raise StateError(f"{plan.axis} is moving: wait for it to stop (or Stop it), then start the scan")
        detectors_started = False
        saved_velocity: float | None = None
        try:
            motor.move_to(plan.run_up_start)
            self._reach_run_up_start()
            self.generator.arm(plan.start, plan.step, plan.frames, plan.pulse_width)
            self._check_interrupted()
            self.detectors.start()
            detectors_started = True
            self._check_interrupted()
            if not self._stopped:  # a Stop while the detectors started: no crossing, the series ends empty
                saved_velocity = motor.velocity()
                motor.set_velocity(plan.velocity)
                motor.move_to(plan.run_down_end)
            pulses = self._follow_pulses()
            frames = self._follow_frames(pulses)
        except Exception:
            self._abort_all(detectors_started)
            raise
        finally:
            if saved_velocity is not None:
                _safely(lambda: motor.set_velocity(saved_velocity), "restoring the velocity")
            _safely(self.generator.disarm, "disarming the trigger generator")
        return self._outcome(frames)

    @property
    def aborted(self) -> bool:
        """Whether ``abort`` was called (an operator's Abort, not a failure)."""
        return self._aborted

    @property
    def interrupted(self) -> bool:
        """Whether the operator ended it (``abort`` or ``stop``): what follows is no failure."""
        return self._aborted or self._stopped

    def abort(self) -> None:
        """Stop the motor and disarm the generator now; ``run`` then aborts the detectors and raises."""
        self._aborted = True
        self._interrupted.set()
        _safely(self.motor.stop, "stopping the motor")
        _safely(self.generator.disarm, "disarming the trigger generator")

    def stop(self) -> None:
        """End the scan early: the motor stops, no more pulses; the frames taken are kept."""
        self._stopped = True
        _safely(self.motor.stop, "stopping the motor")
        _safely(self.generator.disarm, "disarming the trigger generator")

    # -- the steps ----------------------------------------------------------------------------
    def _reach_run_up_start(self) -> None:
        plan, motor = self.plan, self.motor
        allowed = 2 * plan.approach_time + MOVE_MARGIN
        deadline = self._clock() + allowed
        while motor.state() == MOVING:
            if self._clock() > deadline:
                raise ScanAborted(f"{plan.axis} did not reach the run-up start {plan.run_up_start:g} {plan.unit} "
                                  f"within {allowed:g} s; it is at {motor.position():g} {plan.unit}")
            self._pause()
        if self._stopped:
            raise ScanAborted(f"the {plan.axis} scan was stopped before its first frame")
        position = motor.position()
        if abs(position - plan.run_up_start) > DEVIATION_LIMIT * abs(plan.step):
            raise ScanAborted(f"{plan.axis} stopped at {position:g} {plan.unit} on its way to the run-up start "
                              f"{plan.run_up_start:g} {plan.unit}")

    def _follow_pulses(self) -> int:
        """Until every pulse came and the motor is at rest, or no pulse came for the grace time
        once the motor rests (a generator or a motor that stopped halfway)."""
        pulses, last_change = 0, self._clock()
        while True:
            self._pause()
            sent = self.generator.pulses_sent()
            if sent != pulses:
                pulses, last_change = sent, self._clock()
            if self.motor.state() == MOVING:
                continue
            if pulses >= self.plan.frames or self._stopped or self._clock() - last_change >= self.grace_time:
                return pulses

    def _follow_frames(self, pulses: int) -> int:
        """Until the detector took a frame per pulse, or none came for the grace time; a detector
        still waiting for pulses that will not come is stopped, so the file closes normally."""
        frames, last_change = self.detectors.frames_acquired(), self._clock()
        while frames < pulses and self._clock() - last_change < self.grace_time:
            self._pause()
            taken = self.detectors.frames_acquired()
            if taken != frames:
                frames, last_change = taken, self._clock()
        if frames < self.plan.frames:
            self.detectors.stop()
        return frames

    def _pause(self) -> None:
        self._wait(self.poll_interval)
        self._check_interrupted()

    def _check_interrupted(self) -> None:
        if self._aborted:
            raise ScanAborted(f"the {self.plan.axis} scan was aborted")

    def _abort_all(self, detectors_started: bool) -> None:
        """After a failure: the motor stopped, the detectors aborted (``run`` disarms the generator)."""
        _safely(self.motor.stop, "stopping the motor")
        if detectors_started:
            _safely(self.detectors.abort, "aborting the detectors")

    def _outcome(self, frames: int) -> ScanOutcome:
        plan = self.plan
        pulses = self.generator.pulses_sent()
        captured = tuple(self.generator.captured_positions())[:pulses]
        stopped_at = self.motor.position()
        off = deviations(plan, captured)
        problems = []
        if pulses < plan.frames and not self._stopped:
            problems.append(f"the trigger generator sent {pulses} of {plan.frames} pulses; "
                            f"{plan.axis} stopped at {round(stopped_at, 4):g} {plan.unit}")
        if frames < pulses:
            problems.append(f"the detector took {frames} frames of the {pulses} pulses sent")
        if len(captured) < pulses:
            problems.append(f"the trigger generator captured {len(captured)} positions of the {pulses} pulses sent")
        worst = max(range(len(off)), key=off.__getitem__, default=None)
        if worst is not None and off[worst] > DEVIATION_LIMIT:
            problems.append(
                f"pulse {worst} captured {plan.axis} at {captured[worst]:g} {plan.unit}, {off[worst]:.1%} of the "
                f"{abs(plan.step):g} {plan.unit} step from {plan.trigger_position(worst):g} {plan.unit} "
                f"(at most {DEVIATION_LIMIT:.0%})"
            )
        return ScanOutcome(plan, pulses, frames, captured, max(off, default=0.0), stopped_at, self._stopped,
                           tuple(problems))


def _safely(action: Callable[[], object], what: str) -> None:
    """Clean-up that must go on whatever fails: the failure is logged, the rest still done."""
    try:
        action()
    except Exception as error:  # noqa: BLE001 - the port's error (a Tango one); the scan's own error matters more
        log.warning("%s failed: %s", what, error)
