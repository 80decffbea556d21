"""Continuous scans on the real servers (the demo deployment): what the motor cannot do is refused
before anything moves, and a trigger generator that stops halfway ends the series ALARM naming it,
with the frames taken written and accounted for."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from tests.helpers.devices import devfailed, proxy, wait_for_state, wait_until


@pytest.fixture(scope="module")
def scan_devices(running_suite):
    url = running_suite.suite.device_url
    controller = proxy(running_suite.controller)
    wait_for_state(controller, "ON", "ALARM", timeout=60)
    return controller, proxy(url("demo/beamline/omega")), proxy(url("demo/beamline/omega_pcomp"))


def _scan_request(axis: str, start: float, step: float, **settings) -> str:
    return json.dumps({"frames": 100, "exposure": 0.001, "period": 0.002, **settings,
                       "scan": {"axis": axis, "start": start, "step": step}})


def test_a_scan_faster_than_the_motor_is_refused_at_configure_with_its_limit(scan_devices):
    controller, omega, _ = scan_devices
    before = float(omega.Position)
    error = devfailed(controller.Configure, _scan_request("omega", 0.0, 1.0))  # 1 deg per 2 ms: 500 deg/s
    assert "500 deg/s" in error.desc and "90 deg/s" in error.desc, error.desc
    assert str(omega.state()) == "ON" and float(omega.Position) == before  # nothing moved


def test_a_scan_names_only_the_controllers_axes_and_external_triggers(scan_devices):
    controller, _, _ = scan_devices
    error = devfailed(controller.Configure, _scan_request("phi", 0.0, 0.1))
    assert "'phi'" in error.desc and "omega" in error.desc, error.desc
    error = devfailed(controller.Configure, _scan_request("omega", 0.0, 0.1, trigger_mode="internal"))
    assert "external" in error.desc, error.desc


def test_a_trigger_generator_stopping_halfway_ends_alarm_with_the_frames_taken_written(scan_devices):
    controller, omega, pcomp = scan_devices
    frames = 100
    controller.Configure(_scan_request("omega", 20.0, 0.05, frames=frames, exposure=0.01, period=0.02,
                                       file="scans/cut_short.h5"))
    controller.Start()
    wait_until(lambda: pcomp.PulsesSent >= 10, timeout=60, interval=0.01, what="the first pulses")
    pcomp.Disarm()  # the cable pulled: no more triggers while omega goes on turning
    wait_for_state(controller, "ON", "ALARM", timeout=120)
    sent = int(pcomp.PulsesSent)
    assert 10 <= sent < frames
    status = controller.status()
    assert str(controller.state()) == "ALARM", status
    assert f"the trigger generator sent {sent} of {frames} pulses" in status, status
    assert (controller.FramesAcquired, controller.FramesReceived, controller.FramesWritten) == (sent, sent, sent)
    with h5py.File(Path(controller.LastFile), "r") as f:  # closed normally, every frame taken readable
        assert f["entry/data/data"].shape[0] == sent
        np.testing.assert_allclose(np.diff(f["entry/accounting/timestamp"][()]), 0.02, rtol=0.01)
    wait_until(lambda: str(omega.state()) != "MOVING", timeout=60, what="omega at rest")
