"""The shell every photonflow device is: it builds one core object from its properties, publishes
the core's state and counters as change events, and goes FAULT, saying why, when the core cannot
be built (a wrong property), so that Init after a fix brings it back.

A new device is a subclass that declares ``COUNTERS`` (Tango attribute -> core counter) and
implements ``create_core(listener)``.
"""

from __future__ import annotations

import logging

import tango
from tango.server import Device

from photonflow.core import CoreListener
from photonflow.devices.common import EventPushingMixin

log = logging.getLogger(__name__)


class DeviceListener(CoreListener):
    """Forwards the core's reports to the device as change events."""

    def __init__(self, device: PhotonflowDevice):
        self.device = device

    def state_changed(self, state: str, status: str) -> None:
        self.device.publish_state(state, status)

    def counters_changed(self, counters) -> None:
        for attribute_name, field_name in self.device.COUNTERS.items():
            self.device.publish_value(attribute_name, getattr(counters, field_name))


class PhotonflowDevice(EventPushingMixin, Device):
    COUNTERS: dict[str, str] = {}  # Tango attribute -> field of the core's counters
    extra_events: tuple[str, ...] = ()

    @property
    def event_attributes(self) -> tuple[str, ...]:
        return (*self.COUNTERS, *self.extra_events)

    def create_core(self, listener: CoreListener):
        raise NotImplementedError

    def init_device(self):
        super().init_device()
        self.enable_events()
        self.core = None
        try:
            self.core = self.create_core(DeviceListener(self))
        except Exception as error:
            log.exception("%s could not start", self.get_name())
            reason = getattr(error, "reason", type(error).__name__)
            self.set_state(tango.DevState.FAULT)
            self.set_status(f"Cannot start ({reason}): {error}. Correct the device properties, then run Init.")
            return
        self.publish_state(self.core.state, self.core.status)

    def delete_device(self):
        if self.core is not None:
            self.core.close()
            self.core = None

    def _core(self):
        """The core, or a DevFailed saying why there is none."""
        if self.core is None:
            tango.Except.throw_exception("DeviceNotReady", self.get_status(), f"{type(self).__name__}")
        return self.core

    def counter(self, name: str):
        core = self.core
        return getattr(core.counters, self.COUNTERS[name]) if core is not None else 0
