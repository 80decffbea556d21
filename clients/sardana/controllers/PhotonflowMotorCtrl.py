"""Sardana motor controller for photonflow's simulated beamline motors (``SimulatedMotor``:
Position, Velocity, MaximumVelocity, Acceleration, State, Stop). Each axis is one Tango device,
named by the controller property ``Devices`` (axis 1 is the first name). Add this folder to PoolPath.

A continuous scan (``ascanct``) plans its run-up from what this controller gives: the velocity,
base rate 0, the acceleration as Sardana's acceleration *time* and the extra attribute
``MaximumVelocity``, which photonflow's Sardana setup copies into the range of the Sardana motor's
Velocity (where Sardana looks for its maximum velocity). The acceleration time is that of a
constant acceleration up to the maximum velocity (maximum / acceleration): it does not change when
a scan slows the motor down, so the run-up Sardana plans at a scan's velocity v (v × time / 2) is
never shorter than the motor needs (v² / 2 acceleration), and the motor crosses the first trigger
position at constant velocity. A motor without a maximum velocity: the time to its velocity.
"""

import math

import tango
from sardana import DataAccess, State
from sardana.pool.controller import Access, Description, MotorController, Type

STATES = {
    tango.DevState.ON: State.On,
    tango.DevState.MOVING: State.Moving,
    tango.DevState.RUNNING: State.Moving,
    tango.DevState.ALARM: State.Alarm,
    tango.DevState.FAULT: State.Fault,
}


class PhotonflowMotorController(MotorController):
    """photonflow SimulatedMotor devices as Sardana motors."""

    gender = "Simulation"
    model = "photonflow SimulatedMotor"
    organization = "photonflow"
    MaxDevice = 64

    ctrl_properties = {
        "Devices": {Type: str,
        Description: "Tango names of the SimulatedMotor devices, comma separated, axis 1 first: mandatory"},
    }

    axis_attributes = {
        "MaximumVelocity": {Type: float, Access: DataAccess.ReadOnly,
                            Description: "The fastest the axis can move, unit/s (the SimulatedMotor's)"},
    }

    def __init__(self, inst, props, *args, **kwargs):
        MotorController.__init__(self, inst, props, *args, **kwargs)
        self.devices = [name.strip() for name in self.Devices.split(",") if name.strip()]
        self.proxies = {}

    def AddDevice(self, axis):
        if not 1 <= axis <= len(self.devices):
            raise ValueError(f"axis {axis} has no device: the Devices property names {len(self.devices)}")
        self.proxies[axis] = tango.DeviceProxy(self.devices[axis - 1])

    def _maximum_velocity(self, axis):
        try:
            return self.proxies[axis].read_attribute("MaximumVelocity").value
        except tango.DevFailed:  # a SimulatedMotor without one
            return math.inf

    def _ramp_velocity(self, axis):
        """The velocity Sardana's acceleration time is the time to reach."""
        maximum = self._maximum_velocity(axis)
        return maximum if math.isfinite(maximum) else self.proxies[axis].read_attribute("Velocity").value

    def DeleteDevice(self, axis):
        self.proxies.pop(axis, None)

    def StateOne(self, axis):
        proxy = self.proxies[axis]
        state = proxy.state()
        return STATES.get(state, State.Unknown), proxy.status(), MotorController.NoLimitSwitch

    def ReadOne(self, axis):
        return self.proxies[axis].read_attribute("Position").value

    def StartOne(self, axis, position):
        self.proxies[axis].write_attribute("Position", position)

    def StopOne(self, axis):
        self.proxies[axis].command_inout("Stop")

    def AbortOne(self, axis):
        self.proxies[axis].command_inout("Stop")

    def SetAxisPar(self, axis, name, value):
        name = name.lower()
        if name == "velocity":
            self.proxies[axis].write_attribute("Velocity", value)
        elif name in ("acceleration", "deceleration"):  # Sardana's is the time to full speed
            if value > 0:
                self.proxies[axis].write_attribute("Acceleration", self._ramp_velocity(axis) / value)
        elif name in ("base_rate", "step_per_unit"):
            pass  # a simulated axis has neither
        else:
            raise ValueError(f"unknown axis parameter {name}")

    def GetAxisPar(self, axis, name):
        name = name.lower()
        if name == "velocity":
            return self.proxies[axis].read_attribute("Velocity").value
        if name in ("acceleration", "deceleration"):
            acceleration = self.proxies[axis].read_attribute("Acceleration").value
            return self._ramp_velocity(axis) / acceleration if acceleration else 0.0  # Sardana's is a time
        if name == "base_rate":
            return 0.0
        if name == "step_per_unit":
            return 1.0
        raise ValueError(f"unknown axis parameter {name}")

    def GetAxisExtraPar(self, axis, name):
        if name.lower() == "maximumvelocity":
            return self._maximum_velocity(axis)
        raise ValueError(f"unknown axis attribute {name}")
