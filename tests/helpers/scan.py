"""Plain-Python peers of a continuous scan on a clock the test moves: the beamline simulator's motor
model as the MotorPort, a trigger generator that fires as that motor crosses each trigger position,
and a detector side that takes one frame per pulse. Every call is written to one journal, so a test
reads the order of operations across all of them."""

from __future__ import annotations

import math
from types import SimpleNamespace

from photonflow import states
from photonflow.acquisition.acquirer import validate_settings
from photonflow.camera import AcquisitionSettings
from photonflow.control.continuous_scan import MOVING
from photonflow.control.controller import ACQUIRER, RECORDER, AcquisitionRequest, Controller, ScanAxis
from photonflow.simulators.beamline.motor import Motor
from tests.helpers.controller import FakeAcquirer, FakeRecorder
from tests.helpers.fakes import EventLog
from tests.helpers.waiting import ManualClock

MAXIMUM_VELOCITY = 90.0  # deg/s, the demo's omega
ACCELERATION = 360.0  # deg/s²
RESOLUTION = 1e-4  # deg: the encoder's


class PortMotor:
    """A MotorPort over the simulated beamline's trapezoidal motor model."""

    def __init__(self, clock: ManualClock, journal: list, position: float = 0.0, velocity: float = 30.0,
                 maximum_velocity: float = MAXIMUM_VELOCITY, acceleration: float = ACCELERATION,
                 low: float = -360.0, high: float = 360.0):
        self.model = Motor("omega", position, velocity, acceleration, low, high, "deg", clock=clock)
        self.journal = journal
        self._maximum_velocity = maximum_velocity

    def position(self) -> float:
        return self.model.position

    def velocity(self) -> float:
        return self.model.velocity

    def set_velocity(self, velocity: float) -> None:
        self.journal.append(("motor.set_velocity", velocity))
        self.model.velocity = velocity

    def maximum_velocity(self) -> float:
        return self._maximum_velocity

    def acceleration(self) -> float:
        return self.model.acceleration

    def soft_limits(self) -> tuple[float, float]:
        return self.model.low, self.model.high

    def unit(self) -> str:
        return "deg"

    def move_to(self, position: float) -> None:
        self.journal.append(("motor.move_to", position))
        self.model.move_to(position)

    def stop(self) -> None:
        self.journal.append("motor.stop")
        self.model.stop()

    def state(self) -> str:
        return MOVING if self.model.moving else "ON"


class PortGenerator:
    """A TriggerGeneratorPort: once armed, a pulse each time the motor crosses start + i*step in the
    step's direction, its captured position that crossing (quantised like an encoder) plus
    ``error(i)``; ``fail_after`` pulses it stops, as a generator that dies halfway."""

    def __init__(self, motor: PortMotor, journal: list, error=lambda index: 0.0, fail_after: int | None = None):
        self.motor, self.journal, self.error, self.fail_after = motor, journal, error, fail_after
        self.armed: tuple[float, float, int, float] | None = None  # as last armed
        self.active = False
        self._sent = 0

    def arm(self, start: float, step: float, count: int, width: float) -> None:
        self.journal.append(("generator.arm", start, step, count, width))
        self.armed, self.active, self._sent = (start, step, count, width), True, 0

    def disarm(self) -> None:
        self.journal.append("generator.disarm")
        self._update()
        self.active = False

    def _update(self) -> None:
        if not self.active or self.armed is None:
            return
        start, step, count, _ = self.armed
        crossed = math.floor((self.motor.position() - start) / step + 1e-9) + 1
        limit = count if self.fail_after is None else min(count, self.fail_after)
        self._sent = max(self._sent, min(max(crossed, 0), limit))

    def pulses_sent(self) -> int:
        self._update()
        return self._sent

    def captured_positions(self) -> list[float]:
        if self.armed is None:
            return []
        start, step = self.armed[:2]
        return [round((start + i * step + self.error(i)) / RESOLUTION) * RESOLUTION for i in range(self._sent)]


class PortDetectors:
    """ScanDetectors: started by the scan, a frame per pulse (at most ``frames_limit``)."""

    def __init__(self, generator: PortGenerator, journal: list, frames_limit: int | None = None):
        self.generator, self.journal, self.frames_limit = generator, journal, frames_limit
        self.running = False
        self._frames = 0

    def start(self) -> None:
        self.journal.append("detectors.start")
        self.running = True

    def frames_acquired(self) -> int:
        if self.running:
            pulses = self.generator.pulses_sent()
            self._frames = pulses if self.frames_limit is None else min(pulses, self.frames_limit)
        return self._frames

    def stop(self) -> None:
        self.journal.append("detectors.stop")
        self.running = False

    def abort(self) -> None:
        self.journal.append("detectors.abort")
        self.running = False


def advancing(clock: ManualClock, then=None):
    """A scan's wait that moves the test's clock instead of sleeping; ``then(clock.now)`` after each."""

    def wait(seconds: float) -> None:
        clock.now += seconds
        if then is not None:
            then(clock.now)

    return wait


class TriggeredAcquirer(FakeAcquirer):
    """The Acquirer as the Controller sees it, on the trigger line: it offers the external modes
    and, started, takes a frame per pulse of ``generator`` (at most ``frames_limit``), ending ON
    once it has the frames asked for or is stopped."""

    def __init__(self, generator: PortGenerator, journal: list, frames_limit: int | None = None):
        super().__init__()
        self.generator, self.journal, self.frames_limit = generator, journal, frames_limit
        self.frames = 0
        self.rotation = None

    def check_settings(self, request: AcquisitionRequest) -> None:
        settings = AcquisitionSettings(request.frames, request.exposure, request.period, request.trigger_mode)
        validate_settings(settings, SimpleNamespace(min_exposure=1e-6,
                                                    trigger_modes=("internal", "external", "external_enable")))

    def configure(self, request: AcquisitionRequest, series_id: int) -> None:
        super().configure(request, series_id)
        self.journal.append(("acquirer.configure", request.trigger_mode, request.rotation))
        self.frames, self.rotation = request.frames, request.rotation

    def start(self) -> None:
        self.journal.append("acquirer.start")
        super().start()

    def frames_acquired(self) -> int:
        if self.current_state == states.RUNNING:
            pulses = self.generator.pulses_sent()
            self.acquired = pulses if self.frames_limit is None else min(pulses, self.frames_limit)
            if self.acquired >= self.frames:
                self.current_state = states.ON
        return self.acquired

    def stop(self) -> None:
        self.journal.append("acquirer.stop")
        super().stop()
        self.current_state = states.ON

    def abort(self) -> None:
        self.journal.append("acquirer.abort")
        super().abort()


class JournalingRecorder(FakeRecorder):
    def __init__(self, journal: list):
        super().__init__()
        self.journal = journal

    def arm(self, frames: int, series_id: int, endpoint: str, file: str | None, protocol: str,
            blissdata_scan: bool = True) -> str:
        self.journal.append(("recorder.arm", frames))
        return super().arm(frames, series_id, endpoint, file, protocol, blissdata_scan)

    def abort(self) -> None:
        self.journal.append("recorder.abort")
        super().abort()


def scanning_controller_rig(fail_after=None, error=lambda index: 0.0, frames_limit=None, then=None):
    """A Controller with one scan axis, omega: (controller, motor, generator, acquirer, recorder,
    journal, clock); the scan runs at Start, on the test's clock, ``then(now)`` after each wait."""
    clock, journal = ManualClock(), []
    motor = PortMotor(clock, journal)
    generator = PortGenerator(motor, journal, error, fail_after)
    acquirer, recorder = TriggeredAcquirer(generator, journal, frames_limit), JournalingRecorder(journal)
    controller = Controller(
        acquirer, recorder, EventLog(), finish_timeout=5, clock=clock, run_in_background=lambda work: work(),
        scan_axes={"omega": ScanAxis(motor, generator)}, scan_wait=advancing(clock, then),
    )
    controller.peer_state_changed(ACQUIRER, states.ON, "idle")
    controller.peer_state_changed(RECORDER, states.ON, "idle")
    return controller, motor, generator, acquirer, recorder, journal, clock


def recorder_closes(controller, acquirer, recorder, written=None):
    """The Recorder saw the series end: it wrote what the Acquirer acquired (or ``written``)."""
    written = acquirer.acquired if written is None else written
    recorder.numbers = {"frames_received": written, "frames_written": written, "missing_frames": 0}
    recorder.current_state = states.ON
    controller.peer_state_changed(ACQUIRER, acquirer.current_state)
    controller.peer_state_changed(RECORDER, states.ON)
