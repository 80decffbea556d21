"""Andor Zyla 4.2/5.5 and Balor (sCMOS) through the SDK3 feature interface, as pylablib exposes it.

Why: Andor's SDK3 (atcore) is a feature interface: named features (``ExposureTime``,
``PixelEncoding``, ``AOIWidth``, ``TriggerMode``...) read and written by name, and frames
read from buffers. pylablib's ``AndorSDK3Camera`` wraps it with ``get_attribute_value`` /
``set_attribute_value``, ``setup_acquisition``, ``start_acquisition``, ``wait_for_frame``
and ``read_multiple_images`` (with each frame's info: its timestamp on the camera's clock, from
the frame metadata, which this camera turns on); this camera drives any object with that interface: the real
one when the vendor library is installed, ``photonflow.simulators.andor_sdk3`` here.

SDK3's pixel encodings and the ``Mono12Packed`` buffer format are the vendor's interface
(``photonflow.drivers.sdk3``). An SDK error becomes DetectorError with the SDK's own code and
text. Nothing here imports Tango.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from photonflow.camera import AcquisitionSettings, ArmsAtStart, Closable, FrameSource, SoftwareTrigger
from photonflow.drivers.sdk3 import PIXEL_TYPES
from photonflow.errors import ConfigurationError, DetectorError

log = logging.getLogger(__name__)

# photonflow's trigger modes and SDK3's TriggerMode values
TRIGGER_MODES = {"internal": "Internal", "external": "External", "external_start": "External Start",
                 "external_enable": "External Exposure", "software": "Software"}


@dataclass(frozen=True)
class AndorSettings:
    """What the beamline sets once (Tango properties)."""

    pixel_encoding: str = "Mono16"
    shuttering: str = "Rolling"  # ElectronicShutteringMode: Rolling or Global
    cooling: bool = True
    binning: int = 1
    timeout: float = 5.0


class AndorCamera(FrameSource, ArmsAtStart, Closable):
    """A Zyla or Balor behind SDK3; ``sdk`` is a pylablib AndorSDK3Camera or the simulated one."""

    trigger_modes = tuple(TRIGGER_MODES)

    def __init__(self, sdk: Any, settings: AndorSettings = AndorSettings(),
                 clock: Callable[[], float] = time.monotonic):
        """``clock`` paces the software triggers (tests pass one they control)."""
        self.sdk = sdk
        self.settings = settings
        self.clock = clock
        if settings.pixel_encoding not in PIXEL_TYPES:
            raise ConfigurationError(
                f"pixel encoding must be one of {', '.join(PIXEL_TYPES)}, got {settings.pixel_encoding!r}"
            )
        self._call(self.sdk.set_attribute_value, "PixelEncoding", settings.pixel_encoding)
        self._call(self.sdk.set_attribute_value, "ElectronicShutteringMode", settings.shuttering)
        self._call(self.sdk.set_attribute_value, "SensorCooling", settings.cooling)
        width, height = self._call(self.sdk.get_detector_size)
        binning = settings.binning
        self._call(self.sdk.set_roi, 0, width, 0, height, binning, binning)
        exposure = self._call(self.sdk.get_attribute, "ExposureTime")
        self.min_exposure = float(exposure.min)
        self._armed = False  # ``arm`` started the acquisition that ``frames`` will follow

    def arm(self, settings: AcquisitionSettings) -> None:
        """SDK3's AcquisitionStart: the camera takes its external triggers from then on."""
        self._call(self.sdk.start_acquisition)
        self._armed = True

    @staticmethod
    def call(function, *args):
        """Call the SDK; its errors become DetectorError carrying its code and text."""
        return AndorCamera._call(function, *args)

    @staticmethod
    def _call(function, *args):
        try:
            return function(*args)
        except DetectorError:
            raise
        except Exception as error:  # noqa: BLE001 - pylablib's AndorError and friends carry the SDK's code
            raise DetectorError(f"Andor SDK3: {error}") from None

    def _get(self, name: str) -> Any:
        return self._call(self.sdk.get_attribute_value, name)

    @property
    def frame_shape(self) -> tuple[int, int]:
        return int(self._get("AOIHeight")), int(self._get("AOIWidth"))

    @property
    def frame_dtype(self) -> str:
        return PIXEL_TYPES[self._get("PixelEncoding")]

    def describe(self, settings: AcquisitionSettings) -> dict[str, Any]:
        binning = self.settings.binning
        return {
            "vendor": "Andor", "model": self._get("CameraModel"), "serial_number": self._get("SerialNumber"),
            "x_pixel_size": self._get("PixelWidth") * 1e-6 * binning,
            "y_pixel_size": self._get("PixelHeight") * 1e-6 * binning,
            "sensor_material": "Si", "pixel_encoding": self._get("PixelEncoding"),
            "bit_depth_readout": 12 if self._get("PixelEncoding").startswith("Mono12") else 16,
            "shuttering_mode": self._get("ElectronicShutteringMode"),
            "sensor_temperature": self._get("SensorTemperature"),
            "count_time": settings.exposure, "frame_time": settings.period, "trigger_mode": settings.trigger_mode,
        }

    def prepare(self, settings: AcquisitionSettings) -> None:
        set_value = self.sdk.set_attribute_value
        self._call(set_value, "TriggerMode", TRIGGER_MODES[settings.trigger_mode])
        self._call(set_value, "ExposureTime", settings.exposure)
        if settings.trigger_mode == "internal":
            self._call(set_value, "FrameRate", 1.0 / settings.period)
        try:  # each frame's timestamp in its metadata; a camera without it: the time a frame is read
            self._call(set_value, "MetadataEnable", True)
            self._call(set_value, "MetadataTimestamp", True)
        except DetectorError as error:
            log.info("frames stamped when read, not by the camera: %s", error)
        self._call(self.sdk.setup_acquisition, "snap", settings.frame_count)

    def _camera_clock(self) -> Callable[[int], float] | None:
        """A frame's timestamp (ticks) -> UNIX time of its exposure's start, from the camera's
        timestamp clock read once against the computer's; None where the camera has no such clock."""
        try:
            ticks, now = self._get("TimestampClock"), time.time()
            hertz = float(self._get("TimestampClockFrequency"))
        except DetectorError:
            return None
        return lambda frame_ticks: now + (frame_ticks - ticks) / hertz

    def frames(self, settings: AcquisitionSettings, stop: threading.Event) -> Iterator[tuple[int, np.ndarray, float]]:
        """Start the acquisition (unless ``arm`` did) and yield the frames as the camera delivers them."""
        if not self._armed:
            self._call(self.sdk.start_acquisition)
        self._armed = False
        number = 0
        patience = settings.period + settings.exposure + self.settings.timeout
        waits_for_edges = settings.trigger_mode.startswith("external")  # external edges may be far apart
        trigger = SoftwareTrigger(settings.period, (lambda: self._call(self.sdk.send_software_trigger))
                                  if settings.trigger_mode == "software" else None, self.clock)
        last_frame = time.monotonic()
        stamp = self._camera_clock()
        try:
            while number < settings.frame_count and not stop.is_set():
                try:
                    self.sdk.wait_for_frame(timeout=trigger.wait_time(0.2))  # short waits, to see stop in time
                except Exception as error:  # noqa: BLE001 - pylablib's timeout has no type of its own: told by its name below
                    if "timeout" not in (type(error).__name__ + str(error)).lower():
                        raise DetectorError(f"Andor SDK3: {error}") from None
                    if not waits_for_edges and time.monotonic() - last_frame > patience:
                        raise DetectorError(f"Andor SDK3: no frame from the camera within {patience:.1f} s") from None
                    continue
                frames, infos = self._call(lambda: self.sdk.read_multiple_images(return_info=True)) or ([], [])
                for frame, info in zip(frames, infos or [None] * len(frames), strict=True):
                    # pylablib's frame info has timestamp_dev only with the metadata on
                    ticks = getattr(info, "timestamp_dev", None)
                    timestamp = stamp(ticks) if stamp and ticks is not None else time.time()
                    yield number, np.ascontiguousarray(frame), timestamp
                    number += 1
                    last_frame = time.monotonic()
        finally:
            self._call(self.sdk.stop_acquisition)

    def close(self) -> None:
        self.sdk.close()
