"""The shell every photonflow device is: it builds one core object from its properties, publishes
the core's state and counters as change events, and goes FAULT, saying why, when the core cannot
be built (a wrong property), so that Init after a fix brings it back.

A new device is a subclass that implements ``create_core(listener)`` and declares each counter
of its core once, as ``FramesWritten = counter("frames_written", int, "Frames written")``: that
line is the Tango attribute, its read method and its change events.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from typing import Any

import tango
from tango.server import Device, attribute

from photonflow import states
from photonflow.core import CoreListener
from photonflow.devices.common import EventPushingMixin

log = logging.getLogger(__name__)

_EMPTY = {int: 0, float: 0.0, str: "", bool: False}


_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")


def label_for(name: str) -> str:
    """An attribute's label for people, from its CamelCase name: FramesWritten -> "Frames written",
    ROISum -> "ROI sum" (acronyms stay as they are)."""
    words = _WORD.findall(name)
    if not words or "".join(words) != name:
        return name
    return " ".join([words[0], *(word if word.isupper() else word.lower() for word in words[1:])])


def counter(field: str, dtype: Any = int, doc: str = "", convert: Callable[[Any], Any] | None = None,
            **options) -> attribute:
    """A read-only attribute showing ``field`` of the core's counters, pushed as a change event
    whenever the core reports its counters; ``convert`` turns the field into the attribute's value
    (the same for reads and events). Without a core (FAULT) it reads as empty."""
    empty = _EMPTY.get(dtype, [])

    def value(counters: Any) -> Any:
        raw = getattr(counters, field)
        return convert(raw) if convert is not None else raw

    def read(device: PhotonflowDevice):
        core = device.core
        return value(core.counters) if core is not None else empty

    declared = attribute(fget=read, dtype=dtype, doc=doc, **options)
    declared.counter_value = value  # found by PhotonflowDevice.__init_subclass__ for the change events
    return declared


class DeviceListener(CoreListener):
    """Forwards the core's reports to the device as change events, until the device lets its core
    go (Init, shutdown): a callback of the old core still under way then never touches the device."""

    def __init__(self, device: PhotonflowDevice):
        self.device = device
        self.retired = threading.Event()

    def state_changed(self, state: str, status: str) -> None:
        if self.retired.is_set():
            return
        self.device.publish_state(state, status)
        self.device.state_published()

    def counters_changed(self, counters) -> None:
        if self.retired.is_set():
            return
        for attribute_name, value in self.device.COUNTER_FIELDS.items():
            self.device.publish_value(attribute_name, value(counters))


class PhotonflowDevice(EventPushingMixin, Device):
    # Tango attribute -> how its value comes from the core's counters; made from the class's counter() lines
    COUNTER_FIELDS: dict[str, Callable[[Any], Any]] = {}
    extra_events: tuple[str, ...] = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        fields = dict(cls.COUNTER_FIELDS)
        for name, member in vars(cls).items():
            if not isinstance(member, attribute):
                continue
            if hasattr(member, "counter_value"):
                fields[name] = member.counter_value
            if "label" not in member._kwargs:  # a panel shows "Frames written", not FramesWritten
                if member.att_prop is None:  # an attribute declared with no unit, format, range...
                    member.att_prop = tango.UserDefaultAttrProp()
                member.att_prop.set_label(label_for(member.attr_name or name))
        cls.COUNTER_FIELDS = fields

    @property
    def event_attributes(self) -> tuple[str, ...]:
        return (*self.COUNTER_FIELDS, *self.extra_events)

    def create_core(self, listener: CoreListener):
        raise NotImplementedError

    def core_ready(self, core) -> None:
        """After the core is the device's: start here what calls back into it (event followers,
        a refresh thread), so no callback can find the device without its core."""

    def init_device(self):
        super().init_device()
        self.enable_events()
        self.core = None
        self.listener = DeviceListener(self)
        try:
            self.core = self.create_core(self.listener)
        except Exception as error:
            log.exception("%s could not start", self.get_name())
            self.publish_state(states.FAULT, f"Cannot initialise: {error}. Fix the properties, then Init.")
            return
        self.core_ready(self.core)
        self.publish_state(*self.core_state(self.core))

    def core_state(self, core) -> tuple[str, str]:
        """The core's state and status, as published once it is ready."""
        return core.state, core.status

    def delete_device(self):
        """Runs under the device's monitor (Init): the old listener is retired first, so nothing the
        old core still reports can wait for that monitor; ``release_core`` must not wait for it either."""
        self.listener.retired.set()
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
