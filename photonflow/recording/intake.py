"""The receiving side of a series, apart from the writing: a thread that takes messages off the
stream inputs, decodes them and queues them for the Recorder's writer. When the queue is full
it waits, so the back-pressure reaches the sender through ZeroMQ instead of frames being
dropped. A message it cannot decode is queued as ``REJECTED`` with the reason, for the writer
to count and report in order."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol

from photonflow.errors import StreamMessageError
from photonflow.recording.frame_queue import FrameQueue, QueueFull

REJECTED = "rejected"  # queue item tag: a message the receiver could not decode


class Receiver(Protocol):
    def receive(self, timeout_ms: int) -> list | None: ...

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
        self.thread = threading.Thread(target=self._run, name="recorder-receive", daemon=True)

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def stop(self) -> None:
        self._stop.set()
        self._receiver.wake()

    def _run(self) -> None:
        receiver, decoder, queue, stop = self._receiver, self._decoder, self._queue, self._stop
        try:
            while not stop.is_set():
                parts = receiver.receive(100)
                if parts is None:
                    continue
                nbytes = sum(len(part) for part in parts)
                item: tuple[object, float | str]  # (message, arrival) or (REJECTED, why)
                try:
                    item = (decoder(parts), self._wall_clock())
                except StreamMessageError as error:
                    item = (REJECTED, str(error))
                while not stop.is_set():
                    try:
                        queue.put(item, nbytes, timeout=0.1)
                        break
                    except QueueFull:
                        continue
        finally:
            receiver.close()
