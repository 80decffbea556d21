"""A simulated camera's trigger input: the pulses (edges, or gates with their width) not yet taken.

Why: every simulated detector with external or software triggering needs the same thing, a
queue of pulses a readout thread waits on without missing a stop; one class serves them all.
A pulse keeps its edge time, so a frame exposed on it carries the hardware's time, not the
time the simulator got round to it. ``plug(address)`` cables the input to a trigger line
(``photonflow.simulators.trigger_line``): every pulse sent on the line lands here.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable

from photonflow.simulators.trigger_line import Pulse, TriggerLineInput


class TriggerInput:
    def __init__(self, wall_clock: Callable[[], float] = time.time) -> None:
        self._condition = threading.Condition()
        self._pulses: deque[Pulse] = deque()
        self._wall_clock = wall_clock
        self._fired = 0  # pulses given by fire(), numbered as a generator numbers its own
        self._since = -math.inf  # pulses with an earlier edge belong to an earlier acquisition
        self._line: TriggerLineInput | None = None

    def plug(self, address: str) -> None:
        """Cable this input to the trigger line at ``address`` (a ZeroMQ endpoint); empty: no cable."""
        self.unplug()
        if address:
            self._line = TriggerLineInput(address, self.receive)

    def unplug(self) -> None:
        line, self._line = self._line, None
        if line is not None:
            line.close()

    @property
    def cabled(self) -> bool:
        """A trigger line is plugged in: external trigger modes can work."""
        return self._line is not None

    def receive(self, pulse: Pulse) -> None:
        """A pulse from the line (or a test), with the time its edge happened; one whose edge came
        before the acquisition started is not its own, however late it is delivered."""
        with self._condition:
            if pulse.time < self._since:
                return
            self._pulses.append(pulse)
            self._condition.notify_all()

    def fire(self, width: float | None = None) -> None:
        """An edge now (a software trigger, a simulator's own trigger command); ``width``: the
        pulse's, for modes whose exposure is the gate (0: none given)."""
        with self._condition:
            pulse = Pulse(self._fired, self._wall_clock(), width or 0.0)
            self._fired += 1
        self.receive(pulse)

    def clear(self, since: float | None = None) -> None:
        """An acquisition starts: pulses whose edge came before ``since`` (default: now) are not
        its own, those already here and those still on their way."""
        with self._condition:
            self._since = self._wall_clock() if since is None else since
            self._pulses = deque(pulse for pulse in self._pulses if pulse.time >= self._since)
            self._fired = 0

    def take(self, stopped: Callable[[], bool]) -> Pulse | None:
        """Wait for the next pulse: it, or None once ``stopped()``."""
        with self._condition:
            while not self._pulses:
                if stopped():
                    return None
                self._condition.wait(0.05)
            return self._pulses.popleft()
