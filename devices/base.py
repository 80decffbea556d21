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

from photonflow import states
from photonflow.core import CoreListener
from photonflow.devices.common import EventPushingMixin

log = logging.getLogger(__name__)


class DeviceListener(CoreListener):
    """Forwards the core's reports to the device as change events."""

    def __init__(self, device: PhotonflowDevice):
        self.device = device

    def state_changed(self, state: str, status: str) -> None:
        self.device.publish_state(state, status)
        self.device.state_published()

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

    def core_ready(self, core) -> None:
        """After the core is the device's: start here what calls back into it (event followers), so
        no callback can find the device without its core."""

    def init_device(self):
        super().init_device()
        self.enable_events()
        self.core = None
        try:
            self.core = self.create_core(DeviceListener(self))
        except Exception as error:
            log.exception("%s could not start", self.get_name())
            self.publish_state(states.FAULT, f"Cannot initialise: {error}. Fix the properties, then Init.")
            return
        self.core_ready(self.core)
        self.publish_state(self.core.state, self.core.status)

    def delete_device(self):
        if self.core is not None:
            self.release_core(self.core)
            self.core = None

    def release_core(self, core) -> None:
        """Let the core go (Init, shutdown): by default its ``close()``."""
        core.close()

    def state_published(self) -> None:
        """After each state event: a device pushes here what changes with its state."""

    def _core(self):
        """The core, or a DevFailed saying why there is none."""
        if self.core is None:
            tango.Except.throw_exception("NotInitialised", self.get_status(), f"{type(self).__name__}")
        return self.core

    def counter(self, name: str):
        core = self.core
        return getattr(core.counters, self.COUNTERS[name]) if core is not None else 0
