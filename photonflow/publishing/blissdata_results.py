"""The live analysis's per-frame results as streams of the series' own blissdata scan, so that a
Flint-like client plots spot counts, ROI sums and I(q) beside the frames while they arrive.

blissdata fixes a scan's streams before it is prepared, and the scan is the Recorder's (its
``BlissdataSink`` creates it at series_start). So the two meet in Redis:

- the analysis worker **registers** what it publishes (``ResultChannels``: the ROI names and the
  I(q) bins) under its Recorder's name, refreshed while it runs (``REGISTRATION_TTL``): a worker
  that is gone stops being declared;
- the Recorder's sink **declares** the registered channels in each new scan (device ``live``) and,
  at the series' end, waits a bounded time for the worker to seal them before it closes the scan;
- the worker (``BlissdataResults``, a ``LiveAnalysis`` sink) **finds** the series' scan (its number
  and the file the Recorder's relay named), publishes into those streams from its own process
  (blissdata's ``get_writer_stream``: one writer per stream) and seals them at the series' end.

Streams: ``live:frame_number`` (which frame each entry is), ``live:spots``, ``live:roi_<name>``,
``live:intensity`` (I(q), one spectrum per frame) and ``live:q`` (one spectrum: the bins' q, 1/nm).
Every entry of the per-frame streams is one frame, in the order analysed.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from photonflow.errors import ConfigurationError
from photonflow.publishing.blissdata_scan import (
    REDIS_TIMEOUT,
    Channel,
    QueuedPublisher,
    StreamWriter,
    check_redis_url,
    numeric,
    open_data_store,
    with_timeouts,
)

log = logging.getLogger(__name__)

RESULTS_DEVICE = "live"
REGISTRATION_TTL = 30.0  # s: a registration not refreshed for this long is gone (its worker too)
FIND_TIMEOUT = 5.0  # s: the series' scan appears within this of its series_start, or is not there
SEAL_WAIT = 5.0  # s: the Recorder waits this long, after its frames, for the results to be sealed


def registration_key(recorder: str) -> str:
    """Where the worker analysing ``recorder``'s frames says what it publishes."""
    return f"photonflow:live_results:{recorder.lower()}"


@dataclass(frozen=True)
class ResultChannels:
    """What a worker publishes per frame: spot counts, a sum per ROI, and I(q) in ``npt`` bins (0: none)."""

    npt: int
    rois: tuple[str, ...] = ()

    def channels(self) -> list[Channel]:
        device = RESULTS_DEVICE
        channels = [Channel(f"{device}:frame_number"), Channel(f"{device}:spots")]
        channels += [Channel(f"{device}:roi_{name}", display_name=f"roi {name}") for name in self.rois]
        if self.npt:
            channels += [Channel(f"{device}:intensity", dim=1, display_name="I(q)"),
                         Channel(f"{device}:q", dim=1, unit="1/nm")]
        return channels

    def definitions(self) -> list:
        """blissdata's stream definitions, in ``channels()``' order."""
        device = RESULTS_DEVICE
        definitions = [numeric(f"{device}:frame_number", np.int64), numeric(f"{device}:spots", np.int64)]
        definitions += [numeric(f"{device}:roi_{name}", np.float64) for name in self.rois]
        if self.npt:
            definitions += [numeric(f"{device}:intensity", np.float64, (self.npt,)),
                            numeric(f"{device}:q", np.float64, (self.npt,))]
        return definitions

    def to_json(self) -> str:
        return json.dumps({"npt": self.npt, "rois": list(self.rois)})

    @classmethod
    def from_json(cls, text: str | bytes) -> ResultChannels:
        described = json.loads(text)
        return cls(int(described["npt"]), tuple(str(name) for name in described["rois"]))


def declared_results(url: str, recorder: str) -> ResultChannels | None:
    """The results a live worker registered for ``recorder`` (None when no worker runs)."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        registered = client.get(registration_key(recorder))
    finally:
        client.close()
    if registered is None:
        return None
    try:
        return ResultChannels.from_json(registered)
    except (ValueError, KeyError, TypeError) as error:
        log.warning("the live results registered for %s cannot be read (%s): not declared", recorder, error)
        return None


def wait_sealed(streams: Sequence[Any], timeout: float) -> list[str]:
    """Wait up to ``timeout`` s in all for each stream to be sealed by its writer; the names of
    those that were not."""
    deadline = time.monotonic() + timeout
    unsealed = []
    for stream in streams:
        if not stream.wait_seal(max(deadline - time.monotonic(), 0.001)):
            unsealed.append(stream.name)
    return unsealed


class BlissdataResults(QueuedPublisher):
    """A ``LiveAnalysis`` sink publishing each series' results into the series' blissdata scan on
    ``url``, the scan the Recorder ``recorder`` publishes. The analysis thread only queues; a
    publishing thread of its own talks to Redis, so a slow or absent Redis never holds a frame's
    analysis. A series whose scan is not found (no blissdata on the Recorder, or the scan made
    before this worker registered) is counted in ``series_unpublished`` with the reason in
    ``last_error``.

    ``latencies``: seconds from each frame's timestamp (when the detector made it) to its result
    acknowledged by Redis, the last 100 000.
    """

    def __init__(self, url: str, recorder: str, channels: ResultChannels, timeout: float = REDIS_TIMEOUT,
                 clock: Callable[[], float] = time.time):
        check_redis_url(url)
        if not recorder:
            raise ConfigurationError("live results go into the scan of a Recorder: name the Recorder")
        self.url = with_timeouts(url, timeout)
        self.recorder = recorder
        self.results = channels
        self.timeout = timeout
        self.clock = clock
        super().__init__()
        self._store = None
        self._writer: StreamWriter | None = None
        self._analyzer = None  # the series' analyzer until its q is sent
        self._registered_at = -REGISTRATION_TTL
        self.series_published = 0
        self.series_unpublished = 0
        self.results_published = 0
        self.publish_errors = 0
        self.last_error = ""
        self.last_scan_key = ""
        self.latencies: deque[float] = deque(maxlen=100_000)
        self._thread = threading.Thread(target=self._run, name="blissdata-results", daemon=True)
        self._thread.start()

    # -- the analysis thread: queue and return ------------------------------------------------------
    def series_started(self, start, analyzer) -> None:
        self._put(("start", (start.series_id, start.file, analyzer)))

    def frame_analysed(self, result) -> None:
        self._put(("frame", result))

    def series_ended(self, end) -> None:
        self._put(("end", None))

    def _put(self, event) -> None:
        with self._wake:
            self._events.append(event)
            self._wake.notify()

    # -- the publishing thread ----------------------------------------------------------------------
    def _run(self) -> None:
        import blissdata.redis_engine.store  # noqa: F401  (0.3 s: before the first series, not in it)

        self._register()  # at once: a Recorder declares the results of the scans it makes from now on
        while True:
            with self._wake:
                while not self._events and not self._closing:
                    if not self._wake.wait(REGISTRATION_TTL / 3):
                        break  # time to refresh the registration
                closing, self._busy = self._closing, True
            self._register()
            self._publish_queued()
            self._busy = False
            if closing and not self._events:
                if self._writer is not None:
                    self._guard(self._seal)
                self._withdraw()
                return

    def _register(self) -> None:
        now = time.monotonic()
        if now - self._registered_at < REGISTRATION_TTL / 3:
            return
        try:
            self._data_store()._redis.set(registration_key(self.recorder), self.results.to_json(),
                                          ex=int(REGISTRATION_TTL))
            self._registered_at = now
        except Exception as error:  # noqa: BLE001 - Redis not there (yet): tried again at the next wake
            self.last_error = f"cannot register the live results on {self.url}: {type(error).__name__}: {error}"
            log.warning("%s", self.last_error)
            self._store = None

    def _withdraw(self) -> None:
        try:
            self._data_store()._redis.delete(registration_key(self.recorder))
        except Exception as error:  # noqa: BLE001 - gone with Redis: it expires anyway
            log.debug("live results registration not withdrawn: %s", error)

    def _publish_queued(self) -> None:
        results: list = []
        while self._events:
            kind, payload = self._events.popleft()
            if kind == "frame":
                if self._writer is not None:
                    results.append(payload)
                continue
            if results:
                self._guard(self._send, results)
                results = []
            if kind == "start":
                if self._writer is not None:
                    self._guard(self._seal)
                self._guard(self._open, *payload)
            elif kind == "end" and self._writer is not None:
                self._guard(self._seal)
        if results:
            self._guard(self._send, results)

    def _guard(self, action, *args) -> None:
        """A Redis failure is counted and gives the series up; the analysis never hears of it."""
        try:
            action(*args)
        except Exception as error:  # noqa: BLE001 - Redis down, scan gone, stream sealed by its owner
            self.publish_errors += 1
            self.last_error = f"live results to {self.url}: {type(error).__name__}: {error}"
            log.warning("%s", self.last_error)
            if self._writer is not None:
                self._writer.abandon()
                self._writer = None
            self._store = None

    def _data_store(self):
        if self._store is None:
            self._store = open_data_store(self.url)
        return self._store

    def _open(self, series_id: int, file: str, analyzer) -> None:
        self.latencies.clear()
        scan = self._find_scan(series_id, file)
        if scan is None:
            return
        missing = [c.name for c in self.results.channels() if c.name not in scan.streams]
        if missing:
            self.series_unpublished += 1
            self.last_error = (f"series {series_id}: its scan declares no {', '.join(missing)} (made before this "
                               "worker registered, or by a Recorder that publishes none): results not on Redis")
            log.warning("%s", self.last_error)
            return
        writer = StreamWriter(self.url, self.timeout)
        for channel in self.results.channels():
            writer.attach(scan, channel.name)
        self._writer, self._analyzer = writer, analyzer
        self.series_published += 1
        self.last_scan_key = scan.key

    def _find_scan(self, series_id: int, file: str):
        """The series' scan, prepared: the Recorder's, with its number and file (None, said, if not)."""
        from blissdata.redis_engine.scan import ScanState

        if not file:
            self.series_unpublished += 1
            self.last_error = f"series {series_id}: the stream does not name the series' file: its scan is not known"
            return None
        store = self._data_store()
        deadline = time.monotonic() + FIND_TIMEOUT
        others: set[str] = set()  # the files of the scans of that number that are not this series'
        while time.monotonic() < deadline:
            for key in store.search_existing_scans(number=series_id)[1]:
                scan = store.load_scan(key)
                scan_file = (scan.info.get("photonflow") or {}).get("file")
                if scan_file != file:
                    others.add(str(scan_file))
                    continue
                while scan.state < ScanState.PREPARED and time.monotonic() < deadline:
                    scan.update(timeout=0.05)
                if scan.state >= ScanState.PREPARED:
                    return store.load_scan(key)  # loaded again: its streams are read with its state
            time.sleep(0.01)
        self.series_unpublished += 1
        self.last_error = (f"series {series_id}: no blissdata scan of {file} appeared within {FIND_TIMEOUT:.0f} s "
                           "(does its Recorder publish blissdata?): results not on Redis"
                           + (f"; scans numbered {series_id} are of {', '.join(sorted(others))}" if others else ""))
        log.warning("%s", self.last_error)
        return None

    def _send(self, results: list) -> None:
        writer = self._writer
        if writer is None:
            return
        device = RESULTS_DEVICE
        writer.send(f"{device}:frame_number", np.fromiter((r.frame_number for r in results), np.int64, len(results)))
        writer.send(f"{device}:spots", np.fromiter((r.spots for r in results), np.int64, len(results)))
        for name in self.results.rois:
            writer.send(f"{device}:roi_{name}", np.array([r.roi_sums.get(name, np.nan) for r in results]))
        if self.results.npt and self._analyzer is not None and self._analyzer.q is not None:
            # pyFAI's bins are known once the first frame is integrated: sent once, before its I(q)
            writer.send(f"{device}:q", np.asarray(self._analyzer.q, dtype=np.float64)[np.newaxis])
            self._analyzer = None
        if self.results.npt:
            nan = np.full(self.results.npt, np.nan)
            writer.send(f"{device}:intensity", np.stack([nan if r.intensity is None else r.intensity
                                                         for r in results]))
        writer.flush()
        self.results_published += len(results)
        now = self.clock()
        self.latencies.extend(now - r.timestamp for r in results)

    def _seal(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.seal()
