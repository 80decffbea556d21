"""The LimaCCDs device: LImA's Tango interface (the class LImA's clients drive: sardana-limaccd's
Lima2DCtrl, BLISS, beamline macros) as a thin face on ``photonflow.control.lima_face``, over one
photonflow Controller and the Acquirer and Recorder that Controller drives (its own properties
name them, so they are configured once).

Each LImA attribute is one ``lima_attribute`` line: its LImA name, type and access; reads and
writes go to the core, which refuses what photonflow cannot do with a DevFailed saying what it
can. The Controller and Recorder are read once per client read (``read_attr_hardware``), so the
attributes one ``read_attributes`` asks for describe one moment, and every PollInterval for the
State and Status change events.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

import numpy as np
import tango
from tango import AttrWriteType
from tango.server import attribute, command, device_property

from photonflow.control.lima_face import (
    ALL_FRAMES_IN_ONE_FILE,
    DetectorInfo,
    LimaFace,
    PipelineReading,
    data_array,
)
from photonflow.devices.base import PhotonflowDevice
from photonflow.devices.common import operator_errors

log = logging.getLogger(__name__)


class TangoPipeline:
    """The face's port: the Controller, its Acquirer and its Recorder over DeviceProxy."""

    def __init__(self, controller: str, timeout_s: float):
        self.controller = self._proxy(controller, timeout_s)
        peers = self.controller.get_property(["Acquirer", "Recorder"])
        missing = [name for name in ("Acquirer", "Recorder") if not peers[name]]
        if missing:
            raise ValueError(f"the Controller {controller} has no {' nor '.join(missing)} property: "
                             "the property Controller must name a photonflow Controller")
        self.acquirer = self._proxy(peers["Acquirer"][0], timeout_s)
        self.recorder = self._proxy(peers["Recorder"][0], timeout_s)
        self._data_root = ""

    @staticmethod
    def _proxy(name: str, timeout_s: float) -> tango.DeviceProxy:
        proxy = tango.DeviceProxy(name)
        proxy.set_timeout_millis(int(timeout_s * 1000))
        return proxy

    def read(self) -> PipelineReading:
        state, status, series_id, last_file, acquired = (a.value for a in self.controller.read_attributes(
            ["State", "Status", "SeriesId", "LastFile", "FramesAcquired"]))
        written, flushed = (a.value for a in self.recorder.read_attributes(["FramesWritten", "FramesFlushed"]))
        return PipelineReading(str(state), status, series_id, last_file, acquired, written, flushed)

    def configure(self, request: dict[str, Any]) -> None:
        self.controller.command_inout("Configure", json.dumps(request))

    def start(self) -> None:
        self.controller.command_inout("Start")

    def stop(self) -> None:
        self.controller.command_inout("Stop")

    def abort(self) -> None:
        self.controller.command_inout("Abort")

    def trigger(self) -> None:
        self.acquirer.command_inout("SoftwareTrigger")

    def acquirer_armed(self) -> bool:
        return self.acquirer.state() in (tango.DevState.STANDBY, tango.DevState.RUNNING)

    def offers(self, trigger_mode: str) -> bool:
        """Whether the detector takes the trigger mode, as its CheckSettings says (nothing changed)."""
        try:
            self.acquirer.command_inout("CheckSettings", json.dumps({"trigger_mode": trigger_mode}))
        except tango.DevFailed as error:
            if error.args[0].reason == "InvalidConfiguration":
                return False
            raise
        return True

    def detector(self) -> DetectorInfo:
        shape, dtype = (a.value for a in self.acquirer.read_attributes(["FrameShape", "FrameType"]))
        tango_class = self.acquirer.info().dev_class
        camera_type = tango_class.removesuffix("Acquirer") or tango_class
        model = camera_type
        available = set(self.acquirer.get_attribute_list())
        for name in ("CameraModel", "Description"):
            if name in available:
                model = self.acquirer.read_attribute(name).value or model
                break
        return DetectorInfo((int(shape[0]), int(shape[1])), dtype, camera_type, model)

    def data_root(self) -> str:
        if not self._data_root:
            self._data_root = self.recorder.read_attribute("DataRootPath").value
        return self._data_root


def lima_attribute(name: str, dtype: Any, label: str, doc: str, writable: bool = False, read=None,
                   **options) -> attribute:
    """One LImA attribute: read from the core (``read(core)``, by default the setting ``name``),
    written to it as ``core.write(name, value)``."""

    def read_value(device: LimaCCDs):
        core = device._core()
        return read(core) if read is not None else core.value(name)

    read_value.__name__ = f"read_{name}"
    declared: dict[str, Any] = {"name": name, "dtype": dtype, "label": label, "doc": doc, "fget": read_value,
                                **options}
    if writable:
        def write_value(device: LimaCCDs, value):
            device._core().write(name, value)

        write_value.__name__ = f"write_{name}"
        declared.update(access=AttrWriteType.READ_WRITE, fset=operator_errors(write_value))
    return attribute(**declared)


class LimaCCDs(PhotonflowDevice):
    """LImA's LimaCCDs interface over a photonflow Controller: prepareAcq, startAcq, acq_status..."""

    Controller = device_property(
        dtype=str, mandatory=True, doc="Mandatory. Tango name of the photonflow Controller this face drives; its "
        "Acquirer and Recorder properties name the detector and the file writer")
    PeerTimeout = device_property(dtype=float, default_value=10.0, doc="Seconds a call to photonflow may take")
    WaitTimeout = device_property(
        dtype=float, default_value=10.0,
        doc="Seconds prepareAcq, startAcq and abortAcq wait at most for photonflow (the detector armed, the last "
            "series closed); a client's own timeout should be longer")
    PollInterval = device_property(
        dtype=float, default_value=0.2, doc="Seconds between reads of the Controller for the State change events")
    UserDetectorName = device_property(dtype=str, default_value="", doc="LImA's user_detector_name at start")
    UserInstrumentName = device_property(dtype=str, default_value="", doc="LImA's user_instrument_name at start")

    def create_core(self, listener) -> LimaFace:
        self._stop = threading.Event()
        return LimaFace(TangoPipeline(self.Controller, self.PeerTimeout), listener, wait_timeout=self.WaitTimeout,
                        user_detector_name=self.UserDetectorName, user_instrument_name=self.UserInstrumentName)

    def core_ready(self, core: LimaFace) -> None:
        threading.Thread(target=self._poll, args=(core, self._stop), name="lima-face-poll", daemon=True).start()

    def release_core(self, core: LimaFace) -> None:
        self._stop.set()

    def _poll(self, core: LimaFace, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                core.refresh()
            except Exception:
                log.exception("reading photonflow failed")
            stop.wait(self.PollInterval)

    def read_attr_hardware(self, attr_list):
        if self.core is not None:
            self.core.refresh()

    def dev_state(self):
        if self.core is not None:
            self.core.refresh()
        return super().dev_state()

    # -- acquisition --------------------------------------------------------------------------
    acq_nb_frames = lima_attribute("acq_nb_frames", int, "Frames", "Frames of the next prepareAcq (>= 1)",
                                   writable=True)
    acq_expo_time = lima_attribute("acq_expo_time", float, "Exposure time", "Seconds each frame counts",
                                   writable=True, unit="s")
    latency_time = lima_attribute("latency_time", float, "Latency time",
                                  "Seconds between frames: the period is exposure + latency", writable=True, unit="s")
    acq_trigger_mode = lima_attribute(
        "acq_trigger_mode", str, "Trigger mode",
        "INTERNAL_TRIGGER, INTERNAL_TRIGGER_MULTI, EXTERNAL_TRIGGER, EXTERNAL_TRIGGER_MULTI, EXTERNAL_GATE, as the "
        "detector offers (getAttrStringValueList)", writable=True)
    acq_mode = lima_attribute("acq_mode", str, "Acquisition mode", "SINGLE only", writable=True)
    acq_status = lima_attribute("acq_status", str, "Acquisition status", "Ready, Running or Fault",
                                read=lambda core: core.acq_status()[0])
    acq_status_fault_error = lima_attribute("acq_status_fault_error", str, "Fault error",
                                            "Why acq_status is Fault ('No error' otherwise)",
                                            read=lambda core: core.acq_status()[1])
    last_image_acquired = lima_attribute("last_image_acquired", int, "Last image acquired",
                                         "Number of the last frame acquired in this face's series (-1: none)",
                                         read=LimaFace.last_image_acquired)
    last_image_ready = lima_attribute("last_image_ready", int, "Last image ready",
                                      "Number of the last frame readImage can read (-1: none)",
                                      read=LimaFace.last_image_saved)
    last_image_saved = lima_attribute("last_image_saved", int, "Last image saved",
                                      "Number of the last frame in the file, as its readers see it (-1: none)",
                                      read=LimaFace.last_image_saved)
    last_counter_ready = lima_attribute("last_counter_ready", int, "Last counter ready", "As last_image_ready",
                                        read=LimaFace.last_image_saved)
    ready_for_next_image = lima_attribute("ready_for_next_image", bool, "Ready for next image",
                                          "The detector can take the next trigger",
                                          read=LimaFace.ready_for_next_image)
    ready_for_next_acq = lima_attribute("ready_for_next_acq", bool, "Ready for next acquisition",
                                        "The last series is over: prepareAcq may follow",
                                        read=LimaFace.ready_for_next_acq)

    # -- saving -------------------------------------------------------------------------------
    saving_directory = lima_attribute("saving_directory", str, "Saving directory",
                                      "Absolute folder under photonflow's data root", writable=True)
    saving_prefix = lima_attribute("saving_prefix", str, "Saving prefix", "Start of each file's name", writable=True)
    saving_suffix = lima_attribute("saving_suffix", str, "Saving suffix", ".h5, .hdf5 or .nxs", writable=True)
    saving_format = lima_attribute("saving_format", str, "Saving format", "HDF5 or HDF5BS (photonflow's HDF5)",
                                   writable=True)
    saving_mode = lima_attribute("saving_mode", str, "Saving mode",
                                 "AUTO_FRAME: the file named from saving_*; MANUAL: by the Recorder's FilePathTemplate",
                                 writable=True)
    saving_index_format = lima_attribute("saving_index_format", str, "Saving index format", "e.g. %04d",
                                         writable=True)
    saving_next_number = lima_attribute(
        "saving_next_number", int, "Saving next number",
        "Number in the name of the last prepared series' file until the next prepareAcq takes the next; -1: after "
        "the highest in saving_directory", writable=True, read=LimaFace.saving_next_number)
    saving_overwrite_policy = lima_attribute("saving_overwrite_policy", str, "Overwrite policy",
                                             "ABORT only: photonflow never overwrites", writable=True)
    saving_managed_mode = lima_attribute("saving_managed_mode", str, "Saving managed mode",
                                         "SOFTWARE only: photonflow's Recorder writes the file", writable=True)
    saving_frame_per_file = lima_attribute(
        "saving_frame_per_file", int, "Frames per file",
        f"photonflow writes each series into one file: reads {ALL_FRAMES_IN_ONE_FILE} whatever is written",
        writable=True, read=lambda core: ALL_FRAMES_IN_ONE_FILE)
    saving_common_header = lima_attribute("saving_common_header", (str,), "Common header",
                                          "Kept for LImA's clients; not written into photonflow's file",
                                          writable=True, max_dim_x=65535)
    saving_header_delimiter = lima_attribute("saving_header_delimiter", (str,), "Header delimiter",
                                             "Kept for LImA's clients", writable=True, max_dim_x=3)
    saving_max_writing_task = lima_attribute("saving_max_writing_task", int, "Writing tasks",
                                             "Kept for LImA's clients", writable=True)

    # -- the detector ---------------------------------------------------------------------------
    image_width = lima_attribute("image_width", int, "Image width", "Pixels per row",
                                 read=lambda core: core.detector().shape[1])
    image_height = lima_attribute("image_height", int, "Image height", "Rows",
                                  read=lambda core: core.detector().shape[0])
    image_type = lima_attribute("image_type", str, "Image type", "LImA's pixel type: Bpp16, Bpp32S...",
                                read=LimaFace.image_type)
    image_sizes = lima_attribute("image_sizes", (int,), "Image sizes", "signed, bytes per pixel, width, height",
                                 read=LimaFace.image_sizes, max_dim_x=4)
    camera_type = lima_attribute("camera_type", str, "Camera type", "The photonflow Acquirer's kind (Simulator...)",
                                 read=lambda core: core.detector().camera_type)
    camera_model = lima_attribute("camera_model", str, "Camera model", "The detector's model",
                                  read=lambda core: core.detector().camera_model)
    lima_type = lima_attribute("lima_type", str, "LImA type", "Photonflow: the camera is driven by photonflow",
                               read=lambda core: "Photonflow")
    user_detector_name = lima_attribute("user_detector_name", str, "User detector name",
                                        "Kept for LImA's clients (property UserDetectorName at start)", writable=True)
    user_instrument_name = lima_attribute("user_instrument_name", str, "Instrument name",
                                          "Kept for LImA's clients (property UserInstrumentName at start)",
                                          writable=True)

    # -- commands -------------------------------------------------------------------------------
    @command(doc_in="Configure photonflow's Controller with the acq_* and saving_* settings")
    @operator_errors
    def prepareAcq(self):
        self._core().prepare()

    @command(doc_in="Start the prepared series; in INTERNAL_TRIGGER_MULTI, trigger its next frame")
    @operator_errors
    def startAcq(self):
        self._core().start()

    @command(doc_in="End the series after the current frame")
    @operator_errors
    def stopAcq(self):
        self._core().stop()

    @command(doc_in="End the series at once; acknowledges a series that lost frames")
    @operator_errors
    def abortAcq(self):
        self._core().abort()

    @command(doc_in="abortAcq, then the acquisition settings back to their defaults")
    @operator_errors
    def reset(self):
        self._core().reset()

    @command(dtype_in=str, doc_in="Attribute name", dtype_out=(str,), doc_out="The values it takes")
    @operator_errors
    def getAttrStringValueList(self, name):
        return self._core().value_list(name)

    @command(dtype_in=int, doc_in="Image number (-1: the last one ready)", dtype_out=tango.DevEncoded,
             doc_out="DATA_ARRAY with the image")
    @operator_errors
    def readImage(self, number):
        core = self._core()
        image = core.image(int(number))
        return "DATA_ARRAY", data_array(image, number if number >= 0 else core.last_image_saved(), stack=False)

    @command(dtype_in=tango.DevVarLong64Array, doc_in="start, end[, step]: images start..end-1",
             dtype_out=tango.DevEncoded, doc_out="DATA_ARRAY with the images")
    @operator_errors
    def readImageSeq(self, sequence):
        numbers = [int(n) for n in sequence]
        if len(numbers) < 2 or (len(numbers) > 2 and numbers[2] != 1):
            tango.Except.throw_exception("InvalidConfiguration", "readImageSeq takes start, end[, 1]: "
                                         "discontiguous sequences are not supported", "LimaCCDs.readImageSeq")
        start, end = numbers[:2]
        return "DATA_ARRAY", data_array(self._core().frames(start, end), start, stack=True)

    @command(dtype_in=int, doc_in="Image number", dtype_out=(np.uint8,), doc_out="The image's pixels, raw bytes")
    @operator_errors
    def getImage(self, number):
        return np.frombuffer(np.ascontiguousarray(self._core().image(int(number))).tobytes(), dtype=np.uint8)
