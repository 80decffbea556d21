"""Waiting on real devices: poll with a deadline, never a blind sleep."""

from __future__ import annotations

import json
import time

import tango


def proxy(name: str, timeout_s: float = 15) -> tango.DeviceProxy:
    device = tango.DeviceProxy(name)
    device.set_timeout_millis(int(timeout_s * 1000))
    return device


def wait_until(check, timeout: float = 30, interval: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except tango.DevFailed as error:
            last = error
        time.sleep(interval)
    raise AssertionError(f"{what} not reached within {timeout} s (last: {last})")


def wait_for_state(device: tango.DeviceProxy, *wanted: str, timeout: float = 30) -> str:
    return wait_until(
        lambda: str(device.state()) if str(device.state()) in wanted else None,
        timeout,
        what=f"{device.dev_name()} in {wanted} (status: {_status(device)})",
    )


def _status(device):
    try:
        return device.status()
    except tango.DevFailed:
        return "unreachable"


def acquire(controller: tango.DeviceProxy, timeout: float = 120, **settings) -> str:
    """Configure and start a series, wait for it to end; returns the final state."""
    wait_for_state(controller, "ON", "ALARM")
    controller.Configure(json.dumps(settings))
    controller.Start()
    wait_until(lambda: str(controller.state()) != "RUNNING", timeout, what="series end")
    return str(controller.state())


def devfailed(call, *args) -> tango.DevError:
    """The first DevError of the DevFailed the call raises (fails the test if none)."""
    try:
        call(*args)
    except tango.DevFailed as error:
        return error.args[0]
    raise AssertionError(f"{call} did not raise DevFailed")
