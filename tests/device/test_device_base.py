"""The device base class hands its core over before anything may call back into it: the
Standardizer's and the DataManager's event followers start in ``core_ready``, and a follower that
started before the core was the device's once found none and died (the Standardizer then wrote no
NeXus file for the rest of its life). A counter declared once is an attribute that reads the
core's counters and is pushed as a change event when the core reports them."""

from __future__ import annotations

import queue
from dataclasses import dataclass

import tango
from tango.server import attribute, command
from tango.test_context import DeviceTestContext

from photonflow import states
from photonflow.core import StatefulCore
from photonflow.devices.base import PhotonflowDevice, counter


class ReadyCore:
    state, status = states.ON, "ready"

    def close(self) -> None:
        pass


class CoreReadyProbe(PhotonflowDevice):
    """Records what ``core_ready`` found: the core it was given, already the device's."""

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


@dataclass
class ShelfCounters:
    frames_shelved: int = 0
    fill: float = 0.0  # a fraction; the attribute shows percent
    last_label: str = ""


class ShelfCore(StatefulCore):
    def __init__(self, listener):
        super().__init__(listener, states.ON, "ready")
        self.counters = ShelfCounters()

    def shelve(self, label: str) -> None:
        self.counters.frames_shelved += 1
        self.counters.fill = self.counters.frames_shelved / 4
        self.counters.last_label = label
        self.listener.counters_changed(self.counters)

    def close(self) -> None:
        pass


class CounterProbe(PhotonflowDevice):
    """Counters declared once: one line each gives the attribute, its read and its events."""

    FramesShelved = counter("frames_shelved", int, "Frames put on the shelf")
    Fill = counter("fill", float, "How full the shelf is", convert=lambda fraction: 100.0 * fraction,
                   unit="%", format="%.1f")
    LastLabel = counter("last_label", str, "Label of the last frame shelved")

    def create_core(self, listener):
        return ShelfCore(listener)

    @command(dtype_in=str)
    def Shelve(self, label):
        self._core().shelve(label)


class BrokenCounterProbe(CounterProbe):
    def create_core(self, listener):
        raise ValueError("the shelf is missing")


def test_a_counter_declared_once_reads_the_core_and_is_pushed_as_a_change_event():
    with DeviceTestContext(CounterProbe, host="127.0.0.1", process=True) as device:
        fill = device.get_attribute_config("Fill")
        assert (fill.unit, fill.format, fill.description) == ("%", "%.1f", "How full the shelf is")
        events: queue.Queue = queue.Queue()
        event_id = device.subscribe_event(
            "Fill", tango.EventType.CHANGE_EVENT, lambda event: events.put(event.attr_value.value)
        )
        assert events.get(timeout=5) == 0.0  # the value on subscription
        device.Shelve("dark")
        assert events.get(timeout=5) == 25.0  # converted as a read is
        device.unsubscribe_event(event_id)
        assert (device.FramesShelved, device.Fill, device.LastLabel) == (1, 25.0, "dark")


def test_counters_read_as_empty_when_the_core_could_not_be_built():
    with DeviceTestContext(BrokenCounterProbe, host="127.0.0.1", process=True) as device:
        assert str(device.state()) == "FAULT" and "the shelf is missing" in device.status()
        assert (device.FramesShelved, device.Fill, device.LastLabel) == (0, 0.0, "")
