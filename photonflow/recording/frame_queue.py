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

    One item is always let in when nothing is queued nor being written, even if it alone
    exceeds ``max_bytes``: a frame larger than the byte budget must still get through, one
    at a time.

    A full queue wakes its waiting producer only once it has drained to half (a low-water
    mark, as ZeroMQ's pipes do). Woken for every frame taken, the receiving thread would
    take the interpreter lock from the writer once per frame; woken at half, it refills
    in one burst while the writer writes undisturbed.

    ``put_many`` and ``get_many`` move a batch under one lock and one wake-up: at 10 000
    frames/s, a lock, a notification and often a thread switch per frame on each side cost
    more than the rest of the Recorder's Python per frame. A batch ``get_many`` hands out
    still counts against the bounds until the writer comes back for the next one, so what
    was received and not yet written stays within them.
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
        self._taken = (0, 0)  # items and bytes of the batch get_many handed out last
        self._lock = threading.Lock()
        self._not_empty = threading.Condition(self._lock)
        self._not_full = threading.Condition(self._lock)

    def _has_room(self, count: int, nbytes: int) -> bool:
        taken_items, taken_bytes = self._taken
        if not self._items and not taken_items:
            return True
        return (
            len(self._items) + taken_items + count <= self.max_items
            and self._bytes + taken_bytes + nbytes <= self.max_bytes
        )

    def put(self, item: Any, nbytes: int, timeout: float) -> None:
        self.put_many([(item, nbytes)], timeout)

    def put_many(self, entries: list[tuple[Any, int]], timeout: float) -> None:
        """Queue (item, bytes) entries at once, when there is room for all of them (or nothing
        is queued nor being written: a batch beyond the bounds still gets through, alone)."""
        count, nbytes = len(entries), sum(size for _, size in entries)
        deadline = time.monotonic() + timeout
        with self._not_full:
            while not self._has_room(count, nbytes):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise QueueFull()
                self._not_full.wait(remaining)
            self._items.extend(entries)
            self._bytes += nbytes
            self._not_empty.notify()

    def get(self, timeout: float | None = None) -> Any:
        """The oldest item; waits up to ``timeout`` (None: don't wait) for one."""
        return self.get_many(timeout, limit=1, keep_counted=False)[0]

    def get_many(self, timeout: float | None = None, limit: int = 64, keep_counted: bool = True) -> list:
        """Up to ``limit`` items, oldest first; waits up to ``timeout`` (None: don't wait)
        for the first. With ``keep_counted`` they count against the bounds until the next call."""
        with self._not_empty:
            self._release_taken()
            if not self._items:
                if timeout is None:
                    raise QueueEmpty()
                deadline = time.monotonic() + timeout
                while not self._items:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise QueueEmpty()
                    self._not_empty.wait(remaining)
            items = self._items
            batch = [items.popleft() for _ in range(min(limit, len(items)))]
            nbytes = sum(size for _, size in batch)
            self._bytes -= nbytes
            if keep_counted:
                self._taken = (len(batch), nbytes)
            self._wake_producer()
            return [item for item, _ in batch]

    def written(self) -> None:
        """The batch ``get_many`` handed out last is written (or given up): its room is free."""
        with self._lock:
            self._release_taken()

    def _release_taken(self) -> None:
        if self._taken != (0, 0):
            self._taken = (0, 0)
            self._wake_producer()

    def _wake_producer(self) -> None:
        """At the low-water mark: the producer refills in one burst (see the class)."""
        taken_items, taken_bytes = self._taken
        if (len(self._items) + taken_items <= self.max_items // 2
                and self._bytes + taken_bytes <= self.max_bytes // 2):
            self._not_full.notify()

    def qsize(self) -> int:
        """Items received and not yet written: queued, or in the batch the writer holds."""
        return len(self._items) + self._taken[0]

    @property
    def bytes_queued(self) -> int:
        """Their bytes."""
        return self._bytes + self._taken[1]
