"""The Standardizer device: a thin Tango face on ``photonflow.standardizing.standardizer``.

It follows its Controller's State: a series starts when the Controller becomes busy and ends
when it is no longer, and then the Controller's LastFile is the Recorder's file to standardize.
No client has to call it.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import threading
import time

import tango
from tango.server import attribute, command, device_property

from photonflow.control.controller import BUSY_STATES
from photonflow.devices.base import PhotonflowDevice, counter
from photonflow.devices.common import SeriesEdges, TangoReader, follow_events, operator_errors
from photonflow.errors import ConfigurationError, PhotonflowError
from photonflow.events.bus import event_bus_from_url
from photonflow.standardizing.mapping import load_mapping
from photonflow.standardizing.standardizer import Standardizer
from photonflow.standardizing.tomography import TomographyPlan

log = logging.getLogger(__name__)


def _wait(check, timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise PhotonflowError(f"{what} did not happen within {timeout:.0f} s", reason="Timeout")
        time.sleep(interval)


class TangoAcquisition:
    """The Controller as the tomography sequence uses it: Configure, Start, wait for the end."""

    def __init__(self, controller: str):
        self.proxy = tango.DeviceProxy(controller)
        self.proxy.set_timeout_millis(15000)

    def _state(self) -> str:
        return str(self.proxy.state())

    def acquire(self, frames, exposure, period, file, on_first_frame=None) -> tuple[int, str]:
        _wait(lambda: self._state() not in BUSY_STATES, 60, f"{self.proxy.dev_name()} idle")
        self.proxy.Configure(json.dumps({"frames": frames, "exposure": exposure, "period": period, "file": file}))
        self.proxy.Start()
        if on_first_frame is not None:
            _wait(lambda: self.proxy.FramesAcquired > 0 or self._state() not in BUSY_STATES, 60, "the first frame",
                  0.005)
            on_first_frame()
        _wait(lambda: self._state() not in BUSY_STATES, frames * period * 3 + 120, f"the end of the {file} series")
        if self._state() != "ON":
            raise PhotonflowError(f"the series {file} ended {self._state()}: {self.proxy.status()}",
                                  reason="SeriesFailed")
        return int(self.proxy.SeriesId), self.proxy.LastFile


class TangoBeamline:
    """The shutter and the sample's axes (named as in the mapping) as the sequence moves them."""

    def __init__(self, mapping, reader: TangoReader):
        self.reader = reader
        self.axes = {axis.name: axis.capture for axis in mapping.axes if axis.capture.device}
        shutters = [f.capture.device for f in mapping.fields if f.component == "shutter" and f.capture.device]
        self.shutter = shutters[0] if shutters else None
        self._speeds: dict[str, float] = {}

    def set_shutter(self, open_: bool) -> None:
        if self.shutter is None:
            raise ConfigurationError("the mapping names no shutter (components: shutter: status:), so darks "
                                     "cannot be taken with the beam off")
        proxy = self.reader.proxy(self.shutter)
        wanted = "OPEN" if open_ else "CLOSE"
        if str(proxy.state()) != wanted:
            proxy.command_inout("Open" if open_ else "Close")
            _wait(lambda: str(proxy.state()) in (wanted, "FAULT"), 30, f"{self.shutter} {wanted}")
            if str(proxy.state()) != wanted:
                raise PhotonflowError(f"{self.shutter} did not {wanted.lower()}: {proxy.status()}",
                                      reason="ShutterFailed")

    def _axis(self, name: str) -> tango.DeviceProxy:
        return self.reader.proxy(self.axes[name].device)

    def position(self, axis: str) -> float:
        return float(self._axis(axis).read_attribute(self.axes[axis].attribute).value)

    def move(self, axis, position, velocity=None, wait=True) -> None:
        proxy = self._axis(axis)
        if velocity is not None:
            self._speeds.setdefault(axis, float(proxy.Velocity))
            proxy.Velocity = velocity
        proxy.write_attribute(self.axes[axis].attribute, position)
        if wait:
            self.wait_still(axis)

    def wait_still(self, axis: str) -> None:
        proxy = self._axis(axis)
        _wait(lambda: str(proxy.state()) != "MOVING", 300, f"{self.axes[axis].device} at rest")

    def restore(self) -> None:
        for axis, speed in self._speeds.items():
            try:
                self._axis(axis).Velocity = speed
            except tango.DevFailed as error:
                log.warning("could not restore the speed of %s: %s", axis, error.args[0].desc)
        self._speeds.clear()


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
        dtype=str, default_value="", doc="Fills ${DATAMANAGER} in the mapping: the DataManager saying what each "
        "acquisition means"
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
        self._edges = SeriesEdges(BUSY_STATES)
        self._stop = threading.Event()
        self.controller = tango.DeviceProxy(self.Controller)
        return Standardizer(mapping, TangoReader(self.ReadTimeout), self.DataRoot, listener, self.bus)

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
        edge = self._edges.edge(str(event.attr_value.value))
        if edge is None:
            return
        try:
            series_id = int(self.controller.read_attribute("SeriesId").value)
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
    Warnings = counter("warnings", (str,), "What the last series could not capture or send",
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

    @command(dtype_in=str,
             doc_in='The plan as JSON, e.g. {"projections": 90, "darks": 10, "flats": 10, "exposure": 0.005, '
             '"period": 0.01, "start_angle": 0, "end_angle": 180, "sample_out": 5, "sample_name": "rock"}; '
             "absent keys take their defaults. Runs in the background: State RUNNING, then LastFile is the NXtomo")
    @operator_errors
    def AcquireTomography(self, text):
        core = self._core()
        plan = TomographyPlan.from_json(text)
        core.acquire_tomography(plan, TangoAcquisition(self.Controller), TangoBeamline(core.mapping, core.reader))

    @command(dtype_in=float, dtype_out=bool, doc_in="Seconds to wait", doc_out="True once every series is written")
    def WaitIdle(self, timeout):
        deadline = time.monotonic() + max(0.0, min(timeout, 600.0))
        return self._core().wait_idle(max(0.0, deadline - time.monotonic()))
