"""The device base class hands its core over before anything may call back into it: the
Standardizer's and the DataManager's event followers start in ``core_ready``, and a follower that
started before the core was the device's once found none and died (the Standardizer then wrote no
NeXus file for the rest of its life)."""

from __future__ import annotations

from tango.server import attribute
from tango.test_context import DeviceTestContext

from photonflow import states
from photonflow.devices.base import PhotonflowDevice


class ReadyCore:
    state, status = states.ON, "ready"

    def close(self) -> None:
        pass


class CoreReadyProbe(PhotonflowDevice):
    """Records what ``core_ready`` found: the core it was given, already the device's."""

    COUNTERS: dict = {}

    def create_core(self, listener):
        self.found = "core_ready not called"
        return ReadyCore()

    def core_ready(self, core) -> None:
        self.found = "its core" if self.core is core else f"{self.core!r}"

    @attribute(dtype=str)
    def FoundInCoreReady(self):
        return self.found


def test_core_ready_runs_once_the_core_is_the_devices():
    with DeviceTestContext(CoreReadyProbe, host="127.0.0.1", process=True) as device:
        assert str(device.state()) == "ON"
        assert device.FoundInCoreReady == "its core"
        device.Init()
        assert device.FoundInCoreReady == "its core"
