"""The Acquirer's logic, common to every detector vendor.

A vendor module supplies a camera that says what it is by its bases: a ``FrameSource`` hands
frames to the Acquirer, a ``SelfStreamingDetector`` streams them itself; ``Checkable``,
``Abortable``, ``Closable`` and ``TakesClientTriggers`` add what only some cameras can do. This
class owns the state machine (ON -> STANDBY -> RUNNING -> ON), the series on the stream, the
frame counter and the notifications the Tango device turns into events.

The series id belongs to whoever sequences the series: the Controller writes ``SeriesId``
before each one. The Acquirer carries the id it was last given (1 until then) and never
counts on its own, so an id is never advanced twice.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import Any, Protocol

from photonflow import states
from photonflow.camera import (
    TRIGGER_MODES,
    Abortable,
    AcquisitionSettings,
    ArmsAtStart,
    Camera,
    Checkable,
    ClientTriggers,
    Closable,
    FlagsItsData,
    FrameSource,
    KeepsTime,
    Rotation,
    SelfStreamingDetector,
    TakesClientTriggers,
)
from photonflow.core import CoreListener, StatefulCore
from photonflow.errors import ConfigurationError, StateError
from photonflow.requests import Request, value
from photonflow.stream.stins import StinsEncoder
from photonflow.stream.transport import ReceiverGone, SendInterrupted
from photonflow.throttle import Throttle

log = logging.getLogger(__name__)

MAX_FRAME_COUNT = 2**31 - 1
MAX_EXPOSURE = 3600.0
MAX_PERIOD = 86400.0


class Sender(Protocol):
    endpoint: str  # where Recorders connect (several, comma-separated, one per Recorder sharing it)

    def send(self, parts: list, stop: threading.Event | None = None) -> None: ...

    def announce(self, parts: list, stop: threading.Event | None = None) -> None:
        """A series' start or end: to every Recorder sharing the stream."""

    def close(self) -> None: ...


@dataclass
class AcquirerCounters:
    frames_acquired: int = 0  # in the current or last series


@dataclass(frozen=True)
class RotationRequest(Request):
    """The Acquirer's ``Rotation``: the axis a continuous scan turns during the series (the
    Controller writes it when it runs a scan; a DECTRIS detector puts it in its header)."""

    command = "Rotation"
    example = {"axis": "omega", "start": 0.0, "increment": 0.1}

    axis: str = value(doc="the scan axis (omega, phi...)")
    start: float = value(doc="the axis position at the first frame")
    increment: float = value(doc="the move per frame, signed")

    def rotation(self) -> Rotation:
        return Rotation(self.axis, self.start, self.increment)


def parse_rotation(text: str) -> Rotation | None:
    """The Acquirer's Rotation attribute: a JSON object, or empty for a series without a scan."""
    return RotationRequest.parse(text).rotation() if text.strip() else None


@dataclass(frozen=True)
class SettingsCheck(Request):
    """CheckSettings: settings to check as Prepare would (the detector's limits and trigger
    modes), nothing changed; those not given are the Acquirer's current ones."""

    command = "CheckSettings"
    example = {"frames": 100, "exposure": 0.001, "period": 0.002, "trigger_mode": "internal"}

    frame_count: int | None = value(None, key="frames", doc="the number of frames in the series")
    exposure: float | None = value(None, unit="seconds", doc="how long each frame counts")
    period: float | None = value(None, unit="seconds", doc="from one frame's start to the next")
    trigger_mode: str | None = value(None, doc=f"one of the detector's trigger modes ({', '.join(TRIGGER_MODES)})")
    rotation: RotationRequest | None = value(None, doc="the axis a continuous scan turns during the series")


def parse_settings(text: str) -> dict[str, Any]:
    """CheckSettings' JSON as changes to ``AcquisitionSettings`` (the keys given)."""
    check = SettingsCheck.parse(text)
    changes = {f.name: getattr(check, f.name) for f in fields(check) if getattr(check, f.name) is not None}
    if check.rotation is not None:
        changes["rotation"] = check.rotation.rotation()
    return changes


def validate_settings(settings: AcquisitionSettings, camera: Camera) -> None:
    """Refuse settings the detector cannot honour, saying which limit was crossed."""
    if isinstance(settings.frame_count, bool) or not isinstance(settings.frame_count, int):
        raise ConfigurationError(f"frame count must be an integer, got {settings.frame_count!r}")
    if not 1 <= settings.frame_count <= MAX_FRAME_COUNT:
        raise ConfigurationError(
            f"frame count must be between 1 and {MAX_FRAME_COUNT}, got {settings.frame_count}"
        )
    if not camera.min_exposure <= settings.exposure <= MAX_EXPOSURE:
        raise ConfigurationError(
            f"exposure must be between {camera.min_exposure} s and {MAX_EXPOSURE} s, "
            f"got {settings.exposure} s"
        )
    if not settings.period <= MAX_PERIOD:  # NaN fails too
        raise ConfigurationError(f"period must be at most {MAX_PERIOD} s, got {settings.period} s")
    if settings.period < settings.exposure:
        raise ConfigurationError(
            f"period ({settings.period} s) is shorter than the exposure ({settings.exposure} s); "
            "set a period of at least the exposure time"
        )
    if settings.trigger_mode not in camera.trigger_modes:
        raise ConfigurationError(
            f"trigger mode {settings.trigger_mode!r} is not supported; "
            f"choose one of {', '.join(camera.trigger_modes)}"
        )


class SeriesSentByAcquirer:
    """The run path of a ``FrameSource``: the Acquirer sends each frame on its own STINS stream."""

    protocol = "stins"
    abort_when_prepared = False  # nothing is armed on the camera before Start

    def __init__(self, camera: FrameSource, sender: Sender):
        self.camera, self.sender = camera, sender

    @property
    def endpoint(self) -> str:
        return self.sender.endpoint

    def run(self, acquirer: Acquirer) -> None:
        acquirer._run_sent_series(self.camera, self.sender)


class SeriesStreamedByDetector:
    """The run path of a ``SelfStreamingDetector``: it streams, the Acquirer follows its count."""

    abort_when_prepared = True  # an armed DCU holds a series to drop

    def __init__(self, camera: SelfStreamingDetector):
        self.camera = camera
        self.endpoint, self.protocol = camera.stream_endpoint, camera.stream_protocol

    def run(self, acquirer: Acquirer) -> None:
        acquirer._run_detector_series(self.camera)


class Acquirer(StatefulCore):
    """Runs series of frames from a camera onto a stream; the run path is chosen here, once, by
    what the camera is."""

    def __init__(
        self,
        camera: Camera,
        sender: Sender | None,
        listener: CoreListener | None = None,
        counter_interval: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
        capture_problems: Callable[[], tuple[str, ...]] = tuple,
    ):
        """``capture_problems`` says what the series' metadata lacks (a beamline read that failed
        or hung at Prepare): the series is taken all the same and ends in ALARM naming it."""
        super().__init__(listener, states.ON, "Idle: set exposure, period and frame count, then Prepare.")
        self.camera = camera
        self.sender = sender
        self._capture_problems = capture_problems
        if isinstance(camera, SelfStreamingDetector):
            self._series: SeriesSentByAcquirer | SeriesStreamedByDetector = SeriesStreamedByDetector(camera)
        elif isinstance(camera, FrameSource):
            if sender is None:
                raise ConfigurationError(
                    f"{type(camera).__name__} hands frames over: it needs a stream to send them on")
            self._series = SeriesSentByAcquirer(camera, sender)
        else:
            raise ConfigurationError(
                f"{type(camera).__name__} is neither a FrameSource nor a SelfStreamingDetector; declare which")
        self._encoder = StinsEncoder()
        self._counter_throttle = Throttle(counter_interval, clock)
        self._settings = AcquisitionSettings()
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._abort = threading.Event()
        self._thread: threading.Thread | None = None
        self.series_id = 1  # the Controller's to give (see the module's docstring)
        self.counters = AcquirerCounters()
        self.last_end_reason = ""
        self.client_triggers = ClientTriggers()
        if isinstance(camera, TakesClientTriggers):
            camera.take_client_triggers(self.client_triggers)

    @property
    def settings(self) -> AcquisitionSettings:
        return self._settings

    @property
    def frames_acquired(self) -> int:
        return self.counters.frames_acquired

    @property
    def stream_endpoint(self) -> str:
        return self._series.endpoint

    @property
    def stream_protocol(self) -> str:
        return self._series.protocol

    def update_settings(self, **changes: Any) -> None:
        """Change settings between series; each value is checked now, the combination
        (period >= exposure) at Prepare, so settings may be written in any order."""
        with self._lock:
            self._require_idle("change the settings")
            updated = replace(self._settings, **changes)
            validate_settings(replace(updated, period=max(updated.period, updated.exposure)), self.camera)
            self._settings = updated

    def check_settings(self, **settings: Any) -> None:
        """Refuse settings this detector cannot take, as Prepare would, without changing anything:
        photonflow's limits, then the camera's own where it can tell them without arming."""
        checked = replace(self._settings, **settings)
        validate_settings(checked, self.camera)
        if isinstance(self.camera, Checkable):
            self.camera.check(checked)

    def set_series_id(self, series_id: int) -> None:
        """The id the next series carries, given by whoever sequences the series (the Controller)."""
        with self._lock:
            self._require_idle("change the series id")
            if isinstance(series_id, bool) or not isinstance(series_id, int) or series_id < 0:
                raise ConfigurationError(f"series id must be an integer >= 0, got {series_id!r}")
            self.series_id = series_id

    def _require_idle(self, action: str) -> None:
        if self.state in (states.RUNNING,):
            raise StateError(f"cannot {action} while acquiring; Stop or Abort first")

    def _count(self, frames_acquired: int, always: bool = False) -> None:
        self.counters.frames_acquired = frames_acquired
        if always or self._counter_throttle.ready():
            self.listener.counters_changed(self.counters)

    def prepare(self) -> None:
        """Validate the settings and arm the camera; ON/STANDBY/FAULT -> STANDBY."""
        with self._lock:
            self._require_idle("Prepare")
            validate_settings(self._settings, self.camera)
            try:
                self.camera.prepare(self._settings)
            except Exception as error:
                self._set_state(states.FAULT, f"Prepare failed: {error}")
                raise
            self.client_triggers.reset()
            self._count(0, always=True)
            s = self._settings
            problems = self._capture_problems()
            self._set_state(
                states.STANDBY,
                f"Prepared series {self.series_id}: {s.frame_count} frames, "
                f"exposure {s.exposure} s, period {s.period} s, trigger {s.trigger_mode}."
                + (f" Beamline not read: {'; '.join(problems)}." if problems else ""),
            )

    def start(self) -> None:
        """Begin the prepared series in the background; STANDBY -> RUNNING."""
        with self._lock:
            if self.state != states.STANDBY:
                raise StateError(f"Start needs a prepared acquirer (STANDBY), it is {self.state}; call Prepare first")
            self._stop.clear()
            self._abort.clear()
            if isinstance(self.camera, ArmsAtStart) and self._settings.trigger_mode.startswith("external"):
                self.camera.arm(self._settings)  # listening before Start returns: a scan's pulses may follow at once
            self._set_state(states.RUNNING, f"Acquiring series {self.series_id}.")
            self._thread = threading.Thread(
                target=self._series.run, args=(self,), name=f"acquire-series-{self.series_id}", daemon=True
            )
            self._thread.start()

    def software_trigger(self) -> None:
        """One frame of a series in trigger mode ``client`` (prepared or running): the client
        (a Sardana scan) triggers each frame itself, whenever it is ready for it."""
        with self._lock:
            if self._settings.trigger_mode != "client":
                raise StateError(
                    f"SoftwareTrigger needs trigger mode 'client', it is {self._settings.trigger_mode!r}"
                )
            if self.state not in (states.STANDBY, states.RUNNING):
                raise StateError(f"SoftwareTrigger needs a prepared or running series, the acquirer is {self.state}")
            self.client_triggers.fire()

    def stop(self) -> None:
        """End the series after the current frame; the stream still gets its series_end."""
        self._stop.set()
        self.client_triggers.interrupt()

    def abort(self) -> None:
        """End at once, whatever the state; a prepared series is dropped."""
        with self._lock:
            self._abort.set()
            self._stop.set()
            self.client_triggers.interrupt()
            # the detector itself is told when it has a series to drop: a DCU armed or running,
            # a camera whose driver waits inside the vendor's library for a frame
            if isinstance(self.camera, Abortable) and (
                self.state == states.RUNNING or (self._series.abort_when_prepared and self.state == states.STANDBY)
            ):
                try:
                    self.camera.abort()
                except Exception as error:  # noqa: BLE001 - the series still ends here; the status says why
                    log.warning("abort on the detector failed: %s", error)
            if self.state == states.STANDBY:
                self._set_state(states.ON, "Aborted before start.")

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for a running series to end; True if it has."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            return not thread.is_alive()
        return True

    def close(self) -> None:
        """Let the detector go (the device's Init or shutdown): end any series, close the stream
        and the camera's connection."""
        self.abort()
        self.wait(5)
        if self.sender is not None:
            self.sender.close()
        if isinstance(self.camera, Closable):
            self.camera.close()

    def _run_sent_series(self, camera: FrameSource, sender: Sender) -> None:
        settings = self._settings
        series_id = self.series_id
        sent = 0
        end_reason = "completed"
        try:
            sender.announce(
                self._encoder.series_start(
                    series_id,
                    settings.frame_count,
                    camera.frame_shape,
                    camera.frame_dtype,
                    camera.describe(settings),
                    frame_metadata=camera.frame_metadata,
                ),
                self._abort,
            )
            for frame_number, frame, timestamp, *details in camera.frames(settings, self._stop):
                self._count(self.counters.frames_acquired + 1)
                metadata = details[0] if details else None  # the frame's own values, when the camera has them
                sender.send(
                    self._encoder.data(series_id, frame_number, frame, timestamp, metadata=metadata), self._abort
                )
                sent += 1
            if self._abort.is_set():
                end_reason = "aborted"
            elif self._stop.is_set() and sent < settings.frame_count:
                end_reason = "stopped"
        except SendInterrupted:
            end_reason = "aborted"
        except ReceiverGone as error:  # the Recorder went away: end the series, ready for the next
            log.warning("series %s: %s", series_id, error)
            self._finish(sender, series_id, sent, "failed")
            self._set_state(
                states.ALARM,
                f"Series {series_id} ended after {self.frames_acquired} frames acquired, {sent} sent: {error} "
                "(is the Recorder running?). Ready for the next series.",
            )
            return
        except Exception as error:  # a camera or transport failure ends the series in FAULT
            log.exception("series %s failed", series_id)
            end_reason = "failed"
            self._finish(sender, series_id, sent, end_reason)
            self._set_state(states.FAULT, f"Series {series_id} failed after {sent} frames: {error}")
            return
        self._finish(sender, series_id, sent, end_reason)
        self._end_series(camera, f"Series {series_id} {end_reason}: {self.frames_acquired} of "
                                 f"{settings.frame_count} frames acquired")

    def _run_detector_series(self, camera: SelfStreamingDetector) -> None:
        """A series whose frames the detector streams itself: trigger it and follow its count."""
        settings, series_id = self._settings, self.series_id
        try:
            camera.run_series(settings, self._stop, self._count)
        except Exception as error:  # the vendor's own message goes to the status
            log.exception("series %s failed", series_id)
            self.last_end_reason = "failed"
            self._count(self.frames_acquired, always=True)
            self._set_state(states.FAULT, f"Series {series_id} failed after {self.frames_acquired} frames: {error}")
            return
        end_reason = "aborted" if self._abort.is_set() else (
            "stopped" if self.frames_acquired < settings.frame_count else "completed")
        self.last_end_reason = end_reason
        self._count(self.frames_acquired, always=True)
        self._end_series(camera, f"Series {series_id} {end_reason}: {self.frames_acquired} of "
                                 f"{settings.frame_count} frames acquired")

    def _end_series(self, camera: Camera, summary: str) -> None:
        """ON, or ALARM when the detector did not keep the requested rate (the frames are all
        there, but not at the times asked for), saw its data differ from what was written with it,
        or could not read the beamline it follows."""
        shortfall = camera.timing_shortfall() if isinstance(camera, KeepsTime) else None
        caveat = camera.data_caveat() if isinstance(camera, FlagsItsData) else None
        problems = self._capture_problems()
        beamline = f"the beamline could not be read: {'; '.join(problems)}" if problems else None
        warnings = [text for text in (shortfall, caveat, beamline) if text]
        if warnings:
            self._set_state(states.ALARM, f"{summary}, but {'; and '.join(warnings)}. Ready for the next series.")
        else:
            self._set_state(states.ON, f"{summary}.")

    def _finish(self, sender: Sender, series_id: int, sent: int, end_reason: str) -> None:
        self.last_end_reason = end_reason
        self._count(self.frames_acquired, always=True)
        give_up = threading.Event()
        timer = threading.Timer(2.0, give_up.set)
        timer.start()
        try:
            sender.announce(self._encoder.series_end(series_id, self.frames_acquired, sent, end_reason), give_up)
        except (SendInterrupted, ReceiverGone):
            log.warning("series_end of series %s not delivered: no receiver", series_id)
        finally:
            timer.cancel()
