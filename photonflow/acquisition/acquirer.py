"""The Acquirer's logic, common to every detector vendor.

A vendor module supplies a ``Camera`` (configure the hardware, deliver frames); this class
owns the state machine (ON -> STANDBY -> RUNNING -> ON), the STINS series on the stream, the
frame counter and the notifications the Tango device turns into events.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields, replace
from typing import Any, Protocol

from photonflow import states
from photonflow.errors import ConfigurationError, StateError
from photonflow.stream.stins import StinsEncoder
from photonflow.stream.transport import ReceiverGone, SendInterrupted
from photonflow.throttle import Throttle

log = logging.getLogger(__name__)

MAX_FRAME_COUNT = 2**31 - 1
MAX_EXPOSURE = 3600.0
MAX_PERIOD = 86400.0


# photonflow's trigger modes, the same words for every vendor (each camera offers some of them)
TRIGGER_MODES = {
    "internal": "the detector's own timing: a frame every period",
    "internal_enable": "the Acquirer triggers each frame a period apart, the exposure given with the trigger",
    "software": "the Acquirer sends a software trigger for each frame, a period apart",
    "external_start": "one external edge starts the series, then the detector's own timing",
    "external": "one frame per external edge, of the set exposure",
    "external_enable": "one frame per external gate, exposed for as long as the gate is open",
    "client": "one frame per SoftwareTrigger command of a client (a Sardana scan point), of the set exposure",
}


@dataclass(frozen=True)
class AcquisitionSettings:
    """What one series asks of the detector."""

    frame_count: int = 1
    exposure: float = 0.001  # seconds of counting per frame
    period: float = 0.002  # seconds from one frame's start to the next
    trigger_mode: str = "internal"


class SoftwareTrigger:
    """Sends a camera's software trigger once per period, never a burst to catch up after a
    late frame; says how long a wait for the frame may last before the next one is due."""

    def __init__(self, period: float, send: Callable[[], Any] | None, clock: Callable[[], float] = time.monotonic):
        self.period, self.send, self.clock = period, send, clock
        self.due = clock()

    def wait_time(self, longest: float) -> float:
        """Trigger if due (no-op without ``send``); then at most ``longest`` seconds of waiting."""
        if self.send is None:
            return longest
        now = self.clock()
        if now >= self.due:
            self.send()
            self.due = max(self.due + self.period, now)
        return max(0.001, min(longest, self.due - self.clock()))


class ClientTriggers:
    """The triggers a client sends one per frame (trigger mode ``client``), counted so that none
    is lost when one comes before the camera waits for it. A camera offering ``client`` gets the
    Acquirer's instance as its ``client_triggers`` and calls ``wait`` before each frame."""

    def __init__(self):
        self._condition = threading.Condition()
        self._pending = 0

    def reset(self) -> None:
        with self._condition:
            self._pending = 0

    def fire(self) -> None:
        with self._condition:
            self._pending += 1
            self._condition.notify_all()

    def interrupt(self) -> None:
        """Wake a waiting camera (a Stop or Abort: it then sees its stop event)."""
        with self._condition:
            self._condition.notify_all()

    def wait(self, stop: threading.Event) -> bool:
        """Until a trigger came (True, it is used up) or ``stop`` is set (False)."""
        with self._condition:
            while self._pending == 0:
                if stop.is_set():
                    return False
                self._condition.wait(0.1)
            self._pending -= 1
            return True


class Camera(Protocol):
    """What a vendor module provides to the common Acquirer."""

    trigger_modes: tuple[str, ...]
    min_exposure: float
    # A camera whose frames carry values of their own also has ``frame_metadata``: their names.

    @property
    def frame_shape(self) -> tuple[int, int]: ...

    @property
    def frame_dtype(self) -> str: ...

    def describe(self, settings: AcquisitionSettings) -> dict[str, Any]:
        """The STINS ``detector`` description, with NXdetector field names."""

    def prepare(self, settings: AcquisitionSettings) -> None:
        """Configure (arm) the hardware for a series."""

    def frames(
        self, settings: AcquisitionSettings, stop: threading.Event
    ) -> Iterator[tuple]:
        """Yield (frame_number, frame, UNIX timestamp) until done or ``stop`` is set.

        A camera whose frames carry their own values (a CBF header) adds a fourth item, a
        dict of numbers by name: the STINS ``metadata`` of that frame.
        """


class Sender(Protocol):
    endpoint: str

    def send(self, parts: list, stop: threading.Event | None = None) -> None: ...


class AcquirerListener:
    """Callbacks the device implements; the defaults ignore everything."""

    def state_changed(self, state: str, status: str) -> None:
        pass

    def counters_changed(self, frames_acquired: int) -> None:
        pass


def parse_settings(text: str) -> dict[str, Any]:
    """Settings as JSON (``AcquisitionSettings`` field names), for checking them over Tango."""
    try:
        raw = json.loads(text)
    except (ValueError, RecursionError):
        raw = None
    names = {f.name for f in fields(AcquisitionSettings)}
    if not isinstance(raw, dict) or not raw.keys() <= names:
        raise ConfigurationError(f"settings must be a JSON object with some of {', '.join(sorted(names))}")
    return raw


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


class Acquirer:
    """Runs series of frames from a camera onto a STINS stream."""

    def __init__(
        self,
        camera: Camera,
        sender: Sender,
        listener: AcquirerListener | None = None,
        counter_interval: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.camera = camera
        self.sender = sender
        self.listener = listener or AcquirerListener()
        self._encoder = StinsEncoder()
        self._counter_throttle = Throttle(counter_interval, clock)
        self._settings = AcquisitionSettings()
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._abort = threading.Event()
        self._thread: threading.Thread | None = None
        self.state = states.ON
        self.status = "Idle: set exposure, period and frame count, then Prepare."
        self.series_id = 1
        self.frames_acquired = 0
        self.last_end_reason = ""
        self.client_triggers = ClientTriggers()
        if "client" in getattr(camera, "trigger_modes", ()):
            camera.client_triggers = self.client_triggers

    @property
    def settings(self) -> AcquisitionSettings:
        return self._settings

    @property
    def streams_itself(self) -> bool:
        """True for detectors whose control unit streams the frames itself (e.g. a DECTRIS DCU)."""
        return getattr(self.camera, "streams_itself", False)

    @property
    def stream_endpoint(self) -> str:
        return self.camera.stream_endpoint if self.streams_itself else self.sender.endpoint

    @property
    def stream_protocol(self) -> str:
        return self.camera.stream_protocol if self.streams_itself else "stins"

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
        photonflow's limits, then the camera's own where it can tell them without arming (``check``)."""
        checked = replace(self._settings, **settings)
        validate_settings(checked, self.camera)
        camera_check = getattr(self.camera, "check", None)
        if camera_check is not None:
            camera_check(checked)

    def set_series_id(self, series_id: int) -> None:
        with self._lock:
            self._require_idle("change the series id")
            if isinstance(series_id, bool) or not isinstance(series_id, int) or series_id < 0:
                raise ConfigurationError(f"series id must be an integer >= 0, got {series_id!r}")
            self.series_id = series_id

    def _require_idle(self, action: str) -> None:
        if self.state in (states.RUNNING,):
            raise StateError(f"cannot {action} while acquiring; Stop or Abort first")

    def _set_state(self, state: str, status: str) -> None:
        self.state, self.status = state, status
        self.listener.state_changed(state, status)

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
            self.frames_acquired = 0
            self.client_triggers.reset()
            self.listener.counters_changed(0)
            s = self._settings
            self._set_state(
                states.STANDBY,
                f"Prepared series {self.series_id}: {s.frame_count} frames, "
                f"exposure {s.exposure} s, period {s.period} s, trigger {s.trigger_mode}.",
            )

    def start(self) -> None:
        """Begin the prepared series in the background; STANDBY -> RUNNING."""
        with self._lock:
            if self.state != states.STANDBY:
                raise StateError(f"Start needs a prepared acquirer (STANDBY), it is {self.state}; call Prepare first")
            self._stop.clear()
            self._abort.clear()
            self._set_state(states.RUNNING, f"Acquiring series {self.series_id}.")
            self._thread = threading.Thread(
                target=self._run_series, name=f"acquire-series-{self.series_id}", daemon=True
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
            abort_camera = getattr(self.camera, "abort", None)
            if abort_camera is not None and (
                self.state == states.RUNNING or (self.streams_itself and self.state == states.STANDBY)
            ):
                try:
                    abort_camera()
                except Exception as error:  # the series still ends here; the status says why
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

    def _run_series(self) -> None:
        if self.streams_itself:
            return self._run_detector_series()
        settings = self._settings
        series_id = self.series_id
        sent = 0
        end_reason = "completed"
        try:
            self.sender.send(
                self._encoder.series_start(
                    series_id,
                    settings.frame_count,
                    self.camera.frame_shape,
                    self.camera.frame_dtype,
                    self.camera.describe(settings),
                    frame_metadata=getattr(self.camera, "frame_metadata", ()),
                ),
                self._abort,
            )
            for frame_number, frame, timestamp, *details in self.camera.frames(settings, self._stop):
                self.frames_acquired += 1
                metadata = details[0] if details else None  # the frame's own values, when the camera has them
                self.sender.send(
                    self._encoder.data(series_id, frame_number, frame, timestamp, metadata=metadata), self._abort
                )
                sent += 1
                if self._counter_throttle.ready():
                    self.listener.counters_changed(self.frames_acquired)
            if self._abort.is_set():
                end_reason = "aborted"
            elif self._stop.is_set() and sent < settings.frame_count:
                end_reason = "stopped"
        except SendInterrupted:
            end_reason = "aborted"
        except ReceiverGone as error:  # the Recorder went away: end the series, ready for the next
            log.warning("series %s: %s", series_id, error)
            self._finish(series_id, sent, "failed")
            self._set_state(
                states.ALARM,
                f"Series {series_id} ended after {self.frames_acquired} frames acquired, {sent} sent: {error} "
                "(is the Recorder running?). Ready for the next series.",
            )
            return
        except Exception as error:  # a camera or transport failure ends the series in FAULT
            log.exception("series %s failed", series_id)
            end_reason = "failed"
            self._finish(series_id, sent, end_reason)
            self._set_state(states.FAULT, f"Series {series_id} failed after {sent} frames: {error}")
            return
        self._finish(series_id, sent, end_reason)
        self._set_state(
            states.ON,
            f"Series {series_id} {end_reason}: {self.frames_acquired} of "
            f"{settings.frame_count} frames acquired.",
        )

    def _run_detector_series(self) -> None:
        """A series whose frames the detector streams itself: trigger it and follow its count."""
        settings, series_id = self._settings, self.series_id

        def progress(taken: int) -> None:
            self.frames_acquired = taken
            if self._counter_throttle.ready():
                self.listener.counters_changed(taken)

        try:
            self.camera.run_series(settings, self._stop, progress)
        except Exception as error:  # the vendor's own message goes to the status
            log.exception("series %s failed", series_id)
            self.last_end_reason = "failed"
            self.listener.counters_changed(self.frames_acquired)
            self.series_id = series_id + 1
            self._set_state(states.FAULT, f"Series {series_id} failed after {self.frames_acquired} frames: {error}")
            return
        end_reason = "aborted" if self._abort.is_set() else (
            "stopped" if self.frames_acquired < settings.frame_count else "completed")
        self.last_end_reason = end_reason
        self.listener.counters_changed(self.frames_acquired)
        self.series_id = series_id + 1
        self._set_state(
            states.ON,
            f"Series {series_id} {end_reason}: {self.frames_acquired} of {settings.frame_count} frames acquired.",
        )

    def _finish(self, series_id: int, sent: int, end_reason: str) -> None:
        self.last_end_reason = end_reason
        self.listener.counters_changed(self.frames_acquired)
        give_up = threading.Event()
        timer = threading.Timer(2.0, give_up.set)
        timer.start()
        try:
            self.sender.send(
                self._encoder.series_end(series_id, self.frames_acquired, sent, end_reason), give_up
            )
        except (SendInterrupted, ReceiverGone):
            log.warning("series_end of series %s not delivered: no receiver", series_id)
        finally:
            timer.cancel()
        self.series_id = series_id + 1
