"""Every recorded series as a blissdata 2 scan on Redis, for online consumers (Flint, the ESRF
NeXus writer, ewoks, a Sardana-blissdata client...).

A ``BlissdataSink`` is a Recorder sink (see ``sinks.py``). The Recorder's writing thread only
appends a few numbers per frame to a queue (never the pixels, never a network call); one
publishing thread of the sink turns them into Redis writes, in batches: every ``batch_interval``
seconds after the first frame once the previous batch is in Redis, or sooner once ``batch_frames``
frames wait, one entry per stream carries the batch, sent through blissdata's own stream writers
(which wait 10 ms for more before writing: the frames of that wait make the next batch). A Redis
that is down or slow therefore costs the Recorder nothing: the publisher counts the failure
(``publish_errors``, ``last_error``, ``frames_unpublished``), gives up that series and starts
afresh with the next one.

What a series becomes (names ``<det>`` = the detector's NeXus group name, as in the file):

- identity: ``name`` (``photonflow_series``), ``number`` (the series id), ``data_policy``,
  ``session``, ``proposal``, ``collection`` (the sample), ``dataset``, ``path`` (the NeXus file
  ESRF's blisswriter writes, ``<stem>_bliss.h5`` beside the series' file, see ``h5maps``);
  data-policy fields come from ``context()`` when given, else defaults.
- ``scan_info``: the keys blissdata's consumers read (``acquisition_chain``, ``channels``,
  ``devices``, ``start_time``, ``end_time``, ``scan_nb``, ``type``, ``title``, ``npoints``,
  ``count_time``, ``data_policy``, ``save``, ``filename``, ``images_path`` (the series' file),
  ``h5maps``, ``end_reason``...)
  plus a ``photonflow`` section (series id, frames armed, photonflow's own end reason, counts).
- streams: ``<det>:image`` a Lima-style stream (blissdata's ``lima`` plugin): the frames by
  reference to the HDF5 file, dataset and index, never the pixels (``last_index``: frames
  written; ``last_index_saved``: frames flushed to the file, readable by an SWMR reader);
  ``timer:epoch`` (when the Recorder wrote each frame), ``<det>:frame_number``,
  ``<det>:timestamp`` (the detector's) and one stream per per-frame metadata value the
  detector announced (``<det>:<name>``), one entry per frame in the order written; and the
  ``live:*`` streams a live-analysis worker registered for this Recorder (``live_results_of``),
  written and sealed by that worker (``blissdata_results.py``), waited for at the end.
- states CREATED -> PREPARED -> STARTED at series_start, STOPPED -> CLOSED at series_end, with
  ``end_reason`` in blissdata's vocabulary (SUCCESS, USER_ABORT, FAILURE) and photonflow's in
  ``scan_info["photonflow"]["end_reason"]`` (completed, aborted, stopped, failed, interrupted).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from photonflow.errors import ConfigurationError
from photonflow.publishing.blissdata_results import SEAL_WAIT, declared_results, wait_sealed
from photonflow.publishing.blissdata_scan import (
    REDIS_TIMEOUT,
    Channel,
    DataPolicy,
    QueuedPublisher,
    ScanDescription,
    StreamWriter,
    check_redis_url,
    end_scan,
    frames_by_reference,
    iso,
    nexus_file_beside,
    numeric,
    open_data_store,
    with_timeouts,
)
from photonflow.recording.nexus_writer import detector_group_name
from photonflow.stream.stins import UNKNOWN, DataMessage, SeriesEnd, SeriesStart

log = logging.getLogger(__name__)

SCAN_NAME = "photonflow_series"
# photonflow's end reasons in blissdata's scan_info schema (SUCCESS, FAILURE, USER_ABORT, DELETION)
BLISS_END_REASONS = {
    "completed": "SUCCESS",
    "completed_without_end": "SUCCESS",
    "aborted": "USER_ABORT",
    "stopped": "USER_ABORT",
    "failed": "FAILURE",
    "interrupted": "FAILURE",
}
DATA_PATH = "entry/data/data"  # the frames in the master file, and in every data file of a split series
DEFAULT_BATCH_INTERVAL = 0.0005  # s: a batch is what came while the last one went out
DEFAULT_BATCH_FRAMES = 100
DEFAULT_MAX_PENDING = 1_000_000  # frame records waiting for Redis (~100 bytes each) before dropping


@dataclass
class _SeriesRecord:
    """What the publisher needs to know of a series, taken in the Recorder's thread."""

    series_id: int
    frames: int
    detector: str
    shape: tuple[int, int]
    dtype: str
    file: str
    frames_per_file: int
    start_time: str
    frame_metadata: tuple[str, ...]
    detector_info: dict[str, Any]
    count_time: float | None


@dataclass
class _Published:
    """One series being published."""

    record: _SeriesRecord
    scan: Any
    streams: StreamWriter
    image: str  # the Lima stream's name
    results: list = field(default_factory=list)  # streams a live-analysis worker writes and seals
    written: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    prefix: int = 0  # frames 0 .. prefix-1 all written
    saved: int = 0  # frames 0 .. saved-1 flushed to the file when last told
    highest: int = -1
    frames_published: int = 0


class BlissdataSink(QueuedPublisher):
    """Publishes every series the Recorder writes as a blissdata 2 scan on ``url``.

        sink = BlissdataSink("redis://127.0.0.1:6379", beamline="id00")
        recorder = Recorder(root, sinks=[sink]); sink.attach(recorder)
        ...
        sink.close()

    ``context()`` (called in the publishing thread, may be slow) gives data-policy fields:
    proposal, beamline, session, sample, dataset, collection, title, data_policy.
    """

    def __init__(
        self,
        url: str,
        beamline: str = "photonflow",
        session: str = "photonflow",
        context: Callable[[], Mapping[str, Any]] | None = None,
        publisher: str = "photonflow",
        batch_interval: float = DEFAULT_BATCH_INTERVAL,
        batch_frames: int = DEFAULT_BATCH_FRAMES,
        max_pending: int = DEFAULT_MAX_PENDING,
        timeout: float = REDIS_TIMEOUT,
        live_results_of: str = "",
        results_wait: float = SEAL_WAIT,
    ):
        check_redis_url(url)
        if not batch_interval > 0 or batch_frames < 1:
            raise ConfigurationError("the batch interval must be > 0 s and the batch at least 1 frame")
        self.url = url
        self._store_url = with_timeouts(url, timeout)
        self.beamline = beamline
        self.session = session
        self.context = context
        self.publisher = publisher
        self.batch_interval = batch_interval
        self.batch_frames = batch_frames
        self.max_pending = max_pending
        self.timeout = timeout
        # the Recorder whose live-analysis worker's registered results each scan declares ("": none)
        self.live_results_of = live_results_of
        self.results_wait = results_wait
        self.results_cut_off = 0  # series whose results were not sealed within results_wait
        self._recorder = None
        super().__init__()
        self._urgent = False  # a series starts or ends: publish without waiting for a batch
        self._sleeping = False  # the publishing thread waits for an event: the next one wakes it
        self._store = None
        self._series: _Published | None = None
        self._writer: StreamWriter | None = None  # the streams open in Redis, given up if Redis fails
        self._broken = False  # the current series failed to publish: its remaining events are dropped
        self._left_to_engine = False  # the Recorder's thread: this series is a scan engine's to publish
        self.series_left_to_engine = 0
        self.scans_published = 0
        self.frames_published = 0
        self.frames_unpublished = 0  # written by the Recorder, never published (Redis failed)
        self.frames_dropped = 0  # not even queued: the publisher was max_pending frames behind
        self.publish_errors = 0
        self.last_error = ""
        self.last_scan_key = ""
        # seconds from each of the last frames written to its entry being in Redis
        self.latencies: deque[float] = deque(maxlen=10_000)
        self._thread = threading.Thread(target=self._run, name="blissdata-publish", daemon=True)
        self._thread.start()

    def attach(self, recorder) -> None:
        """The Recorder whose series are published: its file and layout are read at series_start."""
        self._recorder = recorder

    # -- called by the Recorder (its writing thread): append and return -------------------------
    def series_started(self, start: SeriesStart) -> None:
        recorder = self._recorder
        request = recorder.current_request if recorder is not None else None
        # a scan engine's series (Sardana's, armed with blissdata_scan false) is in the engine's scan:
        # one blissdata scan per scan, not a second one for its frames
        self._left_to_engine = request is not None and not request.blissdata_scan
        if self._left_to_engine:
            self.series_left_to_engine += 1
            return
        frames = request.frame_count if request is not None else start.frame_count
        series_id = start.series_id
        if series_id == UNKNOWN and request is not None:
            series_id = request.series_id
        detector_info = {k: v for k, v in start.detector.items() if isinstance(v, (str, int, float, bool))}
        count_time = start.detector.get("count_time", start.detector.get("exposure"))
        record = _SeriesRecord(
            series_id=series_id,
            frames=frames,
            detector=detector_group_name(start.detector),
            shape=start.shape or (0, 0),
            dtype=start.dtype or "uint16",
            file=recorder.current_file if recorder is not None else "",
            frames_per_file=recorder.frames_per_file if recorder is not None else 0,
            start_time=start.start_time,
            frame_metadata=tuple(start.frame_metadata),
            detector_info=detector_info,
            count_time=float(count_time) if isinstance(count_time, (int, float)) else None,
        )
        self._put(("start", record))

    def frame_written(self, message: DataMessage) -> None:
        if self._left_to_engine:
            return
        queued = len(self._events)
        if queued >= self.max_pending:
            self.frames_dropped += 1  # the publisher is that far behind: drop, never grow without bound
            return
        self._queue(("frame", (message.frame_number, message.timestamp, time.time(), message.metadata)), queued)

    def frames_flushed(self) -> None:
        if self._left_to_engine:
            return
        self._queue(("flushed", None), len(self._events))

    def _queue(self, event, queued: int) -> None:
        """Queue a frame or a flush for the publishing thread, waking it if it sleeps (a batch
        begins) or when the batch is full. A flush wakes it too: a frame is sent once its file is
        flushed, and a flush left waiting for the next event kept a slow series (0.4 s a frame)
        1.5 s behind at the median, 13 ms now. Whether it sleeps is its own flag, read after the
        append: a queue length read before it can be stale by the time the event is in, and a
        publisher that had just emptied the queue would then sleep until the batch was full."""
        self._events.append(event)
        if self._sleeping or queued + 1 == self.batch_frames:
            with self._wake:
                self._wake.notify()

    def series_ended(self, end: SeriesEnd | None, end_reason: str) -> None:
        if self._left_to_engine:
            self._left_to_engine = False
            return
        counts = None
        recorder = self._recorder
        if recorder is not None:
            c = recorder.counters
            counts = {
                "frames_received": c.frames_received, "frames_written": c.frames_written,
                "missing_frames": c.missing_frames, "duplicate_frames": c.duplicate_frames,
                "messages_rejected": c.messages_rejected, "frames_lost": c.frames_lost,
            }
        self._put(("end", (end_reason, counts)))

    def _put(self, event) -> None:
        with self._wake:
            self._events.append(event)
            self._urgent = True
            self._wake.notify()

    # -- the publishing thread ------------------------------------------------------------------
    def _run(self) -> None:
        # blissdata's Lima stream plugin takes 0.15 s to import (0.5 s on a busy host): before the
        # first series, not while its scan, which live workers wait for, is being made
        import blissdata.streams.lima  # noqa: F401

        try:  # set blissdata up at once, so readers can wait for the first scan before it comes
            self._data_store()
        except Exception as error:  # noqa: BLE001 - not a publishing error yet: the next series tries again
            self.last_error = f"blissdata on {self.url} not reachable: {type(error).__name__}: {error}"
            log.warning("%s", self.last_error)
        while True:
            with self._wake:
                self._sleeping = True  # before the check that lets it wait: an event put after it wakes it
                while not self._events and not self._closing:
                    self._wake.wait()  # idle: woken by the first event
                self._sleeping = False
                # let a batch gather for batch_interval, unless it is full or a series starts/ends
                deadline = time.monotonic() + self.batch_interval
                while not (self._closing or self._urgent or len(self._events) >= self.batch_frames):
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._wake.wait(remaining)
                self._urgent = False
                closing = self._closing
                self._busy = True
            self._publish_queued()
            self._busy = False
            if closing and not self._events:
                if self._series is not None:
                    self._guard(self._end, "interrupted", None)
                self._series = None
                return

    def _publish_queued(self) -> None:
        frames: list = []
        while self._events:
            kind, payload = self._events.popleft()
            if kind == "frame":
                frames.append(payload)
                continue
            if frames:
                self._frames(frames)
                frames = []
            if kind == "start":
                if self._series is not None:  # the last one never ended (a Recorder fault)
                    self._guard(self._end, "interrupted", None)
                self._series, self._broken = None, False
                self._guard(self._start, payload)
            elif kind == "flushed":
                if self._series is not None:
                    self._series.saved = self._series.prefix
            elif kind == "end":
                self._guard(self._end, *payload)
                self._series = None
        if frames:
            self._frames(frames)
        if self._series is not None and not self._broken:
            self._guard(self._send_image_status, self._series)

    def _frames(self, frames: list) -> None:
        series = self._series
        if series is None or self._broken:
            self.frames_unpublished += len(frames)
            return
        if not self._guard(self._send_frames, series, frames):
            self.frames_unpublished += len(frames)

    def _guard(self, action, *args) -> bool:
        """Run a Redis action; a failure is counted, the series given up, the Recorder untouched."""
        if self._broken and action is not self._start:
            return False
        try:
            action(*args)
            return True
        except Exception as error:  # noqa: BLE001 - Redis down, timed out, refused: never the Recorder's problem
            self.publish_errors += 1
            self.last_error = f"blissdata publishing to {self.url} failed: {type(error).__name__}: {error}"
            log.warning("%s", self.last_error)
            self._broken = True
            self._store = None  # reconnect for the next series
            if self._writer is not None:
                self._writer.abandon()
                self._writer = None
            return False

    # -- Redis, in the publishing thread ----------------------------------------------------------
    def _data_store(self):
        if self._store is None:
            self._store = open_data_store(self._store_url)
        return self._store

    def _context(self) -> dict[str, Any]:
        if self.context is None:
            return {}
        try:
            return {k: v for k, v in dict(self.context()).items() if v not in (None, "")}
        except Exception as error:  # noqa: BLE001 - the context's source (e.g. the DataManager) is down
            log.warning("blissdata: no data-policy context: %s", error)
            return {}

    def _start(self, record: _SeriesRecord) -> None:
        store = self._data_store()
        context = self._context()
        file = record.file
        policy = DataPolicy.from_context(context, session=self.session, dataset=f"series_{record.series_id}",
                                         beamline=self.beamline)
        det = record.detector
        image = f"{det}:image"
        numbers = {
            "timer:epoch": (np.float64, "s"), f"{det}:frame_number": (np.int64, None),
            f"{det}:timestamp": (np.float64, "s"), **{f"{det}:{m}": (np.float64, None) for m in record.frame_metadata},
        }
        results = declared_results(self._store_url, self.live_results_of) if self.live_results_of else None
        channels = [Channel("timer:epoch", unit="s", display_name="epoch"), Channel(image, dim=2),
                    *(Channel(name, unit=unit) for name, (_, unit) in numbers.items() if name != "timer:epoch"),
                    *(results.channels() if results is not None else ())]
        description = ScanDescription(
            name=SCAN_NAME, number=record.series_id,
            title=str(context.get("title", "")) or f"{SCAN_NAME} {record.series_id} {record.frames} frames",
            npoints=record.frames, count_time=record.count_time, start_time=iso(record.start_time), file=file,
            policy=policy, channels=channels,
            device_info={det: {"type": "lima", "metadata": record.detector_info}},
            publisher=self.publisher, nexus_file=nexus_file_beside(file),
            sections={"photonflow": {
                "series_id": record.series_id, "frames_armed": record.frames, "file": file, "data_path": DATA_PATH,
                "frames_per_file": record.frames_per_file, "detector": det,
                # dark, flat, data... as the DataManager planned it; empty for a series nobody planned
                "role": str(context.get("role", "")), "node": str(context.get("node", "")),
            }},
        )
        scan = store.create_scan(description.identity(), description.scan_info())
        streams = self._writer = StreamWriter(self._store_url, self.timeout)
        streams.add(scan, frames_by_reference(image, file, DATA_PATH, record.dtype, record.shape, record.frames,
                                              record.frames_per_file))
        for name, (dtype, _) in numbers.items():
            streams.add(scan, numeric(name, dtype))
        # declared for the live-analysis worker, which writes and seals them from its own process
        result_streams = [scan.create_stream(d) for d in results.definitions()] if results is not None else []
        scan.prepare()
        scan.start()
        self._series = _Published(
            record=record, scan=scan, streams=streams, image=image,
            written=np.zeros(max(record.frames, 1), dtype=bool), results=result_streams,
        )
        self.scans_published += 1
        self.last_scan_key = scan.key

    def _send_frames(self, series: _Published, frames: list) -> None:
        numbers = np.fromiter((f[0] for f in frames), dtype=np.int64, count=len(frames))
        record = series.record
        values = {
            "timer:epoch": np.fromiter((f[2] for f in frames), dtype=np.float64, count=len(frames)),
            f"{record.detector}:frame_number": numbers,
            f"{record.detector}:timestamp": np.fromiter((f[1] for f in frames), dtype=np.float64, count=len(frames)),
        }
        for name in record.frame_metadata:
            values[f"{record.detector}:{name}"] = np.array(
                [(f[3] or {}).get(name, np.nan) for f in frames], dtype=np.float64
            )
        inside = numbers[(numbers >= 0) & (numbers < series.written.size)]
        series.written[inside] = True
        if inside.size:
            series.highest = max(series.highest, int(inside.max()))
        while series.prefix < series.written.size and series.written[series.prefix]:
            series.prefix += 1
        for name, data in values.items():
            series.streams.send(name, data)
        self._add_image_status(series)
        series.streams.flush()
        series.frames_published += len(frames)
        self.frames_published += len(frames)
        self.latencies.extend(time.time() - values["timer:epoch"])

    def _send_image_status(self, series: _Published) -> None:
        """A flush since the last batch made more frames readable: say so."""
        if self._status(series) != series.streams.told(series.image):
            self._add_image_status(series)
            series.streams.flush()

    def _status(self, series: _Published, final: bool = False) -> tuple[int, int]:
        if final:  # the file is closed: every frame written can be read
            return series.highest, series.highest
        saved = series.saved - 1
        fpf = series.record.frames_per_file
        if fpf and saved >= 0:
            # The writer keeps the previous data file open too; blissdata reads only files it
            # believes closed (those before the file of last_index_saved): hold back one file.
            saved = min(saved, (saved // fpf) * fpf - 1)
        return series.prefix - 1, saved

    def _add_image_status(self, series: _Published, final: bool = False) -> None:
        series.streams.image_status(series.image, *self._status(series, final))

    def _end(self, end_reason: str, counts: dict[str, int] | None) -> None:
        series, self._series = self._series, None
        if series is None:
            return
        self._add_image_status(series, final=True)
        series.streams.flush()
        ours = {"end_reason": end_reason, "frames_published": series.frames_published}
        if series.results:  # the worker ends after the frames: its results are waited for, bounded
            unsealed = wait_sealed(series.results, self.results_wait)
            ours["live_results"] = "complete" if not unsealed else f"cut off after {self.results_wait:g} s"
            self.results_cut_off += bool(unsealed)
        if counts is not None:
            ours["counts"] = counts
        end_scan(series.scan, BLISS_END_REASONS.get(end_reason, "FAILURE"), {"photonflow": ours}, self.timeout)
        self._writer = None
