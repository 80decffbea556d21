"""A position-compare output, as an IcePAP's or a PandABox's: armed with start, step, count and
pulse width, it fires pulse i when the motor's encoder crosses start + i × step in the step's
direction, and latches the encoder position and the time of each pulse.

Why a model of its own: the detectors' exposures must be tied to positions, not to when software
started the motor. The crossing time comes from the motor model's profile (``Motor.time_at``), so
it is exact whatever the load; the generator's thread waits for it on an injected ``wait`` and
sends the pulse with that time (the hardware time, even when the thread gets there late), never
before it. A motor that stops short leaves the train waiting, with the pulses sent so far, until
Disarm, as the hardware would.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from photonflow.errors import ConfigurationError
from photonflow.position_compare import PositionCompareRequest
from photonflow.simulators.beamline.motor import Motor
from photonflow.simulators.trigger_line import Pulse

log = logging.getLogger(__name__)

ON, STANDBY, RUNNING, ALARM = "ON", "STANDBY", "RUNNING", "ALARM"

POLL_S = 0.01  # how often a train whose next position the motor does not (yet) cross looks again
SMALLEST_WAIT_S = 1e-6  # a wait that rounding would make zero still lets the clock move


def wait_on_event(stop: threading.Event, seconds: float) -> None:
    """The real wait: ``seconds``, or until the train is disarmed."""
    stop.wait(seconds)


@dataclass
class _Train:
    """One arming: what was asked, and what was captured (filled by the train's thread)."""

    request: PositionCompareRequest
    armed_at: float  # on the motor's clock: a crossing before it is not this train's
    unix_offset: float  # UNIX time - motor clock time
    positions: np.ndarray
    times: np.ndarray  # UNIX
    sent: int = 0
    fault: str = ""
    disarmed: bool = False
    stop: threading.Event = field(default_factory=threading.Event)

    def position(self, index: int) -> float:
        return self.request.start + index * self.request.step


class PositionCompare:
    """A pulse generator driven by ``motor``'s encoder; each pulse goes to ``send`` (a trigger
    line's ``send``). ``wait(stop, seconds)`` waits on the motor's clock (tests pass one that moves
    their clock); ``unix_clock`` gives the pulses' times as UNIX seconds."""

    def __init__(
        self,
        motor: Motor,
        send: Callable[[Pulse], None],
        resolution: float = 1e-4,
        wait: Callable[[threading.Event, float], object] = wait_on_event,
        unix_clock: Callable[[], float] = time.time,
        name: str = "pcomp",
    ):
        if not (math.isfinite(resolution) and resolution > 0):
            raise ConfigurationError(f"{name}: the encoder resolution must be a positive number, got {resolution}")
        self.motor, self.name, self.resolution = motor, name, float(resolution)
        self._send, self._wait, self._unix_clock = send, wait, unix_clock
        self._lock = threading.Lock()
        self._train: _Train | None = None
        self._thread: threading.Thread | None = None

    # --- commands -----------------------------------------------------------------------------
    def arm(self, start: float, step: float, count: int, width: float) -> None:
        """Start a new train (a train under way is disarmed first; its capture is cleared). The
        values are checked as the Arm command's JSON is: ConfigurationError naming the key. The
        same calls as the continuous scan's trigger-generator port (arm, disarm, pulses_sent,
        captured_positions), so a scan can be tested on this model directly."""
        request = PositionCompareRequest.parse(json.dumps({"start": start, "step": step, "count": count,
                                                           "width": width}))
        self.disarm()
        now = self.motor.clock()
        train = _Train(request, now, self._unix_clock() - now,
                       np.zeros(request.count, dtype=np.float64), np.zeros(request.count, dtype=np.float64))
        with self._lock:
            self._train = train
        self._thread = threading.Thread(target=self._run, args=(train,), name=f"{self.name}-pulses", daemon=True)
        self._thread.start()

    def disarm(self) -> None:
        """Stop pulsing; what was captured stays readable."""
        with self._lock:
            train, thread = self._train, self._thread
            if train is not None:
                train.disarmed = True
                train.stop.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(5.0)

    def join(self, timeout: float | None = None) -> bool:
        """Wait until the train has ended (every pulse sent, a fault, or Disarm); True if it has."""
        thread = self._thread
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()

    def close(self) -> None:
        self.disarm()

    # --- what it shows ------------------------------------------------------------------------
    @property
    def request(self) -> PositionCompareRequest | None:
        """The train as armed (None before the first Arm)."""
        train = self._train
        return None if train is None else train.request

    @property
    def pulses_sent(self) -> int:
        train = self._train
        return 0 if train is None else train.sent

    @property
    def captured_positions(self) -> np.ndarray:
        """The encoder position of each pulse sent, quantised to the resolution."""
        with self._lock:
            return np.array([]) if self._train is None else self._train.positions[:self._train.sent].copy()

    @property
    def captured_times(self) -> np.ndarray:
        """The UNIX time of each pulse sent (its crossing time)."""
        with self._lock:
            return np.array([]) if self._train is None else self._train.times[:self._train.sent].copy()

    @property
    def armed_time(self) -> float:
        """UNIX time of the last Arm (0 before the first)."""
        train = self._train
        return 0.0 if train is None else train.armed_at + train.unix_offset

    @property
    def state(self) -> str:
        return self.state_and_status()[0]

    @property
    def status(self) -> str:
        return self.state_and_status()[1]

    def state_and_status(self) -> tuple[str, str]:
        """Both read at once, so that they agree."""
        with self._lock:
            train = self._train
            if train is None:
                return ON, "Idle: not armed; Arm it with start, step, count and width."
            request, sent, unit, motor = train.request, train.sent, self.motor.unit, self.motor.name
            if train.fault and not train.disarmed:
                return ALARM, f"{train.fault} {sent} of {request.count} pulses sent; Disarm, or Arm again."
            if sent == request.count:
                first, last = train.positions[0], train.positions[sent - 1]
                return ON, f"Done: {sent} pulses sent, {motor} {first:g} to {last:g} {unit}."
            if train.disarmed:
                stopped = f" It had stopped: {train.fault}" if train.fault else ""
                return ON, f"Disarmed after {sent} of {request.count} pulses.{stopped}"
            waiting = f"waiting for {motor} to cross {train.position(sent):g} {unit}"
            if sent == 0:
                return STANDBY, (f"Armed: {request.count} pulses every {request.step:g} {unit} from "
                                 f"{request.start:g} {unit}; {waiting}.")
            return RUNNING, f"Pulsing: {sent} of {request.count} pulses sent; {waiting}."

    # --- the train's thread -------------------------------------------------------------------
    def _run(self, train: _Train) -> None:
        try:
            for index in range(train.request.count):
                crossing = self._crossing(train, index)
                if crossing is None or not self._fire(train, index, crossing):
                    return
        except Exception as error:  # the thread must say why it ended, never die silently
            log.exception("%s: the pulse train failed", self.name)
            with self._lock:
                train.fault = f"The pulse train failed ({type(error).__name__}: {error})."

    def _crossing(self, train: _Train, index: int) -> float | None:
        """The motor-clock time the encoder crosses pulse ``index``'s position, once that time has
        come; None if the train was disarmed first."""
        position = train.position(index)
        direction = math.copysign(1.0, train.request.step)
        while not train.stop.is_set():
            crossing = self.motor.time_at(position, direction)
            if crossing is not None and crossing < train.armed_at:
                crossing = None  # passed before the Arm: the output was not listening then
            now = self.motor.clock()
            if crossing is not None and crossing <= now:
                return crossing
            # looked at again within POLL_S even when known: a Stop and a new move may change it
            delay = POLL_S if crossing is None else max(min(crossing - now, POLL_S), SMALLEST_WAIT_S)
            self._wait(train.stop, delay)
        return None

    def _fire(self, train: _Train, index: int, crossing: float) -> bool:
        """Send pulse ``index`` and capture it; False (a fault) if it overlaps the one before."""
        width = train.request.width
        if index > 0:
            since = crossing - (train.times[index - 1] - train.unix_offset)
            if since < width:
                with self._lock:
                    train.fault = (
                        f"pulses overlap: pulse {index} at {train.position(index):g} {self.motor.unit} came "
                        f"{since * 1e3:.3g} ms after the previous one, within its width of {width * 1e3:.3g} ms: "
                        f"lower the width below {since * 1e3:.3g} ms (or slow {self.motor.name} down)."
                    )
                return False
        encoder = round(self.motor.position_at(crossing) / self.resolution) * self.resolution
        pulse = Pulse(index, crossing + train.unix_offset, width, encoder)
        self._send(pulse)
        with self._lock:
            train.positions[index], train.times[index] = encoder, pulse.time
            train.sent = index + 1
        return True
