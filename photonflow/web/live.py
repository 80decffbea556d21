"""What makes the web page live, in plain Python (no web framework, no Tango):

- ``RunFeed`` follows the catalogue's change stream (``photonflow:runs`` on the event bus: the
  DataManager's ``run_values_updated`` messages, as DAMNIT sends them) in one thread for every
  browser, and hands each change to ``deliver(proposal, run)``: the server then reads that run's
  row once and pushes it to the pages of that proposal. No browser polls.
- ``SeriesView`` keeps the series under way (the Controller's state, progress and counters, the
  Recorder's preview image) as its events come, and says when a page may be told again: at most
  ``max_rate`` times a second, the last news never dropped (it goes out when the interval ends).
- ``preview_png``: the Recorder's preview as an 8-bit PNG, scaled between its 1st and 99.9th
  percentiles so rings and spots show.
"""

from __future__ import annotations

import io
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from photonflow.events.bus import EventBusError

log = logging.getLogger(__name__)

RUN_STREAM = "photonflow:runs"
RUN_CHANGED = "run_values_updated"


class RunFeed:
    """Reads ``bus`` (a ``RedisStreamBus`` on the run stream) from the newest entry on, in a thread
    of its own; each ``run_values_updated`` goes to ``deliver(proposal, run)``. A bus that fails is
    said in ``last_error`` and read again a second later."""

    def __init__(self, bus, deliver: Callable[[str, int], None], block_ms: int = 500):
        self.bus = bus
        self.deliver = deliver
        self.block_ms = block_ms
        self.last_error = ""
        self.messages_read = 0
        self._stop = threading.Event()
        self._since = "0-0"
        self._thread = threading.Thread(target=self._run, name="run-feed", daemon=True)

    def start(self) -> None:
        try:  # from the newest entry: what came before, the page reads from the catalogue itself
            self._since = self.bus.last_id()
        except EventBusError as error:  # the thread says it again, and reads from the start once it can
            self._since, self.last_error = "0-0", str(error)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(self.block_ms / 1000 + 2)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                messages = self.bus.read(self._since, count=100, block_ms=self.block_ms)
            except EventBusError as error:
                if str(error) != self.last_error:
                    log.warning("%s", error)
                self.last_error = str(error)
                self._stop.wait(1.0)
                continue
            for message in messages:
                self._since = message.id
                self.messages_read += 1
                self._take(message.event)

    def _take(self, event: dict[str, Any]) -> None:
        if event.get("msg_kind") != RUN_CHANGED:
            return
        data = event.get("data") or {}
        proposal, run = data.get("proposal"), data.get("run")
        if not isinstance(proposal, str) or isinstance(run, bool) or not isinstance(run, int):
            log.warning("run stream: a %s without its proposal and run: %s", RUN_CHANGED, str(data)[:200])
            return
        try:
            self.deliver(proposal, run)
        except Exception:  # one page's trouble never stops the feed
            log.exception("run %s of %s not delivered", run, proposal)


class SeriesView:
    """The series under way as the page shows it. ``update(**values)`` from any thread (Tango
    event callbacks); ``due()`` says whether a page may be told now (at most ``max_rate`` a
    second), ``snapshot()`` what to tell, and ``preview_version`` grows with each new preview."""

    def __init__(self, max_rate: float = 5.0, clock: Callable[[], float] = time.monotonic):
        self.interval = 1.0 / max_rate
        self.clock = clock
        self._lock = threading.Lock()
        self._values: dict[str, Any] = {"state": "UNKNOWN", "status": "", "frames_requested": 0,
                                        "frames_acquired": 0, "frames_received": 0, "frames_written": 0,
                                        "missing_frames": 0, "file": "", "preview_frame": -1}
        self.preview: np.ndarray | None = None
        self.preview_version = 0
        self._changed = False
        self._told_at = -float("inf")

    def update(self, **values: Any) -> None:
        with self._lock:
            self._values.update(values)
            self._changed = True

    def set_preview(self, image: np.ndarray, frame_number: int) -> None:
        with self._lock:
            self.preview = np.asarray(image)
            self.preview_version += 1
            self._values["preview_frame"] = frame_number
            self._changed = True

    def due(self) -> bool:
        """True when something changed and the last telling is at least one interval ago (then it
        counts as told)."""
        now = self.clock()
        with self._lock:
            if not self._changed or now - self._told_at < self.interval:
                return False
            self._changed, self._told_at = False, now
            return True

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            values = dict(self._values)
            values["preview_version"] = self.preview_version
        requested = values.get("frames_requested") or 0
        values["progress"] = min(1.0, values.get("frames_written", 0) / requested) if requested else 0.0
        return values


def preview_png(image: np.ndarray) -> bytes:
    """An image as an 8-bit grey PNG (Pillow), its 1st to 99.9th percentile stretched to 0-255."""
    from PIL import Image

    data = np.asarray(image, dtype=np.float64)
    if data.ndim != 2 or data.size == 0:
        raise ValueError(f"a preview is a 2-D image, got shape {data.shape}")
    finite = data[np.isfinite(data)]
    low, high = (np.percentile(finite, (1, 99.9)) if finite.size else (0.0, 1.0))
    scaled = np.clip((np.nan_to_num(data, nan=low) - low) / max(high - low, 1e-12), 0, 1)
    out = io.BytesIO()
    Image.fromarray((scaled * 255).astype(np.uint8), mode="L").save(out, format="PNG")
    return out.getvalue()
