"""What every core object behind a device shares: a state with its status text, counters, and
a listener that the device layer implements to publish both as Tango events.

The core imports no Tango: it is tested without a server, and the device is a thin shell that
turns properties into the core's arguments and the listener's calls into change events.
"""

from __future__ import annotations

import threading
from typing import Any


class CoreListener:
    """Told of every state change and counter update; the device pushes them as events."""

    def state_changed(self, state: str, status: str) -> None:
        pass

    def counters_changed(self, counters: Any) -> None:
        pass


class StatefulCore:
    """A state and status the core sets, reports to its listener, and answers with."""

    def __init__(self, listener: CoreListener | None, state: str, status: str):
        self.listener = listener or CoreListener()
        self._state_lock = threading.Lock()
        self._state = state
        self._status = status

    @property
    def state(self) -> str:
        return self._state

    @property
    def status(self) -> str:
        return self._status

    def _set_state(self, state: str, status: str) -> None:
        with self._state_lock:
            self._state, self._status = state, status
        self.listener.state_changed(state, status)
