"""The Standardizer device: a thin Tango face on ``photonflow.standardizing.standardizer``.

It follows its Controller's State: a series starts when the Controller becomes busy and ends
when it is no longer, and then the Controller's LastFile is the Recorder's file to standardize.
No client has to call it.
"""

from __future__ import annotations

import logging
import os
import threading
import time

import tango
from tango import EventSubMode, EventType
from tango.server import attribute, command, device_property

from photonflow.control.controller import BUSY_STATES
from photonflow.devices.base import PhotonflowDevice
from photonflow.devices.common import TangoReader, operator_errors
from photonflow.events.bus import event_bus_from_url
from photonflow.standardizing.mapping import load_mapping
from photonflow.standardizing.standardizer import Standardizer

log = logging.getLogger(__name__)


class PhotonflowStandardizer(PhotonflowDevice):
    """Writes each series' standardized NeXus file (NXmx, NXtomo) from the beamline's Tango metadata."""

    COUNTERS = {"FilesWritten": "files_written", "CaptureFailures": "capture_failures", "LastFile": "last_file",
                "Warnings": "warnings"}

    Controller = device_property(dtype=str, mandatory=True, doc="Tango name of the Controller whose series it follows")
    MappingFile = device_property(
        dtype=str, mandatory=True, doc="The beamline's mapping (YAML): which attribute is which NeXus field, when"
    )
    DevicePrefix = device_property(
        dtype=str, default_value="", doc="Fills ${PREFIX} in the mapping (e.g. demo/beamline)"
    )
    DataRoot = device_property(
        dtype=str, mandatory=True, doc="The Recorder's data root: files are written only under it"
    )
    EventBus = device_property(
        dtype=str, default_value="",
        doc="Where experiment-done events go: redis://host:port or kafka://host:port/topic; empty: "
        "$PHOTONFLOW_EVENT_BUS if set, else none",
    )
    ReadTimeout = device_property(dtype=float, default_value=1.0, doc="Seconds one attribute read may take")

    def create_core(self, listener):
        mapping = load_mapping(self.MappingFile, {"PREFIX": self.DevicePrefix})
        url = self.EventBus or os.environ.get("PHOTONFLOW_EVENT_BUS", "")
        self.bus = event_bus_from_url(url) if url else None
        self._controller_state = None
        self._stop = threading.Event()
        core = Standardizer(mapping, TangoReader(self.ReadTimeout), self.DataRoot, listener, self.bus)
        self._follower = threading.Thread(target=self._follow_controller, name="standardizer-follow", daemon=True)
        self._follower.start()
        return core

    def delete_device(self):
        if self.core is not None:
            self._stop.set()
        super().delete_device()
        if getattr(self, "bus", None) is not None:
            self.bus.close()

    def _follow_controller(self) -> None:
        """Subscribes once the Controller answers (it may start after this server); Stateless, so
        Tango re-subscribes by itself when the Controller restarts."""
        self.controller = tango.DeviceProxy(self.Controller)
        while not self._stop.is_set():
            try:
                self.controller.ping()
                break
            except tango.DevFailed:
                self._stop.wait(0.5)
        if self._stop.is_set():
            return
        event_id = self.controller.subscribe_event(
            "State", EventType.CHANGE_EVENT, self._on_controller_state, sub_mode=EventSubMode.Stateless
        )
        self._stop.wait()
        threading.Thread(target=self._unsubscribe, args=(event_id,), daemon=True).start()

    def _unsubscribe(self, event_id: int) -> None:
        try:
            self.controller.unsubscribe_event(event_id)
        except tango.DevFailed:
            pass

    def _on_controller_state(self, event) -> None:
        if event.err or self.core is None:
            return
        state = str(event.attr_value.value)
        was_busy = self._controller_state in BUSY_STATES
        busy = state in BUSY_STATES
        self._controller_state = state
        if busy == was_busy:
            return
        try:
            series_id = int(self.controller.read_attribute("SeriesId").value)
            if busy:
                self.core.series_started(series_id)
            else:
                self.core.series_ended(series_id, self.controller.read_attribute("LastFile").value)
        except tango.DevFailed as error:
            log.warning("could not follow the Controller: %s", error.args[0].desc)

    # -- attributes ---------------------------------------------------------------------------
    @attribute(dtype=str, doc="The last standardized file")
    def LastFile(self):
        return self.counter("LastFile")

    @attribute(dtype=int, doc="Standardized files written since start-up")
    def FilesWritten(self):
        return self.counter("FilesWritten")

    @attribute(dtype=int, doc="Values that could not be captured, since start-up (each one is named in its file)")
    def CaptureFailures(self):
        return self.counter("CaptureFailures")

    @attribute(dtype=(str,), max_dim_x=1000, doc="What the last series could not capture or send")
    def Warnings(self):
        return list(self.counter("Warnings") or ())

    @attribute(dtype=str, doc="The application definition written (NXmx, NXtomo)")
    def Definition(self):
        return self._core().mapping.definition

    # -- commands -----------------------------------------------------------------------------
    @command(dtype_in=str, dtype_out=str,
             doc_in="A Recorder file under the data root, already written",
             doc_out="The standardized file written beside it")
    @operator_errors
    def Standardize(self, master_file):
        if not master_file.strip():
            tango.Except.throw_exception("InvalidArgument", "Give the path of a Recorder file (.h5) under the data "
                                         "root", "PhotonflowStandardizer.Standardize")
        return str(self._core().standardize(master_file.strip()))

    @command(dtype_in=float, dtype_out=bool, doc_in="Seconds to wait", doc_out="True once every series is written")
    def WaitIdle(self, timeout):
        deadline = time.monotonic() + max(0.0, min(timeout, 600.0))
        return self._core().wait_idle(max(0.0, deadline - time.monotonic()))
