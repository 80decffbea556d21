"""The Standardizer device: a thin Tango face on ``photonflow.standardizing.standardizer``.

It follows its Controller's State: a series starts when the Controller becomes busy and ends
when it is no longer, and then the Controller's LastFile is the Recorder's file to standardize.
No client has to call it; it runs no sequence (a tomography is a DataManager structure).
"""

from __future__ import annotations

import functools
import logging
import os
import threading

import tango
from tango.server import attribute, command, device_property

from photonflow.control.controller import BUSY_STATES
from photonflow.devices.base import PhotonflowDevice, counter
from photonflow.devices.common import (
    SeriesEdges,
    SeriesRanSince,
    TangoReader,
    follow_events,
    operator_errors,
    wait_unlocked,
)
from photonflow.events.bus import event_bus_from_url
from photonflow.standardizing.mapping import load_mapping
from photonflow.standardizing.standardizer import Standardizer

log = logging.getLogger(__name__)


class PhotonflowStandardizer(PhotonflowDevice):
    """Writes each series' standardized NeXus file (NXmx, NXtomo) from the beamline's Tango metadata."""

    Controller = device_property(
        dtype=str, mandatory=True, doc="Mandatory. Tango name of the Controller whose series it follows"
    )
    MappingFile = device_property(
        dtype=str, mandatory=True,
        doc="Mandatory. The beamline's mapping (YAML): which attribute is which NeXus field, when"
    )
    DevicePrefix = device_property(
        dtype=str, default_value="", doc="Fills ${PREFIX} in the mapping (e.g. demo/beamline)"
    )
    DataManager = device_property(
        dtype=str, default_value="", doc="The DataManager saying what each acquisition means: its DataPolicy, read "
        "at each series start, names the tomography a dark, flat or data series belongs to; fills ${DATAMANAGER} "
        "in the mapping"
    )
    DataRoot = device_property(
        dtype=str, mandatory=True, doc="Mandatory. The Recorder's data root: files are written only under it"
    )
    EventBus = device_property(
        dtype=str, default_value="",
        doc="Where experiment-done events go: redis://host:port or kafka://host:port/topic; empty: "
        "$PHOTONFLOW_EVENT_BUS if set, else none",
    )
    ReadTimeout = device_property(dtype=float, default_value=1.0, doc="Seconds one attribute read may take")

    def create_core(self, listener):
        mapping = load_mapping(self.MappingFile, {"PREFIX": self.DevicePrefix, "DATAMANAGER": self.DataManager})
        url = self.EventBus or os.environ.get("PHOTONFLOW_EVENT_BUS", "")
        self.bus = event_bus_from_url(url) if url else None
        self._stop = threading.Event()
        self.controller = tango.DeviceProxy(self.Controller)
        self._edges = SeriesEdges(BUSY_STATES)
        self._missed_end = SeriesRanSince(self._series_id)
        return Standardizer(mapping, TangoReader(self.ReadTimeout), self.DataRoot, listener, self.bus,
                            datamanager=self.DataManager)

    def core_ready(self, core) -> None:
        wanted = functools.partial(self._wanted_events, core)
        threading.Thread(target=follow_events, args=(self._stop, self.controller, wanted),
                         name="standardizer-follow", daemon=True).start()

    def delete_device(self):
        if self.core is not None:
            self._stop.set()
        super().delete_device()
        if getattr(self, "bus", None) is not None:
            self.bus.close()

    def _wanted_events(self, core: Standardizer) -> list:
        """The Controller's State, and the attributes the mapping takes from change events."""
        wanted = [(self.controller, "State", self._on_controller_state)]
        for capture in core.mapping.evented():
            wanted.append((core.reader.proxy(capture.device), capture.attribute,
                           self._forward_change(capture.device, capture.attribute)))
        return wanted

    def _forward_change(self, device: str, attribute_name: str):
        def on_change(event) -> None:
            core = self.core
            if event.err or core is None or event.attr_value is None:
                return
            core.attribute_changed(device, attribute_name, event.attr_value.value, event.attr_value.time.totime())

        return on_change

    def _on_controller_state(self, event) -> None:
        if event.err or self.core is None:
            return
        try:
            edge = self._edges.edge(str(event.attr_value.value), self._missed_end)
            if edge is None:
                return
            series_id = self._series_id()
            if edge == "started":
                self.core.series_started(series_id)
            else:
                self.core.series_ended(series_id, self.controller.read_attribute("LastFile").value)
        except tango.DevFailed as error:
            log.warning("could not follow the Controller: %s", error.args[0].desc)

    # -- attributes ---------------------------------------------------------------------------
    LastFile = counter("last_file", str, "The last standardized file")
    FilesWritten = counter("files_written", int, "Standardized files written since start-up")
    CaptureFailures = counter("capture_failures", int,
                              "Values that could not be captured, since start-up (each one is named in its file)")
    Warnings = counter("warnings", (str,), "What the last series could not capture or send, and what is off in "
                       "what it captured (a scan's angles, the frame rate)",
                       convert=lambda warnings: list(warnings or ()), max_dim_x=1000)

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

    def _series_id(self) -> int:
        return int(self.controller.read_attribute("SeriesId").value)

    @command(dtype_in=float, dtype_out=bool, doc_in="Seconds to wait", doc_out="True once every series is written")
    def WaitIdle(self, timeout):
        return wait_unlocked(self, self._core().wait_idle, timeout)
