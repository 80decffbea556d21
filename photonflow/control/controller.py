"""The Controller's logic: drive an Acquirer and a Recorder as one, and prove the series
complete (frames acquired = received = written).

Peers are reached through two small ports (``AcquirerPort``, ``RecorderPort``); the Tango
device implements them with DeviceProxy, unit tests with plain objects. Peer change events
feed ``peer_state_changed`` and ``peer_counter_changed``; ``tick`` is the watchdog for
series whose end never arrives.

A series with a ``scan`` is a continuous scan (``photonflow.control.continuous_scan``): the
Controller plans it at Configure against the scan axis' motor (``scan_axes``: a motor and a
trigger generator per axis) and runs it at Start, the detectors started by the scan once the
motor is at its run-up start; what the scan tells (pulses short, frames short, positions off)
is part of the series' report.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

from photonflow import states
from photonflow.control.continuous_scan import (
    SCAN_TRIGGER_MODES,
    ContinuousScan,
    MotorLimits,
    MotorPort,
    ScanOutcome,
    ScanPlan,
    ScanRequest,
    TriggerGeneratorPort,
    plan_scan,
)
from photonflow.core import CoreListener, StatefulCore
from photonflow.errors import ConfigurationError, PhotonflowError, StateError
from photonflow.requests import Request, value
from photonflow.throttle import Throttle

log = logging.getLogger(__name__)

ACQUIRER = "acquirer"
RECORDER = "recorder"
IDLE, STARTING, ACQUIRING, FINISHING = "idle", "starting", "acquiring", "finishing"
BUSY_STATES = (states.RUNNING, states.STANDBY)
MAX_FRAMES = 2**31 - 1  # the Acquirer's and Recorder's own limits may be lower: they are asked at Configure
STATUS_INTERVAL = 0.1  # seconds between Status updates while frames move
# seconds between asking a Recorder that was down for its final report: Tango refuses a new
# connection within 1 s of a failed one, so asking more often may never get through
REPORT_RETRY_INTERVAL = 2.0
UNCONFIRMED = "could not read the final counters from the Recorder; the report follows its file once it is back"


@dataclass(frozen=True)
class AcquisitionRequest(Request):
    """Configure: one series as the operator asks for it. The Acquirer (the camera's limits and
    trigger modes) and the Recorder (the file) check it too, before anything is set."""

    command = "Configure"
    example = {"frames": 100, "exposure": 0.001, "period": 0.002, "file": "sample/scan1.h5"}

    frames: int = value(minimum=1, maximum=MAX_FRAMES, doc="the number of frames in the series")
    exposure: float = value(positive=True, unit="seconds", doc="how long each frame counts")
    period: float = value(unit="seconds", doc="from one frame's start to the next; at least the exposure")
    trigger_mode_given: str | None = value(
        None, key="trigger_mode",
        doc="how frames are triggered (internal, software, external, ...: the detector's own set); "
            "none: internal, or external with a scan")
    file: str | None = value(None, doc="the file under the Recorder's data root; none: its FilePathTemplate")
    scan: ScanRequest | None = value(
        None, doc="a continuous scan: the axis turns at constant velocity and triggers a frame every step")
    blissdata_scan: bool = value(
        True, doc="the Recorder publishes the series as a blissdata scan of its own; false when a scan engine "
                  "publishes its frames in its own scan (Sardana's PhotonflowTwoDCtrl with references on)")

    def check(self) -> None:
        if self.period < self.exposure:
            raise ConfigurationError(
                f"'period' ({self.period} s) is shorter than 'exposure' ({self.exposure} s); "
                "the period must be at least the exposure time"
            )
        if self.scan is not None and self.trigger_mode not in SCAN_TRIGGER_MODES:
            raise ConfigurationError(
                f"a scan triggers each frame from the {self.scan.axis} position: 'trigger_mode' must be "
                f"{' or '.join(SCAN_TRIGGER_MODES)}, got {self.trigger_mode!r}"
            )

    @property
    def trigger_mode(self) -> str:
        """The trigger mode given, else internal, or external with a scan."""
        if self.trigger_mode_given is not None:
            return self.trigger_mode_given
        return "internal" if self.scan is None else "external"

    @property
    def rotation(self) -> dict[str, Any] | None:
        """What the Acquirer is told of a scan (DECTRIS writes it to its header), None without one."""
        if self.scan is None:
            return None
        return {"axis": self.scan.axis, "start": self.scan.start, "increment": self.scan.step}

    def describe(self) -> dict[str, Any]:
        """The request as JSON, every default filled in."""
        return {"frames": self.frames, "exposure": self.exposure, "period": self.period,
                "trigger_mode": self.trigger_mode, "file": self.file,
                "scan": None if self.scan is None else dataclasses.asdict(self.scan),
                "blissdata_scan": self.blissdata_scan}


def parse_request(text: str) -> AcquisitionRequest:
    """Validate a Configure JSON string; every error names the key and what to do."""
    return AcquisitionRequest.parse(text)


class AcquirerPort(Protocol):
    def state(self) -> str: ...
    def status(self) -> str: ...
    def check_settings(self, request: AcquisitionRequest) -> None: ...
    def configure(self, request: AcquisitionRequest, series_id: int) -> None: ...
    def prepare(self) -> None: ...
    def start(self) -> None: ...
    def stop(self) -> None: ...
    def abort(self) -> None: ...
    def stream_endpoint(self) -> str: ...
    def stream_protocol(self) -> str: ...
    def frames_acquired(self) -> int: ...


class RecorderPort(Protocol):
    def state(self) -> str: ...
    def status(self) -> str: ...
    def check_file(self, file: str) -> str: ...
    def arm(self, frames: int, series_id: int, endpoint: str, file: str | None, protocol: str,
            blissdata_scan: bool = True) -> str: ...
    def stop(self) -> None: ...
    def abort(self) -> None: ...
    def counters(self) -> dict[str, int]: ...
    def last_file(self) -> str: ...


@dataclass(frozen=True)
class ScanAxis:
    """One axis the Controller can scan: its motor and the trigger generator its encoder drives."""

    motor: MotorPort
    generator: TriggerGeneratorPort


@dataclass
class _Peer:
    name: str
    state: str = states.UNKNOWN
    status: str = "not contacted yet"


@dataclass
class SeriesReport:
    """The integrity check of the last series."""

    series_id: int
    frames_requested: int
    frames_acquired: int
    frames_received: int
    frames_written: int
    missing_frames: int
    file: str
    pulses_sent: int | None = None  # a scan's trigger pulses; None without a scan
    scan_problems: tuple[str, ...] = ()  # what the scan did not do as planned, as sentences

    @property
    def complete(self) -> bool:
        return (
            self.frames_acquired == self.frames_received == self.frames_written
            and self.missing_frames == 0
        )

    def describe(self) -> str:
        pulses = "" if self.pulses_sent is None else f"pulses {self.pulses_sent}, "
        return (
            f"series {self.series_id}: requested {self.frames_requested}, {pulses}acquired "
            f"{self.frames_acquired}, received {self.frames_received}, written "
            f"{self.frames_written}, missing {self.missing_frames}"
        )


@dataclass
class ControllerCounters:
    """The current or last series as the Controller counts it; the series id is the Controller's
    to give (it writes it to the Acquirer and the Recorder before each series)."""

    series_id: int = 0
    frames_requested: int = 0
    frames_acquired: int = 0
    frames_received: int = 0
    frames_written: int = 0
    missing_frames: int = 0
    last_file: str = ""

    @property
    def progress(self) -> float:
        """Percent of the frames requested that are written."""
        if not self.frames_requested:
            return 0.0
        return min(100.0, 100.0 * self.frames_written / self.frames_requested)


class Controller(StatefulCore):
    """Sequences one series at a time and reports one combined state."""

    def __init__(
        self,
        acquirer: AcquirerPort,
        recorder: RecorderPort,
        listener: CoreListener | None = None,
        finish_timeout: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        run_in_background: Callable[[Callable[[], None]], None] | None = None,
        scan_axes: dict[str, ScanAxis] | None = None,
        scan_wait: Callable[[float], object] | None = None,
    ):
        self.acquirer = acquirer
        self.recorder = recorder
        self.scan_axes = dict(scan_axes or {})
        self._scan_wait = scan_wait  # None: a real wait, cut short by Abort
        self.finish_timeout = finish_timeout
        self._clock = clock
        # Preparing a detector can take longer than a Tango client waits for a command.
        self._run_in_background = run_in_background or (
            lambda work: threading.Thread(target=work, name="start-series", daemon=True).start()
        )
        self._lock = threading.RLock()
        self._peers = {ACQUIRER: _Peer(ACQUIRER), RECORDER: _Peer(RECORDER)}
        self.request: AcquisitionRequest | None = None
        self.plan: ScanPlan | None = None  # the request's scan, planned at Configure
        self.scan_outcome: ScanOutcome | None = None  # of the last scan
        self._scan: ContinuousScan | None = None  # while one runs
        self._scan_failure = ""
        self.counters = ControllerCounters()
        self.last_report: SeriesReport | None = None
        self._phase = IDLE
        self._finishing_since = 0.0
        self._fault = ""
        self._status_throttle = Throttle(STATUS_INTERVAL, clock)
        self._report_retry = Throttle(REPORT_RETRY_INTERVAL, clock)
        self._reach_retry = Throttle(REPORT_RETRY_INTERVAL, clock)
        self._published = self.combined_state()
        super().__init__(listener, *self._published)

    @property
    def series_id(self) -> int:
        """The id of the current or last series: this Controller's, 0 before the first."""
        return self.counters.series_id

    # -- commands -------------------------------------------------------------------------
    def configure(self, text: str) -> AcquisitionRequest:
        with self._lock:
            self._require_idle("Configure")
            request = parse_request(text)
            self.acquirer.check_settings(request)  # the detector's own limits and trigger modes
            if request.file is not None:
                self.recorder.check_file(request.file)
            plan = None if request.scan is None else self._plan(request, request.scan)
            self.request, self.plan = request, plan
            self._publish()
            return request

    def _plan(self, request: AcquisitionRequest, scan: ScanRequest) -> ScanPlan:
        """The scan as the motor can do it (its limits read now); refused as ``plan_scan`` refuses.
        The detector's own limits were checked with the external trigger mode (``check_settings``)."""
        axis = self.scan_axes.get(scan.axis)
        if axis is None:
            known = ", ".join(sorted(self.scan_axes)) or "none (set the property ScanAxes)"
            raise ConfigurationError(f"'scan.axis' {scan.axis!r} is not a scan axis of this Controller; "
                                     f"its scan axes: {known}")
        return plan_scan(scan.start, scan.step, request.frames, request.exposure, request.period,
                         MotorLimits.read(scan.axis, axis.motor), trigger_mode=request.trigger_mode)

    def configuration(self) -> dict[str, Any] | None:
        """What the next Start does: the request, and the scan's plan when it has one."""
        with self._lock:
            if self.request is None:
                return None
            described = self.request.describe()
            if self.plan is not None:
                described["scan_plan"] = self.plan.describe()
            return described

    def start(self) -> None:
        """Arm the Recorder, configure the Acquirer, then prepare and start it in the background;
        with a scan, run the scan in the background, which starts them at the right moment."""
        with self._lock:
            self._require_idle("Start")
            if self.request is None:
                raise StateError("nothing to start: call Configure with the acquisition settings first")
            request = self.request
            series_id = self.series_id + 1
            path = "" if self.plan is not None else self._arm(request, series_id)
            self.counters = ControllerCounters(series_id, frames_requested=request.frames, last_file=path)
            self.last_report = None
            self.scan_outcome = None
            self._scan_failure = ""
            self._fault = ""
            self._phase = STARTING
            work = self._launch
            if self.plan is not None:
                axis = self.scan_axes[self.plan.axis]
                scan = ContinuousScan(self.plan, axis.motor, axis.generator, _SeriesDetectors(self),
                                      clock=self._clock, wait=self._scan_wait)
                self._scan = scan
                work = lambda: self._run_scan(scan)  # noqa: E731 - the scan this Start made, not a later one
            self._publish_counters()
            self._publish()
        self._run_in_background(work)

    def _arm(self, request: AcquisitionRequest, series_id: int) -> str:
        """Arm the Recorder, then configure the Acquirer; the Recorder is disarmed if that fails."""
        path = self.recorder.arm(
            request.frames, series_id, self.acquirer.stream_endpoint(), request.file,
            self.acquirer.stream_protocol(), blissdata_scan=request.blissdata_scan,
        )
        try:
            self.acquirer.configure(request, series_id)
        except Exception:
            self._safely(self.recorder.abort)
            raise
        return path

    def _start_detectors(self) -> None:
        """The scan's moment to start the series: the motor is at its run-up start, the generator armed."""
        with self._lock:
            if self.request is None:
                raise StateError("the scan lost its configuration")
            path = self._arm(self.request, self.series_id)
            self.counters.last_file = path
        self._publish_counters()
        try:
            self.acquirer.prepare()
            self.acquirer.start()
        except Exception:
            self._safely(self.acquirer.abort)
            self._safely(self.recorder.abort)
            raise
        with self._lock:
            if self._phase == STARTING:
                self._phase = ACQUIRING
        self._publish()

    def _run_scan(self, scan: ContinuousScan) -> None:
        outcome = None
        try:
            outcome = scan.run()
        except Exception as error:
            with self._lock:
                if self._phase == STARTING:  # nothing was armed: a failed (or stopped) Start
                    self._phase = IDLE
                    if not scan.interrupted:
                        log.exception("the scan failed before the detectors started")
                        self._fault = f"Start failed: the {scan.plan.axis} scan: {error}"
                elif not scan.interrupted:  # the frames taken are accounted for; the failure is the report's
                    log.exception("the scan failed")
                    self._scan_failure = f"the {scan.plan.axis} scan failed: {error}"
        with self._lock:
            self._scan = None
            self.scan_outcome = outcome
        self.check_progress()
        self._publish()

    def _launch(self) -> None:
        try:
            self.acquirer.prepare()
            self.acquirer.start()
        except Exception as error:
            log.exception("starting the acquisition failed")
            with self._lock:
                self._fault = f"Start failed at the Acquirer: {error}"
                self._phase = IDLE
            self._safely(self.recorder.abort)
            self._publish()
            return
        with self._lock:
            if self._phase == STARTING:
                self._phase = ACQUIRING
        self.check_progress()

    def stop(self) -> None:
        """Stop after the current frame; the Recorder closes the file at the series end. A scan
        stops its motor and its pulses; the frames taken are kept."""
        scan = self._scan
        if scan is not None:
            scan.stop()
        self._safely(self.acquirer.stop, raise_errors=True)

    def abort(self) -> None:
        """Stop both at once (and a scan's motor and trigger generator); whatever was written
        stays readable."""
        with self._lock:
            scan = self._scan
            if self._phase == STARTING:
                self._phase = ACQUIRING
        if scan is not None:
            scan.abort()
        errors = [self._safely(self.acquirer.abort), self._safely(self.recorder.abort)]
        self.check_progress()
        failed = [e for e in errors if e]
        if failed:
            raise PhotonflowError("; ".join(failed), reason="AbortIncomplete")

    # -- peers ----------------------------------------------------------------------------
    def peer_state_changed(self, peer: str, state: str, status: str | None = None) -> None:
        with self._lock:
            self._peers[peer].state = state
            if status is not None:
                self._peers[peer].status = status
        self.check_progress()
        if peer == RECORDER:  # a restarted Recorder may have repaired the last series' file
            self._refresh_report()
        self._publish()

    def peer_status_changed(self, peer: str, status: str) -> None:
        with self._lock:
            self._peers[peer].status = status
        self._publish()

    def peer_unreachable(self, peer: str, reason: str) -> None:
        self.peer_state_changed(peer, states.UNKNOWN, reason)

    def peer_counter_changed(self, name: str, value: int) -> None:
        with self._lock:
            setattr(self.counters, name, value)
        self._publish_counters()
        if self._status_throttle.ready():  # the Status names the frames written: keep it current
            self._publish()

    def tick(self) -> None:
        """Called periodically: ends series whose Recorder never saw the end, refreshes Status,
        and asks for a final report the Recorder could not give (it was down) until it does."""
        self.check_progress()
        if self._fault.startswith(UNCONFIRMED) and self._report_retry.ready():
            self._refresh_report()
        if self._reach_retry.ready():
            self._ask_unreachable_peers()
        self._publish()

    def _ask_unreachable_peers(self) -> None:
        """A peer its events call unreachable is asked directly: a subscription that broke while the
        peer started (Tango may then never deliver its next event) must not hold the Controller in
        FAULT once the peer answers."""
        for name, port in ((ACQUIRER, self.acquirer), (RECORDER, self.recorder)):
            with self._lock:
                unreachable = self._peers[name].state == states.UNKNOWN
            if not unreachable:
                continue
            try:
                state, status = port.state(), port.status()
            except Exception:  # noqa: BLE001 - the port's error (a Tango one): still unreachable, asked again later
                continue
            self.peer_state_changed(name, state, status)

    def _refresh_report(self) -> None:
        """After a series, a Recorder that restarted and repaired its file reports that file's
        accounting: the Controller's report follows it, so it matches the file."""
        with self._lock:
            report = self.last_report
            if self._phase != IDLE or report is None or not report.file:
                return
            try:
                if self.recorder.last_file() != report.file:
                    return
                recorder = self.recorder.counters()
            except Exception:  # noqa: BLE001 - the port's error (a Tango one) means not readable yet: asked again next tick
                return
            if self._fault.startswith(UNCONFIRMED):
                self._fault = ""
            if (recorder["frames_received"], recorder["frames_written"], recorder["missing_frames"]) == (
                report.frames_received, report.frames_written, report.missing_frames
            ):
                return
            report.frames_received = recorder["frames_received"]
            report.frames_written = recorder["frames_written"]
            report.missing_frames = recorder["missing_frames"]
            self.counters.frames_received = report.frames_received
            self.counters.frames_written = report.frames_written
            self.counters.missing_frames = report.missing_frames
        self._publish_counters()

    def check_progress(self) -> None:
        """Move through acquiring -> finishing -> idle, reading the peers' real state."""
        with self._lock:
            if self._scan is not None:  # the scan still moves, pulses or waits: it ends the series
                return
            if self._phase == ACQUIRING:
                if self._read_state(self.acquirer) in BUSY_STATES:
                    return
                self._phase = FINISHING
                self._finishing_since = self._clock()
            if self._phase != FINISHING:
                return
            if self._read_state(self.recorder) == states.RUNNING:
                if self._clock() - self._finishing_since < self.finish_timeout:
                    return
                log.warning("recorder did not see the series end within %s s; stopping it", self.finish_timeout)
                self._safely(self.recorder.stop)
            self._conclude()
        self._publish()

    def _read_state(self, port) -> str:
        try:
            return port.state()
        except Exception:  # noqa: BLE001 - an unreachable peer is UNKNOWN, which the combined state reports
            return states.UNKNOWN

    def _conclude(self) -> None:
        request = self.request
        try:
            acquired = self.acquirer.frames_acquired()
        except Exception:  # noqa: BLE001 - the port's error (a Tango one): the last count its events told stands
            acquired = self.counters.frames_acquired  # the last one its events told
        try:
            recorder = self.recorder.counters()
        except Exception as error:  # noqa: BLE001 - the Recorder is gone: report what its events told, until it returns
            self._fault = f"{UNCONFIRMED} ({error})"
            recorder = {
                "frames_received": self.counters.frames_received,
                "frames_written": self.counters.frames_written,
                "missing_frames": self.counters.missing_frames,
            }
        self.last_report = SeriesReport(
            series_id=self.series_id,
            frames_requested=request.frames if request else 0,
            frames_acquired=acquired,
            frames_received=recorder["frames_received"],
            frames_written=recorder["frames_written"],
            missing_frames=recorder["missing_frames"],
            file=self.counters.last_file,
            **self._scan_report(),
        )
        self.counters.frames_acquired = acquired
        self.counters.frames_received = recorder["frames_received"]
        self.counters.frames_written = recorder["frames_written"]
        self.counters.missing_frames = recorder["missing_frames"]
        self._phase = IDLE
        self._publish_counters()

    def _scan_report(self) -> dict[str, Any]:
        """The scan's part of the series report: its pulses and its problems."""
        outcome = self.scan_outcome
        problems = tuple(outcome.problems) if outcome else ()
        if self._scan_failure:
            problems += (self._scan_failure,)
        if outcome is None and not problems:
            return {}
        return {"pulses_sent": outcome.pulses_sent if outcome else None, "scan_problems": problems}

    # -- state ----------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return self._phase != IDLE

    def _require_idle(self, action: str) -> None:
        if self._phase != IDLE:
            raise StateError(f"cannot {action} while a series is running; Stop or Abort it first")

    def combined_state(self) -> tuple[str, str]:
        with self._lock:
            for peer in self._peers.values():
                if peer.state == states.UNKNOWN:
                    return states.FAULT, f"The {peer.name} is unreachable: {peer.status}"
            for peer in self._peers.values():
                if peer.state == states.FAULT:
                    return states.FAULT, f"The {peer.name} is in FAULT: {peer.status}"
            if self._fault:
                return states.FAULT, self._fault
            if self._phase != IDLE:
                written, requested = self.counters.frames_written, self.counters.frames_requested
                status = f"Series {self.series_id} {self._phase}: {written} of {requested} frames written."
                return states.RUNNING, status
            report = self.last_report
            if report is not None and report.scan_problems:
                return states.ALARM, (f"Scan problems in {report.describe()}: {'; '.join(report.scan_problems)}. "
                                      f"File: {report.file}")
            if report is not None and not report.complete:
                recorder = self._peers[RECORDER]  # its own account names the frames: "missing: 3-7, 12"
                told = f" The recorder: {recorder.status}" if recorder.state == states.ALARM and recorder.status else ""
                return states.ALARM, f"Frames lost in {report.describe()}. File: {report.file}.{told}"
            if report is not None:
                return states.ON, f"Last {report.describe()}; all accounted for. File: {report.file}"
            if self.request is None:
                return states.ON, "Ready: Configure the acquisition, then Start."
            return states.ON, "Configured; ready to Start."

    def _publish(self) -> None:
        state = self.combined_state()
        if state != self._published:
            self._published = state
            self._set_state(*state)

    def _publish_counters(self) -> None:
        self.listener.counters_changed(replace(self.counters))

    @staticmethod
    def _safely(action: Callable[[], Any], raise_errors: bool = False) -> str:
        try:
            action()
        except Exception as error:
            if raise_errors:
                raise
            log.warning("%s failed: %s", getattr(action, "__name__", action), error)
            return str(error)
        return ""


class _SeriesDetectors:
    """The detector side of a scan (``ScanDetectors``): the Controller's own series."""

    def __init__(self, controller: Controller):
        self.controller = controller

    def start(self) -> None:
        self.controller._start_detectors()

    def frames_acquired(self) -> int:
        return self.controller.acquirer.frames_acquired()

    def stop(self) -> None:
        self.controller.acquirer.stop()

    def abort(self) -> None:
        self.controller._safely(self.controller.acquirer.abort)
        self.controller._safely(self.controller.recorder.abort)
