"""A step scan run by a scan engine (Sardana's, through ``PhotonflowBlissdataRecorder``) published as
a blissdata 2 scan, point by point, for the same consumers as photonflow's own series.

The engine says what the scan is when it starts (``StepScan``: its columns and the stream each
becomes), hands over each point's values, then the scan's end. Each call only queues: one thread
per scan talks to Redis, so a Redis that is down or slow never delays nor breaks the scan. A
failure is counted in a ``PublishHealth`` shared by the scans, warned about once per outage, and
that scan's publication is given up.

Streams: ``timer:elapsed_time`` and ``timer:epoch``; ``axis:<motor>`` per motor; one per other
channel; for each photonflow 2D channel a Lima stream that references the frames in the file its
value reference names (one file per scan; the frames its points' references index, see
``frame_reference``).
blissdata takes no stream once a scan is PREPARED and that file is known only at the first point,
so a scan with photonflow frames is PREPARED and STARTED with its first point, any other at once.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from photonflow.errors import StateError
from photonflow.publishing.blissdata_scan import (
    REDIS_TIMEOUT,
    TIMER,
    Channel,
    DataPolicy,
    ScanDescription,
    StreamWriter,
    end_scan,
    frames_by_reference,
    nexus_file_beside,
    numeric,
    open_data_store,
    with_timeouts,
)
from photonflow.publishing.frame_reference import FrameReference, parse_frame_reference
from photonflow.recording.recorder import FLUSH_INTERVAL

log = logging.getLogger(__name__)

MOTOR, SCALAR, ARRAY, FRAMES = "motor", "scalar", "array", "frames"
ELAPSED, EPOCH = f"{TIMER}:elapsed_time", f"{TIMER}:epoch"
AXIS = "axis"  # the device of the scanned motors' streams, as in BLISS
# The Recorder makes what it wrote readable to SWMR readers at most every FLUSH_INTERVAL, at the
# latest one queue poll (0.1 s) later: without the Recorder's own count (``frames_flushed``) a frame
# is told readable once that much has passed.
READABLE_AFTER = FLUSH_INTERVAL + 0.2
FLUSHED_POLL = 0.02  # s between reads of the Recorder's count while frames wait to be told readable


@dataclass(frozen=True)
class Column:
    """One column of the engine's records and the stream it becomes."""

    key: str  # its key in a point's values
    stream: str  # <device>:<channel>
    kind: str  # MOTOR, SCALAR, ARRAY (``shape`` numbers a point) or FRAMES (a photonflow frame reference a point)
    label: str = ""  # what the engine calls it
    dtype: str = "float64"
    shape: tuple[int, ...] = ()
    unit: str | None = None

    def channel(self) -> Channel:
        return Channel(self.stream, dim=2 if self.kind == FRAMES else len(self.shape), unit=self.unit,
                       display_name=self.label)


@dataclass
class StepScan:
    """What the engine knows of a scan when it starts."""

    name: str  # the scan's type: ascan, dscan...
    number: int
    title: str  # the command line
    npoints: int
    count_time: float | None
    start_epoch: float  # when it started, seconds since 1970
    file: str  # the engine's scan file ("" if it saves none)
    columns: list[Column]
    elapsed_key: str = "timestamp"  # seconds since the start in each point's values
    positioners: dict[str, float | None] = field(default_factory=dict)  # scanned motors at the start
    units: dict[str, str | None] = field(default_factory=dict)
    session: str = "sardana"
    beamline: str = "photonflow"
    data_writer: str = "sardana"

    def description(self, policy: DataPolicy, frames: Mapping[str, FrameReference] | None = None) -> ScanDescription:
        """In blissdata's words; ``frames`` (stream -> first point's reference) names the
        photonflow files once known, and only the FRAMES columns found there are kept."""
        columns = [c for c in self.columns if c.kind != FRAMES or frames is None or c.stream in frames]
        channels = [Channel(ELAPSED, unit="s"), Channel(EPOCH, unit="s"), *(c.channel() for c in columns)]
        files = sorted({reference.file for reference in (frames or {}).values()})
        return ScanDescription(
            name=self.name, number=self.number, title=self.title, npoints=self.npoints,
            count_time=self.count_time, start_time=datetime.fromtimestamp(self.start_epoch).astimezone().isoformat(),
            file=self.file, policy=policy, channels=channels, masters=(TIMER, AXIS),
            device_info={c.channel().device: {"type": "lima"} for c in columns if c.kind == FRAMES},
            positioners={"positioners_start": dict(self.positioners), "positioners_units": dict(self.units)},
            images_path=files[0] if len(files) == 1 else self.file, data_writer=self.data_writer,
            nexus_file=nexus_file_beside(self.file),
            sections={"photonflow": {"scan_file": self.file, **({"frame_files": files} if files else {})}},
        )

    def values(self, point: Mapping[str, Any]) -> dict[str, np.ndarray | np.float64]:
        """One point's numbers per numeric stream (a missing value is NaN)."""
        elapsed = _number(point.get(self.elapsed_key))
        values: dict[str, np.ndarray | np.float64] = {
            ELAPSED: np.float64(elapsed),
            EPOCH: np.float64(self.start_epoch + elapsed if math.isfinite(elapsed) else time.time()),
        }
        for column in self.columns:
            if column.kind == FRAMES:
                continue
            value = point.get(column.key)
            if column.kind == ARRAY:
                values[column.stream] = np.asarray(value, dtype=column.dtype).reshape(column.shape)
            else:
                values[column.stream] = np.asarray(_number(value)).astype(column.dtype)
        return values


def _number(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


class PublishHealth:
    """How publishing went across scans: failures counted, warned about once per outage."""

    def __init__(self, logger: logging.Logger = log):
        self.logger = logger
        self.scans_published = 0
        self.errors = 0
        self.last_error = ""
        self._failing = False

    def failed(self, message: str) -> None:
        self.errors += 1
        self.last_error = message
        if not self._failing:
            self._failing = True
            self.logger.warning("%s (the scans go on; warned once until publishing works again)", message)

    def succeeded(self) -> None:
        self.scans_published += 1
        if self._failing:
            self._failing = False
            self.logger.info("blissdata publishing works again")


class StepScanPublisher:
    """Publishes one step scan on the Redis at ``url``; ``point`` and ``end`` only queue.

    ``context()`` (called in the publishing thread, may be slow or fail) gives data-policy fields:
    proposal, session, sample, dataset... ``frames_flushed()`` (same thread) is how many frames of
    the scan's photonflow series a reader of the file sees (the Recorder's FramesFlushed): a frame
    is told readable once it is, within FLUSHED_POLL; without it (or while it fails), READABLE_AFTER
    after its point.
    """

    def __init__(self, url: str, scan: StepScan, context: Callable[[], Mapping[str, Any]] | None = None,
                 health: PublishHealth | None = None, timeout: float = REDIS_TIMEOUT,
                 frames_flushed: Callable[[], int] | None = None):
        self.url = url
        self.step_scan = scan
        self.context = context
        self.health = health or PublishHealth()
        self.timeout = timeout
        self.frames_flushed = frames_flushed
        self.flushed_error = ""  # why frames_flushed could not be read, the first time it could not
        self.scan_key = ""
        self._events: queue.SimpleQueue = queue.SimpleQueue()
        self._scan: Any = None  # blissdata's Scan, once _start made it
        self._streams: StreamWriter | None = None
        self._policy: DataPolicy | None = None
        self._frames: dict[str, FrameReference] | None = None  # Lima stream -> first point's reference
        self._written: dict[str, list[tuple[float, int]]] = {}  # Lima stream -> (when, index) not yet readable
        self._broken = False
        self.failure = ""  # why this scan could not be published, once it could not
        self._thread = threading.Thread(target=self._run, name=f"blissdata-{scan.name}-{scan.number}", daemon=True)
        self._thread.start()

    def point(self, index: int, values: Mapping[str, Any]) -> None:
        self._events.put(("point", index, dict(values)))

    def end(self, end_reason: str) -> None:
        """``end_reason``: SUCCESS, USER_ABORT or FAILURE."""
        self._events.put(("end", end_reason, None))

    def wait(self, timeout: float) -> bool:
        """Wait until the scan is published to its end; True if it is."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # -- the publishing thread ------------------------------------------------------------------
    def _run(self) -> None:
        self._guard(self._start)
        while True:
            try:
                waiting = any(self._written.values())  # frames to tell readable once flushed
                poll = FLUSHED_POLL if self.frames_flushed is not None else READABLE_AFTER / 2
                kind, first, second = self._events.get(timeout=poll if waiting else None)
            except queue.Empty:
                self._guard(self._tell_readable, False)
                continue
            points = []
            while kind == "point":  # the points queued while the last ones went out: one batch
                points.append(second)
                try:
                    kind, first, second = self._events.get_nowait()
                except queue.Empty:
                    kind = ""
            if points:
                self._guard(self._points, points)
            if kind == "end":
                if self._guard(self._end, first) and not self._broken:
                    self.health.succeeded()
                return

    def _guard(self, action, *args) -> bool:
        if self._broken:
            return False
        try:
            action(*args)
            return True
        except Exception as error:  # noqa: BLE001 - Redis down, timed out, refused: never the scan's problem
            self._broken = True
            if self._streams is not None:
                self._streams.abandon()
            self.failure = (f"blissdata publishing of {self.step_scan.name} {self.step_scan.number} to {self.url} "
                            f"failed: {type(error).__name__}: {error}")
            self.health.failed(self.failure)
            return False

    def _context(self) -> Mapping[str, Any]:
        if self.context is None:
            return {}
        try:
            return self.context()
        except Exception as error:  # noqa: BLE001 - the context's source (e.g. the DataManager) is down: no policy
            log.warning("blissdata: no data-policy context for %s %s: %s", self.step_scan.name,
                        self.step_scan.number, error)
            return {}

    def _start(self) -> None:
        scan = self.step_scan
        url = with_timeouts(self.url, self.timeout)
        store = open_data_store(url)
        self._policy = policy = DataPolicy.from_context(self._context(), session=scan.session,
                                                        dataset=f"{scan.name}_{scan.number}", beamline=scan.beamline)
        description = scan.description(policy)
        self._scan = published = store.create_scan(description.identity(), description.scan_info())
        self._streams = streams = StreamWriter(url, self.timeout)
        for name in (ELAPSED, EPOCH):
            streams.add(published, numeric(name, "float64"))
        for column in scan.columns:
            if column.kind != FRAMES:
                streams.add(published, numeric(column.stream, column.dtype, column.shape))
        if not any(column.kind == FRAMES for column in scan.columns):
            self._frames = {}
            published.prepare()
            published.start()
        self.scan_key = published.key  # set once the scan is as far as it goes before its first point

    def _opened(self) -> tuple[Any, StreamWriter, DataPolicy]:
        """What ``_start`` made: the scan, its streams and its data policy. When it failed, the
        publisher is broken and ``_guard`` calls nothing that needs them."""
        if self._scan is None or self._streams is None or self._policy is None:
            raise StateError(f"blissdata: the scan {self.step_scan.name} {self.step_scan.number} was never created")
        return self._scan, self._streams, self._policy

    def _start_frames(self, point: Mapping[str, Any]) -> dict[str, FrameReference]:
        """The first point names the photonflow files: their Lima streams, then PREPARED, STARTED."""
        scan = self.step_scan
        published, streams, policy = self._opened()
        self._frames = frames = {}
        for column in scan.columns:
            if column.kind != FRAMES:
                continue
            reference = parse_frame_reference(point.get(column.key, ""))
            if reference is None:
                log.warning("blissdata: %s is no photonflow frame reference (%r): not published", column.label,
                            point.get(column.key))
                continue
            dtype, shape = _frame_layout(reference, column)
            streams.add(published, frames_by_reference(
                column.stream, reference.file, reference.dataset.lstrip("/"), dtype, shape, scan.npoints))
            frames[column.stream] = reference
            self._written[column.stream] = []
        published.info = scan.description(policy, frames).scan_info()
        published.prepare()
        published.start()
        return frames

    def _points(self, points: list[Mapping[str, Any]]) -> None:
        """Points in the order taken, one entry per stream (blissdata's writers wait 10 ms for more
        before writing: a fast scan's points go out together)."""
        _, streams, _ = self._opened()
        frames = self._frames if self._frames is not None else self._start_frames(points[0])
        values = [self.step_scan.values(point) for point in points]
        for name in values[0]:
            streams.send(name, np.stack([value[name] for value in values]))
        now = time.monotonic()
        for column in self.step_scan.columns:
            if column.stream in frames:
                for point in points:
                    reference = parse_frame_reference(point.get(column.key, ""))
                    if reference is not None:
                        self._written[column.stream].append((now, reference.index))
        self._add_image_status(streams, final=False)
        streams.flush()

    def _add_image_status(self, streams: StreamWriter, final: bool) -> None:
        """Each Lima stream's last frame written and last one readable (once the Recorder flushed
        it, or all of them at the end: the photonflow file is closed before the scan ends)."""
        now = time.monotonic()
        flushed = None if final else self._flushed()
        for stream, written in self._written.items():
            if not written:
                continue
            last = written[-1][1]
            if final:
                readable = [index for _, index in written]
            elif flushed is not None:
                readable = [index for _, index in written if index < flushed]
            else:
                readable = [index for when, index in written if now - when >= READABLE_AFTER]
            told_saved = streams.told(stream)[1]
            streams.image_status(stream, last, max(readable, default=told_saved))
            told_readable = set(readable)
            written[:] = [entry for entry in written if entry[1] not in told_readable]

    def _flushed(self) -> int | None:
        """The Recorder's count of frames readable in the file; None without one or when it fails."""
        if self.frames_flushed is None:
            return None
        try:
            return int(self.frames_flushed())
        except Exception as error:  # noqa: BLE001 - the Recorder unreachable: the time rule instead
            if not self.flushed_error:
                self.flushed_error = f"{type(error).__name__}: {error}"
                log.warning("blissdata: the Recorder's flushed frames unknown (%s): frames told readable "
                            "%.1f s after their point instead", error, READABLE_AFTER)
            return None

    def _tell_readable(self, final: bool) -> None:
        _, streams, _ = self._opened()
        self._add_image_status(streams, final)
        streams.flush()

    def _end(self, end_reason: str) -> None:
        if self._scan is None:
            return
        if self._written:
            self._tell_readable(True)
        end_scan(self._scan, end_reason, timeout=self.timeout)


def _frame_layout(reference: FrameReference, column: Column) -> tuple[str, tuple[int, ...]]:
    """The frames' dtype and shape as the photonflow file holds them (the engine's if unreadable)."""
    try:
        import h5py

        with h5py.File(reference.file, "r", swmr=True, locking=False) as f:
            dataset = f[reference.dataset]
            return dataset.dtype.name, tuple(int(n) for n in dataset.shape[1:])
    except Exception as error:  # noqa: BLE001 - not yet readable: the engine's description will do
        log.info("blissdata: frame layout of %s from Sardana, not the file: %s", reference.file, error)
        return column.dtype, column.shape

