"""The Recorder's logic: stream in, HDF5/NeXus file out, every frame accounted for.

``arm`` validates the file path and connects to the stream; a receiving thread dispatches
each message through a handler table (series_start opens the file, data writes a chunk,
series_end closes it with the final counts). Malformed messages are rejected, counted and
reported, never fatal; a disk error puts the Recorder in FAULT naming the path and cause.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable, Protocol

from photonflow import states
from photonflow.errors import ConfigurationError, RecordingError, StateError, StreamMessageError
from photonflow.recording.nexus_writer import NexusFrameWriter
from photonflow.recording.paths import DEFAULT_FILE_TEMPLATE, render_template, resolve_data_file, validate_template
from photonflow.stream.stins import DataMessage, SeriesEnd, SeriesStart, decode, utc_now_iso
from photonflow.stream.transport import StreamReceiver
from photonflow.throttle import Throttle

log = logging.getLogger(__name__)


class Receiver(Protocol):
    def receive(self, timeout_ms: int) -> list | None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class RecordingRequest:
    """One series to record: how many frames, which series, from where, into which file."""

    frame_count: int
    series_id: int
    endpoint: str
    file: str | None = None  # relative to the data root, or absolute under it; None = template


def parse_recording_request(text: str) -> RecordingRequest:
    """Validate the JSON of the Recorder's Arm command."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigurationError(
            'Arm needs a JSON object such as {"frames": 100, "series_id": 1, '
            f'"endpoint": "tcp://127.0.0.1:5555", "file": "scan1.h5"}}: {error}'
        ) from None
    if not isinstance(raw, dict):
        raise ConfigurationError("Arm needs a JSON object")
    allowed = {"frames", "series_id", "endpoint", "file"}
    unknown = sorted(raw.keys() - allowed)
    if unknown:
        raise ConfigurationError(
            f"unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}",
            reason="UnknownConfigurationKey",
        )
    for key, kind in (("frames", int), ("series_id", int), ("endpoint", str)):
        if key not in raw:
            raise ConfigurationError(f"missing key '{key}'")
        if isinstance(raw[key], bool) or not isinstance(raw[key], kind):
            raise ConfigurationError(f"'{key}' must be {kind.__name__}, got {raw[key]!r}")
    if raw["series_id"] < 0:
        raise ConfigurationError(f"'series_id' must be >= 0, got {raw['series_id']}")
    file = raw.get("file")
    if file is not None and not isinstance(file, str):
        raise ConfigurationError(f"'file' must be a string, got {file!r}")
    return RecordingRequest(raw["frames"], raw["series_id"], raw["endpoint"], file)


@dataclass
class RecorderCounters:
    frames_received: int = 0
    frames_written: int = 0
    missing_frames: int = 0
    duplicate_frames: int = 0
    messages_rejected: int = 0
    write_rate: float = 0.0  # frames per second, over the last notification interval
    data_rate: float = 0.0  # MB per second, same interval


class RecorderListener:
    def state_changed(self, state: str, status: str) -> None:
        pass

    def counters_changed(self, counters: RecorderCounters) -> None:
        pass


@dataclass
class _Series:
    request: RecordingRequest
    path: Path
    writer: NexusFrameWriter | None = None
    start: SeriesStart | None = None
    written: set[int] = field(default_factory=set)
    last_error: str = ""


class Recorder:
    """Records one series at a time from a STINS stream into a NeXus file."""

    def __init__(
        self,
        data_root: str | Path,
        file_template: str = DEFAULT_FILE_TEMPLATE,
        listener: RecorderListener | None = None,
        receiver_factory: Callable[[str], Receiver] = StreamReceiver,
        counter_interval: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
        durable: bool = True,
    ):
        self.data_root = Path(data_root)
        self.durable = durable  # fsync each file at close: "written" means on disk
        self.file_template = validate_template(file_template)
        self.listener = listener or RecorderListener()
        self._receiver_factory = receiver_factory
        self._clock = clock
        self._counter_throttle = Throttle(counter_interval, clock)
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._series: _Series | None = None
        self._stop_reason = "stopped"
        self._rate_mark = (clock(), 0)
        self.counters = RecorderCounters()
        self.state = states.ON
        self.status = "Idle: waiting to be armed."
        self.current_file = ""
        self.last_file = ""
        self.stream_endpoint = ""
        self._handlers = {
            SeriesStart: self._on_series_start,
            DataMessage: self._on_data,
            SeriesEnd: self._on_series_end,
        }

    def set_file_template(self, template: str) -> None:
        self.file_template = validate_template(template)

    def resolve_file(self, requested: str | None, series_id: int = 0) -> Path:
        """The file a series would be written to; refuses paths outside the root or existing."""
        if requested is None:
            requested = render_template(self.file_template, series_id, datetime.now())
        return resolve_data_file(self.data_root, requested)

    def _set_state(self, state: str, status: str) -> None:
        self.state, self.status = state, status
        self.listener.state_changed(state, status)

    def _notify_counters(self, force: bool = False) -> None:
        if not (force or self._counter_throttle.ready()):
            return
        now, written = self._clock(), self.counters.frames_written
        then, written_then = self._rate_mark
        if now > then:
            self.counters.write_rate = (written - written_then) / (now - then)
            frame_bytes = self._series.writer.frame_bytes if self._series and self._series.writer else 0
            self.counters.data_rate = self.counters.write_rate * frame_bytes / 1e6
        self._rate_mark = (now, written)
        self.listener.counters_changed(self.counters)

    def arm(self, request: RecordingRequest) -> Path:
        """Get ready for a series: check the file, connect to the stream; ON/ALARM/FAULT -> RUNNING."""
        with self._lock:
            if self.state == states.RUNNING:
                raise StateError("the Recorder is already recording; Stop or Abort it first")
            if isinstance(request.frame_count, bool) or not isinstance(request.frame_count, int) or request.frame_count < 1:
                raise ConfigurationError(f"frame count must be an integer >= 1, got {request.frame_count!r}")
            if not request.endpoint:
                raise ConfigurationError("no stream endpoint to record from; set StreamEndpoint")
            path = self.resolve_file(request.file, request.series_id)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise RecordingError(
                    f"cannot create the directory {path.parent}: {error.strerror or error}"
                ) from None
            receiver = self._receiver_factory(request.endpoint)
            self._series = _Series(request=request, path=path)
            self.counters = RecorderCounters()
            self._rate_mark = (self._clock(), 0)
            self.current_file = str(path)
            self.stream_endpoint = request.endpoint
            self._stop.clear()
            self._stop_reason = "stopped"
            self._set_state(
                states.RUNNING,
                f"Armed for series {request.series_id} ({request.frame_count} frames) "
                f"from {request.endpoint} into {path}.",
            )
            self._notify_counters(force=True)
            self._thread = threading.Thread(
                target=self._receive_loop, args=(receiver,), name="recorder-receive", daemon=True
            )
            self._thread.start()
            return path

    def stop(self, reason: str = "stopped") -> None:
        """Close the file with what has arrived (within ~0.1 s, in the receiving thread)."""
        with self._lock:
            if self._stop.is_set():
                return
            self._stop_reason = reason
            self._stop.set()

    def abort(self) -> None:
        self.stop("aborted")

    def wait(self, timeout: float | None = None) -> bool:
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            return not thread.is_alive()
        return True

    def _receive_loop(self, receiver: Receiver) -> None:
        series = self._series
        try:
            while not self._stop.is_set():
                parts = receiver.receive(100)
                if parts is None:
                    continue
                try:
                    message = decode(parts)
                except StreamMessageError as error:
                    self._reject(str(error))
                    continue
                if self._handlers[type(message)](message):
                    return
            self._finish(series, self._stop_reason, None)
        except OSError as error:
            self._fail(series, f"cannot write {series.path}: {error.strerror or error}")
        except Exception as error:
            log.exception("recording failed")
            self._fail(series, f"recording into {series.path} failed: {error}")
        finally:
            receiver.close()

    def _reject(self, reason: str) -> None:
        self.counters.messages_rejected += 1
        self._series.last_error = reason
        log.warning("rejected stream message: %s", reason)
        self._set_state(
            self.state,
            f"{self._recording_status()} Rejected {self.counters.messages_rejected} "
            f"malformed message(s); last: {reason}",
        )
        self._notify_counters(force=True)

    def _recording_status(self) -> str:
        request = self._series.request
        return f"Recording series {request.series_id} into {self._series.path}."

    def _check_series(self, message) -> bool:
        expected = self._series.request.series_id
        if message.series_id != expected:
            self._reject(f"message of series {message.series_id}, but armed for series {expected}")
            return False
        return True

    def _on_series_start(self, message: SeriesStart) -> bool:
        series = self._series
        if not self._check_series(message):
            return False
        if series.writer is not None:
            self._reject(f"second series_start for series {message.series_id}")
            return False
        series.start = message
        series.writer = NexusFrameWriter(series.path, message)
        self._set_state(states.RUNNING, self._recording_status())
        return False

    def _on_data(self, message: DataMessage) -> bool:
        series = self._series
        if not self._check_series(message):
            return False
        if series.writer is None:
            self._reject(f"frame {message.frame_number} arrived before series_start")
            return False
        start = series.start
        if message.shape != start.shape or message.dtype != start.dtype:
            self._reject(
                f"frame {message.frame_number} is {list(message.shape)} {message.dtype}, "
                f"series_start announced {list(start.shape)} {start.dtype}"
            )
            return False
        if 0 < start.frame_count <= message.frame_number:
            self._reject(
                f"frame number {message.frame_number} is beyond the {start.frame_count} frames "
                "series_start announced"
            )
            return False
        self.counters.frames_received += 1
        if message.frame_number in series.written:
            self.counters.duplicate_frames += 1
            return False
        series.writer.write_frame(message.frame_number, message.payload)
        series.written.add(message.frame_number)
        self.counters.frames_written += 1
        self._notify_counters()
        return False

    def _on_series_end(self, message: SeriesEnd) -> bool:
        if not self._check_series(message):
            return False
        self._finish(self._series, message.end_reason, message)
        return True

    def _finish(self, series: _Series, end_reason: str, end: SeriesEnd | None) -> None:
        """Close the file with the final accounting and return to ON (or ALARM if frames are missing)."""
        missing: list[int] = []
        if end is not None:
            expected = end.frames_sent
            if series.start is not None and series.start.frame_count > 0:
                expected = min(expected, series.start.frame_count)  # never trust a count beyond it
            missing = sorted(set(range(expected)) - series.written)
        elif series.writer is not None:
            # Ended by the operator: frames below the highest written one never came.
            missing = sorted(set(range(series.writer.highest_frame + 1)) - series.written)
        self.counters.missing_frames = len(missing)
        accounting = {
            "series_id": series.request.series_id,
            "end_reason": end_reason,
            "frames_requested": series.request.frame_count,
            "frames_acquired": end.frames_acquired if end else -1,
            "frames_sent": end.frames_sent if end else -1,
            "frames_received": self.counters.frames_received,
            "frames_written": self.counters.frames_written,
            "missing_frames": len(missing),
            "duplicate_frames": self.counters.duplicate_frames,
            "messages_rejected": self.counters.messages_rejected,
        }
        if series.writer is not None:
            series.writer.close(utc_now_iso(), accounting, missing, durable=self.durable)
        self.last_file = str(series.path) if series.writer is not None else self.last_file
        self.current_file = ""
        self._notify_counters(force=True)
        summary = (
            f"Series {series.request.series_id} {end_reason}: {self.counters.frames_written} frames "
            f"written to {series.path if series.writer else 'no file (series_start never came)'}"
        )
        if missing:
            self._set_state(states.ALARM, f"{summary}; {len(missing)} frame(s) missing: {missing[:10]}")
        else:
            self._set_state(states.ON, summary + ".")

    def _fail(self, series: _Series, reason: str) -> None:
        if series.writer is not None:
            series.writer.abandon()
        self.current_file = ""
        self._notify_counters(force=True)
        self._set_state(states.FAULT, reason)
