"""The Controller device with an Acquirer and a Recorder of the test's own: small Tango devices in
the same database-less server (MultiDeviceTestContext), reached through the Controller's Acquirer
and Recorder properties and followed through their change events, as real peers are."""

from __future__ import annotations

import json

import pytest
from tango import DevState
from tango.server import Device, attribute, command
from tango.test_context import MultiDeviceTestContext

from photonflow.clients.launcher import free_port
from photonflow.devices.controller import PhotonflowController
from tests.helpers.devices import devfailed, wait_for_state


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


@pytest.fixture(scope="module")
def rig():
    """(controller, acquirer, recorder) proxies, the Controller following both peers."""
    port = free_port()

    def url(name: str) -> str:
        return f"tango://127.0.0.1:{port}/{name}#dbase=no"

    devices = [
        {"class": FakeAcquirer, "devices": [{"name": "test/fake/acquirer"}]},
        {"class": FakeRecorder, "devices": [{"name": "test/fake/recorder"}]},
        {"class": PhotonflowController, "devices": [{"name": "test/fake/controller", "properties": {
            "Acquirer": url("test/fake/acquirer"), "Recorder": url("test/fake/recorder"), "PeerStartupWait": 5.0}}]},
    ]
    with MultiDeviceTestContext(devices, host="127.0.0.1", port=port, process=True) as context:
        controller, acquirer, recorder = (context.get_device(f"test/fake/{member}")
                                          for member in ("controller", "acquirer", "recorder"))
        wait_for_state(controller, "ON", timeout=30)  # both peers' states came as events
        yield controller, acquirer, recorder


@pytest.mark.parametrize("text, complaint", [
    ("{not json", "Configure needs a JSON object"),
    (json.dumps({"frames": 0, "exposure": 0.001, "period": 0.002}), "'frames' must be"),
])
def test_configure_refuses_bad_input_with_the_reason(rig, text, complaint):
    controller, _, _ = rig
    error = devfailed(controller.Configure, text)
    assert (error.reason, complaint in error.desc) == ("InvalidConfiguration", True), error.desc
    assert str(controller.state()) == "ON" and controller.Configuration == ""


@pytest.mark.parametrize("peer", ["acquirer", "recorder"])
def test_a_peer_in_fault_is_the_controllers_fault_with_the_peers_reason(rig, peer):
    controller, acquirer, recorder = rig
    device = {"acquirer": acquirer, "recorder": recorder}[peer]
    device.Fail("the camera link dropped: check the fibre")
    wait_for_state(controller, "FAULT", timeout=30)
    assert controller.status() == f"The {peer} is in FAULT: the camera link dropped: check the fibre"
    device.Recover()
    wait_for_state(controller, "ON", timeout=30)  # and back once the peer is
