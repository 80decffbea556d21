"""The Recorder's logic: stream in, HDF5/NeXus file out, every frame accounted for.

``arm`` validates the file path and connects to the stream inputs. Two threads do the work:
the receiver takes messages off the sockets and decodes them; a bounded queue carries them
to the writer, which dispatches each through a handler table (series_start opens the file,
data writes a chunk, series_end closes it with the final counts). When the writer falls
behind, the queue fills and the receiver waits, so the back-pressure reaches the sender
through ZeroMQ instead of frames being dropped. Malformed messages are rejected, counted and
reported, never fatal; a disk error puts the Recorder in FAULT naming the path and cause, and
the frames still queued are counted as lost.

The pieces: ``RecorderConfig`` (settings), ``StreamIntake`` (the receiving thread), ``Series``
(what was armed, what came, what is missing), ``SeriesFile`` (the files), ``CrashJournal``
(repairing what a crash left open), ``CounterReport`` (counters to the listener).
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from photonflow import states
from photonflow.core import CoreListener
from photonflow.errors import ConfigurationError, StateError
from photonflow.recording.config import RecorderConfig
from photonflow.recording.counters import CounterReport, RecorderCounters
from photonflow.recording.frame_queue import FrameQueue, QueueEmpty
from photonflow.recording.intake import REJECTED, Receiver, StreamIntake
from photonflow.recording.nexus_writer import NexusFrameWriter
from photonflow.recording.paths import DataRoot, render_template, resolve_data_file
from photonflow.recording.recovery import CrashJournal
from photonflow.recording.request import RecordingRequest
from photonflow.recording.series import Series, described_by, frame_disagreement
from photonflow.recording.series_file import SeriesFile
from photonflow.recording.sinks import FrameSink
from photonflow.stream.protocols import decoder_for
from photonflow.stream.stins import DataMessage, SeriesEnd, SeriesStart, utc_now_iso
from photonflow.stream.transport import StreamReceiver
from photonflow.throttle import Throttle

log = logging.getLogger(__name__)

FLUSH_INTERVAL = 0.2  # seconds between making progress visible to SWMR readers
PAUSE = 0.02  # s without a message: the stream pauses (what was written is flushed at once)
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


def _setting(name: str) -> property:
    """A setting the device shows as an attribute, read from the (replaceable) configuration."""
    return property(lambda recorder: getattr(recorder.config, name), doc=f"The configuration's {name}.")


class Recorder:
    """Records one series at a time from one or several stream inputs into a NeXus file."""

    file_template = _setting("file_template")
    frames_per_file = _setting("frames_per_file")
    queue_frames = _setting("queue_frames")
    queue_megabytes = _setting("queue_megabytes")
    durable = _setting("durable")

    def __init__(
        self,
        config: RecorderConfig | str | Path,  # a data root alone: every other setting at its default
        listener: CoreListener | None = None,
        *,
        sinks: Sequence[FrameSink] = (),
        receiver_factory: Callable[[Sequence[str]], Receiver] = StreamReceiver,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ):
        self.config = config if isinstance(config, RecorderConfig) else RecorderConfig(config)
        self._root = DataRoot(self.config.data_root)  # refuses a root reached through a symbolic link
        self.data_root = self._root.path
        self.listener = listener or CoreListener()
        self.sinks = list(sinks)
        self._frame_sinks = [(sink, sink.frame_written) for sink in self.sinks]  # called per frame: looked up once
        self._receiver_factory = receiver_factory
        self._clock = clock
        self._wall_clock = wall_clock
        self._report = CounterReport(self.listener, self.config.counter_interval, clock)
        self._flush_throttle = Throttle(FLUSH_INTERVAL, clock)
        self._lock = threading.RLock()
        self._abort = threading.Event()  # the writer drops what is still queued
        self._stop_reason = "stopped"
        self._threads: list[threading.Thread] = []
        self._intake: StreamIntake | None = None  # stopped: the writer drains what was received
        self._queue = self._new_queue()
        self._in_hand: Iterator = iter(())  # the rest of the batch the writer took from the queue
        self._series: Series | None = None
        self.counters = RecorderCounters()
        self.state = states.ON
        self.current_file = ""
        self.last_file = ""
        self.stream_endpoint = ""
        self._journal = CrashJournal(self._root, self.config.journal_name, wall_clock)
        repair = self._journal.repair_interrupted()
        self.status = repair.status or "Idle: waiting to be armed."
        self.recovered = repair.file
        if repair.file:  # its own accounting is the counters, so the Controller's report matches the file
            self.counters = RecorderCounters.from_accounting(repair.accounting)
            self.last_file = repair.file
        self._handlers: dict[type, Callable[[Series, Any, float], bool]] = {
            SeriesStart: self._on_series_start,
            DataMessage: self._on_data,
            SeriesEnd: self._on_series_end,
        }

    def set_frames_per_file(self, value: int) -> None:
        """Split the next series into data files of this many frames under a master file (0: don't)."""
        self.config = replace(self.config, frames_per_file=value)

    def set_file_template(self, template: str) -> None:
        self.config = replace(self.config, file_template=template)

    def resolve_file(self, requested: str | None, series_id: int = 0) -> Path:
        """The file a series would be written to; refuses paths outside the root or existing."""
        if requested is None:
            requested = render_template(self.config.file_template, series_id, datetime.now())
        return resolve_data_file(self.data_root, requested)

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
            self.config.check_series_size(request.frame_count)
            if not request.endpoints or not all(request.endpoints):
                raise ConfigurationError("no stream endpoint to record from; set StreamEndpoint")
            decoder = decoder_for(request.protocol)
            file = SeriesFile.prepare(self._root, self.resolve_file(request.file, request.series_id), self._journal)
            try:
                self._end_previous_threads()
                try:
                    receiver = self._receiver_factory(request.endpoints)
                except Exception as error:  # noqa: BLE001 - ZeroMQ refuses the address: say which, not a Python error
                    raise ConfigurationError(
                        f"cannot connect to the stream {', '.join(request.endpoints)}: {error}",
                        reason="InvalidEndpoint",
                    ) from None
            except BaseException:
                file.release_directory()
                raise
            self._series = Series(request, file)
            self._queue = self._new_queue()
            self._in_hand = iter(())
            self._intake = StreamIntake(receiver, decoder, self._queue, self._wall_clock)
            self.counters = RecorderCounters()
            self._report.restart()
            self.current_file = str(file.path)
            self.stream_endpoint = ",".join(request.endpoints)
            self._abort.clear()
            self._stop_reason = "stopped"
            self._set_state(
                states.RUNNING,
                f"Armed for series {request.series_id} ({request.frame_count} frames) "
                f"from {self.stream_endpoint} ({request.protocol}) into {file.path}.",
            )
            self._notify_counters()
            self._threads = [
                self._intake.thread, threading.Thread(target=self._write_loop, name="recorder-write", daemon=True),
            ]
            for thread in self._threads:
                thread.start()
            return file.path

    def stop(self, reason: str = "stopped") -> None:
        """Stop receiving; what was received is written and the file closed (within ~0.1 s)."""
        with self._lock:
            if self._intake is not None and not self._intake.stopped:
                self._stop_reason = reason
                self._intake.stop()

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

    # -- writing ----------------------------------------------------------------------------
    def _write_loop(self) -> None:
        series, intake = self._series, self._intake
        if series is None or intake is None:  # arm sets both before it starts this thread
            raise StateError("the Recorder's writer started before it was armed")
        handlers, abort = self._handlers, self._abort
        try:
            while True:
                try:
                    batch = self._queue.get_many(timeout=PAUSE)
                except QueueEmpty:
                    if intake.stopped and not intake.thread.is_alive():
                        break
                    if self._all_in_but_no_end(series):
                        intake.stop()
                        self._finish(series, COMPLETED_WITHOUT_END, None)
                        return
                    self._flush_if_due(series, pause=True)  # a pause in the stream: show readers where we are
                    continue
                series.last_message = self._clock()
                # What a batch costs once (the clock, the flush, the counters) is not paid per frame.
                self._in_hand = in_hand = iter(batch)
                for message, detail in in_hand:
                    if abort.is_set():
                        self._count_lost(message)
                    elif message is REJECTED:
                        self._reject(series, detail)
                    elif handlers[type(message)](series, message, detail):
                        return
                self._flush_if_due(series)
                if self._report.due():
                    self._notify_counters()
            self._drain_lost()
            self._finish(series, self._stop_reason, None)
        except OSError as error:
            self._fail(series, f"cannot write {series.file.path}: {os_error_cause(error)}")
        except Exception as error:
            log.exception("recording failed")
            self._fail(series, f"recording into {series.file.path} failed: {error}")

    def _on_series_start(self, series: Series, message: SeriesStart, _received: float) -> bool:
        refusal = series.id_refusal(message)
        if refusal:
            self._reject(series, refusal)
        elif series.start is not None:
            # Every input announces the series; they must agree on what a frame is.
            disagreement = frame_disagreement(message, series.start)
            if disagreement:
                self._reject(series, f"series_start of another input announces {disagreement}")
        else:
            series.start = message
            if None not in (message.shape, message.dtype, message.encoding):
                self._open_file(series, message)
            # else: this protocol describes frames only in the frames; the first one opens the file
        return False

    def _open_file(self, series: Series, start: SeriesStart) -> NexusFrameWriter:
        writer = series.file.open(start, series.request, self.config,
                                  lambda message, received, chunk: self._store(writer, message, received, chunk))
        # A detector's pixel mask or flatfield (an array, or lists from a JSON stream) is in the file
        # now: not kept in memory all series long.
        series.start = replace(start, detector={
            key: value for key, value in start.detector.items() if not isinstance(value, np.ndarray | list)
        })
        self.current_file = str(series.file.path)
        # the sinks (a fan-out's consumers among them) learn where the series is written
        self._tell_sinks("series_started", replace(start, file=self.current_file))
        self._set_state(states.RUNNING, self._recording_status(series))
        return writer

    def _on_data(self, series: Series, message: DataMessage, received: float) -> bool:
        """Check a frame against the series, then store it (or count it a duplicate). Per frame:
        keep this path free of any work the checks and the write do not need."""
        writer = series.file.writer
        if writer is not None and series.fits(message):  # the usual frame: every check in one test
            self._take(series, writer, message, received)
            return False
        refusal = series.id_refusal(message)
        start = series.start
        if refusal or start is None:
            self._reject(series, refusal or f"frame {message.frame_number} arrived before series_start")
            return False
        disagreement = frame_disagreement(message, start)
        if disagreement:
            self._reject(series, f"frame {message.frame_number} is {disagreement}")
            return False
        writer = series.file.writer
        if writer is None:  # a protocol that describes frames only in the frames
            writer = self._open_file(series, described_by(start, message))
        refusal = series.numbering_refusal(message, start)
        if refusal:
            self._reject(series, refusal)
            return False
        self._take(series, writer, message, received)
        return False

    def _take(self, series: Series, writer: NexusFrameWriter, message: DataMessage, received: float) -> None:
        """A frame of the series, checked: received; stored (through the compressor, if any)
        unless it already was."""
        self.counters.frames_received += 1
        compressor = series.file.compressor
        if not series.accept(message.frame_number):
            self.counters.duplicate_frames += 1
        elif compressor is not None:
            compressor.submit(message, received)
        else:
            self._store(writer, message, received, message.payload)

    def _store(self, writer: NexusFrameWriter, message: DataMessage, received: float, payload) -> None:
        writer.write_frame(message.frame_number, payload, message.timestamp, received, message.metadata)
        self.counters.frames_written += 1
        for sink, frame_written in self._frame_sinks:
            try:
                frame_written(message)
            except Exception:
                log.exception("frame_written failed in %s", type(sink).__name__)

    def _on_series_end(self, series: Series, message: SeriesEnd, _received: float) -> bool:
        refusal = series.id_refusal(message)
        if refusal:
            self._reject(series, refusal)
            return False
        series.ends.append(message)
        if len(series.ends) < len(series.request.endpoints):
            return False  # other inputs still sending
        self._stop_intake()  # the series is complete: the receiver can go, before anyone re-arms
        reasons = {end.end_reason for end in series.ends}
        end_reason = next((r for r in ("failed", "aborted", "stopped") if r in reasons), "completed")
        self._finish(series, end_reason, series.ends)
        return True

    def _finish(self, series: Series, end_reason: str, ends: list[SeriesEnd] | None) -> None:
        """Close the file with the final accounting and return to ON (or ALARM if frames are missing)."""
        self._queue.written()  # the writer takes nothing more: what it held is not waiting any longer
        file = series.file
        file.drain()
        missing, final_counts = series.final_accounting(ends, file.writer.highest_frame if file.writer else None)
        self.counters.missing_frames = len(missing)
        file.close(utc_now_iso(), end_reason, {**self.counters.accounting(), **final_counts}, missing,
                   durable=self.config.durable)
        self.counters.frames_flushed = self.counters.frames_written
        self._tell_sinks("series_ended", ends[-1] if ends else None, end_reason)
        self.last_file = str(file.path) if file.writer is not None else ""
        self.current_file = ""
        self._notify_counters()
        self._set_state(*series.end_report(end_reason, self.counters, missing))

    def _fail(self, series: Series, reason: str) -> None:
        """After a write error: every frame received but not written is counted lost, and the file
        is closed as ``failed`` with the frames it holds (or, if the disk refuses even that, left
        for the next start's repair, which marks it failed)."""
        self._stop_intake()
        self._drain_lost()
        kept = series.file.close_failed()
        c = self.counters
        c.frames_lost = c.frames_received - c.duplicate_frames - c.frames_written  # queued, in flight, compressing
        if kept is not None:
            c.frames_lost += c.frames_written - kept  # written after the file's last bookkeeping
            c.frames_written = c.frames_flushed = kept
            self.last_file = str(series.file.path)
        if series.file.writer is not None:  # the sinks were told it started: tell them it ended
            self._tell_sinks("series_ended", None, "failed")
        self.current_file = ""
        self._notify_counters()
        lost = f"; {self.counters.frames_lost} received frame(s) lost" if self.counters.frames_lost else ""
        self._set_state(states.FAULT, reason + lost)

    # -- helpers of the threads ------------------------------------------------------------
    def _new_queue(self) -> FrameQueue:
        return FrameQueue(self.config.queue_frames, self.config.queue_megabytes * 1_000_000)

    def _stop_intake(self) -> None:
        if self._intake is not None:
            self._intake.stop()

    def _end_previous_threads(self) -> None:
        """A receiver of the last series may still be within its poll: let it go first, or it
        would stay connected, take frames of the new series and put them in the new queue."""
        self._stop_intake()
        for thread in self._threads:
            thread.join(5)
        if any(thread.is_alive() for thread in self._threads):
            raise StateError("the previous series' threads did not end; try again, or Init the Recorder")

    def _all_in_but_no_end(self, series: Series) -> bool:
        """Every armed frame arrived, then nothing for ``end_timeout`` s: the end was cut off."""
        return (
            series.accepted_count >= series.request.frame_count
            and self._clock() - series.last_message >= self.config.end_timeout
        )

    def _flush_if_due(self, series: Series, pause: bool = False) -> None:
        """Flush every FLUSH_INTERVAL while frames stream in; at a pause, at once if frames were
        written since the last flush: a step scan's frame (one per point, Sardana reading its
        value from the file) is readable ~PAUSE after it is written, not up to FLUSH_INTERVAL."""
        if series.file.writer is None:
            return
        if (pause and self.counters.frames_written > self.counters.frames_flushed) or self._flush_throttle.ready():
            series.file.writer.flush(self.counters.accounting())
            self.counters.frames_flushed = self.counters.frames_written
            self._tell_sinks("frames_flushed", optional=True)  # what a file reader can see now

    def _count_lost(self, message) -> None:
        """A frame that reached the Recorder but will never be written: received, and lost."""
        if isinstance(message, DataMessage):
            self.counters.frames_received += 1
            self.counters.frames_lost += 1

    def _drain_lost(self) -> None:
        """Count as lost what the writer held or the queue still holds: received, never written."""
        for message, _ in self._in_hand:
            self._count_lost(message)
        self._queue.written()
        while True:
            try:
                message, _ = self._queue.get()
            except QueueEmpty:
                return
            self._count_lost(message)

    # -- reporting -------------------------------------------------------------------------
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

    def _reject(self, series: Series, reason: str) -> None:
        self.counters.messages_rejected += 1
        series.rejection = reason
        log.warning("rejected stream message: %s", reason)
        self._set_state(
            self.state,
            f"{self._recording_status(series)} Rejected {self.counters.messages_rejected} "
            f"malformed message(s); last: {reason}",
        )
        self._notify_counters()

    def _recording_status(self, series: Series) -> str:
        return f"Recording series {series.request.series_id} into {series.file.path}."

    def _set_state(self, state: str, status: str) -> None:
        self.state, self.status = state, status
        self.listener.state_changed(state, status)

    def _notify_counters(self) -> None:
        writer = self._series.file.writer if self._series else None
        self._report.send(self.counters, writer.frame_bytes if writer else 0, self._queue)
