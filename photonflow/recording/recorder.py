"""The Recorder's logic: stream in, HDF5/NeXus file out, every frame accounted for.

``arm`` validates the file path and connects to the stream inputs. Two threads do the work:
the receiver takes messages off the sockets and decodes them; a bounded queue carries them
to the writer, which dispatches each through a handler table (series_start opens the file,
data writes a chunk, series_end closes it with the final counts). When the writer falls
behind, the queue fills and the receiver waits, so the back-pressure reaches the sender
through ZeroMQ instead of frames being dropped. Malformed messages are rejected, counted and
reported, never fatal; a disk error puts the Recorder in FAULT naming the path and cause, and
the frames still queued are counted as lost.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Protocol

import numpy as np

from photonflow import states
from photonflow.errors import ConfigurationError, RecordingError, StateError, StreamMessageError
from photonflow.recording.compression import COMPRESSIONS, CompressionPipeline
from photonflow.recording.frame_queue import FrameQueue, QueueEmpty, QueueFull
from photonflow.recording.nexus_writer import NexusFrameWriter
from photonflow.recording.paths import (
    DEFAULT_FILE_TEMPLATE,
    DataRoot,
    SeriesDirectory,
    render_template,
    resolve_data_file,
    validate_template,
)
from photonflow.recording.recovery import finalise_interrupted, read_accounting, writer_refusal
from photonflow.stream.protocols import decoder_for
from photonflow.stream.stins import UNKNOWN, DataMessage, SeriesEnd, SeriesStart, utc_now_iso
from photonflow.stream.transport import StreamReceiver
from photonflow.throttle import Throttle

log = logging.getLogger(__name__)

DEFAULT_QUEUE_FRAMES = 256
# A DECTRIS DCU numbers its series itself when armed: the Recorder, armed before it, follows
# the id of the series start it receives rather than the id it was armed with.
DETECTOR_NUMBERED_PROTOCOLS = frozenset({"dectris-v1", "dectris-v2"})
DEFAULT_QUEUE_MEGABYTES = 512  # what frames waiting for the disk may take, whatever their size
FLUSH_INTERVAL = 0.2  # seconds between making progress visible to SWMR readers
# What a series may claim. The Recorder keeps 17 bytes of bookkeeping per armed frame (arrival
# flag, receive time, detector timestamp), so the largest series bounds its memory whatever a
# sender announces; frames numbered beyond the armed count are rejected, not stored.
DEFAULT_MAX_FRAMES = 10_000_000
MAX_SERIES_ID = 2**63 - 1  # what HDF5's int64 /entry/series_id holds
MAX_DATA_FILES = 1_000  # data files of one split series: each is a mapping of the master's virtual dataset (~16 kB)
# Seconds to wait for series_end once every armed frame is in (a stream cut off before its end,
# as real captures are): then the series is closed with end_reason COMPLETED_WITHOUT_END.
DEFAULT_END_TIMEOUT = 10.0
COMPLETED_WITHOUT_END = "completed_without_end"


def os_error_cause(error: OSError) -> str:
    """The operating system's one-line reason (e.g. 'No space left on device'), also when
    HDF5 wraps it in a long multi-line message."""
    if error.errno:
        return os.strerror(error.errno)
    found = re.search(r"errno = (\d+)", str(error))
    if found:
        return os.strerror(int(found.group(1)))
    return str(error).splitlines()[0] if str(error) else type(error).__name__


class Receiver(Protocol):
    def receive(self, timeout_ms: int) -> list | None: ...

    def wake(self) -> None: ...

    def close(self) -> None: ...


class FrameSink(Protocol):
    """Something else that wants every accepted frame (live preview, fan-out); must not block."""

    def series_started(self, start: SeriesStart) -> None: ...

    def frame_written(self, message: DataMessage) -> None: ...

    def series_ended(self, end: SeriesEnd | None, end_reason: str) -> None: ...


@dataclass(frozen=True)
class RecordingRequest:
    """One series to record: how many frames, which series, from where, into which file."""

    frame_count: int
    series_id: int
    endpoints: tuple[str, ...]
    file: str | None = None  # relative to the data root, or absolute under it; None = template
    protocol: str = "stins"

    def __post_init__(self):
        if isinstance(self.endpoints, str):  # one input, given as its endpoint
            object.__setattr__(self, "endpoints", (self.endpoints,))


STREAM_ENDPOINT = re.compile(r"tcp://[^\s:/]+:\d{1,5}|tcp://\[[0-9A-Fa-f:.]+\]:\d{1,5}|ipc://\S+|inproc://\S+")


def parse_recording_request(text: str) -> RecordingRequest:
    """Validate the JSON of the Recorder's Arm command."""
    try:
        raw = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as error:
        detail = "nested too deeply" if isinstance(error, RecursionError) else str(error)
        raise ConfigurationError(
            'Arm needs a JSON object such as {"frames": 100, "series_id": 1, '
            f'"endpoint": "tcp://127.0.0.1:5555", "file": "scan1.h5"}}: {detail}'
        ) from None
    if not isinstance(raw, dict):
        raise ConfigurationError("Arm needs a JSON object")
    allowed = {"frames", "series_id", "endpoint", "file", "protocol"}
    unknown = sorted(raw.keys() - allowed)
    if unknown:
        raise ConfigurationError(
            f"unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}",
            reason="UnknownConfigurationKey",
        )
    for key, kind in (("frames", int), ("series_id", int), ("endpoint", (str, list))):
        if key not in raw:
            raise ConfigurationError(f"missing key '{key}'")
        if isinstance(raw[key], bool) or not isinstance(raw[key], kind):
            expected = "a string or a list of strings" if key == "endpoint" else kind.__name__
            raise ConfigurationError(f"'{key}' must be {expected}, got {raw[key]!r}")
    if not 0 <= raw["series_id"] <= MAX_SERIES_ID:
        raise ConfigurationError(f"'series_id' must be 0 to {MAX_SERIES_ID}, got {raw['series_id']}")
    endpoints = [raw["endpoint"]] if isinstance(raw["endpoint"], str) else raw["endpoint"]
    if not endpoints or not all(isinstance(e, str) and e for e in endpoints):
        raise ConfigurationError(f"'endpoint' must name at least one stream, got {raw['endpoint']!r}")
    for endpoint in endpoints:
        if not STREAM_ENDPOINT.fullmatch(endpoint):
            raise ConfigurationError(
                f"'endpoint' {endpoint!r} is not a ZeroMQ address such as tcp://127.0.0.1:5555 "
                "(tcp://host:port, ipc://path or inproc://name)",
                reason="InvalidEndpoint",
            )
    for key in ("file", "protocol"):
        if raw.get(key) is not None and not isinstance(raw[key], str):
            raise ConfigurationError(f"'{key}' must be a string, got {raw[key]!r}")
    protocol = raw.get("protocol", "stins")
    decoder_for(protocol)  # refuse an unknown protocol now, not at the first message
    return RecordingRequest(raw["frames"], raw["series_id"], tuple(endpoints), raw.get("file"), protocol)


@dataclass
class RecorderCounters:
    frames_received: int = 0
    frames_written: int = 0
    missing_frames: int = 0
    duplicate_frames: int = 0
    messages_rejected: int = 0
    frames_lost: int = 0  # received but never written: dropped on Abort or a disk fault
    queue_depth: int = 0  # messages waiting between receiver and writer, at the last notification
    queue_megabytes: float = 0.0  # and their size
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
    directory: SeriesDirectory | None = None  # held open: the series' files are made in it, by descriptor
    token: str = field(default_factory=lambda: secrets.token_hex(16))  # this series' mark in its file
    writer: NexusFrameWriter | None = None
    compressor: CompressionPipeline | None = None
    start: SeriesStart | None = None
    ends: list[SeriesEnd] = field(default_factory=list)
    # One byte per frame number (not a set: ~70 bytes each), so memory stays flat in long series;
    # frame numbers are below the armed count (checked before), which bounds it.
    accepted: np.ndarray = field(default_factory=lambda: np.zeros(1024, dtype=bool))
    accepted_count: int = 0
    rejection: str = ""  # why the last message of this series was rejected
    last_message: float = 0.0  # clock time of the last message taken off the queue

    def accept(self, frame_number: int) -> bool:
        """Mark a frame as taken; False if it already was (a duplicate)."""
        if frame_number >= self.accepted.size:
            grown = np.zeros(min(max(frame_number + 1, 2 * self.accepted.size), self.request.frame_count), dtype=bool)
            grown[: self.accepted.size] = self.accepted
            self.accepted = grown
        if self.accepted[frame_number]:
            return False
        self.accepted[frame_number] = True
        self.accepted_count += 1
        return True

    def close_directory(self) -> None:
        if self.directory is not None:
            self.directory.close()
            self.directory = None

    def missing_below(self, count: int) -> np.ndarray:
        """Frame numbers under ``count`` that never came (at most the armed count: bounded)."""
        count = min(count, self.request.frame_count)
        taken = np.zeros(count, dtype=bool)
        known = min(count, self.accepted.size)
        taken[:known] = self.accepted[:known]
        return np.flatnonzero(~taken)


def frame_ranges(numbers: np.ndarray, shown: int = 10) -> str:
    """Sorted frame numbers as ranges ('3-7, 12'), the first ``shown`` of them, for a status line."""
    if numbers.size == 0:
        return ""
    breaks = np.flatnonzero(np.diff(numbers) != 1)
    firsts = np.concatenate(([numbers[0]], numbers[breaks + 1]))
    lasts = np.concatenate((numbers[breaks], [numbers[-1]]))
    text = ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in zip(firsts[:shown], lasts[:shown], strict=True))
    return text + (f" and {firsts.size - shown} more range(s)" if firsts.size > shown else "")


def _frame_disagreement(message, reference: SeriesStart) -> str:
    """How a frame (or another input's series_start) differs from the series' frames, or ''."""
    for field_name in ("shape", "dtype", "encoding"):
        theirs, ours = getattr(message, field_name), getattr(reference, field_name)
        if None not in (theirs, ours) and theirs != ours:
            return f"{field_name} {theirs}, but the series has {field_name} {ours}"
    return ""


def _total(counts) -> int:
    """Sum of per-input counts; UNKNOWN if any input did not say."""
    counts = list(counts)
    return UNKNOWN if any(c == UNKNOWN for c in counts) else sum(counts)


_REJECTED = "rejected"  # queue item tag: a message the receiver could not decode


class Recorder:
    """Records one series at a time from one or several stream inputs into a NeXus file."""

    def __init__(
        self,
        data_root: str | Path,
        file_template: str = DEFAULT_FILE_TEMPLATE,
        listener: RecorderListener | None = None,
        receiver_factory: Callable[[Sequence[str]], Receiver] = StreamReceiver,
        counter_interval: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
        durable: bool = True,
        queue_frames: int = DEFAULT_QUEUE_FRAMES,
        queue_megabytes: int = DEFAULT_QUEUE_MEGABYTES,
        wall_clock: Callable[[], float] = time.time,
        sinks: Sequence[FrameSink] = (),
        journal_name: str = "recorder",
        frames_per_file: int = 0,
        compression: str = "none",
        compression_workers: int = 0,
        max_frames: int = DEFAULT_MAX_FRAMES,
        end_timeout: float = DEFAULT_END_TIMEOUT,
    ):
        if queue_frames < 1:
            raise ConfigurationError(f"the queue must hold at least one frame, got {queue_frames}")
        if queue_megabytes < 1:
            raise ConfigurationError(f"the queue must hold at least 1 MB, got {queue_megabytes} MB")
        self._root = DataRoot(data_root)  # refuses a root reached through a symbolic link
        self.data_root = self._root.path
        self.file_template = validate_template(file_template)
        self.listener = listener or RecorderListener()
        self.durable = durable  # fsync each file at close: "written" means on disk
        self.queue_frames = queue_frames
        self.queue_megabytes = queue_megabytes
        self.frames_per_file = self._checked_frames_per_file(frames_per_file)
        if isinstance(max_frames, bool) or not isinstance(max_frames, int) or max_frames < 1:
            raise ConfigurationError(f"the largest series must be at least 1 frame, got {max_frames!r}")
        if not end_timeout > 0:
            raise ConfigurationError(f"the series-end timeout must be a positive number of seconds, got {end_timeout}")
        self.max_frames = max_frames
        self.end_timeout = end_timeout
        if compression not in COMPRESSIONS:
            raise ConfigurationError(f"compression must be one of {', '.join(COMPRESSIONS)}, got {compression!r}")
        self.compression = compression  # applied to frames that arrive raw
        self.compression_workers = compression_workers
        self.sinks = list(sinks)
        self._receiver_factory = receiver_factory
        self._clock = clock
        self._wall_clock = wall_clock
        self._counter_throttle = Throttle(counter_interval, clock)
        self._flush_throttle = Throttle(FLUSH_INTERVAL, clock)
        self._lock = threading.RLock()
        self._stop = threading.Event()  # ends receiving; the writer drains what was received
        self._abort = threading.Event()  # the writer drops what is still queued
        self._stop_reason = "stopped"
        self._threads: list[threading.Thread] = []
        self._receiver: Receiver | None = None
        self._queue = self._new_queue()
        self._series: _Series | None = None
        self._rate_mark = (clock(), 0)
        self.counters = RecorderCounters()
        self.state = states.ON
        self.status = "Idle: waiting to be armed."
        self.current_file = ""
        self.last_file = ""
        self.stream_endpoint = ""
        # Names the file being written, so a Recorder restarted after a crash can repair it.
        self._journal_name = f".photonflow-open-{journal_name}.json"
        self._journal = self.data_root / self._journal_name
        self.recovered = self._recover_interrupted()
        self._handlers = {
            SeriesStart: self._on_series_start,
            DataMessage: self._on_data,
            SeriesEnd: self._on_series_end,
        }

    def _recover_interrupted(self) -> str:
        """Repair the file an earlier run left open (killed mid-series, or failed on a full
        disk); returns its path or ''. Only a file this Recorder opened, under its data root and
        still marked running, is ever touched: a journal naming anything else is set aside."""
        try:
            fd = os.open(self._journal_name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self._root.fd)
        except FileNotFoundError:
            return ""
        except OSError as error:
            return self._refuse_journal(f"it cannot be read ({error.strerror})")
        try:
            with os.fdopen(fd) as journal:
                entry = json.loads(journal.read(65536))
            path = self.data_root / entry["file"]
            token, end_reason = str(entry["token"]), entry.get("end_reason", "interrupted")
        except (OSError, ValueError, KeyError, TypeError, RecursionError) as error:
            return self._refuse_journal(f"it is not a photonflow journal ({error})")
        refusal = writer_refusal(self._root, path, token)
        if refusal:
            return self._refuse_journal(refusal)
        try:
            frames = finalise_interrupted(path, end_reason)
        except (OSError, ValueError, KeyError) as error:
            log.error("could not repair %s named in %s: %s", path, self._journal, error)
            self.status = f"Idle. The interrupted file {path} could not be repaired ({error}); see {self._journal}."
            return ""
        self._close_journal()
        self._report_repaired(path)
        self.status = (
            f"Idle. Repaired {path} left open by an {end_reason} series: {frames} frames kept, "
            f"{self.counters.missing_frames} missing."
        )
        log.warning(self.status)
        return str(path)

    def _refuse_journal(self, why: str) -> str:
        """Set a journal aside (renamed, never followed) and say why nothing was repaired."""
        aside = f"{self._journal_name}.refused-{int(self._wall_clock())}"
        try:
            os.rename(self._journal_name, aside, src_dir_fd=self._root.fd, dst_dir_fd=self._root.fd)
        except OSError:
            pass
        self.status = f"Idle. Nothing repaired: the crash journal {self._journal} was set aside as {aside}: {why}."
        log.error(self.status)
        return ""

    def _report_repaired(self, path: Path) -> None:
        """The repaired file's own accounting becomes the Recorder's counters and LastFile, so the
        Controller's final report matches the file."""
        counts = read_accounting(path)
        self.counters = RecorderCounters(
            frames_received=counts["frames_received"], frames_written=counts["frames_written"],
            missing_frames=counts["missing_frames"], duplicate_frames=max(counts["duplicate_frames"], 0),
            messages_rejected=max(counts["messages_rejected"], 0), frames_lost=max(counts["frames_lost"], 0),
        )
        self.last_file = str(path)

    def _open_journal(self, series: _Series) -> None:
        self._write_journal({"file": str(series.path.relative_to(self.data_root)), "token": series.token})

    def _write_journal(self, entry: dict) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(self._journal_name, flags, 0o644, dir_fd=self._root.fd)
        with os.fdopen(fd, "w") as journal:
            journal.write(json.dumps(entry))

    def _close_journal(self) -> None:
        try:
            os.unlink(self._journal_name, dir_fd=self._root.fd)
        except FileNotFoundError:
            pass

    @staticmethod
    def _checked_frames_per_file(value: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigurationError(f"frames per file must be an integer >= 0 (0: one file), got {value!r}")
        return value

    def set_frames_per_file(self, value: int) -> None:
        """Split the next series into data files of this many frames under a master file (0: don't)."""
        self.frames_per_file = self._checked_frames_per_file(value)

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
        self.counters.queue_depth = self._queue.qsize()
        self.counters.queue_megabytes = self._queue.bytes_queued / 1e6
        self.listener.counters_changed(self.counters)

    @property
    def current_request(self) -> RecordingRequest | None:
        """What the current (or last) series was armed with; None before the first Arm."""
        series = self._series
        return series.request if series is not None else None

    # -- commands ---------------------------------------------------------------------------
    def arm(self, request: RecordingRequest) -> Path:
        """Get ready for a series: check the file, connect to the inputs; ON/ALARM/FAULT -> RUNNING."""
        with self._lock:
            if self.state == states.RUNNING and self._abort.is_set():
                self.wait(5)  # an Abort under way (e.g. a Start that failed): it ends within moments
            if self.state == states.RUNNING:
                raise StateError("the Recorder is already recording; Stop or Abort it first")
            frame_count = request.frame_count
            if isinstance(frame_count, bool) or not isinstance(frame_count, int) or frame_count < 1:
                raise ConfigurationError(f"frame count must be an integer >= 1, got {request.frame_count!r}")
            if frame_count > self.max_frames:
                raise ConfigurationError(
                    f"{frame_count} frames is more than this Recorder takes in one series: at most "
                    f"{self.max_frames} (property MaxFramesPerSeries); split the acquisition into several series"
                )
            if self.frames_per_file and -(-frame_count // self.frames_per_file) > MAX_DATA_FILES:
                raise ConfigurationError(
                    f"{frame_count} frames at FramesPerFile {self.frames_per_file} would make "
                    f"{-(-frame_count // self.frames_per_file)} data files; at most {MAX_DATA_FILES}: "
                    f"set FramesPerFile to at least {-(-frame_count // MAX_DATA_FILES)}"
                )
            if not request.endpoints or not all(request.endpoints):
                raise ConfigurationError("no stream endpoint to record from; set StreamEndpoint")
            decoder = decoder_for(request.protocol)
            path = self.resolve_file(request.file, request.series_id)
            try:
                directory = self._root.open_directory(path.parent)
            except OSError as error:
                raise RecordingError(
                    f"cannot create the directory {path.parent}: {error.strerror or error}"
                ) from None
            try:
                if not directory.writable():  # refuse now, not FAULT at the first frame
                    raise RecordingError(f"cannot write into the directory {path.parent}: Permission denied")
                self._end_previous_threads()
                try:
                    receiver = self._receiver_factory(request.endpoints)
                except Exception as error:  # ZeroMQ refuses the address: say which, not a Python error
                    raise ConfigurationError(
                        f"cannot connect to the stream {', '.join(request.endpoints)}: {error}",
                        reason="InvalidEndpoint",
                    ) from None
            except BaseException:
                directory.close()
                raise
            self._receiver = receiver
            self._series = _Series(request=request, path=path, directory=directory)
            self._queue = self._new_queue()
            self.counters = RecorderCounters()
            self._rate_mark = (self._clock(), 0)
            self.current_file = str(path)
            self.stream_endpoint = ",".join(request.endpoints)
            self._stop.clear()
            self._abort.clear()
            self._stop_reason = "stopped"
            self._set_state(
                states.RUNNING,
                f"Armed for series {request.series_id} ({request.frame_count} frames) "
                f"from {self.stream_endpoint} ({request.protocol}) into {path}.",
            )
            self._notify_counters(force=True)
            self._threads = [
                threading.Thread(
                    target=self._receive_loop, args=(receiver, decoder), name="recorder-receive", daemon=True
                ),
                threading.Thread(target=self._write_loop, name="recorder-write", daemon=True),
            ]
            for thread in self._threads:
                thread.start()
            return path

    def _new_queue(self) -> FrameQueue:
        return FrameQueue(self.queue_frames, self.queue_megabytes * 1_000_000)

    def _end_previous_threads(self) -> None:
        """A receiver of the last series may still be within its poll: let it go first, or it
        would stay connected, take frames of the new series and put them in the new queue."""
        self._stop_receiving()
        for thread in self._threads:
            thread.join(5)
        if any(thread.is_alive() for thread in self._threads):
            raise StateError("the previous series' threads did not end; try again, or Init the Recorder")

    def stop(self, reason: str = "stopped") -> None:
        """Stop receiving; what was received is written and the file closed (within ~0.1 s)."""
        with self._lock:
            if not self._stop.is_set():
                self._stop_reason = reason
                self._stop_receiving()

    def _stop_receiving(self) -> None:
        """Let the receiving thread go now, not at the end of its current wait."""
        self._stop.set()
        if self._receiver is not None:
            self._receiver.wake()

    def abort(self) -> None:
        """Stop at once: frames still queued are dropped and counted as lost."""
        with self._lock:
            self._abort.set()
        self.stop("aborted")

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the series' threads to end; True if they have."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in self._threads)

    # -- receiving --------------------------------------------------------------------------
    def _receive_loop(self, receiver: Receiver, decoder) -> None:
        """Decode messages and queue them; waits (back-pressure) while the queue is full."""
        try:
            while not self._stop.is_set():
                parts = receiver.receive(100)
                if parts is None:
                    continue
                nbytes = sum(len(part) for part in parts)
                try:
                    item = (decoder(parts), self._wall_clock())
                except StreamMessageError as error:
                    item = (_REJECTED, str(error))
                while not self._stop.is_set():
                    try:
                        self._queue.put(item, nbytes, timeout=0.1)
                        break
                    except QueueFull:
                        continue
        finally:
            receiver.close()

    # -- writing ----------------------------------------------------------------------------
    def _write_loop(self) -> None:
        series = self._series
        try:
            while True:
                try:
                    message, detail = self._queue.get(timeout=0.1)
                except QueueEmpty:
                    if self._stop.is_set() and not self._receiving():
                        break
                    if self._all_in_but_no_end(series):
                        self._stop_receiving()
                        self._finish(series, COMPLETED_WITHOUT_END, None)
                        return
                    self._flush_if_due(series)  # a pause in the stream: show readers where we are
                    continue
                series.last_message = self._clock()
                if self._abort.is_set():
                    self._count_lost(message)
                    continue
                if message == _REJECTED:
                    self._reject(detail)
                elif self._handlers[type(message)](message, detail):
                    return
                self._flush_if_due(series)
            self._drain_lost()
            self._finish(series, self._stop_reason, None)
        except OSError as error:
            self._fail(series, f"cannot write {series.path}: {os_error_cause(error)}")
        except Exception as error:
            log.exception("recording failed")
            self._fail(series, f"recording into {series.path} failed: {error}")

    def _all_in_but_no_end(self, series: _Series) -> bool:
        """Every armed frame arrived, then nothing for ``end_timeout`` s: the end was cut off."""
        return (
            series.accepted_count >= series.request.frame_count
            and self._clock() - series.last_message >= self.end_timeout
        )

    def _flush_if_due(self, series: _Series) -> None:
        if series.writer is not None and self._flush_throttle.ready():
            series.writer.flush(self._live_counts())
            self._tell_sinks("frames_flushed", optional=True)  # what a file reader can see now


    def _tell_sinks(self, event: str, *args, optional: bool = False) -> None:
        """Sinks are extras (live view, fan-out): their failure never costs a frame on disk.
        An ``optional`` event goes only to the sinks that have a method for it."""
        for sink in self.sinks:
            if optional and not hasattr(sink, event):
                continue
            try:
                getattr(sink, event)(*args)
            except Exception:
                log.exception("%s failed in %s", event, type(sink).__name__)

    def _receiving(self) -> bool:
        return any(t.is_alive() for t in self._threads if t.name == "recorder-receive")

    def _count_lost(self, message) -> None:
        """A frame that reached the Recorder but will never be written: received, and lost."""
        if isinstance(message, DataMessage):
            self.counters.frames_received += 1
            self.counters.frames_lost += 1

    def _drain_lost(self) -> None:
        while True:
            try:
                message, _ = self._queue.get()
            except QueueEmpty:
                return
            self._count_lost(message)

    def _live_counts(self) -> dict[str, int]:
        c = self.counters
        return {
            "frames_received": c.frames_received,
            "frames_written": c.frames_written,
            "duplicate_frames": c.duplicate_frames,
            "messages_rejected": c.messages_rejected,
            "frames_lost": c.frames_lost,
        }

    def _reject(self, reason: str) -> None:
        self.counters.messages_rejected += 1
        self._series.rejection = reason
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
        if not UNKNOWN <= message.series_id <= MAX_SERIES_ID:
            self._reject(f"series id {message.series_id} is beyond {MAX_SERIES_ID}")
            return False
        expected = self._series.request.series_id
        if self._series.request.protocol in DETECTOR_NUMBERED_PROTOCOLS:
            if self._series.start is None:
                return True  # whatever id the detector gave the series it now starts
            expected = self._series.start.series_id
        if message.series_id not in (expected, UNKNOWN):  # some protocols carry no series id
            self._reject(f"message of series {message.series_id}, but armed for series {expected}")
            return False
        return True

    def _on_series_start(self, message: SeriesStart, _received: float) -> bool:
        series = self._series
        if not self._check_series(message):
            return False
        if series.start is not None:
            # Every input announces the series; they must agree on what a frame is.
            disagreement = _frame_disagreement(message, series.start)
            if disagreement:
                self._reject(f"series_start of another input announces {disagreement}")
            return False
        series.start = message
        if None not in (message.shape, message.dtype, message.encoding):
            self._open_writer(series, message)
        # else: this protocol describes frames only in the frames; the first one opens the file
        return False

    def _open_writer(self, series: _Series, start: SeriesStart) -> None:
        series.start = start
        # The file holds what was armed: the series id when the protocol carries none, and the
        # armed frame count (the detector's own count is kept as frames_announced).
        stored = replace(
            start,
            series_id=series.request.series_id if start.series_id == UNKNOWN else start.series_id,
            frame_count=series.request.frame_count,
        )
        if self.compression == "bslz4" and start.encoding == "raw":
            stored = replace(stored, encoding="bslz4")
            series.compressor = CompressionPipeline(
                lambda message, received, chunk: self._store(series, message, received, chunk),
                self.compression_workers,
            )
        series.writer = NexusFrameWriter(
            series.path, stored, self.frames_per_file, writeback=self.durable,
            directory=series.directory, writer_token=series.token,
        )
        series.path = series.writer.path  # where the file really is, which LastFile names
        # A detector's pixel mask or flatfield is in the file now: not kept in memory all series long.
        series.start = replace(start, detector={
            key: value for key, value in start.detector.items() if not isinstance(value, np.ndarray)
        })
        self.current_file = str(series.path)
        self._open_journal(series)
        self._tell_sinks("series_started", start)
        self._set_state(states.RUNNING, self._recording_status())

    def _on_data(self, message: DataMessage, received: float) -> bool:
        series = self._series
        if not self._check_series(message):
            return False
        if series.start is None:
            self._reject(f"frame {message.frame_number} arrived before series_start")
            return False
        disagreement = _frame_disagreement(message, series.start)
        if disagreement:
            self._reject(f"frame {message.frame_number} is {disagreement}")
            return False
        if series.writer is None:
            self._open_writer(series, replace(
                series.start,
                shape=series.start.shape or message.shape,
                dtype=series.start.dtype or message.dtype,
                encoding=series.start.encoding or message.encoding,
            ))
        start = series.start
        if message.frame_number >= series.request.frame_count:
            self._reject(
                f"frame number {message.frame_number} is beyond the {series.request.frame_count} frames armed"
            )
            return False
        if 0 < start.frame_count <= message.frame_number:
            self._reject(
                f"frame number {message.frame_number} is beyond the {start.frame_count} frames "
                "series_start announced"
            )
            return False
        if message.metadata and not message.metadata.keys() <= set(start.frame_metadata):
            unannounced = ", ".join(sorted(message.metadata.keys() - set(start.frame_metadata)))
            self._reject(f"frame {message.frame_number} carries metadata {unannounced} that series_start "
                         "did not announce in frame_metadata")
            return False
        self.counters.frames_received += 1
        if not series.accept(message.frame_number):
            self.counters.duplicate_frames += 1
            return False
        if series.compressor is not None:
            series.compressor.submit(message, received)
        else:
            self._store(series, message, received, message.payload)
        return False

    def _store(self, series: _Series, message: DataMessage, received: float, payload) -> None:
        series.writer.write_frame(message.frame_number, payload, message.timestamp, received, message.metadata)
        self.counters.frames_written += 1
        self._tell_sinks("frame_written", message)
        self._notify_counters()

    def _on_series_end(self, message: SeriesEnd, _received: float) -> bool:
        series = self._series
        if not self._check_series(message):
            return False
        series.ends.append(message)
        if len(series.ends) < len(series.request.endpoints):
            return False  # other inputs still sending
        self._stop_receiving()  # the series is complete: the receiver can go, before anyone re-arms
        reasons = {end.end_reason for end in series.ends}
        end_reason = next((r for r in ("failed", "aborted", "stopped") if r in reasons), "completed")
        self._finish(series, end_reason, series.ends)
        return True

    def _finish(self, series: _Series, end_reason: str, ends: list[SeriesEnd] | None) -> None:
        """Close the file with the final accounting and return to ON (or ALARM if frames are missing)."""
        if series.compressor is not None:
            series.compressor.drain()
            series.compressor.close()
        missing = np.zeros(0, dtype=np.int64)
        frames_sent = frames_acquired = -1
        armed = series.request.frame_count
        if series.writer is None:
            missing = series.missing_below(armed)  # no file: every armed frame is lost
        elif ends:
            frames_sent = _total(end.frames_sent for end in ends)
            frames_acquired = _total(end.frames_acquired for end in ends)
            announced = series.start.frame_count if series.start is not None else 0
            # What was armed is what was asked for; a sender's own count only ever lowers it.
            expected = armed if frames_sent == UNKNOWN else min(frames_sent, armed)
            if 0 < announced < expected:
                expected = announced
            missing = series.missing_below(expected)
        else:
            # Ended by the operator: frames below the highest written one never came.
            missing = series.missing_below(series.writer.highest_frame + 1)
        self.counters.missing_frames = len(missing)
        counts = {
            **self._live_counts(),
            "frames_requested": series.request.frame_count,
            "frames_acquired": frames_acquired,
            "frames_sent": frames_sent,
            "frames_announced": series.start.frame_count if series.start and series.start.frame_count else -1,
            "missing_frames": len(missing),
        }
        if series.writer is not None:
            series.writer.close(utc_now_iso(), end_reason, counts, missing, durable=self.durable)
            self._close_journal()
        series.close_directory()
        self._tell_sinks("series_ended", ends[-1] if ends else None, end_reason)
        self.last_file = str(series.path) if series.writer is not None else ""
        self.current_file = ""
        self._notify_counters(force=True)
        if series.writer is not None:
            written_to = str(series.path)
        elif series.rejection:
            written_to = f"no file: the series was never started, last rejection: {series.rejection}"
        else:
            written_to = "no file: series_start never came"
        summary = (
            f"Series {series.request.series_id} {end_reason}: {self.counters.frames_written} frames written to "
            f"{written_to}"
        )
        if self.counters.frames_lost:
            summary += f"; {self.counters.frames_lost} received frame(s) dropped unwritten"
        if self.counters.messages_rejected and series.writer is not None:
            summary += f"; {self.counters.messages_rejected} message(s) rejected, last: {series.rejection}"
        if missing.size:
            self._set_state(states.ALARM, f"{summary}; {missing.size} frame(s) missing: {frame_ranges(missing)}")
        else:
            self._set_state(states.ON, summary + ".")

    def _fail(self, series: _Series, reason: str) -> None:
        """After a write error: every frame received but not written is counted lost, and the file
        is closed as ``failed`` with the frames it holds (or, if the disk refuses even that, left
        for the next start's repair, which marks it failed)."""
        self._stop_receiving()
        self._drain_lost()
        if series.compressor is not None:
            series.compressor.discard()
            series.compressor.close()
        c = self.counters
        c.frames_lost = c.frames_received - c.duplicate_frames - c.frames_written  # queued, in flight, compressing
        if series.writer is not None:
            try:
                if not series.writer.abandon():
                    raise RecordingError("HDF5 could not close it")
                kept = finalise_interrupted(series.path, "failed")
                c.frames_lost += c.frames_written - kept  # written after the file's last bookkeeping
                c.frames_written = kept
                self._close_journal()
                self.last_file = str(series.path)
            except (OSError, ValueError, KeyError, RecordingError) as error:
                log.error("could not close the failed file %s: %s", series.path, error)
                try:
                    self._write_journal({
                        "file": str(series.path.relative_to(self.data_root)), "token": series.token,
                        "end_reason": "failed",
                    })
                except OSError:
                    pass  # the journal of the open file stays: the next start repairs it as interrupted
        series.close_directory()
        if series.writer is not None:  # the sinks were told it started: tell them it ended
            self._tell_sinks("series_ended", None, "failed")
        self.current_file = ""
        self._notify_counters(force=True)
        lost = f"; {self.counters.frames_lost} received frame(s) lost" if self.counters.frames_lost else ""
        self._set_state(states.FAULT, reason + lost)
