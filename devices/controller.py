"""The Controller device: one Acquirer and one Recorder driven as one, one combined state.

Peers are reached with DeviceProxy (the ports below); their change events feed the core.
Subscriptions are made lazily from the watchdog thread in Stateless mode, so the Controller
starts before its peers and recovers by itself when a peer restarts.
"""

from __future__ import annotations

import json
import logging
import threading
import time

import tango
from tango import EventSubMode, EventType
from tango.server import Device, attribute, command, device_property

from photonflow.control.controller import (
    ACQUIRER,
    RECORDER,
    AcquisitionRequest,
    Controller,
    ControllerListener,
)
from photonflow.devices.common import EventPushingMixin, operator_errors, unsubscribe

log = logging.getLogger(__name__)

COUNTER_ATTRIBUTES = {
    "FramesRequested": "frames_requested",
    "FramesAcquired": "frames_acquired",
    "FramesReceived": "frames_received",
    "FramesWritten": "frames_written",
    "MissingFrames": "missing_frames",
    "LastFile": "last_file",
    "Progress": "progress",
    "SeriesId": "series_id",
}
# (peer, attribute) -> what the core calls it
PEER_COUNTERS = {
    (ACQUIRER, "FramesAcquired"): "frames_acquired",
    (RECORDER, "FramesReceived"): "frames_received",
    (RECORDER, "FramesWritten"): "frames_written",
    (RECORDER, "MissingFrames"): "missing_frames",
}


def _proxy(name: str, timeout_s: float) -> tango.DeviceProxy:
    proxy = tango.DeviceProxy(name)
    proxy.set_timeout_millis(int(timeout_s * 1000))
    return proxy


class TangoAcquirer:
    """The Acquirer port over DeviceProxy. Commands and attributes are named explicitly
    (command_inout, read_attribute), never looked up on the proxy, so a call made before the
    peer was ever reached fails with Tango's reason, not a Python AttributeError."""

    def __init__(self, name: str, timeout_s: float):
        self.name = name
        self.proxy = _proxy(name, timeout_s)

    def state(self) -> str:
        return str(self.proxy.state())

    def check_settings(self, request: AcquisitionRequest) -> None:
        self.proxy.command_inout("CheckSettings", json.dumps({
            "frames": request.frames, "exposure": request.exposure, "period": request.period,
            "trigger_mode": request.trigger_mode,
        }))

    def configure(self, request: AcquisitionRequest, series_id: int) -> None:
        self.proxy.write_attributes(
            [
                ("FrameCount", request.frames),
                ("Exposure", request.exposure),
                ("Period", request.period),
                ("TriggerMode", request.trigger_mode),
                ("SeriesId", series_id),
            ]
        )

    def prepare(self) -> None:
        self.proxy.command_inout("Prepare")

    def start(self) -> None:
        self.proxy.command_inout("Start")

    def stop(self) -> None:
        self.proxy.command_inout("Stop")

    def abort(self) -> None:
        self.proxy.command_inout("Abort")

    def stream_endpoint(self) -> str:
        return self.proxy.read_attribute("StreamEndpoint").value

    def stream_protocol(self) -> str:
        return self.proxy.read_attribute("StreamProtocol").value

    def frames_acquired(self) -> int:
        return self.proxy.read_attribute("FramesAcquired").value


class TangoRecorder:
    """The Recorder port over DeviceProxy."""

    def __init__(self, name: str, timeout_s: float):
        self.name = name
        self.proxy = _proxy(name, timeout_s)

    def state(self) -> str:
        return str(self.proxy.state())

    def check_file(self, file: str) -> str:
        return self.proxy.command_inout("CheckFile", file)

    def arm(self, frames: int, series_id: int, endpoint: str, file: str | None, protocol: str) -> str:
        request = {"frames": frames, "series_id": series_id, "endpoint": endpoint, "protocol": protocol}
        if file is not None:
            request["file"] = file
        return self.proxy.command_inout("Arm", json.dumps(request))

    def stop(self) -> None:
        self.proxy.command_inout("Stop")

    def abort(self) -> None:
        self.proxy.command_inout("Abort")

    def last_file(self) -> str:
        return self.proxy.read_attribute("LastFile").value

    def counters(self) -> dict[str, int]:
        values = self.proxy.read_attributes(["FramesReceived", "FramesWritten", "MissingFrames"])
        return {
            "frames_received": values[0].value,
            "frames_written": values[1].value,
            "missing_frames": values[2].value,
        }


class _DeviceListener(ControllerListener):
    """Turns the core's news into events, until the device is deleted (Init): a peer event or
    watchdog tick still under way then must not touch the device any more."""

    def __init__(self, device: PhotonflowController):
        self.device = device
        self.retired = threading.Event()

    def state_changed(self, state: str, status: str) -> None:
        if not self.retired.is_set():
            self.device.publish_state(state, status)

    def counters_changed(self, counters: dict) -> None:
        if self.retired.is_set():
            return
        self.device.counters = counters
        for attribute_name, key in COUNTER_ATTRIBUTES.items():
            self.device.publish_value(attribute_name, counters[key])


def _end_subscriptions(watchdog: threading.Thread, subscriptions: list) -> None:
    watchdog.join(60)  # it may be subscribing right now: let it finish, then end its subscriptions too
    unsubscribe(subscriptions)


class PhotonflowController(EventPushingMixin, Device):
    """Drives an Acquirer and a Recorder and checks acquired = received = written."""

    event_attributes = tuple(COUNTER_ATTRIBUTES)

    Acquirer = device_property(dtype=str, mandatory=True, doc="Mandatory. Tango name of the Acquirer device")
    Recorder = device_property(dtype=str, mandatory=True, doc="Mandatory. Tango name of the Recorder device")
    FinishTimeout = device_property(
        dtype=float, default_value=30.0,
        doc="Seconds to wait, after the Acquirer finished, for the Recorder to see the series end",
    )
    PeerTimeout = device_property(dtype=float, default_value=10.0, doc="Seconds a call to a peer may take")
    PeerStartupWait = device_property(
        dtype=float, default_value=30.0, doc="Seconds to wait for peers to answer before subscribing anyway"
    )
    WatchdogInterval = device_property(dtype=float, default_value=0.5, doc="Seconds between watchdog checks")

    def init_device(self):
        super().init_device()
        self.enable_events()
        self.counters = {key: 0 for key in COUNTER_ATTRIBUTES.values()}
        self.counters["last_file"] = ""
        self._subscriptions: list[tuple[tango.DeviceProxy, int]] = []
        self._watchdog_stop = threading.Event()
        self.acquirer_port = TangoAcquirer(self.Acquirer, self.PeerTimeout)
        self.recorder_port = TangoRecorder(self.Recorder, self.PeerTimeout)
        self.listener = _DeviceListener(self)
        self.controller = Controller(
            self.acquirer_port, self.recorder_port, self.listener, finish_timeout=self.FinishTimeout
        )
        self.publish_state(*self.controller.combined_state())
        self._watchdog = threading.Thread(target=self._watch, name="controller-watchdog", daemon=True)
        self._watchdog.start()

    def delete_device(self):
        """Runs holding the device's monitor (Init): it must not wait for anything that may itself
        wait for that monitor. An event callback pushing an event does, and unsubscribe_event
        waits for callbacks under way: so the old listener is retired, and the watchdog and the
        subscriptions are ended by a thread of their own, after this returns."""
        self.listener.retired.set()
        self._watchdog_stop.set()
        threading.Thread(
            target=_end_subscriptions, args=(self._watchdog, self._subscriptions),
            name="controller-unsubscribe", daemon=True,
        ).start()

    def _watch(self) -> None:
        self._wait_for_peers()
        self._subscribe_peers()
        while not self._watchdog_stop.wait(self.WatchdogInterval):
            try:
                self.controller.tick()
            except Exception:
                log.exception("watchdog check failed")

    def _wait_for_peers(self) -> None:
        """Servers often start together: give the peers a moment, so the first subscription
        succeeds instead of waiting for Tango's 10 s re-subscription cycle."""
        deadline = time.monotonic() + self.PeerStartupWait
        for proxy in (self.acquirer_port.proxy, self.recorder_port.proxy):
            while time.monotonic() < deadline and not self._watchdog_stop.is_set():
                try:
                    proxy.ping()
                    break
                except tango.DevFailed:
                    self._watchdog_stop.wait(0.2)

    def _subscribe_peers(self) -> None:
        """Stateless subscriptions succeed while a peer is down; Tango re-subscribes when it returns."""
        wanted = [(ACQUIRER, self.acquirer_port.proxy, name) for name in ("State", "Status", "FramesAcquired")]
        wanted += [
            (RECORDER, self.recorder_port.proxy, name)
            for name in ("State", "Status", "FramesReceived", "FramesWritten", "MissingFrames")
        ]
        for peer, proxy, attribute_name in wanted:
            callback = self._make_callback(peer, attribute_name)
            event_id = proxy.subscribe_event(
                attribute_name, EventType.CHANGE_EVENT, callback, sub_mode=EventSubMode.Stateless
            )
            self._subscriptions.append((proxy, event_id))

    def _make_callback(self, peer: str, attribute_name: str):
        def on_event(event):
            if event.err:
                error = event.errors[0]
                if attribute_name == "State":
                    self.controller.peer_unreachable(peer, f"{error.reason}: {error.desc}")
                return
            value = event.attr_value.value
            if attribute_name == "State":
                self.controller.peer_state_changed(peer, str(value))
            elif attribute_name == "Status":
                self.controller.peer_status_changed(peer, value)
            else:
                self.controller.peer_counter_changed(PEER_COUNTERS[(peer, attribute_name)], int(value))

        return on_event

    # -- attributes ---------------------------------------------------------------------
    @attribute(dtype=int, doc="Frames asked for in the current or last series")
    def FramesRequested(self):
        return self.counters["frames_requested"]

    @attribute(dtype=int, doc="Frames the Acquirer acquired")
    def FramesAcquired(self):
        return self.counters["frames_acquired"]

    @attribute(dtype=int, doc="Frames the Recorder received")
    def FramesReceived(self):
        return self.counters["frames_received"]

    @attribute(dtype=int, doc="Frames the Recorder wrote")
    def FramesWritten(self):
        return self.counters["frames_written"]

    @attribute(dtype=int, doc="Frames sent but never written (known at series end)")
    def MissingFrames(self):
        return self.counters["missing_frames"]

    @attribute(dtype=str, doc="File of the current or last series")
    def LastFile(self):
        return self.counters["last_file"]

    @attribute(dtype=float, unit="%", format="%.1f", min_value=0, max_value=100, doc="Frames written / requested")
    def Progress(self):
        return self.counters["progress"]

    @attribute(dtype=int, doc="Id of the current or last series")
    def SeriesId(self):
        return self.counters["series_id"]

    @attribute(dtype=str, doc="The configuration the next Start uses, as JSON")
    def Configuration(self):
        request = self.controller.request
        return json.dumps(request.__dict__) if request else ""

    # -- commands -----------------------------------------------------------------------
    @command(dtype_in=str,
             doc_in='JSON: {"frames": N, "exposure": s, "period": s, "file": "name.h5", "trigger_mode": "internal"}')
    @operator_errors
    def Configure(self, text):
        self.controller.configure(text)

    @command(doc_in="Arm the Recorder, then prepare and start the Acquirer")
    @operator_errors
    def Start(self):
        self.controller.start()

    @command(doc_in="Stop the Acquirer after the current frame; the file is closed at the series end")
    @operator_errors
    def Stop(self):
        self.controller.stop()

    @command(doc_in="Abort the Acquirer and the Recorder at once")
    @operator_errors
    def Abort(self):
        self.controller.abort()
