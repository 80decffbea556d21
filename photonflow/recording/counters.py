"""The Recorder's counters, and how they reach its listener (the device's change events)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from photonflow.core import CoreListener
from photonflow.recording.frame_queue import FrameQueue
from photonflow.throttle import Throttle


@dataclass
class RecorderCounters:
    """What the Recorder counts in the current series; each field is a device attribute."""

    frames_received: int = 0
    frames_written: int = 0
    # frames a reader of the file can see: written before the last flush (all of them once closed)
    frames_flushed: int = 0
    missing_frames: int = 0
    duplicate_frames: int = 0
    messages_rejected: int = 0
    frames_lost: int = 0  # received but never written: dropped on Abort or a disk fault
    queue_depth: int = 0  # messages waiting between receiver and writer, at the last notification
    queue_megabytes: float = 0.0  # and their size
    write_rate: float = 0.0  # frames per second, over the last notification interval
    data_rate: float = 0.0  # MB per second, same interval

    @classmethod
    def from_accounting(cls, counts: dict[str, int]) -> RecorderCounters:
        """The counts a file's /entry/accounting holds (-1: unknown), as counters."""
        return cls(
            frames_received=counts["frames_received"], frames_written=counts["frames_written"],
            missing_frames=counts["missing_frames"], duplicate_frames=max(counts["duplicate_frames"], 0),
            messages_rejected=max(counts["messages_rejected"], 0), frames_lost=max(counts["frames_lost"], 0),
        )

    def accounting(self) -> dict[str, int]:
        """What the file's /entry/accounting shows while the series runs."""
        return {
            "frames_received": self.frames_received,
            "frames_written": self.frames_written,
            "duplicate_frames": self.duplicate_frames,
            "messages_rejected": self.messages_rejected,
            "frames_lost": self.frames_lost,
        }


class CounterReport:
    """Hands the counters to the listener with the write and data rates since the last report.
    ``due()`` is true at most once per ``interval`` seconds, so per-frame counts become a
    sensible event rate."""

    def __init__(self, listener: CoreListener, interval: float, clock: Callable[[], float] = time.monotonic):
        self.listener = listener
        self._clock = clock
        self.due = Throttle(interval, clock).ready
        self.restart()

    def restart(self) -> None:
        """A new series: its rates count from now."""
        self._mark = (self._clock(), 0)

    def send(self, counters: RecorderCounters, frame_bytes: int, queue: FrameQueue) -> None:
        now, written = self._clock(), counters.frames_written
        then, written_then = self._mark
        if now > then:
            counters.write_rate = (written - written_then) / (now - then)
            counters.data_rate = counters.write_rate * frame_bytes / 1e6
        self._mark = (now, written)
        counters.queue_depth = queue.qsize()
        counters.queue_megabytes = queue.bytes_queued / 1e6
        self.listener.counters_changed(counters)
