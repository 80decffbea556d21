"""Small Tango peers of the Controller (an Acquirer and a Recorder that stay idle until the test
makes them fail; a scan axis' motor and position-compare with the SPEC's attributes and commands),
for device tests that run the Controller in a database-less server."""

from __future__ import annotations

import json

from tango import AttrWriteType, DevState
from tango.server import Device, attribute, command


class FakePeer(Device):
    """A peer that is idle until the test makes it fail, with the reason the test gives."""

    EVENTS: tuple[str, ...] = ()

    def init_device(self):
        super().init_device()
        for name in ("State", "Status", *self.EVENTS):
            self.set_change_event(name, True, False)
        self.set_state(DevState.ON)
        self.set_status("idle")

    @command(dtype_in=str, doc_in="The reason of the fault, as the real device would give it")
    def Fail(self, reason):
        self._publish(DevState.FAULT, reason)

    @command
    def Recover(self):
        self._publish(DevState.ON, "idle")

    def _publish(self, state, status):
        self.set_state(state)
        self.set_status(status)
        self.push_change_event("State", state)
        self.push_change_event("Status", status)


class FakeAcquirer(FakePeer):
    EVENTS = ("FramesAcquired",)

    @attribute(dtype=int)
    def FramesAcquired(self):
        return 0

    @command(dtype_in=str)
    def CheckSettings(self, text):
        pass


class FakeRecorder(FakePeer):
    EVENTS = ("FramesReceived", "FramesWritten", "MissingFrames")

    @attribute(dtype=int)
    def FramesReceived(self):
        return 0

    @attribute(dtype=int)
    def FramesWritten(self):
        return 0

    @attribute(dtype=int)
    def MissingFrames(self):
        return 0

    @command(dtype_in=str, dtype_out=str)
    def CheckFile(self, name):
        return "/data/" + name


class StandInMotor(Device):
    """An axis that is where it is told at once: omega, 30 deg/s of its 90 deg/s maximum."""

    def init_device(self):
        super().init_device()
        self.position, self.velocity = 0.0, 30.0
        self.set_state(DevState.ON)

    @attribute(dtype=float, access=AttrWriteType.READ_WRITE, unit="deg")
    def Position(self):
        return self.position

    @Position.write
    def Position(self, value):
        self.position = value

    @attribute(dtype=float, access=AttrWriteType.READ_WRITE, unit="deg/s")
    def Velocity(self):
        return self.velocity

    @Velocity.write
    def Velocity(self, value):
        self.velocity = value

    @attribute(dtype=float, unit="deg/s")
    def MaximumVelocity(self):
        return 90.0

    @attribute(dtype=float, unit="deg/s2")
    def Acceleration(self):
        return 360.0

    @attribute(dtype=float, unit="deg")
    def SoftLimitLow(self):
        return -360.0

    @attribute(dtype=float, unit="deg")
    def SoftLimitHigh(self):
        return 360.0

    @command
    def Stop(self):
        self.set_state(DevState.ON)


class StandInPositionCompare(Device):
    """A generator that, armed, says it sent every pulse at its exact position."""

    def init_device(self):
        super().init_device()
        self.armed = {}
        self.set_state(DevState.ON)

    @command(dtype_in=str)
    def Arm(self, text):
        self.armed = json.loads(text)
        self.set_state(DevState.STANDBY)

    @command
    def Disarm(self):
        self.set_state(DevState.ON)

    @attribute(dtype=int)
    def PulsesSent(self):
        return self.armed.get("count", 0)

    @attribute(dtype=(float,), max_dim_x=1_000_000)
    def CapturedPositions(self):
        return [self.armed["start"] + i * self.armed["step"] for i in range(self.armed.get("count", 0))]
