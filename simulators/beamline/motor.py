"""A motor that moves in real time along a trapezoidal velocity profile (triangular when the
move is too short to reach full speed). Its position is a pure function of the clock, so the
time a move passes a position (what a position-compare fires on) is solved from the profile's
segments, exactly, not sampled."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from photonflow.errors import ConfigurationError, StateError

ON, MOVING, ALARM = "ON", "MOVING", "ALARM"


class LimitError(ConfigurationError):
    """A target beyond a motor's soft limits."""

    reason = "OutOfSoftLimits"


@dataclass(frozen=True)
class _Segment:
    """Constant acceleration from ``start`` for ``duration`` seconds."""

    start: float
    position: float
    velocity: float
    acceleration: float
    duration: float

    @property
    def end(self) -> float:
        return self.start + self.duration

    def time_at(self, position: float, direction: float) -> float | None:
        """When this segment passes ``position`` moving in ``direction`` (+1/-1), or None."""
        # in the move's own coordinate u = direction·(x - x0): u(τ) = w·τ + b·τ²/2 with w >= 0
        distance = direction * (position - self.position)
        w, b = direction * self.velocity, direction * self.acceleration
        if distance < 0 or w < 0:
            return None
        discriminant = w * w + 2 * b * distance
        if discriminant < 0:
            return None  # decelerating to rest before it gets there
        root = w + math.sqrt(discriminant)
        elapsed = 0.0 if distance == 0 else (2 * distance / root if root > 0 else math.inf)
        # a crossing at the very end may be a hair later in floating point: it is this segment's
        if elapsed > self.duration * (1 + 1e-12) + 1e-12:
            return None
        return self.start + min(elapsed, self.duration)

    def at(self, t: float) -> tuple[float, float]:
        dt = min(max(t - self.start, 0.0), self.duration)
        return (
            self.position + self.velocity * dt + 0.5 * self.acceleration * dt * dt,
            self.velocity + self.acceleration * dt,
        )


class Motor:
    """One axis: position, velocity (unit/s) up to its maximum, acceleration (unit/s²), soft
    limits and unit."""

    def __init__(
        self,
        name: str = "motor",
        position: float = 0.0,
        velocity: float = 1.0,
        acceleration: float = 2.0,
        low: float = -math.inf,
        high: float = math.inf,
        unit: str = "mm",
        clock: Callable[[], float] = time.monotonic,
        maximum_velocity: float = math.inf,
    ):
        if not low <= high:
            raise ConfigurationError(f"{name}: the low soft limit {low} {unit} is above the high one {high} {unit}")
        if not low <= position <= high:
            raise LimitError(
                f"{name}: the initial position {position} {unit} is outside the soft limits {low} to {high} {unit}"
            )
        self.name, self.unit = name, unit
        self.low, self.high = float(low), float(high)
        if not maximum_velocity > 0:
            raise ConfigurationError(
                f"{name}: the maximum velocity must be a positive number of {unit}/s, got {maximum_velocity}"
            )
        self.maximum_velocity = float(maximum_velocity)
        self.clock = clock
        self._lock = threading.Lock()
        self.velocity = velocity
        self.acceleration = acceleration
        self._rest = float(position)  # where the motor ends once every segment has run
        self._segments: tuple[_Segment, ...] = ()

    # --- settings -----------------------------------------------------------------------------
    @property
    def velocity(self) -> float:
        return self._velocity

    @velocity.setter
    def velocity(self, value: float) -> None:
        if not (math.isfinite(value) and value > 0):
            raise ConfigurationError(f"{self.name}: velocity must be a positive number of {self.unit}/s, got {value}")
        if value > self.maximum_velocity:
            raise ConfigurationError(
                f"{self.name}: velocity {value:g} {self.unit}/s is above its maximum "
                f"{self.maximum_velocity:g} {self.unit}/s", reason="AboveMaximumVelocity",
            )
        self._velocity = float(value)

    @property
    def acceleration(self) -> float:
        return self._acceleration

    @acceleration.setter
    def acceleration(self, value: float) -> None:
        if not (math.isfinite(value) and value > 0):
            raise ConfigurationError(
                f"{self.name}: acceleration must be a positive number of {self.unit}/s², got {value}"
            )
        self._acceleration = float(value)

    def check_target(self, target: float) -> float:
        """The target as a float, or a LimitError saying which soft limit it passes."""
        if not math.isfinite(target):
            raise ConfigurationError(f"{self.name}: the target must be a finite number of {self.unit}, got {target}")
        if target < self.low:
            raise LimitError(
                f"{self.name}: target {target:g} {self.unit} is below the low soft limit {self.low:g} {self.unit}; "
                f"choose a position between {self.low:g} and {self.high:g} {self.unit}"
            )
        if target > self.high:
            raise LimitError(
                f"{self.name}: target {target:g} {self.unit} is above the high soft limit {self.high:g} {self.unit}; "
                f"choose a position between {self.low:g} and {self.high:g} {self.unit}"
            )
        return float(target)

    # --- what the motor does now --------------------------------------------------------------
    def _kinematics(self, t: float) -> tuple[float, float]:
        for segment in self._segments:
            if t < segment.end:
                return segment.at(t)
        return self._rest, 0.0

    @property
    def position(self) -> float:
        with self._lock:
            return self._kinematics(self.clock())[0]

    def position_at(self, t: float) -> float:
        """Where the current (or last) move puts the axis at model-clock time ``t`` (its start
        position before it, its target after it)."""
        with self._lock:
            return self._kinematics(t)[0]

    def time_at(self, position: float, direction: float = 0.0) -> float | None:
        """The model-clock time at which the current (or last) move passes ``position``, or None
        if it does not; with ``direction`` (+1/-1), only a pass in that direction counts."""
        with self._lock:
            segments = self._segments
        for segment in segments:
            heading = math.copysign(1.0, segment.velocity + segment.acceleration * segment.duration / 2)
            if direction and heading != math.copysign(1.0, direction):
                continue
            crossing = segment.time_at(position, heading)
            if crossing is not None:
                return crossing
        return None

    @property
    def current_velocity(self) -> float:
        with self._lock:
            return self._kinematics(self.clock())[1]

    @property
    def target(self) -> float:
        """Where the current (or last) move ends."""
        return self._rest

    @property
    def moving(self) -> bool:
        with self._lock:
            return bool(self._segments) and self.clock() < self._segments[-1].end

    @property
    def at_limit(self) -> bool:
        position = self.position
        return position <= self.low or position >= self.high

    @property
    def state(self) -> str:
        if self.moving:
            return MOVING
        return ALARM if self.at_limit else ON

    @property
    def status(self) -> str:
        position = self.position
        if self.moving:
            return f"{self.name} moving to {self._rest:g} {self.unit}, at {position:g} {self.unit}."
        if position <= self.low:
            return f"{self.name} at its low soft limit {self.low:g} {self.unit}."
        if position >= self.high:
            return f"{self.name} at its high soft limit {self.high:g} {self.unit}."
        return f"{self.name} at {position:g} {self.unit}."

    # --- commands -----------------------------------------------------------------------------
    def move_to(self, target: float) -> float:
        """Start a move to ``target``; returns how long it will take (s)."""
        target = self.check_target(target)
        with self._lock:
            now = self.clock()
            if self._segments and now < self._segments[-1].end:
                raise StateError(f"{self.name} is still moving to {self._rest:g} {self.unit}; Stop it first")
            start = self._rest
            distance = abs(target - start)
            direction = 1.0 if target >= start else -1.0
            a, v = self.acceleration, self.velocity
            ramp_time = v / a
            ramp_distance = 0.5 * a * ramp_time**2
            if distance == 0:
                segments: tuple[_Segment, ...] = ()
            elif 2 * ramp_distance >= distance:  # triangular: never reaches full speed
                ramp_time = math.sqrt(distance / a)
                peak = direction * a * ramp_time
                middle = start + direction * distance / 2
                segments = (
                    _Segment(now, start, 0.0, direction * a, ramp_time),
                    _Segment(now + ramp_time, middle, peak, -direction * a, ramp_time),
                )
            else:
                cruise_time = (distance - 2 * ramp_distance) / v
                cruise_start = start + direction * ramp_distance
                segments = (
                    _Segment(now, start, 0.0, direction * a, ramp_time),
                    _Segment(now + ramp_time, cruise_start, direction * v, 0.0, cruise_time),
                    _Segment(
                        now + ramp_time + cruise_time, target - direction * ramp_distance, direction * v,
                        -direction * a, ramp_time,
                    ),
                )
            self._segments, self._rest = segments, target
            return sum(segment.duration for segment in segments)

    def stop(self) -> None:
        """Decelerate to rest at the set acceleration, from wherever the motor is now."""
        with self._lock:
            now = self.clock()
            position, velocity = self._kinematics(now)
            if velocity == 0.0:
                self._segments, self._rest = (), position
                return
            braking_time = abs(velocity) / self.acceleration
            deceleration = -math.copysign(self.acceleration, velocity)
            rest = position + velocity * braking_time / 2
            # the move so far stays part of it: a position it passed before the Stop keeps its time
            travelled = tuple(
                _Segment(s.start, s.position, s.velocity, s.acceleration, min(s.duration, now - s.start))
                for s in self._segments if s.start < now
            )
            self._segments = (*travelled, _Segment(now, position, velocity, deceleration, braking_time))
            self._rest = rest
