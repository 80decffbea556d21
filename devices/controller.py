"""The Controller device: one Acquirer and one Recorder driven as one, one combined state.

Peers are reached with DeviceProxy (the ports below); their change events feed the core.
Each peer is followed with ``follow_events`` on a thread of its own, in Stateless mode, so the
Controller starts before its peers and recovers by itself when a peer restarts; a peer name
Tango does not know is a wrong property, and the Controller goes FAULT naming it.

The axes it can scan (property ``ScanAxes``) are each a SimulatedMotor-like axis and a
SimulatedPositionCompare-like trigger generator, reached through ``TangoMotor`` and
``TangoPositionCompare``: the continuous-scan core's ports over DeviceProxy.
"""

from __future__ import annotations

import json
import logging
import threading
import time

import tango
from tango.server import attribute, command, device_property

from photonflow.control.controller import ACQUIRER, RECORDER, AcquisitionRequest, Controller, ScanAxis
from photonflow.control.recorder_group import RecorderGroup
from photonflow.devices.base import PhotonflowDevice, counter
from photonflow.devices.common import follow_events, operator_errors
from photonflow.errors import ConfigurationError

log = logging.getLogger(__name__)

# what each peer reports by change events: attribute -> the core's counter (None: State, Status)
PEER_EVENTS = {
    ACQUIRER: {"State": None, "Status": None, "FramesAcquired": "frames_acquired"},
    RECORDER: {"State": None, "Status": None, "FramesReceived": "frames_received",
               "FramesWritten": "frames_written", "MissingFrames": "missing_frames"},
}


def _proxy(name: str, timeout_s: float, peer_property: str) -> tango.DeviceProxy:
    """A proxy of a peer that may be down; a name Tango cannot resolve is the property's fault."""
    try:
        proxy = tango.DeviceProxy(name)
    except tango.DevFailed as error:
        raise ConfigurationError(
            f"property {peer_property} names {name!r}, which is not a device Tango knows "
            f"({error.args[0].desc.strip()})"
        ) from None
    proxy.set_timeout_millis(int(timeout_s * 1000))
    return proxy


class TangoAcquirer:
    """The Acquirer port over DeviceProxy. Commands and attributes are named explicitly
    (command_inout, read_attribute), never looked up on the proxy, so a call made before the
    peer was ever reached fails with Tango's reason, not a Python AttributeError."""

    def __init__(self, name: str, timeout_s: float):
        self.name = name
        self.proxy = _proxy(name, timeout_s, "Acquirer")

    def state(self) -> str:
        return str(self.proxy.state())

    def status(self) -> str:
        return self.proxy.status()

    def check_settings(self, request: AcquisitionRequest) -> None:
        settings = {"frames": request.frames, "exposure": request.exposure, "period": request.period,
                    "trigger_mode": request.trigger_mode}
        if request.rotation is not None:
            settings["rotation"] = request.rotation
        self.proxy.command_inout("CheckSettings", json.dumps(settings))

    def configure(self, request: AcquisitionRequest, series_id: int) -> None:
        self.proxy.write_attributes(
            [
                ("FrameCount", request.frames),
                ("Exposure", request.exposure),
                ("Period", request.period),
                ("TriggerMode", request.trigger_mode),
                ("Rotation", json.dumps(request.rotation) if request.rotation else ""),
                ("SeriesId", series_id),
            ]
        )

    def prepare(self) -> None:
        self.proxy.command_inout("Prepare")

    def start(self) -> None:
        self.proxy.command_inout("Start")

    def stop(self) -> None:
        self.proxy.command_inout("Stop")

    def abort(self) -> None:
        self.proxy.command_inout("Abort")

    def stream_endpoint(self) -> str:
        return self.proxy.read_attribute("StreamEndpoint").value

    def stream_protocol(self) -> str:
        return self.proxy.read_attribute("StreamProtocol").value

    def frames_acquired(self) -> int:
        return self.proxy.read_attribute("FramesAcquired").value


class TangoRecorder:
    """The Recorder port over DeviceProxy."""

    def __init__(self, name: str, timeout_s: float):
        self.name = name
        self.proxy = _proxy(name, timeout_s, "Recorder")

    def state(self) -> str:
        return str(self.proxy.state())

    def status(self) -> str:
        return self.proxy.status()

    def check_file(self, file: str) -> str:
        return self.proxy.command_inout("CheckFile", file)

    def arm(self, frames: int, series_id: int, endpoint: str, file: str | None, protocol: str,
            blissdata_scan: bool = True, share: bool = False) -> str:
        # several outputs (a stream dealt to several Recorders, connected to one): a list of endpoints
        endpoints = endpoint.split(",")
        request = {"frames": frames, "series_id": series_id, "protocol": protocol,
                   "endpoint": endpoints[0] if len(endpoints) == 1 else endpoints,
                   "blissdata_scan": blissdata_scan, "share": share}
        if file is not None:
            request["file"] = file
        return self.proxy.command_inout("Arm", json.dumps(request))

    def stop(self) -> None:
        self.proxy.command_inout("Stop")

    def abort(self) -> None:
        self.proxy.command_inout("Abort")

    def last_file(self) -> str:
        return self.proxy.read_attribute("LastFile").value

    def counters(self) -> dict[str, int]:
        values = self.proxy.read_attributes(["FramesReceived", "FramesWritten", "MissingFrames"])
        return {
            "frames_received": values[0].value,
            "frames_written": values[1].value,
            "missing_frames": values[2].value,
        }


RECONNECT_DELAY = 1.1  # s: Tango refuses a reconnection within 1 s of a failed one, without trying


class _PatientProxy:
    """A DeviceProxy whose calls are tried again once when Tango refused them only because its last
    connection attempt failed less than a second ago ("The connection request was delayed"): a
    beamline server that was still starting when the Controller first reached it must not fail the
    first scan after it is up."""

    def __init__(self, proxy: tango.DeviceProxy):
        self._proxy = proxy

    def __getattr__(self, name: str):
        member = getattr(self._proxy, name)
        if not callable(member):
            return member

        def patient(*args, **kwargs):
            try:
                return member(*args, **kwargs)
            except tango.DevFailed as error:
                if not any(e.reason == "API_CantConnectToDevice" and "delayed" in e.desc for e in error.args):
                    raise
            time.sleep(RECONNECT_DELAY)
            return member(*args, **kwargs)

        return patient


class TangoMotor:
    """The scan axis' motor (a SimulatedMotor's interface) over DeviceProxy: the MotorPort of
    photonflow.control.continuous_scan."""

    def __init__(self, name: str, timeout_s: float):
        self.name = name
        self.proxy = _PatientProxy(_proxy(name, timeout_s, "ScanAxes"))

    def _read(self, name: str) -> float:
        return self.proxy.read_attribute(name).value

    def position(self) -> float:
        return self._read("Position")

    def velocity(self) -> float:
        return self._read("Velocity")

    def set_velocity(self, velocity: float) -> None:
        self.proxy.write_attribute("Velocity", velocity)

    def maximum_velocity(self) -> float:
        return self._read("MaximumVelocity")

    def acceleration(self) -> float:
        return self._read("Acceleration")

    def soft_limits(self) -> tuple[float, float]:
        low, high = self.proxy.read_attributes(["SoftLimitLow", "SoftLimitHigh"])
        return low.value, high.value

    def unit(self) -> str:
        unit = self.proxy.get_attribute_config("Position").unit
        return "" if unit in ("", "No unit") else unit

    def move_to(self, position: float) -> None:
        self.proxy.write_attribute("Position", position)

    def stop(self) -> None:
        self.proxy.command_inout("Stop")

    def state(self) -> str:
        return str(self.proxy.state())


class TangoPositionCompare:
    """The trigger generator (a SimulatedPositionCompare's interface) over DeviceProxy: the
    TriggerGeneratorPort of photonflow.control.continuous_scan."""

    def __init__(self, name: str, timeout_s: float):
        self.name = name
        self.proxy = _PatientProxy(_proxy(name, timeout_s, "ScanAxes"))

    def arm(self, start: float, step: float, count: int, width: float) -> None:
        self.proxy.command_inout("Arm", json.dumps({"start": start, "step": step, "count": count, "width": width}))

    def disarm(self) -> None:
        self.proxy.command_inout("Disarm")

    def pulses_sent(self) -> int:
        return self.proxy.read_attribute("PulsesSent").value

    def captured_positions(self) -> list[float]:
        captured = self.proxy.read_attribute("CapturedPositions").value
        return [] if captured is None else [float(position) for position in captured]


def parse_scan_axes(entries: list[str]) -> dict[str, tuple[str, str]]:
    """ScanAxes: "<axis> <motor device> <position-compare device>" per entry -> axis: (motor, pcomp)."""
    axes: dict[str, tuple[str, str]] = {}
    for entry in entries:
        words = entry.split()
        if len(words) != 3:
            raise ConfigurationError(
                f"property ScanAxes: {entry!r} must be '<axis> <motor device> <position-compare device>', "
                "e.g. 'omega demo/beamline/omega demo/beamline/omega_pcomp'"
            )
        if words[0] in axes:
            raise ConfigurationError(f"property ScanAxes names the axis {words[0]!r} twice")
        axes[words[0]] = (words[1], words[2])
    return axes


class PhotonflowController(PhotonflowDevice):
    """Drives an Acquirer and a Recorder and checks acquired = received = written."""

    extra_events = ("Configuration",)  # pushed at each Configure

    Acquirer = device_property(dtype=str, mandatory=True, doc="Mandatory. Tango name of the Acquirer device")
    Recorder = device_property(
        dtype=(str,), mandatory=True,
        doc="Mandatory. Tango name of the Recorder device; several: Recorders sharing the Acquirer's stream "
            "(its StreamOutputs as many), each writing its part, the Controller the master joining them")
    FinishTimeout = device_property(
        dtype=float, default_value=30.0,
        doc="Seconds to wait, after the Acquirer finished, for the Recorder to see the series end",
    )
    PeerTimeout = device_property(dtype=float, default_value=10.0, doc="Seconds a call to a peer may take")
    PeerStartupWait = device_property(
        dtype=float, default_value=30.0, doc="Seconds to wait for peers to answer before subscribing anyway"
    )
    WatchdogInterval = device_property(dtype=float, default_value=0.5, doc="Seconds between watchdog checks")
    ScanAxes = device_property(
        dtype=(str,), default_value=[],
        doc="The axes Configure's scan may turn, each '<axis> <motor device> <position-compare device>', "
            "e.g. 'omega demo/beamline/omega demo/beamline/omega_pcomp'",
    )

    def create_core(self, listener) -> Controller:
        self._stop = threading.Event()
        self.acquirer_port = TangoAcquirer(self.Acquirer, self.PeerTimeout)
        self.part_ports = [TangoRecorder(name, self.PeerTimeout) for name in self.Recorder]
        self.recorder_group = RecorderGroup(self.part_ports) if len(self.part_ports) > 1 else None
        self.recorder_port = self.recorder_group or self.part_ports[0]
        scan_axes = {
            axis: ScanAxis(TangoMotor(motor, self.PeerTimeout), TangoPositionCompare(pcomp, self.PeerTimeout))
            for axis, (motor, pcomp) in parse_scan_axes(list(self.ScanAxes)).items()
        }
        return Controller(self.acquirer_port, self.recorder_port, listener, finish_timeout=self.FinishTimeout,
                          scan_axes=scan_axes)

    def core_ready(self, core: Controller) -> None:
        followed = [(ACQUIRER, self.acquirer_port, None)]
        if self.recorder_group is None:
            followed.append((RECORDER, self.part_ports[0], None))
        else:
            self.recorder_group.on_change = _group_listener(core)
            followed += [(RECORDER, port, index) for index, port in enumerate(self.part_ports)]
        for peer, port, index in followed:
            told = core if index is None else _PartEvents(self.recorder_group, index)
            wanted = [(port.proxy, name, _peer_callback(told, peer, name)) for name in PEER_EVENTS[peer]]
            threading.Thread(
                target=follow_events, args=(self._stop, port.proxy, lambda wanted=wanted: wanted),
                kwargs={"wait_at_most": self.PeerStartupWait}, name=f"controller-follow-{peer}", daemon=True,
            ).start()
        threading.Thread(target=self._watch, args=(core, self._stop), name="controller-watchdog", daemon=True).start()

    def release_core(self, core: Controller) -> None:
        """Init may come at any moment, and runs holding the device's monitor: it must not wait for
        anything that may itself wait for that monitor. An event callback pushing an event does,
        and unsubscribe_event waits for callbacks under way: so the old listener is retired (the
        base does it) and the followers and the watchdog are only told to stop; they end their
        subscriptions on their own threads, after this returns."""
        self._stop.set()

    def _watch(self, core: Controller, stop: threading.Event) -> None:
        while not stop.wait(self.WatchdogInterval):
            try:
                core.tick()
            except Exception:
                log.exception("watchdog check failed")

    # -- attributes ---------------------------------------------------------------------
    FramesRequested = counter("frames_requested", int, "Frames asked for in the current or last series")
    FramesAcquired = counter("frames_acquired", int, "Frames the Acquirer acquired")
    FramesReceived = counter("frames_received", int, "Frames the Recorder received")
    FramesWritten = counter("frames_written", int, "Frames the Recorder wrote")
    MissingFrames = counter("missing_frames", int, "Frames sent but never written (known at series end)")
    LastFile = counter("last_file", str, "File of the current or last series")
    Progress = counter("progress", float, "Frames written / requested", unit="%", format="%.1f",
                       min_value=0, max_value=100)
    SeriesId = counter("series_id", int, "Id of the current or last series")

    @attribute(dtype=str, doc="The configuration the next Start uses, as JSON (with a scan: its plan too)")
    def Configuration(self):
        return self._configuration_text()

    def _configuration_text(self) -> str:
        configuration = self._core().configuration()
        return json.dumps(configuration) if configuration else ""

    # -- commands -----------------------------------------------------------------------
    @command(dtype_in=str,
             doc_in='JSON: {"frames": N, "exposure": s, "period": s, "file": "name.h5", "trigger_mode": "internal", '
                    '"scan": {"axis": "omega", "start": 0.0, "step": 0.1}}')
    @operator_errors
    def Configure(self, text):
        self._core().configure(text)
        self.publish_value("Configuration", self._configuration_text())

    @command(doc_in="Arm the Recorder, then prepare and start the Acquirer; with a scan, run the scan")
    @operator_errors
    def Start(self):
        self._core().start()

    @command(doc_in="Stop the Acquirer after the current frame; the file is closed at the series end")
    @operator_errors
    def Stop(self):
        self._core().stop()

    @command(doc_in="Abort the Acquirer and the Recorder at once (and a scan's motor and trigger generator)")
    @operator_errors
    def Abort(self):
        self._core().abort()


def _group_listener(core: Controller):
    """The group's combined view, told to the core as one Recorder's events."""
    def on_change(state: str, status: str, counters: dict[str, int]) -> None:
        for name, value in counters.items():
            core.peer_counter_changed(name, value)
        core.peer_state_changed(RECORDER, state, status)

    return on_change


class _PartEvents:
    """A grouped Recorder's events, told to its group as a peer's are told to the core."""

    def __init__(self, group: RecorderGroup, index: int):
        self.group, self.index = group, index

    def peer_unreachable(self, _peer: str, reason: str) -> None:
        self.group.part_unreachable(self.index, reason)

    def peer_state_changed(self, _peer: str, state: str) -> None:
        self.group.part_state_changed(self.index, state)

    def peer_status_changed(self, _peer: str, status: str) -> None:
        self.group.part_status_changed(self.index, status)

    def peer_counter_changed(self, name: str, value: int) -> None:
        self.group.part_counter_changed(self.index, name, value)


def _peer_callback(core: Controller | _PartEvents, peer: str, attribute_name: str):
    """What one peer event tells the core (or a Recorder's group); an error event on State says the
    peer is unreachable."""
    counter_name = PEER_EVENTS[peer][attribute_name]

    def on_event(event):
        if event.err:
            error = event.errors[0]
            if attribute_name == "State":
                core.peer_unreachable(peer, f"{error.reason}: {error.desc}")
            return
        value = event.attr_value.value
        if attribute_name == "State":
            core.peer_state_changed(peer, str(value))
        elif attribute_name == "Status":
            core.peer_status_changed(peer, value)
        else:
            core.peer_counter_changed(counter_name, int(value))

    return on_event
