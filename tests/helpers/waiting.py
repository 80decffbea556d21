"""Waiting for a condition with a deadline, and clocks a test controls: a loaded machine makes a
test slower, never wrong."""

from __future__ import annotations

import threading
import time


def wait_until(check, timeout: float = 30, interval: float = 0.05, what: str = "condition",
               tolerate: tuple[type[BaseException], ...] = ()):
    """``check()``'s first true value, polled every ``interval`` s; fails the test after ``timeout`` s
    naming ``what`` (a text, or a function giving it then) and the last value (or tolerated
    exception, e.g. a device restarting)."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            last = check()
            if last:
                return last
        except tolerate as error:
            last = error
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what() if callable(what) else what} not reached within {timeout} s "
                                 f"(last: {last!r})")
        time.sleep(interval)


class ManualClock:
    """A clock that moves only when the test sets ``now``."""

    def __init__(self, now: float = 0.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


class SteppingClock:
    """A clock that moves ``step`` seconds at each reading: code that paces itself on it runs at the
    pace of its own loop, whatever the load, and ``now`` tells when (on this clock) something
    happened. Choose a binary fraction (1/64) as the step so that sums of steps stay exact."""

    def __init__(self, step: float):
        self.step = step
        self._ticks = 0

    @property
    def now(self) -> float:
        return self._ticks * self.step

    def __call__(self) -> float:
        self._ticks += 1
        return self.now


def returns_within(call, timeout: float) -> bool:
    """Whether ``call()`` returns within ``timeout`` s (it runs in a thread of its own, left behind
    if it hangs): for code that must never block, where blocking means blocking for good."""
    done = threading.Event()

    def run():
        call()
        done.set()

    threading.Thread(target=run, daemon=True).start()
    return done.wait(timeout)
