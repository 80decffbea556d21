"""A simulated camera's trigger input: the edges (or gates, with their width) not yet taken.

Why: every simulated detector with external or software triggering needs the same thing, a
queue of edges a readout thread waits on without missing a stop; one class serves them all.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable


class TriggerInput:
    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._edges: deque[float | None] = deque()

    def fire(self, width: float | None = None) -> None:
        """An edge; ``width``: the pulse's, for modes whose exposure is the gate."""
        with self._condition:
            self._edges.append(width)
            self._condition.notify_all()

    def clear(self) -> None:
        """Edges that came before the acquisition started are not its own."""
        with self._condition:
            self._edges.clear()

    def take(self, stopped: Callable[[], bool]) -> tuple[bool, float | None]:
        """Wait for the next edge: (True, its width), or (False, None) once ``stopped()``."""
        with self._condition:
            while not self._edges:
                if stopped():
                    return False, None
                self._condition.wait(0.05)
            return True, self._edges.popleft()
