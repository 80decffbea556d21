"""A beam shutter: opening or closing takes a moment; without beam it refuses to open, and
losing the beam closes it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from photonflow.errors import StateError

OPEN, CLOSE, MOVING, FAULT = "OPEN", "CLOSE", "MOVING", "FAULT"


class Shutter:
    def __init__(
        self,
        is_open: bool = False,
        travel_time: float = 0.1,
        beam_available: Callable[[], bool] = lambda: True,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.travel_time = travel_time
        self._beam_available = beam_available
        self._clock = clock
        self._lock = threading.Lock()
        self._open = is_open  # where the blade is going (or is)
        self._since = -float("inf")  # when it started going there
        self._fault: str | None = None
        self._note = ""

    @property
    def state(self) -> str:
        with self._lock:
            if self._fault is not None:
                return FAULT
            if self._clock() < self._since + self.travel_time:
                return MOVING
            return OPEN if self._open else CLOSE

    @property
    def is_open(self) -> bool:
        return self.state == OPEN

    @property
    def status(self) -> str:
        state = self.state
        if state == FAULT:
            return f"Shutter fault: {self._fault}. Reset it once the cause is fixed."
        text = {OPEN: "Shutter open.", CLOSE: "Shutter closed.", MOVING: "Shutter moving."}[state]
        if state == MOVING:
            text = "Shutter opening." if self._open else "Shutter closing."
        return f"{text} {self._note}".strip()

    def _move(self, to_open: bool, note: str = "") -> None:
        with self._lock:
            if self._open != to_open:
                self._open = to_open
                self._since = self._clock()
            self._note = note

    def open(self) -> None:
        if self.state == FAULT:
            raise StateError(f"the shutter is in FAULT ({self._fault}); Reset it before opening")
        if not self._beam_available():
            raise StateError("there is no beam in the storage ring; the shutter opens once the beam is back")
        self._move(True)

    def close(self) -> None:
        self._move(False)

    def beam_lost(self) -> None:
        """The storage ring lost its beam: close, and say why."""
        if self._open:
            self._move(False, "Closed by the beam loss interlock.")

    def set_fault(self, reason: str) -> None:
        with self._lock:
            self._fault = reason

    def reset(self) -> None:
        """Clear a fault; the shutter stays where it was."""
        with self._lock:
            self._fault = None
