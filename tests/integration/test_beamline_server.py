"""The simulated beamline server on a real database, as `make demo` starts it."""

from __future__ import annotations

import json
import threading

import pytest
import tango

from photonflow.simulators.trigger_line import TriggerLineInput
from tests.helpers.devices import devfailed, proxy, running_deployment, wait_for_state, wait_until

BEAMLINE = """
servers:
  PhotonflowBeamline/bltest:
    SimulatedStorageRing:
      bltest/beamline/ring: {}
    SimulatedMonochromator:
      bltest/beamline/mono:
        properties: {InitialEnergy: 12.0, EnergyRange: [5.0, 25.0], BraggVelocity: 5.0, BraggAcceleration: 20.0}
    SimulatedShutter:
      bltest/beamline/shutter:
        properties: {StorageRing: bltest/beamline/ring, OpenAtStart: true}
    SimulatedAttenuator:
      bltest/beamline/attenuator:
        properties: {Monochromator: bltest/beamline/mono, Filters: ["Al 0.5", "Cu 0.1"], InsertedAtStart: [0]}
    SimulatedPositionCompare:  # before its motor here, as in config/: the server makes motors first all the same
      bltest/beamline/omega_pcomp:
        properties: {Motor: bltest/beamline/omega, TriggerOutput: "ipc://${PHOTONFLOW_VAR:-var}/run/omega.trigger"}
    SimulatedMotor:
      bltest/beamline/detz:
        properties: {Unit: mm, InitialPosition: 150.0, InitialVelocity: 100.0, InitialAcceleration: 200.0, SoftLimits: [100.0, 800.0]}
      bltest/beamline/omega:
        properties: {Unit: deg, InitialPosition: -10.0, InitialVelocity: 30.0, InitialAcceleration: 360.0,
                     MaximumVelocity: 90.0, SoftLimits: [-360.0, 360.0]}
"""


MANY_MOVES = 600


class Devices:
    def __init__(self, suite):
        self.suite = suite

    def __getattr__(self, member: str) -> tango.DeviceProxy:
        return proxy(self.suite.device_url(f"bltest/beamline/{member}"))


@pytest.fixture(scope="module")
def beamline(tmp_path_factory):
    with running_deployment(BEAMLINE, tmp_path_factory.mktemp("beamline"), {}) as suite:
        yield Devices(suite)


class Received:
    """Change events' values, as a subscriber sees them."""

    def __init__(self):
        self.values: list[float] = []
        self.lock = threading.Lock()

    def push_event(self, event):
        if not event.err and event.attr_value is not None:
            with self.lock:
                self.values.append(event.attr_value.value)


def test_a_motor_move_is_seen_moving_then_at_its_target_with_position_events(beamline):
    detz = beamline.detz
    assert detz.get_attribute_config("Position").unit == "mm"
    received = Received()
    event_id = detz.subscribe_event("Position", tango.EventType.CHANGE_EVENT, received)
    try:
        wait_until(lambda: received.values == [150.0], 10, what="the first Position event")
        detz.write_attribute("Position", 400.0)
        assert str(detz.state()) == "MOVING"
        wait_for_state(detz, "ON", timeout=30)
        assert detz.Position == pytest.approx(400.0)
        wait_until(lambda: received.values[-1] == pytest.approx(400.0), 10, what="the last Position event")
        between = [value for value in received.values if 150.0 < value < 400.0]
        assert len(between) >= 3 and between == sorted(between)  # seen on the way, in order
    finally:
        detz.unsubscribe_event(event_id)


def test_a_scans_many_short_moves_are_all_answered_while_position_events_are_pushed(beamline):
    """A write's own event push and the refresh thread's once deadlocked on the device's monitor
    until Tango's 3 s timeout: about 4 moves in 1000 failed, as a Sardana scan's point did. A
    client with Tango's default timeout, as Sardana's motor controller is, sees each stall fail."""
    detz = proxy(beamline.suite.device_url("bltest/beamline/detz"), timeout_s=3)
    event_id = detz.subscribe_event("Position", tango.EventType.CHANGE_EVENT, Received())
    failures = []
    try:
        for move in range(MANY_MOVES):
            target = 150.0 + 0.01 * (move % 2 + 1)
            try:
                detz.write_attribute("Position", target)
                while str(detz.state()) == "MOVING":
                    pass
            except tango.DevFailed as error:
                failures.append((move, error.args[-1].reason))
        assert failures == []
        assert detz.Position == pytest.approx(target)
    finally:
        detz.unsubscribe_event(event_id)
        wait_for_state(detz, "ON", timeout=30)
        detz.write_attribute("Position", 150.0)
        wait_for_state(detz, "ON", timeout=30)


def test_a_move_beyond_a_soft_limit_is_refused_naming_the_limit(beamline):
    error = devfailed(beamline.detz.write_attribute, "Position", 900.0)
    assert error.reason == "OutOfSoftLimits"
    assert "high soft limit 800 mm" in error.desc
    assert str(beamline.detz.state()) == "ON"


def test_a_beam_loss_closes_the_shutter_and_it_reopens_once_the_beam_is_back(beamline):
    ring, shutter = beamline.ring, beamline.shutter
    wait_for_state(shutter, "OPEN", timeout=10)
    ring.BeamLoss()
    assert ring.Current == 0.0 and str(ring.state()) == "FAULT"
    wait_for_state(shutter, "CLOSE", timeout=10)
    assert "beam loss" in shutter.status()
    assert devfailed(shutter.Open).reason == "NotAllowedInThisState"
    ring.RestoreBeam()
    wait_until(lambda: shutter.BeamAvailable, 10, what="the shutter to see the beam back")
    shutter.Open()
    wait_for_state(shutter, "OPEN", timeout=10)


def test_the_transmission_follows_the_monochromator_energy(beamline):
    mono, attenuator = beamline.mono, beamline.attenuator
    wait_until(lambda: attenuator.Energy == pytest.approx(12.0), 10, what="the attenuator to read 12 keV")
    at_12_kev = attenuator.Transmission
    assert at_12_kev == pytest.approx(0.126, rel=0.01)  # 0.5 mm Al: exp(-15.34 cm²/g · 2.699 g/cm³ · 0.05 cm)
    mono.Energy = 20.0
    wait_for_state(mono, "ON", timeout=30)
    wait_until(lambda: attenuator.Energy == pytest.approx(20.0), 10, what="the attenuator to read 20 keV")
    assert attenuator.Transmission > 0.6  # μ/ρ(Al, 20 keV) = 3.441 cm²/g: exp(-0.464) = 0.629
    assert devfailed(attenuator.Insert, 7).reason == "InvalidConfiguration"


def test_the_position_compare_fires_one_pulse_per_step_as_omega_crosses_it(beamline):
    omega, pcomp = beamline.omega, beamline.omega_pcomp
    received = []
    address = pcomp.TriggerOutput
    assert address == f"ipc://{beamline.suite.var_dir.resolve()}/run/omega.trigger"  # this suite's own line
    line = TriggerLineInput(address, received.append)  # the detector's end of the cable
    events = Received()
    event_id = pcomp.subscribe_event("PulsesSent", tango.EventType.CHANGE_EVENT, events)
    try:
        assert omega.MaximumVelocity == 90.0 and omega.get_attribute_config("MaximumVelocity").unit == "deg/s"
        omega.Velocity = 20.0
        pcomp.Arm(json.dumps({"start": 0.0, "step": 0.5, "count": 10, "width": 0.001}))
        assert str(pcomp.state()) == "STANDBY"
        assert (pcomp.Start, pcomp.Step, pcomp.Count, pcomp.PulseWidth) == (0.0, 0.5, 10, 0.001)
        omega.write_attribute("Position", 8.0)  # from -10 deg: cruising at 20 deg/s well before 0 deg
        wait_for_state(omega, "ON", timeout=30)
        wait_until(lambda: len(received) == 10, 10, what="the 10 pulses on the trigger line")
        wait_until(lambda: events.values[-1:] == [10], 10, what="the PulsesSent event of the last pulse")
        assert str(pcomp.state()) == "ON" and pcomp.PulsesSent == 10 and len(received) == 10
        assert [pulse.index for pulse in received] == list(range(10))
        assert [pulse.position for pulse in received] == pytest.approx([0.5 * i for i in range(10)], abs=0.51e-4)
        intervals = [b.time - a.time for a, b in zip(received, received[1:], strict=False)]
        assert intervals == pytest.approx([0.5 / 20.0] * 9, abs=1e-6)  # step / velocity
        assert list(pcomp.CapturedPositions) == [pulse.position for pulse in received]
        assert list(pcomp.CapturedTimes) == [pulse.time for pulse in received]
        assert pcomp.ArmedTime <= received[0].time
    finally:
        pcomp.unsubscribe_event(event_id)
        line.close()
        omega.Velocity = 30.0


def test_a_velocity_above_the_maximum_and_a_step_of_zero_are_refused_naming_the_limit(beamline):
    omega, pcomp = beamline.omega, beamline.omega_pcomp
    error = devfailed(omega.write_attribute, "Velocity", 120.0)
    assert error.reason == "AboveMaximumVelocity"
    assert "omega: velocity 120 deg/s is above its maximum 90 deg/s" in error.desc
    assert omega.Velocity == 30.0
    error = devfailed(pcomp.Arm, json.dumps({"start": 0.0, "step": 0, "count": 10, "width": 0.001}))
    assert error.reason == "InvalidConfiguration" and "'step' must not be 0" in error.desc


def test_a_position_compare_on_a_motor_of_another_server_is_fault_naming_the_property(beamline):
    pcomp = beamline.omega_pcomp
    database = beamline.suite.database()
    database.put_device_property("bltest/beamline/omega_pcomp", {"Motor": ["bltest/beamline/elsewhere"]})
    try:
        pcomp.Init()
        assert str(pcomp.state()) == "FAULT"
        assert "Motor 'bltest/beamline/elsewhere' is not a SimulatedMotor of this server" in pcomp.status()
        assert "set the property Motor" in pcomp.status()
    finally:
        database.put_device_property("bltest/beamline/omega_pcomp", {"Motor": ["bltest/beamline/omega"]})
        pcomp.Init()
    assert str(pcomp.state()) == "ON"
