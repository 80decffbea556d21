"""Compressing raw frames on the way to disk, on a pool of workers, keeping their order.

Frames that arrive raw can be stored bitshuffle+LZ4 compressed (``bslz4``, the chunk format
of the HDF5 bitshuffle filter, readable through hdf5plugin), typically 5-10x smaller for
diffraction frames. Compressing costs a few ms per megapixel frame, so it runs on worker
threads (LZ4 and most of numpy release the GIL, so they use the cores in parallel) while
the writer keeps writing chunks in the order the frames came.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from photonflow.stream import bslz4
from photonflow.stream.stins import DataMessage

COMPRESSIONS = ("none", "bslz4")


class CompressionPipeline:
    """Compress frames in parallel; ``store`` gets each (message, received, chunk) in order."""

    def __init__(self, store: Callable[[DataMessage, float, bytes], None], workers: int = 0):
        self.workers = workers or os.cpu_count() or 1
        self._store = store
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="recorder-compress")
        self._in_flight: deque[tuple[Future, DataMessage, float]] = deque()

    def submit(self, message: DataMessage, received: float) -> None:
        """Queue a raw frame; stores the frames that are done, waiting when too many are in flight."""
        self._in_flight.append((self._pool.submit(bslz4.compress, message.to_array()), message, received))
        self._store_done(wait=len(self._in_flight) > 2 * self.workers)

    def _store_done(self, wait: bool) -> None:
        while self._in_flight and (wait or self._in_flight[0][0].done()):
            future, message, received = self._in_flight.popleft()
            self._store(message, received, future.result())
            wait = False

    def drain(self) -> None:
        """Store every frame still being compressed (at the end of a series)."""
        while self._in_flight:
            future, message, received = self._in_flight.popleft()
            self._store(message, received, future.result())

    def discard(self) -> int:
        """Forget the frames in flight (abort, fault); returns how many."""
        dropped = len(self._in_flight)
        for future, _, _ in self._in_flight:
            future.cancel()
        self._in_flight.clear()
        return dropped

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

