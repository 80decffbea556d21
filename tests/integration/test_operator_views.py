"""What operators see in Taurus panels and Jive, on the demo suite's real servers: every unit is one
Taurus knows, attributes are labelled for people, and the settings a panel shows push change events
when they change (a panel subscribed to them never shows a stale Exposure)."""

from __future__ import annotations

import json
import queue

import pytest
import tango

pytestmark = pytest.mark.integration


def every_device(running_suite):
    return [device.name for server in running_suite.deployment.servers for device in server.devices]


def test_every_unit_is_one_taurus_knows_and_every_attribute_has_a_label_for_people(running_suite):
    from taurus.core.units import UR

    unknown, raw = [], []
    for name in every_device(running_suite):
        proxy = tango.DeviceProxy(running_suite.suite.device_url(name))
        for config in proxy.attribute_list_query():
            if config.name in ("State", "Status"):
                continue
            if config.unit not in ("", "No unit"):
                try:
                    UR(config.unit)
                except Exception:  # noqa: BLE001 - pint's UndefinedUnitError and its kin
                    unknown.append(f"{name}/{config.name}: {config.unit!r}")
            if config.label == config.name and any(c.isupper() for c in config.name[1:]):
                raw.append(f"{name}/{config.name}")
    assert not unknown
    assert not raw
    recorder = tango.DeviceProxy(running_suite.recorder)
    assert recorder.get_attribute_config("FramesWritten").label == "Frames written"


def change_events(proxy: tango.DeviceProxy, attribute: str):
    """Subscribe to ``attribute``'s change events; returns (values queue, unsubscribe)."""
    values: queue.Queue = queue.Queue()

    def pushed(event):
        if not event.err:
            values.put(event.attr_value.value)

    subscription = proxy.subscribe_event(attribute, tango.EventType.CHANGE_EVENT, pushed)
    return values, lambda: proxy.unsubscribe_event(subscription)


def next_value(values: queue.Queue, wanted, timeout: float = 10.0):
    """The events until one carries ``wanted``; fails if none does within ``timeout`` s."""
    seen = []
    while True:
        try:
            value = values.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no change event with {wanted!r}; saw {seen}") from None
        seen.append(value)
        if value == wanted:
            return value


@pytest.mark.parametrize("attribute, change", [("Exposure", 0.0123), ("Period", 0.0456), ("FrameCount", 77)])
def test_an_acquirer_setting_written_pushes_a_change_event(running_suite, attribute, change):
    acquirer = tango.DeviceProxy(running_suite.acquirer)
    original = acquirer.read_attribute(attribute).value
    values, unsubscribe = change_events(acquirer, attribute)
    try:
        acquirer.write_attribute(attribute, change)
        assert next_value(values, change) == change
    finally:
        unsubscribe()
        acquirer.write_attribute(attribute, original)


def test_a_motors_velocity_and_the_controllers_configuration_push_change_events(running_suite):
    motor = tango.DeviceProxy(running_suite.suite.device_url("demo/beamline/samx"))
    original = motor.Velocity
    values, unsubscribe = change_events(motor, "Velocity")
    try:
        motor.Velocity = original / 2
        assert next_value(values, original / 2) == original / 2
    finally:
        unsubscribe()
        motor.Velocity = original

    controller = tango.DeviceProxy(running_suite.controller)
    values, unsubscribe = change_events(controller, "Configuration")
    try:
        controller.Configure(json.dumps({"frames": 3, "exposure": 0.011, "period": 0.02}))
        pushed = json.loads(next_value(values, controller.Configuration))
        assert (pushed["frames"], pushed["exposure"]) == (3, 0.011)
    finally:
        unsubscribe()
