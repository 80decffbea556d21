"""The queue between the Recorder's receiving and writing threads, bounded by frames and bytes.

A bound in frames alone lets memory depend on the frame size: 256 frames are 17 MB of
256x256 uint16 but 4.6 GB of 2162x2068 uint32. Bounding the bytes too keeps the Recorder's
footprint what the operator configured whatever the detector sends, and a small set of
buffers that is reused stays in the CPU caches and the process's memory instead of being
freshly faulted in (and zeroed by the kernel) for every frame.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any


class QueueFull(Exception):
    """``put`` timed out: the writer has not made room."""


class QueueEmpty(Exception):
    """``get`` timed out: nothing came."""


class FrameQueue:
    """FIFO of (item, bytes); ``put`` waits while ``max_items`` or ``max_bytes`` would be exceeded.

    One item is always let in even if it alone exceeds ``max_bytes``: a frame larger than
    the byte budget must still get through, one at a time.

    A full queue wakes its waiting producer only once it has drained to half (a low-water
    mark, as ZeroMQ's pipes do). Woken for every frame taken, the receiving thread would
    take the interpreter lock from the writer once per frame; woken at half, it refills
    in one burst while the writer writes undisturbed.
    """

    def __init__(self, max_items: int, max_bytes: int):
        if max_items < 1:
            raise ValueError(f"the queue must hold at least one item, got {max_items}")
        if max_bytes < 1:
            raise ValueError(f"the queue must hold at least one byte, got {max_bytes}")
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._items: deque[tuple[Any, int]] = deque()
        self._bytes = 0
        self._lock = threading.Lock()
        self._not_empty = threading.Condition(self._lock)
        self._not_full = threading.Condition(self._lock)

    def _has_room(self, nbytes: int) -> bool:
        if not self._items:
            return True
        return len(self._items) < self.max_items and self._bytes + nbytes <= self.max_bytes

    def put(self, item: Any, nbytes: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._not_full:
            while not self._has_room(nbytes):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise QueueFull()
                self._not_full.wait(remaining)
            self._items.append((item, nbytes))
            self._bytes += nbytes
            self._not_empty.notify()

    def get(self, timeout: float | None = None) -> Any:
        """The oldest item; waits up to ``timeout`` (None: don't wait) for one."""
        with self._not_empty:
            if not self._items:
                if timeout is None:
                    raise QueueEmpty()
                deadline = time.monotonic() + timeout
                while not self._items:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise QueueEmpty()
                    self._not_empty.wait(remaining)
            item, nbytes = self._items.popleft()
            self._bytes -= nbytes
            if len(self._items) <= self.max_items // 2 and self._bytes <= self.max_bytes // 2:
                self._not_full.notify()
            return item

    def qsize(self) -> int:
        return len(self._items)

    @property
    def bytes_queued(self) -> int:
        return self._bytes
