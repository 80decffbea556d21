"""A scan axis' value at every frame, and what is off about it.

In a continuous scan a position-compare device fires the detector at start + i × step of the
axis' encoder and latches the encoder at every trigger: frame n's angle is the position latched
for pulse n (frame n belongs to pulse n). Without such a capture the axis is interpolated from
the motor's readings at each frame's time, which is flagged: software readings are not where
the frames were taken. Every problem is a sentence an experimenter can act on; the Standardizer
writes them in the file and reports them as warnings.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ANGLE_TOLERANCE = 0.05  # of a step: a frame's angle further from start + i × step is a problem
FRAME_TIME_TOLERANCE = 0.10  # of the requested period: beyond it the file has the achieved one


@dataclass(frozen=True)
class TriggerCapture:
    """What a position-compare device recorded: the scan it was armed with (start, step, count)
    and, for every pulse it sent, the encoder position and the UNIX time of the pulse."""

    device: str
    start: float
    step: float
    count: int
    positions: np.ndarray
    times: np.ndarray

    def belongs_to(self, series_start: float | None, series_end: float | None) -> bool:
        """The capture is the series' when its first pulse is not before the series started (an
        earlier scan's capture stays readable until the next Arm) nor its last after the series
        ended (a file standardized later, after another scan)."""
        if series_start is None or not self.times.size:
            return False
        if self.times[0] < series_start:
            return False
        return series_end is None or self.times[-1] <= series_end


@dataclass(frozen=True)
class AxisPerFrame:
    """An axis' value per frame (or its one value), the step between frames when the scan says
    it (the position-compare or the detector's header), and what is off about the values."""

    values: object  # an array per frame, or the one value (a number, a text)
    unit: str | None
    increment: float | None = None
    problems: tuple[str, ...] = ()
    source: str = ""  # where the values come from, as the file names it (see nexus.write)


def from_triggers(name: str, trigger: TriggerCapture, frames: int, unit: str | None) -> AxisPerFrame:
    """Frame n at the position latched for pulse n; a frame without a pulse at its planned
    position start + n × step, flagged."""
    planned = trigger.start + trigger.step * np.arange(frames)
    captured = min(frames, trigger.positions.size)
    values = planned.copy()
    values[:captured] = trigger.positions[:captured]
    unit_text = f" {unit}" if unit else ""
    problems = []
    if captured < trigger.count:
        covered_end = values[captured - 1] + trigger.step if captured else trigger.start
        problems.append(
            f"{name}: the frames cover {_number(trigger.start)} to {_number(covered_end)}{unit_text} ({captured} "
            f"triggered frames), not the requested {_number(trigger.start)} to "
            f"{_number(trigger.start + trigger.count * trigger.step)}{unit_text} ({trigger.count} × "
            f"{_number(trigger.step)}{unit_text})")
    if trigger.positions.size < frames:
        problems.append(
            f"{name}: {trigger.device} captured {trigger.positions.size} trigger positions for {frames} frames; "
            f"frames {captured} to {frames - 1} have their planned angle start + i × step")
    deviation = np.abs(values[:captured] - planned[:captured])
    off = np.flatnonzero(deviation > ANGLE_TOLERANCE * abs(trigger.step))
    if off.size:
        worst = int(off[np.argmax(deviation[off])])
        problems.append(
            f"{name}: {off.size} frame(s) more than {ANGLE_TOLERANCE:.0%} of the {_number(trigger.step)}{unit_text} "
            f"step from start + i × step (worst: frame {worst} at {_number(values[worst])}{unit_text}, "
            f"planned {_number(planned[worst])}{unit_text})")
    return AxisPerFrame(values, unit, trigger.step, tuple(problems))


def interpolated(name: str, sample_times: np.ndarray, positions: np.ndarray, frame_times: np.ndarray,
                 unit: str | None) -> AxisPerFrame:
    """The axis at each frame's time from its readings during the series (a frame without a time
    at the mean time); flagged, with the steps it gives, when the axis moved."""
    order = np.argsort(sample_times)
    filled = np.where(np.isnan(frame_times), np.nanmean(frame_times), frame_times)
    values = np.interp(filled, sample_times[order], positions[order].astype(np.float64))
    if np.ptp(positions) == 0:
        return AxisPerFrame(values, unit)
    steps = np.abs(np.diff(values))
    moved = f"steps {_number(steps.min())} to {_number(steps.max())}" if steps.size else \
        f"moved {_number(np.ptp(positions))}"
    return AxisPerFrame(values, unit, problems=(
        f"{name} per frame interpolated from motor readings: {moved}{f' {unit}' if unit else ''}",))


def held(name: str, before: float, after: float | None, frames: int, unit: str | None) -> AxisPerFrame:
    """Every frame at the axis' value at the series start; flagged when it was elsewhere at the end."""
    values = np.full(frames, before)
    if after is None or after == before:
        return AxisPerFrame(values, unit)
    return AxisPerFrame(values, unit, problems=(
        f"{name} moved from {_number(before)} to {_number(after)}{f' {unit}' if unit else ''} during the series "
        f"with neither trigger positions nor readings: every frame has {_number(before)}",))


def achieved_frame_time(frame_times: np.ndarray, requested: float | None) -> tuple[float, str] | None:
    """The time between frames the detector's timestamps show, and the problem, when it is more
    than 10 % from the ``requested`` one; None when it is not (or cannot be told)."""
    stamped = np.flatnonzero(np.isfinite(frame_times))
    if requested is None or requested <= 0 or stamped.size < 2:
        return None
    first, last = stamped[0], stamped[-1]
    achieved = float(frame_times[last] - frame_times[first]) / float(last - first)
    if achieved <= 0 or abs(achieved - requested) <= FRAME_TIME_TOLERANCE * requested:
        return None
    return achieved, (f"frame_time: the frames came every {_number(achieved)} s ({_number(1 / achieved)} Hz), "
                      f"not every {_number(requested)} s as requested; the file has the achieved one")


def _number(value: float) -> str:
    return f"{float(value):.4g}"
