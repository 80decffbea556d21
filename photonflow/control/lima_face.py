"""LImA's face on photonflow: what a ``LimaCCDs`` Tango device offers its clients (sardana-limaccd's
``LimaCCDTwoDController``, BLISS, beamline macros written against LImA), mapped onto one photonflow
Controller, so those clients drive photonflow unchanged.

LImA's words, photonflow's series:

- ``prepareAcq`` is one ``Configure`` of the Controller: ``acq_nb_frames`` frames, ``acq_expo_time``
  exposure, a period of exposure + ``latency_time``, ``acq_trigger_mode`` as the detector's own
  trigger mode (``LIMA_TRIGGER_MODES``) and, with ``saving_mode`` AUTO_FRAME, the file
  ``saving_directory/saving_prefix + saving_index_format % saving_next_number + saving_suffix``.
  In INTERNAL_TRIGGER_MULTI it also starts the series (armed, waiting for the client's triggers);
- ``startAcq`` starts the series (``Start``), or in INTERNAL_TRIGGER_MULTI triggers its next frame
  (the Acquirer's ``SoftwareTrigger``); with an external trigger it returns once the detector is
  armed, so no trigger the client sends next is lost;
- ``stopAcq``, ``abortAcq`` are the Controller's ``Stop`` and ``Abort``; ``reset`` aborts and sets
  the acquisition settings back to their defaults;
- ``acq_status`` is "Running" while the Controller runs a series and a frame asked for is not yet in
  the file, "Ready" otherwise, "Fault" when the Controller is in FAULT or unreachable, or ended a
  series in ALARM (frames lost) that no ``prepareAcq``, ``abortAcq`` or ``reset`` has acknowledged
  since; ``last_image_acquired``/``_ready``/``_saved`` count the frames of the series this face
  started (-1 before its first), ready and saved being those a reader of the file sees.

photonflow writes every series into one HDF5 file (its integrity check is per series): a
series' file holds all its frames, ``saving_frame_per_file`` reads as ``ALL_FRAMES_IN_ONE_FILE``.
What photonflow cannot do is refused with a reason and what is supported: other saving formats,
overwriting, acquisition modes but SINGLE, a start/stop trigger, an endless series.

The peers are one port (``PipelinePort``: the Controller, its Acquirer and Recorder); the device
(``photonflow.devices.lima``) implements it over Tango, the unit tests with plain objects.
"""

from __future__ import annotations

import math
import os
import re
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import h5py
import numpy as np

from photonflow import states
from photonflow.core import CoreListener, StatefulCore
from photonflow.errors import ConfigurationError, FilePathError, PhotonflowError, StateError
from photonflow.recording.paths import DATA_FILE_SUFFIXES

READY, RUNNING, FAULT = "Ready", "Running", "Fault"  # LImA's acq_status
NO_ERROR = "No error"  # LImA's acq_status_fault_error when there is none
DATASET = "/entry/data/data"  # where the Recorder writes the frames of a series

INTERNAL_TRIGGER_MULTI = "INTERNAL_TRIGGER_MULTI"
# LImA's acq_trigger_mode -> photonflow's trigger modes that do the same, preferred first
LIMA_TRIGGER_MODES: dict[str, tuple[str, ...]] = {
    "INTERNAL_TRIGGER": ("internal", "software", "internal_enable"),  # one startAcq, the detector's timing
    INTERNAL_TRIGGER_MULTI: ("client",),  # one frame per startAcq
    "EXTERNAL_TRIGGER": ("external_start",),  # one edge starts the series
    "EXTERNAL_TRIGGER_MULTI": ("external",),  # one frame per edge
    "EXTERNAL_GATE": ("external_enable",),  # one frame per gate, exposed while it is open
    "EXTERNAL_START_STOP": (),  # one edge starts a frame, the next ends it: no photonflow detector does
}
# photonflow trigger modes whose first frame waits for a trigger: startAcq returns once the detector is armed
ARMED_BEFORE_TRIGGERS = ("client", "external_start", "external", "external_enable")

SAVING_FORMATS = ("HDF5", "HDF5BS")  # both are photonflow's HDF5 file (compressed as the Recorder is set)
SAVING_MODES = ("MANUAL", "AUTO_FRAME")
ACQ_MODES = ("SINGLE",)
OVERWRITE_POLICIES = ("ABORT",)
MANAGED_MODES = ("SOFTWARE",)
ALL_FRAMES_IN_ONE_FILE = 2**31 - 1  # saving_frame_per_file: every frame of a series is in its one file
MAX_FRAMES = 2**31 - 1
_INDEX_FORMAT = re.compile(r"%0?[1-9]?[0-9]?d")

# numpy pixel type -> LImA's image_type, and its DATA_ARRAY type number (LImA's DataArrayType enum)
IMAGE_TYPES = {"uint8": "Bpp8", "int8": "Bpp8S", "uint16": "Bpp16", "int16": "Bpp16S",
               "uint32": "Bpp32", "int32": "Bpp32S", "float32": "Bpp32F"}
DATA_ARRAY_TYPES = {"uint8": 0, "uint16": 1, "uint32": 2, "uint64": 3, "int8": 4, "int16": 5,
                    "int32": 6, "int64": 7, "float32": 8, "float64": 9}


# -- DATA_ARRAY, LImA's image encoding (readImage, readImageSeq) -------------------------------------
DATA_ARRAY_MAGIC = 0x44544159  # "DTAY"
DATA_ARRAY_VERSION = 4
DATA_ARRAY_HEADER = struct.Struct("<IHHIIHHHHHHHHIIIIIIQQII")  # version 4: 64 bytes + image number + acq tag
IMAGE, IMAGE_STACK = 2, 4  # LImA's DataArrayCategory
ACQ_TAG_NONE = 0xFFFFFFFF


def data_array(frames: np.ndarray, first_frame: int, stack: bool) -> bytes:
    """Frames (one 2-D image, or a 3-D stack) as LImA's DATA_ARRAY version 4: the header, then the
    pixels, dimensions fastest first (width, height[, frames])."""
    frames = np.ascontiguousarray(frames)
    dims = list(reversed(frames.shape))
    if stack and len(dims) == 2:
        dims.append(1)
    steps, size = [], frames.dtype.itemsize
    for dim in dims:
        steps.append(size)
        size *= dim
    padding = [0] * (6 - len(dims))
    header = DATA_ARRAY_HEADER.pack(
        DATA_ARRAY_MAGIC, DATA_ARRAY_VERSION, DATA_ARRAY_HEADER.size, IMAGE_STACK if stack else IMAGE,
        DATA_ARRAY_TYPES[frames.dtype.newbyteorder("=").name], int(frames.dtype.byteorder == ">"), len(dims),
        *(dims + padding), *(steps + padding), first_frame, ACQ_TAG_NONE, 0, 0,
    )
    return header + frames.tobytes()


def read_file_frames(path: str, start: int, stop: int) -> np.ndarray:
    """Frames start..stop-1 of a photonflow file, as a reader of the file sees them (SWMR)."""
    with h5py.File(path, "r", swmr=True) as f:
        return np.asarray(f[DATASET][start:stop])


# -- the port ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PipelineReading:
    """The Controller and its Recorder as one client read sees them."""

    state: str  # the Controller's
    status: str
    series_id: int  # of the Controller's current or last series
    last_file: str
    frames_acquired: int  # the Controller's count of the series
    frames_written: int  # the Recorder's
    frames_saved: int  # the Recorder's frames a reader of the file sees (flushed)


@dataclass(frozen=True)
class DetectorInfo:
    shape: tuple[int, int]  # rows, columns
    dtype: str  # numpy name
    camera_type: str
    camera_model: str


class PipelinePort(Protocol):
    def read(self) -> PipelineReading: ...
    def configure(self, request: dict[str, Any]) -> None: ...
    def start(self) -> None: ...
    def stop(self) -> None: ...
    def abort(self) -> None: ...
    def trigger(self) -> None: ...
    def acquirer_armed(self) -> bool: ...
    def offers(self, trigger_mode: str) -> bool: ...
    def detector(self) -> DetectorInfo: ...
    def data_root(self) -> str: ...


# -- settings ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AcquisitionSettings:
    """LImA's acquisition settings, as their defaults after ``reset``."""

    acq_nb_frames: int = 1
    acq_expo_time: float = 1.0
    latency_time: float = 0.0
    acq_trigger_mode: str = "INTERNAL_TRIGGER"
    acq_mode: str = "SINGLE"


@dataclass
class SavingSettings:
    directory: str = ""
    prefix: str = ""
    suffix: str = ".h5"
    format: str = "HDF5"
    mode: str = "MANUAL"
    index_format: str = "%04d"
    overwrite_policy: str = "ABORT"
    managed_mode: str = "SOFTWARE"
    frame_per_file_asked: int = 1  # what a client wrote; photonflow keeps each series in one file
    common_header: list[str] = field(default_factory=list)
    header_delimiter: list[str] = field(default_factory=lambda: ["=", "\n", ";"])
    max_writing_task: int = 1


@dataclass
class PreparedSeries:
    """What the last prepareAcq set up, and how far the client took it."""

    frames: int
    lima_trigger_mode: str
    trigger_mode: str  # photonflow's
    file: str  # absolute; "" with saving_mode MANUAL (the Recorder's FilePathTemplate names it)
    series_id: int | None = None  # the Controller's, once started
    triggers: int = 0  # startAcq calls in INTERNAL_TRIGGER_MULTI
    stopped: bool = False

    @property
    def started(self) -> bool:
        return self.series_id is not None

    @property
    def client_triggered(self) -> bool:
        return self.lima_trigger_mode == INTERNAL_TRIGGER_MULTI


def wait_for(check: Callable[[], bool], timeout: float) -> bool:
    """``check()`` true within ``timeout`` seconds, asked every 5 ms."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.005)
    return True


class LimaFace(StatefulCore):
    """One LimaCCDs device's settings and acquisition, over one photonflow Controller."""

    def __init__(self, port: PipelinePort, listener: CoreListener | None = None, wait_timeout: float = 10.0,
                 user_detector_name: str = "", user_instrument_name: str = "",
                 wait: Callable[[Callable[[], bool], float], bool] = wait_for,
                 frames_from_file: Callable[[str, int, int], np.ndarray] = read_file_frames):
        super().__init__(listener, states.UNKNOWN, "Not read yet")
        self.port = port
        self.wait_timeout = wait_timeout
        self._wait = wait
        self._frames_from_file = frames_from_file
        self._lock = threading.RLock()
        self.settings = AcquisitionSettings()
        self.saving = SavingSettings()
        self.user_detector_name = user_detector_name
        self.user_instrument_name = user_instrument_name
        self.series: PreparedSeries | None = None
        self.reading: PipelineReading | None = None
        self._read_error = "not read yet"
        self._acknowledged = -1  # series id up to which an ALARM was acknowledged (prepareAcq, abortAcq, reset)
        self._next_number = 0  # saving_next_number as written; -1: after the highest number on disk
        self._current_number: int | None = None  # of the last prepared series' file, until the next prepareAcq

    # -- reading photonflow ---------------------------------------------------------------------
    def refresh(self) -> PipelineReading | None:
        """Read the Controller and Recorder once (a client's read of several attributes sees one
        moment), then publish the state if it changed."""
        try:
            reading: PipelineReading | None = self.port.read()
            error = ""
        except Exception as failure:  # noqa: BLE001 - the port's error (a Tango one): photonflow is unreachable
            reading, error = None, str(failure).strip() or type(failure).__name__
        with self._lock:
            self.reading, self._read_error = reading, error
            published = self.tango_state()
        if published != (self.state, self.status):
            self._set_state(*published)
        return reading

    def _fresh(self) -> PipelineReading:
        reading = self.refresh()
        if reading is None:
            raise PhotonflowError(f"photonflow's Controller cannot be read: {self._read_error}",
                                  reason="PhotonflowUnreachable")
        return reading

    def _ours(self, reading: PipelineReading | None) -> bool:
        series = self.series
        return reading is not None and series is not None and series.series_id == reading.series_id

    # -- LImA's status -------------------------------------------------------------------------
    def acq_status(self) -> tuple[str, str]:
        """LImA's acq_status and acq_status_fault_error, from the last reading."""
        reading = self.reading
        if reading is None:
            return FAULT, f"photonflow's Controller cannot be read: {self._read_error}"
        if reading.state in (states.FAULT, states.UNKNOWN):
            return FAULT, reading.status
        if reading.state == states.ALARM and reading.series_id > self._acknowledged:
            return FAULT, reading.status
        if reading.state in (states.RUNNING, states.STANDBY) and not self._waiting_for_client(reading):
            return RUNNING, NO_ERROR
        return READY, NO_ERROR

    def _waiting_for_client(self, reading: PipelineReading) -> bool:
        """The series runs, but every frame asked for is in the file: in INTERNAL_TRIGGER_MULTI the
        detector waits for the next startAcq; once all are there the Controller only closes the file."""
        series = self.series
        if series is None or not self._ours(reading):
            return False
        saved = reading.frames_saved
        if saved >= series.frames:
            return True
        return series.client_triggered and not series.stopped and saved >= series.triggers

    def tango_state(self) -> tuple[str, str]:
        status, error = self.acq_status()
        reading = self.reading
        if status == FAULT:
            state = states.ALARM if reading is not None and reading.state == states.ALARM else states.FAULT
            return state, f"Fault: {error}. abortAcq or reset acknowledges lost frames; a FAULT of photonflow " \
                          "needs its operator."
        if status == RUNNING:
            return states.RUNNING, f"Running: {reading.status if reading else ''}"
        return states.ON, f"Ready. photonflow: {reading.status if reading else ''}"

    def _frames_of_ours(self, count: Callable[[PipelineReading], int]) -> int:
        reading, series = self.reading, self.series
        if series is None or reading is None or not self._ours(reading):
            return 0
        return min(count(reading), series.frames)

    def last_image_acquired(self) -> int:
        return self._frames_of_ours(lambda r: max(r.frames_acquired, r.frames_written)) - 1

    def last_image_saved(self) -> int:
        """The last frame a reader of the file sees (LImA's last_image_ready and _saved alike:
        readImage reads the frames from the file)."""
        return self._frames_of_ours(lambda r: r.frames_saved) - 1

    def ready_for_next_image(self) -> bool:
        """LImA: the detector can take the next trigger (idle, or waiting for its trigger)."""
        reading, series = self.reading, self.series
        if reading is None or reading.state not in (states.RUNNING, states.STANDBY) or not self._ours(reading):
            return True
        assert series is not None
        if series.client_triggered:
            return self.last_image_acquired() + 1 >= series.triggers
        return series.trigger_mode in ARMED_BEFORE_TRIGGERS

    def ready_for_next_acq(self) -> bool:
        reading = self.reading
        return self.acq_status()[0] == READY and reading is not None and reading.state not in (
            states.RUNNING, states.STANDBY)

    # -- settings, written as LImA takes them -----------------------------------------------------
    def value(self, name: str) -> Any:
        """A LImA setting as last written (or its default)."""
        with self._lock:
            if name in AcquisitionSettings.__dataclass_fields__:
                return getattr(self.settings, name)
            if name in ("user_detector_name", "user_instrument_name"):
                return getattr(self, name)
            if name == "saving_frame_per_file":
                return self.saving.frame_per_file_asked
            return getattr(self.saving, name.removeprefix("saving_"))

    def write(self, name: str, value: Any) -> None:
        """Set one LImA attribute; a value photonflow cannot honour is refused saying what it can."""
        writer = self._WRITERS.get(name)
        if writer is None:
            raise ConfigurationError(f"{name} is not a LImA setting this face takes")
        with self._lock:
            writer(self, value)

    def _set_nb_frames(self, value: int) -> None:
        if value == 0:
            raise ConfigurationError(
                "acq_nb_frames 0 (acquire until stopAcq) is not supported: photonflow records series of a "
                f"known number of frames; give 1 to {MAX_FRAMES}")
        if not 1 <= value <= MAX_FRAMES:
            raise ConfigurationError(f"acq_nb_frames must be 1 to {MAX_FRAMES}, got {value}")
        self.settings = replace(self.settings, acq_nb_frames=int(value))

    def _set_expo_time(self, value: float) -> None:
        if not (math.isfinite(value) and value > 0):
            raise ConfigurationError(f"acq_expo_time must be a positive number of seconds, got {value}")
        self.settings = replace(self.settings, acq_expo_time=float(value))

    def _set_latency(self, value: float) -> None:
        if not (math.isfinite(value) and value >= 0):
            raise ConfigurationError(f"latency_time must be 0 or a positive number of seconds, got {value}")
        self.settings = replace(self.settings, latency_time=float(value))

    def _set_trigger_mode(self, value: str) -> None:
        mode = value.strip().upper()
        self.photonflow_trigger_mode(mode)
        self.settings = replace(self.settings, acq_trigger_mode=mode)

    def _set_acq_mode(self, value: str) -> None:
        mode = value.strip().upper()
        if mode not in ACQ_MODES:
            raise ConfigurationError(
                f"acq_mode {value!r} is not supported: photonflow records every frame as taken (SINGLE); "
                "ACCUMULATION and CONCATENATION are not offered", reason="AcqModeNotSupported")
        self.settings = replace(self.settings, acq_mode=mode)

    def _set_directory(self, value: str) -> None:
        if value == "":
            self.saving.directory = ""
            return
        root = Path(os.path.realpath(self.port.data_root()))
        if not os.path.isabs(value):
            raise FilePathError(
                f"saving_directory {value!r} is not an absolute path: give a folder under photonflow's data "
                f"root {root}", reason="FileOutsideDataRoot")
        path = Path(os.path.realpath(value))
        if path != root and root not in path.parents:
            raise FilePathError(
                f"saving_directory {value} is outside photonflow's data root {root}: every file goes under it; "
                f"give a folder such as {root / 'sample1'}", reason="FileOutsideDataRoot")
        self.saving.directory = str(path)

    def _set_prefix(self, value: str) -> None:
        if "/" in value or "\0" in value or value in (".", ".."):
            raise ConfigurationError(f"saving_prefix {value!r} must be a file name's start, without '/'")
        self.saving.prefix = value

    def _set_suffix(self, value: str) -> None:
        if value.lower() not in DATA_FILE_SUFFIXES:
            raise ConfigurationError(
                f"saving_suffix {value!r} is not supported: photonflow writes HDF5 files ending in "
                f"{', '.join(DATA_FILE_SUFFIXES)}", reason="SavingFormatNotSupported")
        self.saving.suffix = value

    def _set_format(self, value: str) -> None:
        name = value.strip().upper()
        if name not in SAVING_FORMATS:
            raise ConfigurationError(
                f"saving_format {value!r} is not supported: photonflow's Recorder writes HDF5 (NeXus); give "
                f"{' or '.join(SAVING_FORMATS)}", reason="SavingFormatNotSupported")
        self.saving.format = name

    def _set_mode(self, value: str) -> None:
        mode = value.strip().upper()
        if mode not in SAVING_MODES:
            raise ConfigurationError(
                f"saving_mode {value!r} is not supported: AUTO_FRAME names the file from saving_*, MANUAL lets "
                "the Recorder's FilePathTemplate name it (photonflow records every frame either way)",
                reason="SavingModeNotSupported")
        self.saving.mode = mode

    def _set_index_format(self, value: str) -> None:
        if not _INDEX_FORMAT.fullmatch(value):
            raise ConfigurationError(f"saving_index_format {value!r} must be a printf integer format such as %04d")
        self.saving.index_format = value

    def _set_overwrite_policy(self, value: str) -> None:
        policy = value.strip().upper()
        if policy not in OVERWRITE_POLICIES:
            raise ConfigurationError(
                f"saving_overwrite_policy {value!r} is not supported: photonflow never overwrites nor appends "
                "to a data file (ABORT: an existing file refuses prepareAcq)", reason="OverwriteNotSupported")
        self.saving.overwrite_policy = policy

    def _set_managed_mode(self, value: str) -> None:
        mode = value.strip().upper()
        if mode not in MANAGED_MODES:
            raise ConfigurationError(
                f"saving_managed_mode {value!r} is not supported: photonflow's Recorder writes the file "
                "(SOFTWARE)", reason="SavingModeNotSupported")
        self.saving.managed_mode = mode

    def _set_next_number(self, value: int) -> None:
        if value < -1:
            raise ConfigurationError(
                f"saving_next_number must be -1 (after the highest number in saving_directory) or more, got {value}")
        self._next_number, self._current_number = int(value), None

    def _set_frame_per_file(self, value: int) -> None:
        if value < 1:
            raise ConfigurationError(f"saving_frame_per_file must be at least 1, got {value}")
        self.saving.frame_per_file_asked = int(value)

    def _set_common_header(self, value: list[str]) -> None:
        self.saving.common_header = list(value)

    def _set_header_delimiter(self, value: list[str]) -> None:
        self.saving.header_delimiter = list(value)

    def _set_max_writing_task(self, value: int) -> None:
        if value < 1:
            raise ConfigurationError(f"saving_max_writing_task must be at least 1, got {value}")
        self.saving.max_writing_task = int(value)

    def _set_user_detector_name(self, value: str) -> None:
        self.user_detector_name = value

    def _set_user_instrument_name(self, value: str) -> None:
        self.user_instrument_name = value

    _WRITERS: dict[str, Callable[[LimaFace, Any], None]] = {
        "acq_nb_frames": _set_nb_frames,
        "acq_expo_time": _set_expo_time,
        "latency_time": _set_latency,
        "acq_trigger_mode": _set_trigger_mode,
        "acq_mode": _set_acq_mode,
        "saving_directory": _set_directory,
        "saving_prefix": _set_prefix,
        "saving_suffix": _set_suffix,
        "saving_format": _set_format,
        "saving_mode": _set_mode,
        "saving_index_format": _set_index_format,
        "saving_overwrite_policy": _set_overwrite_policy,
        "saving_managed_mode": _set_managed_mode,
        "saving_next_number": _set_next_number,
        "saving_frame_per_file": _set_frame_per_file,
        "saving_common_header": _set_common_header,
        "saving_header_delimiter": _set_header_delimiter,
        "saving_max_writing_task": _set_max_writing_task,
        "user_detector_name": _set_user_detector_name,
        "user_instrument_name": _set_user_instrument_name,
    }

    # -- trigger modes ---------------------------------------------------------------------------
    def offered_trigger_modes(self) -> list[str]:
        """LImA's trigger modes this detector can do (getAttrStringValueList acq_trigger_mode)."""
        return [mode for mode, candidates in LIMA_TRIGGER_MODES.items()
                if any(self.port.offers(candidate) for candidate in candidates)]

    def photonflow_trigger_mode(self, lima_mode: str) -> str:
        """photonflow's trigger mode for LImA's, or a refusal listing what this detector offers."""
        if lima_mode not in LIMA_TRIGGER_MODES:
            raise ConfigurationError(
                f"acq_trigger_mode {lima_mode!r} is not a LImA trigger mode; LImA's are "
                f"{', '.join(LIMA_TRIGGER_MODES)}")
        for candidate in LIMA_TRIGGER_MODES[lima_mode]:
            if self.port.offers(candidate):
                return candidate
        why = ("photonflow has no start/stop trigger (one edge starting a frame, the next ending it)"
               if not LIMA_TRIGGER_MODES[lima_mode] else "this detector does not offer it")
        raise ConfigurationError(
            f"acq_trigger_mode {lima_mode} is not supported: {why}; supported are "
            f"{', '.join(self.offered_trigger_modes()) or 'none (is the Acquirer up?)'}",
            reason="TriggerModeNotSupported")

    def value_list(self, name: str) -> list[str]:
        """LImA's getAttrStringValueList: the values a string attribute takes; none for the others."""
        lists: dict[str, Callable[[], list[str]]] = {
            "acq_trigger_mode": self.offered_trigger_modes,
            "saving_format": lambda: list(SAVING_FORMATS),
            "saving_mode": lambda: list(SAVING_MODES),
            "acq_mode": lambda: list(ACQ_MODES),
            "saving_overwrite_policy": lambda: list(OVERWRITE_POLICIES),
            "saving_managed_mode": lambda: list(MANAGED_MODES),
        }
        return lists.get(name, list)()

    # -- saving ----------------------------------------------------------------------------------
    def _file_of(self, number: int) -> str:
        name = f"{self.saving.prefix}{self.saving.index_format % number}{self.saving.suffix}"
        return os.path.join(self.saving.directory, name)

    def _highest_number_plus_one(self) -> int:
        """LImA's next number for -1: after the highest one of prefix+digits+suffix in the folder."""
        pattern = re.compile(re.escape(self.saving.prefix) + r"(\d+)" + re.escape(self.saving.suffix) + "$")
        try:
            names = os.listdir(self.saving.directory) if self.saving.directory else []
        except FileNotFoundError:
            names = []
        numbers = [int(match[1]) for name in names if (match := pattern.match(name))]
        return max(numbers, default=-1) + 1

    def saving_next_number(self) -> int:
        """The number of the last prepared series' file until the next prepareAcq takes the next one,
        so a client reading it after startAcq gets its frames' file however fast the series ended;
        before any series, the number the next prepareAcq takes."""
        with self._lock:
            if self._current_number is not None:
                return self._current_number
            return self._highest_number_plus_one() if self._next_number == -1 else self._next_number

    def _take_file(self) -> str:
        """The file the series being prepared writes (AUTO_FRAME), its number kept as current."""
        if not self.saving.directory:
            raise ConfigurationError("saving_mode AUTO_FRAME needs saving_directory: set a folder under "
                                     f"photonflow's data root {self.port.data_root()}")
        if self._current_number is not None:
            if os.path.exists(self._file_of(self._current_number)) and self._next_number != -1:
                self._next_number = self._current_number + 1
            elif self._next_number != -1:
                self._next_number = self._current_number  # never started: its number is still free
            self._current_number = None
        number = self._highest_number_plus_one() if self._next_number == -1 else self._next_number
        path = self._file_of(number)
        if os.path.exists(path):
            raise FilePathError(
                f"{path} already exists; photonflow never overwrites data (saving_overwrite_policy ABORT): set "
                "saving_next_number (-1: after the highest number there) or saving_prefix", reason="FileExists")
        self._current_number = number
        return path

    # -- commands ---------------------------------------------------------------------------------
    def prepare(self) -> None:
        """prepareAcq: one Configure of the Controller; INTERNAL_TRIGGER_MULTI also starts the series."""
        with self._lock:
            self._settle_previous()
            reading = self._fresh()
            if reading.state in (states.RUNNING, states.STANDBY):
                raise StateError(f"photonflow's Controller is running a series ({reading.status}): stopAcq or "
                                 "abortAcq it first")
            settings = self.settings
            trigger_mode = self.photonflow_trigger_mode(settings.acq_trigger_mode)
            request: dict[str, Any] = {
                "frames": settings.acq_nb_frames, "exposure": settings.acq_expo_time,
                "period": settings.acq_expo_time + settings.latency_time, "trigger_mode": trigger_mode}
            file = self._take_file() if self.saving.mode == "AUTO_FRAME" else ""
            if file:
                request["file"] = file
            self.port.configure(request)
            self._acknowledged = max(self._acknowledged, reading.series_id)  # an earlier ALARM is behind
            series = PreparedSeries(settings.acq_nb_frames, settings.acq_trigger_mode, trigger_mode, file)
            self.series = series
            if series.client_triggered:
                self._start_series(series)
        self.refresh()

    def _settle_previous(self) -> None:
        """The series this face started and that still runs: one whose frames are all in the file is
        left to close; an INTERNAL_TRIGGER_MULTI series the client stopped triggering is stopped
        (LImA prepares again from Ready). Either way it ends before the next is configured."""
        reading = self._fresh()
        series = self.series
        if series is None or reading.state not in (states.RUNNING, states.STANDBY) or not self._ours(reading):
            return
        if reading.frames_saved < series.frames:
            if not (series.client_triggered and self._waiting_for_client(reading)):
                return  # still acquiring: prepare refuses it
            self.port.stop()
            series.stopped = True
        self._wait_until(lambda: self._fresh().state not in (states.RUNNING, states.STANDBY),
                         f"photonflow to close {reading.last_file or 'the last series'}")

    def _start_series(self, series: PreparedSeries) -> None:
        self.port.start()
        series.series_id = self._fresh().series_id
        if series.trigger_mode in ARMED_BEFORE_TRIGGERS:
            try:
                self._wait_until(self._armed, "the Acquirer to be armed")
            except PhotonflowError:
                self.port.abort()
                raise

    def _armed(self) -> bool:
        reading = self._fresh()
        if reading.state in (states.FAULT, states.UNKNOWN):
            raise PhotonflowError(f"photonflow could not start the series: {reading.status}", reason="StartFailed")
        return self.port.acquirer_armed()

    def _wait_until(self, check: Callable[[], bool], what: str) -> None:
        if not self._wait(check, self.wait_timeout):
            raise PhotonflowError(f"waited {self.wait_timeout} s for {what} (property WaitTimeout)",
                                  reason="PhotonflowTimeout")

    def start(self) -> None:
        """startAcq: start the prepared series, or trigger its next frame in INTERNAL_TRIGGER_MULTI."""
        with self._lock:
            series = self.series
            if series is None:
                raise StateError("Run prepareAcq before starting acquisition")
            if series.stopped:
                raise StateError("the prepared series was stopped: prepareAcq again")
            if series.client_triggered:
                if series.triggers >= series.frames:
                    raise StateError(f"all {series.frames} frames of the prepared series were started: "
                                     "prepareAcq again for more")
                self.port.trigger()
                series.triggers += 1
            elif series.started:
                raise StateError("the prepared series was started already: prepareAcq again")
            else:
                self._start_series(series)
        self.refresh()

    def stop(self) -> None:
        """stopAcq: the series ends after the current frame; what was taken stays in the file."""
        with self._lock:
            reading = self._fresh()
            if self.series is not None and self.series.started:
                self.series.stopped = True
            if reading.state in (states.RUNNING, states.STANDBY):
                self.port.stop()
        self.refresh()

    def abort(self) -> None:
        """abortAcq: the series ends at once; returns once photonflow is idle, lost frames acknowledged."""
        with self._lock:
            if self.series is not None and self.series.started:
                self.series.stopped = True
            if self._fresh().state in (states.RUNNING, states.STANDBY):
                self.port.abort()
                self._wait_until(lambda: self._fresh().state not in (states.RUNNING, states.STANDBY),
                                 "the aborted series to end")
            self._acknowledged = max(self._acknowledged, self._fresh().series_id)
        self.refresh()

    def reset(self) -> None:
        """LImA's reset: abortAcq, and the acquisition settings back to their defaults (the saving
        settings are kept)."""
        self.abort()
        with self._lock:
            self.settings = AcquisitionSettings()
            self.series = None
        self.refresh()

    # -- frames ----------------------------------------------------------------------------------
    def frames(self, start: int, stop: int) -> np.ndarray:
        """Frames start..stop-1 of this face's series, from its file; LImA's refusal for frames
        not (yet) there."""
        with self._lock:
            self.refresh()
            last = self.last_image_saved()
            reading = self.reading
            if not 0 <= start < stop or stop - 1 > last or reading is None:
                raise PhotonflowError(
                    f"Frame(s) not available yet: asked {start}..{stop - 1}, the last frame ready is {last}",
                    reason="FramesNotAvailable")
            path = reading.last_file
        return self._frames_from_file(path, start, stop)

    def image(self, number: int) -> np.ndarray:
        """One frame (readImage, getImage); -1: the last one ready."""
        if number < 0:
            self.refresh()
            number = self.last_image_saved()
        return self.frames(number, number + 1)[0]

    # -- the detector ----------------------------------------------------------------------------
    def detector(self) -> DetectorInfo:
        return self.port.detector()

    def image_type(self) -> str:
        dtype = self.port.detector().dtype
        return IMAGE_TYPES.get(dtype, dtype)

    def image_sizes(self) -> list[int]:
        """LImA's image_sizes: signed, bytes per pixel, width, height."""
        info = self.port.detector()
        dtype = np.dtype(info.dtype)
        return [int(dtype.kind == "i"), dtype.itemsize, info.shape[1], info.shape[0]]
