"""When a simulated detector takes its frames, on its own timing or on its trigger input.

Why: a real detector on internal trigger takes frame n at t0 + n * period whatever its host is
doing; a simulator shares a machine that may be too slow for the rate asked of it. Before, a
simulator that fell behind took the frames it owed in a burst to catch up (median 0.3 ms apart
at a 2 ms period), and the files called that a 2 ms period. Here a frame the machine could not
take on time is taken when it can, the frames after it keep a period apart from it, every
frame's time is the one achieved, and ``shortfall`` says so when the rate achieved is below the
one requested, for the Acquirer to end the series in ALARM.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

SHORTFALL_TOLERANCE = 0.05  # a series below 95 % of the requested rate did not keep its time,
SHORTFALL_GRACE = 0.05  # unless it lost less than this many seconds in all (a hiccup of the host)


@dataclass(frozen=True)
class SimulatorClock:
    """A simulator's time: ``now`` (UNIX seconds) and ``wait(stop, seconds)`` (True if ``stop``
    was set meanwhile). Tests pass a clock they advance themselves."""

    now: Callable[[], float] = time.time
    wait: Callable[[threading.Event, float], bool] = threading.Event.wait

    def wait_until(self, stop: threading.Event, moment: float) -> bool:
        """Until ``moment`` (at once if it is past); True if stopped first."""
        remaining = moment - self.now()
        return self.wait(stop, remaining) if remaining > 0 else stop.is_set()


REAL_TIME = SimulatorClock()


def rate_text(hertz: float) -> str:
    return f"{hertz:.0f}" if hertz >= 100 else f"{hertz:.3g}"


class FrameSchedule:
    """Frame n's start at ``origin + n * period``; a frame taken more than half a period late
    moves the origin to it, so the next comes a period after it, not at once."""

    def __init__(self, origin: float, period: float):
        self.origin, self.period = origin, period
        self.first: float | None = None
        self.last: float | None = None
        self.frames = 0

    def due(self, frame_number: int) -> float:
        """When frame ``frame_number`` should start."""
        return self.origin + frame_number * self.period

    def taken(self, frame_number: int, start: float) -> None:
        """Frame ``frame_number`` started at ``start`` (UNIX seconds)."""
        if start - self.due(frame_number) > self.period / 2:
            self.origin = start - frame_number * self.period
        if self.first is None:
            self.first = start
        self.last = start
        self.frames += 1

    def achieved_rate(self) -> float | None:
        """Frames per second between the first frame and the last; None for fewer than two."""
        if self.frames < 2 or self.last <= self.first:
            return None
        return (self.frames - 1) / (self.last - self.first)

    def shortfall(self, who: str = "the simulated detector") -> str | None:
        """What the series did not keep, or None when it kept its rate (within 5 %, or lost less
        than 50 ms in all)."""
        achieved = self.achieved_rate()
        requested = 1.0 / self.period
        if achieved is None or achieved >= requested * (1 - SHORTFALL_TOLERANCE):
            return None
        if (self.last - self.first) - (self.frames - 1) * self.period < SHORTFALL_GRACE:
            return None
        return f"{who} achieved {rate_text(achieved)} Hz of the {rate_text(requested)} Hz requested"
