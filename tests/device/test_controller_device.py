"""The Controller device with an Acquirer and a Recorder of the test's own: small Tango devices in
the same database-less server (MultiDeviceTestContext), reached through the Controller's Acquirer
and Recorder properties and followed through their change events, as real peers are; and a scan
axis (a motor and a position-compare of the test's own) through its ScanAxes. One server for all:
a second MultiDeviceTestContext in the same test process fails to connect."""

from __future__ import annotations

import json

import pytest
import tango
from tango.test_context import MultiDeviceTestContext

from photonflow.clients.launcher import free_port
from photonflow.devices.controller import PhotonflowController, TangoMotor, TangoPositionCompare
from tests.helpers.devices import devfailed, wait_for_state
from tests.helpers.tango_peers import FakeAcquirer, FakeRecorder, StandInMotor, StandInPositionCompare


@pytest.fixture(scope="module")
def port():
    return free_port()


def url(port: int, name: str) -> str:
    return f"tango://127.0.0.1:{port}/{name}#dbase=no"


@pytest.fixture(scope="module")
def rig(port):
    """(controller, acquirer, recorder) proxies, the Controller following both peers."""
    devices = [
        {"class": FakeAcquirer, "devices": [{"name": "test/fake/acquirer"}]},
        {"class": FakeRecorder, "devices": [{"name": "test/fake/recorder"}]},
        {"class": StandInMotor, "devices": [{"name": "test/fake/omega"}]},
        {"class": StandInPositionCompare, "devices": [{"name": "test/fake/omega_pcomp"}]},
        {"class": PhotonflowController, "devices": [{"name": "test/fake/controller", "properties": {
            "Acquirer": url(port, "test/fake/acquirer"), "Recorder": url(port, "test/fake/recorder"),
            "PeerStartupWait": 5.0,
            "ScanAxes": [f"omega {url(port, 'test/fake/omega')} {url(port, 'test/fake/omega_pcomp')}"]}}]},
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


def test_configure_plans_a_scan_from_the_motor_read_over_tango(rig):
    controller, _, _ = rig
    controller.Configure(json.dumps({"frames": 100, "exposure": 0.001, "period": 0.002,
                                     "scan": {"axis": "omega", "start": 0.0, "step": 0.1}}))
    configuration = json.loads(controller.Configuration)
    assert configuration["scan"] == {"axis": "omega", "start": 0.0, "step": 0.1}
    assert configuration["trigger_mode"] == "external"
    assert configuration["scan_plan"]["velocity"] == pytest.approx(50.0)
    assert configuration["scan_plan"]["unit"] == "deg"
    assert configuration["scan_plan"]["run_up_start"] == pytest.approx(-(50.0**2 / 720 + 5.0))


def test_a_scan_too_fast_for_the_motor_is_refused_over_tango_with_the_limit(rig):
    controller, _, _ = rig
    error = devfailed(controller.Configure, json.dumps({"frames": 10, "exposure": 0.001, "period": 0.001,
                                                        "scan": {"axis": "omega", "start": 0.0, "step": 0.1}}))
    assert error.reason == "InvalidConfiguration"
    assert "needs 100 deg/s, above its maximum 90 deg/s" in error.desc


def test_the_scan_ports_speak_the_specs_attributes_and_commands(rig, port):
    motor = TangoMotor(url(port, "test/fake/omega"), 5.0)
    pcomp = TangoPositionCompare(url(port, "test/fake/omega_pcomp"), 5.0)
    assert (motor.maximum_velocity(), motor.acceleration(), motor.soft_limits()) == (90.0, 360.0, (-360.0, 360.0))
    assert motor.unit() == "deg" and motor.state() == "ON"
    motor.set_velocity(50.0)
    motor.move_to(-8.5)
    assert (motor.position(), motor.velocity()) == (-8.5, 50.0)
    motor.stop()
    pcomp.arm(1.0, -0.5, 4, 0.001)
    assert pcomp.proxy.state() == tango.DevState.STANDBY
    assert pcomp.pulses_sent() == 4 and pcomp.captured_positions() == [1.0, 0.5, 0.0, -0.5]
    pcomp.disarm()
    assert pcomp.proxy.state() == tango.DevState.ON
