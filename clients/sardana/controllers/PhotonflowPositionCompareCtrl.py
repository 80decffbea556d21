"""Sardana trigger/gate controller for photonflow's simulated position-compare
(``SimulatedPositionCompare``: pulse i fires when its motor's encoder crosses start + i * step, on
the trigger line cabled to the detectors' external-trigger inputs, and the encoder position of
every pulse is captured). Each axis is one Tango device, named by the controller property
``Devices`` (axis 1 is the first name). Add this folder to PoolPath.

A hardware-synchronised continuous scan (``ascanct``, the measurement group's channel having this
element as its synchronizer) loads Sardana's synchronization description with ``SynchOne``; this
controller works in its position domain, as an IcePAP or PandABox position output does: the
group's initial position, total interval (the signed step) and repeats become one ``Arm`` of the
position-compare (start, step, count), its active time the pulse width. ``StartOne`` arms it; the
pulses then come from the motor, which Sardana's own motion plan (run-up from the motor
controller's velocity and acceleration time) moves across the first position at constant velocity.
"""

import json

import tango
from sardana import State
from sardana.pool.controller import Description, TriggerGateController, Type
from sardana.pool.pooldefs import SynchDomain, SynchParam

STATES = {
    tango.DevState.ON: State.On,  # idle, disarmed, or every pulse sent
    tango.DevState.STANDBY: State.Moving,  # armed: the motor has not crossed the first position yet
    tango.DevState.RUNNING: State.Moving,  # pulsing
    tango.DevState.ALARM: State.Alarm,
    tango.DevState.FAULT: State.Fault,
}

# A pulse as long as the interval between pulses (no latency time) would make them overlap, which
# the position-compare refuses: a detector in trigger mode external exposes for its own exposure
# time on each rising edge, so the pulse is shortened to half the interval.
FILLED = 1 - 1e-6


def arm_settings(description) -> dict:
    """Sardana's synchronization description (one group of equidistant intervals, position
    domain) as the position-compare's ``Arm`` JSON: start, step (signed), count, width (s)."""
    if len(description) != 1:
        raise ValueError(f"the position-compare takes one group of equidistant positions, got {len(description)}: "
                         "scan one motor in one direction (ascanct)")
    group = description[0]
    initial = group.get(SynchParam.Initial, {}).get(SynchDomain.Position)
    step = group.get(SynchParam.Total, {}).get(SynchDomain.Position)
    if initial is None or not step:
        raise ValueError("the position-compare fires on its motor's positions and this synchronization gives none: "
                         "use a continuous scan of that motor (ascanct), or a software synchronizer for ct and "
                         "timescan")
    interval = group[SynchParam.Total].get(SynchDomain.Time)
    width = group.get(SynchParam.Active, {}).get(SynchDomain.Time)
    if width is None:  # the active interval in position only: its duration at the scan's velocity
        active = group.get(SynchParam.Active, {}).get(SynchDomain.Position)
        if active is None or not interval:
            raise ValueError("the synchronization gives no active time: the position-compare needs its pulse width")
        width = abs(active / step) * interval
    if interval and width >= interval * FILLED:
        width = interval / 2
    return {"start": float(initial), "step": float(step), "count": int(group[SynchParam.Repeats]),
            "width": float(width)}


class PhotonflowPositionCompareController(TriggerGateController):
    """photonflow SimulatedPositionCompare devices as Sardana trigger/gate elements."""

    gender = "Simulation"
    model = "photonflow SimulatedPositionCompare"
    organization = "photonflow"
    MaxDevice = 16

    ctrl_properties = {
        "Devices": {Type: str,
                    Description: "Tango names of the SimulatedPositionCompare devices, comma separated, axis 1 "
                                 "first: mandatory"},
    }

    def __init__(self, inst, props, *args, **kwargs):
        TriggerGateController.__init__(self, inst, props, *args, **kwargs)
        self.devices = [name.strip() for name in self.Devices.split(",") if name.strip()]
        self.proxies = {}
        self.armed = {}  # axis -> the Arm settings SynchOne loaded

    def AddDevice(self, axis):
        if not 1 <= axis <= len(self.devices):
            raise ValueError(f"axis {axis} has no device: the Devices property names {len(self.devices)}")
        self.proxies[axis] = tango.DeviceProxy(self.devices[axis - 1])

    def DeleteDevice(self, axis):
        self.proxies.pop(axis, None)
        self.armed.pop(axis, None)

    def StateOne(self, axis):
        proxy = self.proxies[axis]
        return STATES.get(proxy.state(), State.Unknown), proxy.status()

    def SynchOne(self, axis, description):
        self.armed[axis] = arm_settings(description)

    def PreStartOne(self, axis, value=None):
        """Sardana's synchronization calls it with the axis only (Startable's asks for a value)."""
        return True

    def StartOne(self, axis):
        if axis not in self.armed:
            raise RuntimeError(f"{self.devices[axis - 1]}: no synchronization loaded (SynchOne) to arm it with")
        self._command(axis, "Arm", json.dumps(self.armed[axis]))

    def StopOne(self, axis):
        self._command(axis, "Disarm")

    def AbortOne(self, axis):
        self._command(axis, "Disarm")

    def _command(self, axis, command, argument=None):
        """A command; a refusal as the device's own reason, which Sardana shows to the user."""
        proxy = self.proxies[axis]
        try:
            proxy.command_inout(command) if argument is None else proxy.command_inout(command, argument)
        except tango.DevFailed as error:
            first = error.args[0]
            raise RuntimeError(f"{proxy.dev_name()} refused {command}: {first.reason}: {first.desc}") from None
