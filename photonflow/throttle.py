"""Rate limiting of notifications, so per-frame counters become a sensible event rate."""

from __future__ import annotations

import time
from collections.abc import Callable


class Throttle:
    """``ready()`` is true at most once per ``interval`` seconds of the injected clock."""

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic):
        self.interval = interval
        self._clock = clock
        self._last = float("-inf")

    def ready(self) -> bool:
        now = self._clock()
        if now - self._last >= self.interval:
            self._last = now
            return True
        return False
