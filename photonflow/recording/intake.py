"""The receiving side of a series, apart from the writing: a thread that takes messages off the
stream inputs, decodes them and queues them for the Recorder's writer. When the queue is full
it waits, so the back-pressure reaches the sender through ZeroMQ instead of frames being
dropped. A message it cannot decode is queued as ``REJECTED`` with the reason, for the writer
to count and report in order."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol

import numpy as np

from photonflow.errors import StreamMessageError
from photonflow.recording.frame_queue import FrameQueue, QueueFull

REJECTED = "rejected"  # queue item tag: a message the receiver could not decode
BATCH_MESSAGES = 64  # the most messages the receiving thread queues at once


class Receiver(Protocol):
    def receive(self, timeout_ms: int) -> list | None: ...

    def fit_to_frames(self, frame_bytes: int) -> int: ...

    def wake(self) -> None: ...

    def close(self) -> None: ...


class StreamIntake:
    """One series' receiving thread; ``stop`` lets it go at once, not at the end of its poll."""

    def __init__(self, receiver: Receiver, decoder: Callable, queue: FrameQueue, wall_clock: Callable[[], float]):
        self._receiver = receiver
        self._decoder = decoder
        self._queue = queue
        self._wall_clock = wall_clock
        self._stop = threading.Event()
        self._sized = False  # the receive buffer is fitted to the frames once a message says what they are
        # a batch: at most half the queue's bounds, so it fits once the writer has taken half
        self._batch_items = max(1, min(BATCH_MESSAGES, queue.max_items // 2))
        self._batch_bytes = queue.max_bytes // 2
        self.thread = threading.Thread(target=self._run, name="recorder-receive", daemon=True)

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def stop(self) -> None:
        self._stop.set()
        self._receiver.wake()

    def _run(self) -> None:
        receiver, stop = self._receiver, self._stop
        try:
            while not stop.is_set():
                parts = receiver.receive(100)
                if parts is None:
                    continue
                batch = self._batch(parts)
                while not stop.is_set():
                    try:
                        self._queue.put_many(batch, timeout=0.1)
                        break
                    except QueueFull:
                        continue
        finally:
            receiver.close()

    def _batch(self, parts: list | None) -> list[tuple[tuple[object, float | str], int]]:
        """The message just received and those already waiting behind it, decoded, up to half
        the queue's bounds: ((message, arrival) or (REJECTED, why), bytes) each. A batch ends
        when nothing more is there, so it never holds a frame back waiting for the next."""
        decoder, wall_clock, receiver = self._decoder, self._wall_clock, self._receiver
        max_items, max_bytes = self._batch_items, self._batch_bytes
        batch: list[tuple[tuple[object, float | str], int]] = []
        batch_bytes = 0
        while parts is not None:
            nbytes = sum(map(len, parts))
            item: tuple[object, float | str]  # (message, arrival) or (REJECTED, why)
            try:
                item = (decoder(parts), wall_clock())
            except StreamMessageError as error:
                item = (REJECTED, str(error))
            if not self._sized:
                self._sized = self._fit_receiver(item[0])
            batch.append((item, nbytes))
            batch_bytes += nbytes
            if len(batch) >= max_items or batch_bytes >= max_bytes:
                break
            parts = receiver.receive(0)
        return batch

    def _fit_receiver(self, message) -> bool:
        """Fit the receive buffer to the frame size once a message gives it (a series_start,
        or the first frame where the protocol's start does not say); True once done."""
        shape, dtype = getattr(message, "shape", None), getattr(message, "dtype", None)
        if shape is None or dtype is None:
            return False
        self._receiver.fit_to_frames(shape[0] * shape[1] * np.dtype(dtype).itemsize)
        return True
