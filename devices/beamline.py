"""The simulated beamline's Tango devices: thin faces on ``photonflow.simulators.beamline``.

Each device turns its properties into a model's arguments, reads State, Status and values
from the model, and a small thread of its own pushes change events (Position at the
``RefreshInterval``, 20 Hz by default, while a motor moves). Peers (the storage ring a
shutter watches, the monochromator an attenuator reads) are reached lazily from that thread
through ``DeviceProxy`` and may be down: the device then says so in its Status and carries on.
The "Simulated" prefix keeps the classes apart from Sardana's ``Motor`` in one database.

A position-compare reads its motor's encoder as the hardware does, directly: from the motor's
model in this same server process (``_MOTORS``), never through Tango, so its crossing times are
the model's own.
"""

from __future__ import annotations

import logging
import math
import threading
import time

import tango
import zmq
from tango import AttrWriteType
from tango.server import attribute, command, device_property

from photonflow.devices.base import PhotonflowDevice
from photonflow.devices.common import operator_errors, to_dev_state
from photonflow.errors import ConfigurationError
from photonflow.position_compare import MAX_PULSES, PositionCompareRequest
from photonflow.simulators.beamline import (
    Attenuator,
    Filter,
    Monochromator,
    Motor,
    PositionCompare,
    Shutter,
    Slits,
    StorageRing,
)
from photonflow.simulators.trigger_line import TriggerLineOutput

log = logging.getLogger(__name__)

# The motors this server process runs, by device name (lower case): a position-compare's encoder.
_MOTORS: dict[str, Motor] = {}


def _registry_key(device: str) -> str:
    """A device name as ``_MOTORS`` keys it: lower case, without a tango://host:port/ prefix."""
    name = device.strip().lower()
    return name.split("/", 3)[3] if name.startswith("tango://") else name


class _Peer:
    """A peer device reached lazily, tolerant of it being down: ``read`` returns None then."""

    def __init__(self, name: str, timeout_s: float = 3.0):
        self.name = name.strip()
        self.timeout_ms = int(timeout_s * 1000)
        self._proxy: tango.DeviceProxy | None = None
        self.error = ""

    def __bool__(self) -> bool:
        return bool(self.name)

    def read(self, *attributes: str) -> list | None:
        try:
            if self._proxy is None:
                self._proxy = tango.DeviceProxy(self.name)
                self._proxy.set_timeout_millis(self.timeout_ms)
            values = [reading.value for reading in self._proxy.read_attributes(list(attributes))]
            self.error = ""
            return values
        except tango.DevFailed as error:
            self.error = error.args[0].desc.strip() if error.args else str(error)
            return None

    def state(self) -> tango.DevState | None:
        values = self.read("State")
        return None if values is None else values[0]


class _SimulatedDevice(PhotonflowDevice):
    """The shell every simulated beamline device shares: its core is a model whose State, Status
    and values are read live; a refresh thread of its own pushes what changed as events."""

    RefreshInterval = device_property(
        dtype=float, default_value=0.05, doc="Seconds between checks for changed values to push as events"
    )

    def create_core(self, listener):
        """The model; it reports nothing itself (the refresh thread reads it), so ``listener`` is unused."""
        return self.create_model()

    def create_model(self):
        raise NotImplementedError

    def event_values(self) -> dict:
        """The values pushed as change events when they change."""
        return {}

    def poll_peers(self) -> None:
        """Read peer devices (from the refresh thread only)."""

    def core_ready(self, core) -> None:
        self._pushed: dict = {}
        self._refresh_lock = threading.Lock()
        self.refresh()
        stop = self._stop = threading.Event()
        threading.Thread(
            target=self._refresh_loop, args=(stop,), name=f"refresh-{self.get_name()}", daemon=True
        ).start()

    def release_core(self, core) -> None:
        # Not joined: the thread may be waiting for this device's monitor, which Init holds.
        self._stop.set()

    def _refresh_loop(self, stop: threading.Event) -> None:
        with tango.EnsureOmniThread():
            while not stop.wait(max(self.RefreshInterval, 0.01)):
                try:
                    self.poll_peers()  # not under the monitor: a slow peer must not hold up this device's clients
                    # the monitor first, as a command's or a write's refresh() has it: pushing an event
                    # takes it, so holding the refresh lock without it deadlocked against a write
                    with tango.AutoTangoMonitor(self):
                        if not stop.is_set():
                            self.refresh()
                except Exception:
                    log.exception("refreshing %s failed", self.get_name())

    def core_state(self, core) -> tuple[str, str]:
        return self.model_state()

    def model_state(self) -> tuple[str, str]:
        """State and status as read now: a model's own, or with what a device adds (a peer's news)."""
        return self.core.state, self.core.status

    def refresh(self) -> None:
        """Push State/Status and every value that changed since the last push."""
        if self.core is None:
            return
        with self._refresh_lock:
            state, status = self.model_state()
            if (state, status) != self._pushed.get("State/Status"):
                self._pushed["State/Status"] = (state, status)
                self.publish_state(state, status)
            for name, value in self.event_values().items():
                if self._pushed.get(name) != value:
                    self._pushed[name] = value
                    self.publish_value(name, value)

    def dev_state(self):
        return to_dev_state(self.model_state()[0]) if self.core is not None else super().dev_state()

    def dev_status(self):
        return self.model_state()[1] if self.core is not None else super().dev_status()

    def set_attribute_unit(self, unit: str, *names: str) -> None:
        attributes = self.get_device_attr()
        for name in names:
            attr = attributes.get_attr_by_name(name)
            config = attr.get_properties()
            config.unit = unit
            attr.set_properties(config)


class SimulatedMotor(_SimulatedDevice):
    """One simulated axis moving along a trapezoidal velocity profile; writing Position moves it."""

    extra_events = ("Position", "Target", "Velocity")

    InitialPosition = device_property(dtype=float, default_value=0.0, doc="Position at start-up")
    InitialVelocity = device_property(dtype=float, default_value=1.0, doc="Velocity at start-up, unit/s")
    InitialAcceleration = device_property(dtype=float, default_value=2.0, doc="Acceleration at start-up, unit/s²")
    SoftLimits = device_property(
        dtype=(float,), default_value=[-100.0, 100.0], doc="Lowest and highest position a move may go to"
    )
    Unit = device_property(dtype=str, default_value="mm", doc="Unit of the position: mm, deg, um...")
    MaximumVelocity = device_property(
        dtype=float, default_value=0.0, doc="Fastest Velocity the axis may be set to, unit/s; 0: no maximum"
    )

    def create_model(self) -> Motor:
        if len(self.SoftLimits) != 2:
            raise ConfigurationError(f"SoftLimits needs two numbers, low and high, got {list(self.SoftLimits)}")
        low, high = self.SoftLimits
        motor = Motor(
            self.get_name().rsplit("/", 1)[-1], self.InitialPosition, self.InitialVelocity, self.InitialAcceleration,
            low, high, self.Unit, maximum_velocity=self.MaximumVelocity or math.inf,
        )
        self.set_attribute_unit(self.Unit, "Position", "Target", "SoftLimitLow", "SoftLimitHigh")
        self.set_attribute_unit(f"{self.Unit}/s", "Velocity", "MaximumVelocity")
        self.set_attribute_unit(f"{self.Unit}/s^2", "Acceleration")  # pint (Taurus) knows s^2, not s2
        _MOTORS[_registry_key(self.get_name())] = motor
        return motor

    def release_core(self, core) -> None:
        super().release_core(core)
        if _MOTORS.get(_registry_key(self.get_name())) is core:
            del _MOTORS[_registry_key(self.get_name())]

    def event_values(self) -> dict:
        return {"Position": self.core.position, "Target": self.core.target}

    @attribute(dtype=float, access=AttrWriteType.READ_WRITE, format="%.4f",
               doc="Where the axis is; writing it moves the axis there, within the soft limits")
    def Position(self):
        return self._core().position

    @Position.write
    @operator_errors
    def Position(self, value):
        self._core().move_to(value)
        self.refresh()

    @attribute(dtype=float, format="%.4f", doc="Where the current (or last) move ends")
    def Target(self):
        return self._core().target

    @attribute(dtype=float, access=AttrWriteType.READ_WRITE, format="%.4f", min_value=0,
               doc="Cruising speed of a move")
    def Velocity(self):
        return self._core().velocity

    @Velocity.write
    @operator_errors
    def Velocity(self, value):
        self._core().velocity = value
        self.publish_value("Velocity", self._core().velocity)

    @attribute(name="MaximumVelocity", dtype=float, format="%.4f",
               doc="Fastest Velocity the axis may be set to (property MaximumVelocity)")
    def read_maximum_velocity(self):
        return self._core().maximum_velocity

    @attribute(dtype=float, access=AttrWriteType.READ_WRITE, format="%.4f", min_value=0,
               doc="Acceleration and deceleration of a move")
    def Acceleration(self):
        return self._core().acceleration

    @Acceleration.write
    @operator_errors
    def Acceleration(self, value):
        self._core().acceleration = value

    @attribute(dtype=float, format="%.4f", doc="Lowest position a move may go to (property SoftLimits)")
    def SoftLimitLow(self):
        return self._core().low

    @attribute(dtype=float, format="%.4f", doc="Highest position a move may go to (property SoftLimits)")
    def SoftLimitHigh(self):
        return self._core().high

    @command(doc_in="Decelerate to rest")
    @operator_errors
    def Stop(self):
        self._core().stop()
        self.refresh()


class SimulatedPositionCompare(_SimulatedDevice):
    """A position-compare output (an IcePAP's or a PandABox's) on a SimulatedMotor of this server:
    once armed, a pulse on its trigger line each time the encoder crosses start + i × step, with
    the encoder position and time of each pulse captured for the data's per-frame angles."""

    extra_events = ("PulsesSent",)

    Motor = device_property(
        dtype=str, default_value="",
        doc="The SimulatedMotor whose encoder fires the pulses (device name); this same server must run it",
    )
    TriggerOutput = device_property(
        dtype=str, default_value="",
        doc="The trigger line it drives: the ZeroMQ address it binds, which the detectors' trigger inputs "
            "connect to, e.g. ipc:///var/photonflow/run/omega.trigger",
    )
    EncoderResolution = device_property(
        dtype=float, default_value=1e-4, doc="The encoder's step in the motor's unit: each captured position is a "
                                             "multiple of it",
    )

    def create_model(self) -> PositionCompare:
        motor = self._motor()
        address = self.TriggerOutput.strip()
        if not address:
            raise ConfigurationError(
                "TriggerOutput is empty: set it to the trigger line the detectors' inputs connect to, "
                "e.g. ipc://${PHOTONFLOW_VAR}/run/omega.trigger"
            )
        try:
            self._output = TriggerLineOutput(address)
        except zmq.ZMQError as error:
            raise ConfigurationError(
                f"TriggerOutput {address} cannot be bound ({error}): another output may drive this line, or an "
                "ipc:// path is longer than the 107 bytes ZeroMQ takes; choose another address"
            ) from None
        try:
            model = PositionCompare(motor, self._output.send, self.EncoderResolution,
                                    name=self.get_name().rsplit("/", 1)[-1])
        except ConfigurationError:
            self._output.close()
            raise
        self.set_attribute_unit(motor.unit, "Start", "Step", "CapturedPositions")
        return model

    def _motor(self) -> Motor:
        """The motor's model, from this server's motors: ConfigurationError saying how to fix the property."""
        motor = _MOTORS.get(_registry_key(self.Motor))
        if motor is None:
            served = ", ".join(sorted(_MOTORS)) or "none"
            raise ConfigurationError(
                f"Motor {self.Motor!r} is not a SimulatedMotor of this server (its motors: {served}): set the "
                "property Motor to one of them, or run this position-compare in the motor's server"
            )
        return motor

    def release_core(self, core) -> None:
        super().release_core(core)
        core.close()
        self._output.close()

    def model_state(self) -> tuple[str, str]:
        return self.core.state_and_status()

    def event_values(self) -> dict:
        return {"PulsesSent": self.core.pulses_sent}

    def _armed(self, field: str) -> float:
        request = self._core().request
        return 0 if request is None else getattr(request, field)

    @command(dtype_in=str, doc_in='JSON {"start": 0.0, "step": 0.1, "count": 100, "width": 0.001}: a pulse each '
                                 "time the encoder crosses start + i*step in the step's direction, width in s")
    @operator_errors
    def Arm(self, text):
        request = PositionCompareRequest.parse(text)
        core = self._core()
        core.motor = self._motor()  # the model of the motor as it is now (an Init makes a new one)
        core.arm(request.start, request.step, request.count, request.width)
        self.refresh()

    @command(doc_in="Stop pulsing; what was captured stays readable")
    @operator_errors
    def Disarm(self):
        self._core().disarm()
        self.refresh()

    @attribute(dtype=float, format="%.4f", doc="Position of the first pulse, as armed")
    def Start(self):
        return self._armed("start")

    @attribute(dtype=float, format="%.4f", doc="Distance between pulses, signed, as armed")
    def Step(self):
        return self._armed("step")

    @attribute(dtype=int, doc="Pulses the train has, as armed")
    def Count(self):
        return self._armed("count")

    @attribute(dtype=float, unit="s", format="%.6f", doc="How long each pulse stays high, as armed")
    def PulseWidth(self):
        return self._armed("width")

    @attribute(dtype=int, doc="Pulses sent since the last Arm")
    def PulsesSent(self):
        return self._core().pulses_sent

    @attribute(dtype=(float,), max_dim_x=MAX_PULSES, format="%.4f",
               doc="The encoder position at each pulse sent, in order")
    def CapturedPositions(self):
        return self._core().captured_positions

    @attribute(dtype=(float,), max_dim_x=MAX_PULSES, unit="s", format="%.6f",
               doc="The time (UNIX seconds) of each pulse sent: when the encoder crossed its position")
    def CapturedTimes(self):
        return self._core().captured_times

    @attribute(dtype=float, unit="s", format="%.6f", doc="When it was last armed (UNIX seconds; 0: never)")
    def ArmedTime(self):
        return self._core().armed_time

    @attribute(name="TriggerOutput", dtype=str, doc="The trigger line it drives (property TriggerOutput)")
    def read_trigger_output(self):
        self._core()
        return self._output.address


class SimulatedMonochromator(_SimulatedDevice):
    """A double-crystal monochromator (Si(111) by default): writing Energy or Wavelength moves its Bragg axis."""

    extra_events = ("Energy", "Wavelength", "BraggAngle")

    InitialEnergy = device_property(dtype=float, default_value=12.4, doc="Photon energy at start-up, keV")
    EnergyRange = device_property(dtype=(float,), default_value=[5.0, 25.0], doc="Lowest and highest energy, keV")
    DSpacing = device_property(dtype=float, default_value=3.13560, doc="Crystal d-spacing, Å (Si(111): 3.13560)")
    BraggVelocity = device_property(dtype=float, default_value=2.0, doc="Bragg axis velocity, deg/s")
    BraggAcceleration = device_property(dtype=float, default_value=8.0, doc="Bragg axis acceleration, deg/s²")

    def create_model(self) -> Monochromator:
        if len(self.EnergyRange) != 2:
            raise ConfigurationError(f"EnergyRange needs two numbers, low and high keV, got {list(self.EnergyRange)}")
        low, high = self.EnergyRange
        return Monochromator(
            self.InitialEnergy, low, high, self.DSpacing,
            self.BraggVelocity, self.BraggAcceleration,
        )

    def event_values(self) -> dict:
        mono = self.core
        return {"Energy": mono.energy, "Wavelength": mono.wavelength, "BraggAngle": mono.bragg.position}

    @attribute(dtype=float, access=AttrWriteType.READ_WRITE, unit="keV", format="%.5f",
               doc="Photon energy; writing it moves the Bragg axis, within EnergyLow..EnergyHigh")
    def Energy(self):
        return self._core().energy

    @Energy.write
    @operator_errors
    def Energy(self, value):
        self._core().move_energy(value)
        self.refresh()

    @attribute(dtype=float, access=AttrWriteType.READ_WRITE, unit="Å", format="%.6f",
               doc="X-ray wavelength, 12.398419843320026 / Energy; writing it moves to that energy")
    def Wavelength(self):
        return self._core().wavelength

    @Wavelength.write
    @operator_errors
    def Wavelength(self, value):
        if not value > 0:
            raise ConfigurationError(f"the wavelength must be positive, got {value} Å")
        self._core().move_wavelength(value)
        self.refresh()

    @attribute(dtype=float, unit="deg", format="%.5f", doc="Bragg angle of the crystals")
    def BraggAngle(self):
        return self._core().bragg.position

    @attribute(dtype=float, unit="keV", format="%.3f", doc="Lowest energy (property EnergyRange)")
    def EnergyLow(self):
        return self._core().low_energy

    @attribute(dtype=float, unit="keV", format="%.3f", doc="Highest energy (property EnergyRange)")
    def EnergyHigh(self):
        return self._core().high_energy

    @command(doc_in="Stop the Bragg axis")
    @operator_errors
    def Stop(self):
        self._core().stop()
        self.refresh()


class SimulatedStorageRing(_SimulatedDevice):
    """The storage ring's beam: current decaying with the lifetime, topped up every TopUpPeriod."""

    extra_events = ("Current", "RefillCountdown")

    RefreshInterval = device_property(dtype=float, default_value=0.5, doc="Seconds between Current events")
    TopUpCurrent = device_property(dtype=float, default_value=200.0, doc="Nominal current, after a top-up, mA")
    BeamLifetime = device_property(dtype=float, default_value=36000.0, doc="Beam lifetime (1/e), s")
    TopUpPeriod = device_property(dtype=float, default_value=120.0, doc="Seconds between top-ups")
    ElectronEnergy = device_property(dtype=float, default_value=3.0, doc="Electron energy, GeV")
    OperationMode = device_property(dtype=str, default_value="USER", doc="Operation mode")
    Filling = device_property(dtype=str, default_value="uniform", doc="Filling pattern")

    def create_model(self) -> StorageRing:
        return StorageRing(
            self.TopUpCurrent, self.BeamLifetime, self.TopUpPeriod, self.ElectronEnergy, self.OperationMode,
            self.Filling,
        )

    def event_values(self) -> dict:
        return {"Current": round(self.core.current, 3), "RefillCountdown": round(self.core.refill_countdown)}

    @attribute(dtype=float, unit="mA", format="%.3f", min_value=0, doc="Stored current")
    def Current(self):
        return self._core().current

    @attribute(dtype=float, unit="mA", format="%.1f", doc="Current right after a top-up")
    def NominalCurrent(self):
        return self._core().nominal_current

    @attribute(dtype=float, unit="s", format="%.0f", doc="Beam lifetime (1/e of the current)")
    def Lifetime(self):
        return self._core().lifetime

    @attribute(dtype=float, unit="s", format="%.1f", doc="Seconds to the next top-up")
    def RefillCountdown(self):
        return self._core().refill_countdown

    @attribute(dtype=float, unit="GeV", format="%.2f", doc="Electron energy")
    def Energy(self):
        return self._core().energy

    @attribute(dtype=str, doc="Operation mode (USER, MDT...)")
    def Mode(self):
        return self._core().mode

    @attribute(dtype=str, doc="Filling pattern (uniform, 16-bunch...)")
    def FillingMode(self):
        return self._core().filling_mode

    @command(doc_in="Lose the beam: the current drops to 0 (shutters watching this ring close)")
    @operator_errors
    def BeamLoss(self):
        self._core().beam_loss()
        self.refresh()

    @command(doc_in="Refill the ring to the nominal current")
    @operator_errors
    def RestoreBeam(self):
        self._core().restore()
        self.refresh()


class SimulatedShutter(_SimulatedDevice):
    """A beam shutter; it closes itself when the storage ring it watches loses the beam."""

    StorageRing = device_property(dtype=str, default_value="", doc="The storage ring device to watch; empty: none")
    OpenAtStart = device_property(dtype=bool, default_value=False, doc="Open at start-up (for demos)")
    TravelTime = device_property(dtype=float, default_value=0.1, doc="Seconds to open or close")
    BeamThreshold = device_property(dtype=float, default_value=0.1, doc="Below this ring current (mA), no beam")
    PeerPollInterval = device_property(dtype=float, default_value=0.2, doc="Seconds between reads of the ring")

    def create_model(self) -> Shutter:
        self._ring = _Peer(self.StorageRing)
        self._beam: bool | None = None  # unknown until the ring has been read
        self._next_poll = 0.0
        return Shutter(self.OpenAtStart, self.TravelTime, beam_available=lambda: self._beam is not False)

    def model_state(self) -> tuple[str, str]:
        state, status = self.core.state, self.core.status
        if self._ring and self._beam is None and self._ring.error:
            status += f" Storage ring {self._ring.name} unreachable ({self._ring.error}): no beam-loss interlock."
        return state, status

    def poll_peers(self) -> None:
        if not self._ring or time.monotonic() < self._next_poll:
            return
        self._next_poll = time.monotonic() + self.PeerPollInterval
        values = self._ring.read("State", "Current")
        if values is None:
            self._beam = None
            return
        state, current = values
        self._beam = state != tango.DevState.FAULT and current >= self.BeamThreshold
        if not self._beam:
            self.core.beam_lost()

    @attribute(dtype=bool, doc="The watched storage ring has beam (True without a ring to watch)")
    def BeamAvailable(self):
        self._core()
        return self._beam is not False

    @command(doc_in="Open the shutter (refused without beam or in FAULT)")
    @operator_errors
    def Open(self):
        self._core().open()
        self.refresh()

    @command(doc_in="Close the shutter")
    @operator_errors
    def Close(self):
        self._core().close()
        self.refresh()

    @command(doc_in="Clear a fault; the shutter stays where it is")
    @operator_errors
    def Reset(self):
        self._core().reset()
        self.refresh()


class SimulatedSlits(_SimulatedDevice):
    """Slits driven as horizontal/vertical gap and offset (mm)."""

    extra_events = ("HorizontalGap", "HorizontalOffset", "VerticalGap", "VerticalOffset")
    AXES = {
        "HorizontalGap": "horizontal_gap", "HorizontalOffset": "horizontal_offset",
        "VerticalGap": "vertical_gap", "VerticalOffset": "vertical_offset",
    }

    InitialHorizontalGap = device_property(dtype=float, default_value=1.0, doc="mm at start-up")
    InitialVerticalGap = device_property(dtype=float, default_value=1.0, doc="mm at start-up")
    MaxGap = device_property(dtype=float, default_value=10.0, doc="Widest gap, mm")
    MaxOffset = device_property(dtype=float, default_value=5.0, doc="Largest offset either way, mm")
    Velocity = device_property(dtype=float, default_value=0.5, doc="Blade velocity, mm/s")
    Acceleration = device_property(dtype=float, default_value=2.0, doc="Blade acceleration, mm/s²")

    def create_model(self) -> Slits:
        return Slits(
            horizontal_gap=self.InitialHorizontalGap, vertical_gap=self.InitialVerticalGap,
            max_gap=self.MaxGap, max_offset=self.MaxOffset, velocity=self.Velocity, acceleration=self.Acceleration,
        )

    def event_values(self) -> dict:
        return {name: self.core[axis].position for name, axis in self.AXES.items()}

    def _read(self, name: str) -> float:
        return self._core()[self.AXES[name]].position

    def _move(self, name: str, value: float) -> None:
        self._core().move(self.AXES[name], value)
        self.refresh()

    @attribute(dtype=float, access=AttrWriteType.READ_WRITE, unit="mm", format="%.4f",
               doc="Horizontal opening, 0..MaxGap")
    def HorizontalGap(self):
        return self._read("HorizontalGap")

    @HorizontalGap.write
    @operator_errors
    def HorizontalGap(self, value):
        self._move("HorizontalGap", value)

    @attribute(dtype=float, access=AttrWriteType.READ_WRITE, unit="mm", format="%.4f",
               doc="Horizontal centre of the opening, -MaxOffset..MaxOffset")
    def HorizontalOffset(self):
        return self._read("HorizontalOffset")

    @HorizontalOffset.write
    @operator_errors
    def HorizontalOffset(self, value):
        self._move("HorizontalOffset", value)

    @attribute(dtype=float, access=AttrWriteType.READ_WRITE, unit="mm", format="%.4f",
               doc="Vertical opening, 0..MaxGap")
    def VerticalGap(self):
        return self._read("VerticalGap")

    @VerticalGap.write
    @operator_errors
    def VerticalGap(self, value):
        self._move("VerticalGap", value)

    @attribute(dtype=float, access=AttrWriteType.READ_WRITE, unit="mm", format="%.4f",
               doc="Vertical centre of the opening, -MaxOffset..MaxOffset")
    def VerticalOffset(self):
        return self._read("VerticalOffset")

    @VerticalOffset.write
    @operator_errors
    def VerticalOffset(self, value):
        self._move("VerticalOffset", value)

    @command(doc_in="Stop every blade")
    @operator_errors
    def Stop(self):
        self._core().stop()
        self.refresh()


class SimulatedAttenuator(_SimulatedDevice):
    """Filters in or out of the beam; Transmission at the energy its Monochromator peer gives."""

    extra_events = ("Transmission", "Energy", "InsertedFilters")

    RefreshInterval = device_property(dtype=float, default_value=0.2, doc="Seconds between reads of the energy")
    Filters = device_property(
        dtype=(str,), default_value=["Al 0.1", "Al 0.2", "Al 0.5", "Al 1.0", "Cu 0.025", "Cu 0.1"],
        doc="One filter per line: material (Al, Cu) and thickness in mm, e.g. 'Al 0.5'",
    )
    InsertedAtStart = device_property(dtype=(int,), default_value=[], doc="Numbers of the filters in at start-up")
    Monochromator = device_property(
        dtype=str, default_value="", doc="Monochromator device giving the energy; empty: DefaultEnergy"
    )
    DefaultEnergy = device_property(
        dtype=float, default_value=12.4, doc="Energy (keV) without a Monochromator, or while it is unreachable"
    )

    def create_model(self) -> Attenuator:
        self._mono = _Peer(self.Monochromator)
        self._energy = self.DefaultEnergy
        return Attenuator([Filter.parse(text) for text in self.Filters], self.InsertedAtStart)

    def poll_peers(self) -> None:
        if self._mono:
            values = self._mono.read("Energy")
            self._energy = self.DefaultEnergy if values is None else float(values[0])

    def model_state(self) -> tuple[str, str]:
        status = f"{self.core.status} Transmission {self._transmission():.4g} at {self._energy:.4f} keV."
        if self._mono and self._mono.error:
            status += f" Monochromator {self._mono.name} unreachable ({self._mono.error}): using {self._energy} keV."
        return "ON", status

    def _transmission(self) -> float:
        try:
            return self.core.transmission(self._energy)
        except ConfigurationError:  # an energy beyond the tables: the Status says so via Transmission's read
            return float("nan")

    def event_values(self) -> dict:
        return {
            "Transmission": self._transmission(), "Energy": self._energy,
            "InsertedFilters": tuple(self.core.inserted),
        }

    @attribute(dtype=float, format="%.4e", min_value=0, max_value=1,
               doc="Fraction of the photons the inserted filters let through, at Energy")
    @operator_errors
    def Transmission(self):
        self.poll_peers()
        return self._core().transmission(self._energy)

    @attribute(dtype=float, unit="keV", format="%.4f", doc="The photon energy Transmission is computed for")
    def Energy(self):
        return self._energy

    @attribute(dtype=(str,), max_dim_x=64, doc="The filters, by number: material and thickness")
    def FilterList(self):
        return [f"{index}: {flt}" for index, flt in enumerate(self._core().filters)]

    @attribute(dtype=(bool,), max_dim_x=64, doc="For each filter, whether it is in the beam")
    def InsertedFilters(self):
        return self._core().inserted

    @command(dtype_in=int, doc_in="Put filter number N into the beam")
    @operator_errors
    def Insert(self, index):
        self._core().insert(index)
        self.refresh()

    @command(dtype_in=int, doc_in="Take filter number N out of the beam")
    @operator_errors
    def Extract(self, index):
        self._core().extract(index)
        self.refresh()

    @command(doc_in="Take every filter out of the beam")
    @operator_errors
    def ExtractAll(self):
        for index in range(len(self._core().filters)):
            self.core.extract(index)
        self.refresh()
