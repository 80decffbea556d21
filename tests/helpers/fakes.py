"""Plain-Python stand-ins for what the core talks to (no Tango, no sockets)."""

from __future__ import annotations

import threading

import numpy as np

from photonflow.stream.stins import decode


class RecordingSender:
    """Keeps every message sent, decoded, as a receiver would see it (an acquisition Sender)."""

    endpoint = "inproc://recording-sender"

    def __init__(self):
        self.messages = []
        self.sent = threading.Event()

    def send(self, parts: list, stop: threading.Event | None = None) -> None:
        raw = [p.tobytes() if isinstance(p, np.ndarray) else bytes(p) for p in parts]
        self.messages.append(decode(raw))
        self.sent.set()

    def announce(self, parts: list, stop: threading.Event | None = None) -> None:
        self.send(parts, stop)

    def close(self) -> None:
        """Nothing to let go: no socket."""


class EventLog:
    """Collects listener callbacks; ``wait_for`` waits with a timeout instead of sleeping."""

    def __init__(self):
        self.states = []
        self.counters = []
        self._changed = threading.Condition()

    def state_changed(self, state, status):
        with self._changed:
            self.states.append((state, status))
            self._changed.notify_all()

    def counters_changed(self, counters):
        with self._changed:
            self.counters.append(counters)
            self._changed.notify_all()

    def wait_for_state(self, state, timeout=10.0):
        with self._changed:
            ok = self._changed.wait_for(lambda: any(s == state for s, _ in self.states), timeout)
        assert ok, f"state {state} never came; got {self.states}"
        return [status for s, status in self.states if s == state][-1]
