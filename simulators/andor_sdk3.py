"""A simulated Andor Zyla / Balor with the interface pylablib's AndorSDK3Camera gives the real one.

Why: the Andor Acquirer drives ``pylablib.devices.Andor.AndorSDK3Camera`` when the vendor
library is installed; this object offers the same methods, so the same driver code runs
here. It keeps SDK3's features (by their SDK3 names) with their ranges, enumerations and
writability, refuses what SDK3 refuses with SDK3's error codes (``AT_ERR_OUTOFRANGE``,
``AT_ERR_NOTWRITABLE``...), produces frames at the set rate in the set ``PixelEncoding`` as
raw buffers, rows padded to ``AOIStride`` (Mono12Packed really packed), and decodes them
when read, as pylablib does. ``fail_next(code)`` makes the next call fail with that code.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from photonflow.camera import BeamConditions
from photonflow.drivers.sdk3 import PIXEL_TYPES, pack_mono12packed, unpack_mono12packed
from photonflow.simulators.frame_timing import REAL_TIME, FrameSchedule
from photonflow.simulators.phantom import ImagingSettings, ProjectionFrames
from photonflow.simulators.trigger_input import TriggerInput


@dataclass(frozen=True)
class AndorModel:
    name: str
    width: int
    height: int
    pixel_size: float  # micrometres, as SDK3's PixelWidth
    max_frame_rate: float


MODELS = {
    "zyla42": AndorModel("ZYLA-4.2P-USB3", 2048, 2048, 6.5, 100.0),
    "zyla55": AndorModel("ZYLA-5.5-CL10", 2560, 2160, 6.5, 100.0),
    "balor": AndorModel("BALOR-17F-12", 4128, 4104, 12.0, 54.0),
}


class FrameInfo(NamedTuple):
    """What pylablib's read_multiple_images(return_info=True) gives of each frame."""

    frame_index: int
    timestamp_dev: int | None  # ticks of the camera's clock at the exposure's start (metadata)


class SDK3Error(Exception):
    """An SDK3 error: ``code`` and its ``AT_ERR_*`` name, as pylablib's AndorError reports them."""

    def __init__(self, code: int, name: str, detail: str):
        super().__init__(f"error {code} ({name}): {detail}")
        self.code = code


class SDK3Timeout(Exception):
    """No frame came within the wait (pylablib raises AndorTimeoutError)."""


@dataclass
class Feature:
    value: Any
    min: float | None = None
    max: float | None = None
    values: tuple[str, ...] | None = None  # an enumerated feature's choices
    writable: bool = True

    def set(self, name: str, value: Any) -> None:
        if not self.writable:
            raise SDK3Error(5, "AT_ERR_NOTWRITABLE", f"{name} is not writable")
        if self.values is not None:
            if value not in self.values:
                raise SDK3Error(19, "AT_ERR_OUTOFRANGE", f"{name}: {value!r} is not one of {', '.join(self.values)}")
        elif self.min is not None and not self.min <= value <= self.max:
            raise SDK3Error(19, "AT_ERR_OUTOFRANGE", f"{name}: {value} is outside {self.min} to {self.max}")
        self.value = value


TIMESTAMP_CLOCK_HZ = 100_000_000  # a Zyla's timestamp clock


class SimulatedSDK3Camera:
    """What pylablib's AndorSDK3Camera offers, over simulated hardware."""

    def __init__(self, model: str = "zyla55", serial_number: str = "VSC-00001", seed: int = 0,
                 beamline: Callable[[], BeamConditions] | None = None, trigger_line: str = ""):
        """``beamline`` gives the beam at each start (the beamline port's ``conditions``): the frames scale with
        the ring current, the transmission and the shutter (closed: dark frames), and show the phantom
        where the sample translation put it (``photonflow.simulators.phantom``). ``trigger_line``: the
        address of the trigger line cabled to the camera's external-trigger input; empty: no cable."""
        self._beamline = beamline
        self.model = MODELS[model]
        m = self.model
        self.seed = seed
        self.features: dict[str, Feature] = {
            "CameraModel": Feature(m.name, writable=False),
            "SerialNumber": Feature(serial_number, writable=False),
            "SensorWidth": Feature(m.width, writable=False),
            "SensorHeight": Feature(m.height, writable=False),
            "PixelWidth": Feature(m.pixel_size, writable=False),
            "PixelHeight": Feature(m.pixel_size, writable=False),
            "PixelEncoding": Feature("Mono16", values=tuple(PIXEL_TYPES)),
            "ElectronicShutteringMode": Feature("Rolling", values=("Rolling", "Global")),
            "CycleMode": Feature("Fixed", values=("Fixed", "Continuous")),
            "FrameCount": Feature(1, 1, 2**31 - 1),
            "TriggerMode": Feature("Internal", values=("Internal", "External", "External Start", "External Exposure",
                                                       "Software")),
            "ExposureTime": Feature(0.01, 1e-5, 30.0),
            "FrameRate": Feature(10.0, 0.0001, m.max_frame_rate),
            "AOIHBin": Feature(1, 1, 8), "AOIVBin": Feature(1, 1, 8),
            "AOILeft": Feature(1, 1, m.width), "AOITop": Feature(1, 1, m.height),
            "AOIWidth": Feature(m.width, 1, m.width), "AOIHeight": Feature(m.height, 1, m.height),
            "SensorCooling": Feature(False, values=(False, True)),
            # each frame's metadata: the timestamp of its exposure's start, in ticks of the camera's clock
            "MetadataEnable": Feature(False, values=(False, True)),
            "MetadataTimestamp": Feature(False, values=(False, True)),
            "TimestampClockFrequency": Feature(TIMESTAMP_CLOCK_HZ, writable=False),
            "SensorTemperature": Feature(22.0, writable=False),
        }
        self._failure: SDK3Error | None = None
        self._lock = threading.Condition()
        self._buffers: list[tuple[bytes, FrameInfo]] = []
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._frames: ProjectionFrames | None = None
        self.produced = 0
        self._nframes = 0
        self.trigger_input = TriggerInput()
        self.trigger_input.plug(trigger_line)
        self._powered_on = time.time()  # the timestamp clock's zero

    # -- faults -----------------------------------------------------------------------------
    def fail_next(self, code: int = 13, name: str = "AT_ERR_TIMEDOUT", detail: str = "simulated failure") -> None:
        self._failure = SDK3Error(code, name, detail)

    def _check_failure(self) -> None:
        failure, self._failure = self._failure, None
        if failure is not None:
            raise failure

    # -- features ---------------------------------------------------------------------------
    def get_attribute(self, name: str) -> Feature:
        self._check_failure()
        if name not in self.features:
            raise SDK3Error(2, "AT_ERR_NOTIMPLEMENTED", f"feature {name} is not implemented")
        return self.features[name]

    def get_attribute_value(self, name: str) -> Any:
        if name == "AOIStride":
            return self._stride()
        if name == "TimestampClock":
            return self._ticks(time.time())
        if name == "SensorTemperature" and self.features["SensorCooling"].value:
            return 0.0
        return self.get_attribute(name).value

    def set_attribute_value(self, name: str, value: Any) -> None:
        if self._thread is not None and self._thread.is_alive() and name != "SensorCooling":
            raise SDK3Error(5, "AT_ERR_NOTWRITABLE", f"{name} cannot change while acquiring")
        self.get_attribute(name).set(name, value)

    def get_detector_size(self) -> tuple[int, int]:
        return self.model.width, self.model.height

    def set_roi(self, hstart=0, hend=None, vstart=0, vend=None, hbin=1, vbin=1) -> None:
        hend, vend = hend or self.model.width, vend or self.model.height
        self.set_attribute_value("AOIHBin", hbin)
        self.set_attribute_value("AOIVBin", vbin)
        self.set_attribute_value("AOIWidth", (hend - hstart) // hbin)
        self.set_attribute_value("AOIHeight", (vend - vstart) // vbin)
        self.set_attribute_value("AOILeft", hstart + 1)
        self.set_attribute_value("AOITop", vstart + 1)

    def _ticks(self, moment: float) -> int:
        """``moment`` (UNIX s) on the camera's timestamp clock."""
        return round((moment - self._powered_on) * TIMESTAMP_CLOCK_HZ)

    def _stride(self) -> int:
        width, encoding = self.features["AOIWidth"].value, self.features["PixelEncoding"].value
        row = {"Mono12Packed": (width * 3 + 1) // 2, "Mono32": width * 4}.get(encoding, width * 2)
        return (row + 7) // 8 * 8  # rows padded, as the camera's buffers are

    # -- frames -----------------------------------------------------------------------------
    def frame(self, number: int, angle: float | None = None) -> np.ndarray:
        """Frame ``number`` of the current acquisition, as the sensor counted it (12 bits for Mono12*),
        the sample turned to ``angle`` deg (the trigger pulse's position; None: as at the start)."""
        return self._frames.frame(number, angle)

    def setup_acquisition(self, mode: str = "snap", nframes: int = 100) -> None:
        self._check_failure()
        self.set_attribute_value("CycleMode", "Fixed")
        self.set_attribute_value("FrameCount", nframes)
        self._nframes = nframes

    def start_acquisition(self) -> None:
        self._check_failure()
        self.stop_acquisition()
        encoding = self.features["PixelEncoding"].value
        dtype = PIXEL_TYPES[encoding]
        binning = self.features["AOIHBin"].value
        self._frames = ProjectionFrames(ImagingSettings(
            height=self.features["AOIHeight"].value, width=self.features["AOIWidth"].value,
            pixel_size=self.model.pixel_size * 1e-6 * binning, dtype=dtype, seed=self.seed,
            exposure=self.features["ExposureTime"].value, highest=4095 if encoding.startswith("Mono12") else None,
        ).following(self._beamline() if self._beamline is not None else None))
        self._buffers, self.produced = [], 0
        self.trigger_input.clear()
        self._stop.clear()
        self._thread = threading.Thread(target=self._acquire, name="andor-sim", daemon=True)
        self._thread.start()

    def _raw(self, image: np.ndarray) -> bytes:
        """The frame as the camera's buffer holds it: encoded, rows padded to AOIStride."""
        stride, encoding = self._stride(), self.features["PixelEncoding"].value
        if encoding == "Mono12Packed":
            return pack_mono12packed(image, stride)
        row_bytes = image.shape[1] * image.itemsize
        out = np.zeros((image.shape[0], stride), dtype=np.uint8)
        out[:, :row_bytes] = image.view(np.uint8).reshape(image.shape[0], row_bytes)
        return out.tobytes()

    @property
    def acquiring(self) -> bool:
        """Started and taking edges: an edge from now on is this acquisition's (earlier ones are cleared)."""
        return self._thread is not None and self._thread.is_alive()

    def fire_trigger(self, width: float | None = None) -> None:
        """An edge on the camera's trigger input (External: one frame; External Start: the series;
        External Exposure: one frame exposed for the pulse's ``width``)."""
        self.trigger_input.fire(width)

    def send_software_trigger(self) -> None:
        """SDK3's ``SoftwareTrigger`` command (pylablib's method of that name)."""
        self._check_failure()
        if self.features["TriggerMode"].value != "Software" or self._thread is None:
            raise SDK3Error(2, "AT_ERR_NOTIMPLEMENTED", "SoftwareTrigger needs TriggerMode Software, acquiring")
        self.fire_trigger()

    def _acquire(self) -> None:
        """Internal: at FrameRate, late frames never caught up in a burst; External and Software:
        one frame per edge, its exposure starting at the edge; External Start: the first edge starts
        the internal timing. Each buffer keeps its exposure's start for the metadata."""
        period = 1.0 / self.features["FrameRate"].value
        exposure = self.features["ExposureTime"].value
        mode = self.features["TriggerMode"].value
        schedule = FrameSchedule(time.time(), period)
        if mode == "External Start":
            pulse = self.trigger_input.take(self._stop.is_set)
            if pulse is None:
                return
            schedule.origin = pulse.time
        for number in range(self._nframes):
            angle = None  # the sample's, as at the start
            if mode in ("External", "External Exposure", "Software"):
                pulse = self.trigger_input.take(self._stop.is_set)
                if pulse is None:
                    return
                start, angle = pulse.time, pulse.position
                held = pulse.width if mode == "External Exposure" and pulse.width else exposure
                if REAL_TIME.wait_until(self._stop, start + held):
                    return
            else:
                if REAL_TIME.wait_until(self._stop, schedule.due(number) + exposure):
                    return
                start = time.time() - exposure  # later than due when the machine fell behind
                schedule.taken(number, start)
            raw = self._raw(self.frame(number, angle))
            with self._lock:
                self._buffers.append((raw, FrameInfo(number, self._ticks(start))))
                self.produced += 1
                self._lock.notify_all()

    def wait_for_frame(self, since: str = "lastread", nframes: int = 1, timeout: float = 20.0) -> None:
        self._check_failure()
        with self._lock:
            if not self._lock.wait_for(lambda: len(self._buffers) >= nframes, timeout):
                raise SDK3Timeout(f"timeout while waiting for {nframes} frame(s)")

    def read_multiple_images(self, return_info: bool = False):
        """The frames waiting, as pylablib reads them; with ``return_info`` also each frame's
        ``FrameInfo`` (its timestamp only with MetadataEnable and MetadataTimestamp on)."""
        self._check_failure()
        with self._lock:
            buffers, self._buffers = self._buffers, []
        images = self._decoded([raw for raw, _ in buffers])
        if not return_info:
            return images
        stamped = self.features["MetadataEnable"].value and self.features["MetadataTimestamp"].value
        return images, [info if stamped else info._replace(timestamp_dev=None) for _, info in buffers]

    def _decoded(self, buffers: list[bytes]) -> list[np.ndarray]:
        height, width = self.features["AOIHeight"].value, self.features["AOIWidth"].value
        encoding, stride = self.features["PixelEncoding"].value, self._stride()
        images = []
        for raw in buffers:
            if encoding == "Mono12Packed":
                images.append(unpack_mono12packed(raw, width, height, stride))
            else:
                dtype = np.dtype(PIXEL_TYPES[encoding])
                rows = np.frombuffer(raw, np.uint8).reshape(height, stride)[:, : width * np.dtype(dtype).itemsize]
                images.append(np.ascontiguousarray(rows).view(dtype).reshape(height, width))
        return images

    def stop_acquisition(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    def close(self) -> None:
        self.stop_acquisition()
        self.trigger_input.unplug()
