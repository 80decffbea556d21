"""Every recorded series as a blissdata 2 scan on Redis, for online consumers (Flint, the ESRF
NeXus writer, ewoks, a Sardana-blissdata client...).

A ``BlissdataSink`` is a Recorder sink (see ``sinks.py``). The Recorder's writing thread only
appends a few numbers per frame to a queue (never the pixels, never a network call); one
publishing thread of the sink turns them into Redis writes, in batches: every ``batch_interval``
seconds, or sooner once ``batch_frames`` frames wait, one pipelined round trip carries the
new entries of every stream. A Redis that is down or slow therefore costs the Recorder nothing:
the publisher counts the failure (``publish_errors``, ``last_error``, ``frames_unpublished``),
gives up that series and starts afresh with the next one.

What a series becomes (names ``<det>`` = the detector's NeXus group name, as in the file):

- identity: ``name`` (``photonflow_series``), ``number`` (the series id), ``data_policy``,
  ``session``, ``proposal``, ``collection`` (the sample), ``dataset``, ``path`` (the file);
  data-policy fields come from ``context()`` when given, else defaults.
- ``scan_info``: the keys blissdata's consumers read (``acquisition_chain``, ``channels``,
  ``devices``, ``start_time``, ``end_time``, ``scan_nb``, ``type``, ``title``, ``npoints``,
  ``count_time``, ``data_policy``, ``save``, ``filename``, ``images_path``, ``end_reason``...)
  plus a ``photonflow`` section (series id, frames armed, photonflow's own end reason, counts).
- streams: ``<det>:image`` a Lima-style stream (blissdata's ``lima`` plugin): the frames by
  reference to the HDF5 file, dataset and index, never the pixels (``last_index``: frames
  written; ``last_index_saved``: frames flushed to the file, readable by an SWMR reader);
  ``timer:epoch`` (when the Recorder wrote each frame), ``<det>:frame_number``,
  ``<det>:timestamp`` (the detector's) and one stream per per-frame metadata value the
  detector announced (``<det>:<name>``), one entry per frame in the order written.
- states CREATED -> PREPARED -> STARTED at series_start, STOPPED -> CLOSED at series_end, with
  ``end_reason`` in blissdata's vocabulary (SUCCESS, USER_ABORT, FAILURE) and photonflow's in
  ``scan_info["photonflow"]["end_reason"]`` (completed, aborted, stopped, failed, interrupted).
"""

from __future__ import annotations

import logging
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import numpy as np

import photonflow
from photonflow.errors import ConfigurationError
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
DEFAULT_BATCH_INTERVAL = 0.01
DEFAULT_BATCH_FRAMES = 100
DEFAULT_MAX_PENDING = 1_000_000  # frame records waiting for Redis (~100 bytes each) before dropping
REDIS_TIMEOUT = 1.0  # seconds: a dead Redis is found out within this, in the publisher thread only


def is_redis_url(url: str) -> bool:
    return urlsplit(url).scheme in ("redis", "rediss", "unix")


def with_timeouts(url: str, timeout: float = REDIS_TIMEOUT) -> str:
    """The URL with socket timeouts (unless it sets its own), so no Redis call waits forever."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query.setdefault("socket_timeout", str(timeout))
    query.setdefault("socket_connect_timeout", str(timeout))
    return urlunsplit(parts._replace(query=urlencode(query)))


def open_data_store(url: str):
    """blissdata's DataStore on ``url``, set up for blissdata on first use.

    blissdata sets up only an empty database; photonflow's event bus may share the server and
    already hold its own streams, which are not scans and do not disturb blissdata's index.
    """
    from blissdata.redis_engine.store import DataStore

    try:
        return DataStore(url)
    except RuntimeError as error:
        if "No blissdata protocol version" not in str(error):
            raise

    class _SharedServerSetup(DataStore):
        def _setup_redis_db(self):
            real_dbsize = self._redis.dbsize
            self._redis.dbsize = lambda: 0  # the only check that refuses a shared database
            try:
                with warnings.catch_warnings():
                    # valkey 8.1 takes only FT.CONFIG SET, which redis-py 7 calls deprecated
                    warnings.simplefilter("ignore", DeprecationWarning)
                    super()._setup_redis_db()
            finally:
                self._redis.dbsize = real_dbsize

    _SharedServerSetup(url, init_db=True)
    return DataStore(url)


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
    image: Any
    channels: dict[str, Any]  # name -> (key, encoder, index)
    indices: dict[str, int] = field(default_factory=dict)
    written: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    prefix: int = 0  # frames 0 .. prefix-1 all written
    saved: int = 0  # frames 0 .. saved-1 flushed to the file when last told
    highest: int = -1
    frames_published: int = 0
    last_status: tuple[int, int] = (-1, -1)


class BlissdataSink:
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
    ):
        if not is_redis_url(url):
            raise ConfigurationError(f"blissdata needs a Redis URL such as redis://127.0.0.1:6379, got {url!r}")
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
        self._recorder = None
        self._events: deque = deque()
        self._wake = threading.Condition()
        self._closing = False
        self._urgent = False  # a series starts or ends: publish without waiting for a batch
        self._busy = False
        self._store = None
        self._series: _Published | None = None
        self._broken = False  # the current series failed to publish: its remaining events are dropped
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
            shape=tuple(start.shape or (0, 0)),
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
        queued = len(self._events)
        if queued >= self.max_pending:
            self.frames_dropped += 1  # the publisher is that far behind: drop, never grow without bound
            return
        self._events.append(("frame", (message.frame_number, message.timestamp, time.time(), message.metadata)))
        if queued == 0 or queued + 1 == self.batch_frames:  # a batch begins, or is full
            with self._wake:
                self._wake.notify()

    def frames_flushed(self) -> None:
        self._events.append(("flushed", None))

    def series_ended(self, end: SeriesEnd | None, end_reason: str) -> None:
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

    def close(self, timeout: float = 5.0) -> None:
        """Publish what is queued (a series still open ends as interrupted), then stop."""
        with self._wake:
            self._closing = True
            self._wake.notify()
        self._thread.join(timeout)

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Wait until everything queued so far is published (or given up); True if it is."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._wake:
                if not self._events and not self._busy:
                    return True
                self._wake.notify()
            time.sleep(0.005)
        return False

    def _put(self, event) -> None:
        with self._wake:
            self._events.append(event)
            self._urgent = True
            self._wake.notify()

    # -- the publishing thread ------------------------------------------------------------------
    def _run(self) -> None:
        try:  # set blissdata up at once, so readers can wait for the first scan before it comes
            self._data_store()
        except Exception as error:  # not a publishing error yet: the next series tries again
            self.last_error = f"blissdata on {self.url} not reachable: {type(error).__name__}: {error}"
            log.warning("%s", self.last_error)
        while True:
            with self._wake:
                while not self._events and not self._closing:
                    self._wake.wait()  # idle: woken by the first event
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
            self._guard(self._send_image_status)

    def _frames(self, frames: list) -> None:
        if self._series is None or self._broken:
            self.frames_unpublished += len(frames)
            return
        if not self._guard(self._send_frames, frames):
            self.frames_unpublished += len(frames)

    def _guard(self, action, *args) -> bool:
        """Run a Redis action; a failure is counted, the series given up, the Recorder untouched."""
        if self._broken and action is not self._start:
            return False
        try:
            action(*args)
            return True
        except Exception as error:  # Redis down, timed out, refused: never the Recorder's problem
            self.publish_errors += 1
            self.last_error = f"blissdata publishing to {self.url} failed: {type(error).__name__}: {error}"
            log.warning("%s", self.last_error)
            self._broken = True
            self._store = None  # reconnect for the next series
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
        except Exception as error:  # the context's source (e.g. the DataManager) is down
            log.warning("blissdata: no data-policy context: %s", error)
            return {}

    def _start(self, record: _SeriesRecord) -> None:
        from blissdata.streams.default import Stream
        from blissdata.streams.encoding.json import JsonStreamEncoder
        from blissdata.streams.encoding.numeric import NumericStreamEncoder
        from blissdata.streams.lima import LimaStream

        store = self._data_store()
        context = self._context()
        file = record.file
        proposal = str(context.get("proposal", "")) or None
        sample = str(context.get("sample", context.get("collection", ""))) or None
        dataset = str(context.get("dataset", "")) or f"series_{record.series_id}"
        data_policy = str(context.get("data_policy", "ESRF" if proposal else "no_policy"))
        identity = {
            "name": SCAN_NAME,
            "number": record.series_id,
            "data_policy": data_policy,
            "session": str(context.get("session", self.session)),
            "proposal": proposal,
            "collection": sample,
            "dataset": dataset,
            "path": file,
        }
        det = record.detector
        image, epoch = f"{det}:image", "timer:epoch"
        scalars = [f"{det}:frame_number", f"{det}:timestamp"] + [f"{det}:{m}" for m in record.frame_metadata]
        title = str(context.get("title", "")) or f"{SCAN_NAME} {record.series_id} {record.frames} frames"
        info = {
            "name": SCAN_NAME,
            "scan_nb": record.series_id,
            "session_name": identity["session"],
            "user_name": str(context.get("user", "")) or "photonflow",
            "data_policy": data_policy,
            "proposal": proposal,
            "beamline": str(context.get("beamline", self.beamline)),
            "sample_name": sample,
            "dataset": dataset,
            "title": title,
            "type": SCAN_NAME,
            "npoints": record.frames,
            "count_time": record.count_time,
            "start_time": _iso(record.start_time),
            "end_time": None,
            "acquisition_chain": {
                "timer": {
                    "top_master": "timer",
                    "devices": ["timer", det],
                    "scalars": [epoch, *scalars],
                    "spectra": [],
                    "images": [image],
                    "master": {"scalars": [epoch], "spectra": [], "images": []},
                }
            },
            "devices": {
                "timer": {"name": "timer", "channels": [epoch], "triggered_devices": [det]},
                det: {"name": det, "channels": [image, *scalars], "type": "lima",
                      "metadata": record.detector_info},
            },
            "channels": {
                epoch: {"dim": 0, "display_name": "epoch", "unit": "s"},
                image: {"dim": 2, "display_name": "image"},
                f"{det}:frame_number": {"dim": 0, "display_name": "frame_number"},
                f"{det}:timestamp": {"dim": 0, "display_name": "timestamp", "unit": "s"},
                **{f"{det}:{m}": {"dim": 0, "display_name": m} for m in record.frame_metadata},
            },
            "display_extra": {"plotselect": [], "displayed_channels": [image]},
            "save": True,
            "filename": file,
            "images_path": file,
            "publisher": self.publisher,
            "publisher_version": photonflow.__version__,
            "data_writer": "photonflow",
            "writer_options": {"chunk_options": {}, "separate_scan_files": False},
            "scan_meta_categories": ["positioners", "instrument", "technique"],
            "positioners": {},
            "instrument": {"name": str(context.get("beamline", self.beamline))},
            "technique": {},
            "photonflow": {
                "series_id": record.series_id,
                "frames_armed": record.frames,
                "file": file,
                "data_path": DATA_PATH,
                "frames_per_file": record.frames_per_file,
                "detector": det,
                "role": str(context.get("role", "")),  # dark, flat, data... as the DataManager planned it
                "node": str(context.get("node", "")),
            },
        }
        scan = store.create_scan(identity, info)
        if record.frames_per_file:
            escaped = Path(file.replace("%", "%%"))  # blissdata fills in the file number with %
            saving = {  # the names of data_file_path: <stem>_data_000001.h5 holds frames 0..frames_per_file-1
                "file_path": str(escaped.with_name(f"{escaped.stem}_data_%06d{escaped.suffix}")),
                "data_path": DATA_PATH, "file_format": "hdf5",
                "file_offset": 1, "frames_per_file": record.frames_per_file,
            }
        else:  # one file: "%.0s" takes the file number and prints nothing
            saving = {
                "file_path": file.replace("%", "%%") + "%.0s", "data_path": DATA_PATH, "file_format": "hdf5",
                "file_offset": 0, "frames_per_file": record.frames,
            }
        image_stream = scan.create_stream(LimaStream.make_definition(
            image, dtype=record.dtype, shape=list(record.shape), server_url=f"photonflow:{file}",
            buffer_max_number=0,  # no detector server to ask: frames come from the file only
            frames_per_acquisition=record.frames, acquisition_offset=0, saving=saving,
        ))
        channels = {
            epoch: np.float64, f"{det}:frame_number": np.int64, f"{det}:timestamp": np.float64,
            **{f"{det}:{m}": np.float64 for m in record.frame_metadata},
        }
        streams = {}
        for name, dtype in channels.items():
            stream = scan.create_stream(Stream.make_definition(name, dtype))
            streams[name] = (stream.key, NumericStreamEncoder(dtype))
        scan.prepare()
        scan.start()
        self._series = _Published(
            record=record, scan=scan, image=(image_stream.key, JsonStreamEncoder()), channels=streams,
            written=np.zeros(max(record.frames, 1), dtype=bool),
        )
        self.scans_published += 1
        self.last_scan_key = scan.key

    def _send_frames(self, frames: list) -> None:
        series = self._series
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
        pipe = self._data_store()._redis.pipeline(transaction=False)
        for name, (key, encoder) in series.channels.items():
            self._xadd(pipe, series, name, key, encoder, values[name])
        self._add_image_status(pipe, series)
        pipe.execute()
        series.frames_published += len(frames)
        self.frames_published += len(frames)
        self.latencies.extend(time.time() - values["timer:epoch"])

    def _send_image_status(self) -> None:
        """A flush since the last batch made more frames readable: say so."""
        series = self._series
        if self._status(series) != series.last_status:
            pipe = self._data_store()._redis.pipeline(transaction=False)
            self._add_image_status(pipe, series)
            pipe.execute()

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

    def _add_image_status(self, pipe, series: _Published, final: bool = False) -> None:
        status = self._status(series, final)
        if status == series.last_status:
            return
        key, encoder = series.image
        self._xadd(pipe, series, "image", key, encoder, {"last_index": status[0], "last_index_saved": status[1]})
        series.last_status = status

    @staticmethod
    def _xadd(pipe, series: _Published, name: str, key: str, encoder, data) -> None:
        """One stream entry holding a batch of points, as blissdata's own writer makes it."""
        batch = encoder.encode(data)
        index = series.indices.get(name, 0)
        pipe.xadd(key, batch.todict(), id=f"{index}-1")
        series.indices[name] = index + batch.len

    def _end(self, end_reason: str, counts: dict[str, int] | None) -> None:
        series, self._series = self._series, None
        if series is None:
            return
        pipe = self._data_store()._redis.pipeline(transaction=False)
        self._add_image_status(pipe, series, final=True)
        pipe.execute()
        scan = series.scan
        scan.stop()  # seals every stream
        scan.info["end_time"] = datetime.now().astimezone().isoformat()
        scan.info["end_reason"] = BLISS_END_REASONS.get(end_reason, "FAILURE")
        scan.info["photonflow"]["end_reason"] = end_reason
        scan.info["photonflow"]["frames_published"] = series.frames_published
        if counts is not None:
            scan.info["photonflow"]["counts"] = counts
        scan.close()


def _iso(text: str) -> str:
    """An ISO 8601 time with its offset, as blissdata's consumers parse it ('Z' spelled +00:00)."""
    return text[:-1] + "+00:00" if text.endswith("Z") else text
