"""Tucsen Dhyana 95 and 400BSI (sCMOS) through the TUCam API, Tucsen's C library, over ctypes.

Why: TUCam is a C API of *capabilities* (integers: bit depth, fan gear, image mode), *properties*
(doubles: exposure in ms, gain, temperature, frame rate), ROI and trigger structures passed by
value, and a frame buffer the library fills (``TUCAM_Buf_WaitForFrame``). Its C types,
prototypes and ids are the vendor's interface (``photonflow.drivers.tucam``): ``load_tucam_library``
binds them to ``libTUCam.so.1``, ``photonflow.simulators.tucsen_tucam`` to simulated C functions
with the very same prototypes, so the one camera below calls both through ctypes. A TUCAMRET
error becomes a DetectorError naming the call and the code (DetectorConnectionLost for a camera
gone from the bus). Nothing here imports Tango.
"""

from __future__ import annotations

import ctypes
import logging
import threading
import time
from collections.abc import Callable, Iterator
from ctypes import POINTER, c_char, c_double, c_int32
from dataclasses import dataclass
from typing import Any

import numpy as np

from photonflow.camera import Abortable, AcquisitionSettings, Checkable, Closable, FrameSource, SoftwareTrigger
from photonflow.drivers.tucam import (
    CODE,
    FAN_GEARS,
    MODELS,
    TEMPERATURE_ZERO,
    TUCAM_FRAME,
    TUCAM_INIT,
    TUCAM_OPEN,
    TUCAM_PROP_ATTR,
    TUCAM_REG_RW,
    TUCAM_ROI_ATTR,
    TUCAM_TRIGGER_ATTR,
    TUCAM_VALUE_INFO,
    TUCAMRET_CODES,
    TUCCM_SEQUENCE,
    TUCCM_TRIGGER_SOFTWARE,
    TUCCM_TRIGGER_STANDARD,
    TUCTD_RISING,
    TUCTE_EXPTM,
    TUCTE_WIDTH,
    TUFRM_FMT_USUAL,
    TUIDC_BITOFDEPTH,
    TUIDC_FAN_GEAR,
    TUIDC_IMGMODESELECT,
    TUIDI_CAMERA_MODEL,
    TUIDI_VERSION_FRMW,
    TUIDP_EXPOSURETM,
    TUIDP_FRAME_RATE,
    TUIDP_GLOBALGAIN,
    TUIDP_TEMPERATURE,
    TUREG_SN,
    TUSN_SIZE,
    DhyanaModel,
)
from photonflow.errors import ConfigurationError, DetectorConnectionLost, DetectorError

log = logging.getLogger(__name__)

# the camera is gone from the bus: FAULT, and Init opens it again
CONNECTION_LOST = {CODE[name] for name in ("TUCAMRET_NO_CAMERA", "TUCAMRET_USB_STATUS_ERROR",
                                            "TUCAMRET_FAIL_READ_CAMERA", "TUCAMRET_FAIL_WRITE_CAMERA")}
TRIGGER_MODES = {  # photonflow's -> (capture mode, exposure mode)
    "internal": (TUCCM_SEQUENCE, TUCTE_EXPTM),
    "external": (TUCCM_TRIGGER_STANDARD, TUCTE_EXPTM),  # each edge starts one exposure of the set time
    "external_enable": (TUCCM_TRIGGER_STANDARD, TUCTE_WIDTH),  # each pulse's width is the exposure
    "software": (TUCCM_TRIGGER_SOFTWARE, TUCTE_EXPTM),  # the driver triggers each frame, one period apart
}


@dataclass(frozen=True)
class TucsenSettings:
    """What the beamline sets once (Tango properties); the rest is per series."""

    gain_mode: str = "HDR"
    bit_depth: int = 16
    fan_gear: str = "high"
    target_temperature: float = 0.0  # degC
    roi: tuple[int, int, int, int] = (0, 0, 0, 0)  # x, y, width, height; all 0: the whole sensor
    timeout: float = 5.0


class TucsenCamera(FrameSource, Checkable, Abortable, Closable):
    """A Dhyana behind TUCam; ``library`` is ``load_tucam_library()`` or the simulated one."""

    trigger_modes = tuple(TRIGGER_MODES)

    def __init__(self, library: Any, index: int = 0, settings: TucsenSettings = TucsenSettings(),
                 clock: Callable[[], float] = time.monotonic):
        """``clock`` paces the software triggers (tests pass one they control)."""
        self.lib = library
        self.settings = settings
        self.clock = clock
        self._lock = threading.Lock()  # one call at a time, but never around the wait for a frame
        self._api_initialised = False
        self.handle = None
        init = TUCAM_INIT(0, b".")
        self.call("TUCAM_Api_Init", ctypes.pointer(init), 5000)
        self._api_initialised = True
        try:
            if index >= init.uiCamCount:
                raise DetectorConnectionLost(f"TUCam found {init.uiCamCount} camera(s); camera index {index} "
                                             "is not there: check the USB cable and CameraIndex")
            opened = TUCAM_OPEN(index, None)
            self.call("TUCAM_Dev_Open", ctypes.pointer(opened))
            if not opened.hIdxTUCam:
                raise DetectorConnectionLost(f"TUCam could not open camera {index}")
            self.handle = opened.hIdxTUCam
            self.model_name = self.info_text(TUIDI_CAMERA_MODEL)
            model = next((m for m in MODELS.values() if m.name == self.model_name), None)
            if model is None:
                raise ConfigurationError(f"camera {index} is a {self.model_name!r}; photonflow drives "
                                         f"{', '.join(m.name for m in MODELS.values())}")
            self.model: DhyanaModel = model
            self.serial_number = self.read_serial_number()
            self.firmware = self.info_text(TUIDI_VERSION_FRMW)
            exposure = self.property_range(TUIDP_EXPOSURETM)
            self.min_exposure = exposure.dbValMin / 1000
            self.max_exposure = exposure.dbValMax / 1000
            self.target_temperature: float | None = None
            self.roi = (0, 0, self.model.width, self.model.height)
            self.set_gain_mode(settings.gain_mode)
            self.set_bit_depth(settings.bit_depth)
            self.set_fan_gear(settings.fan_gear)
            self.set_target_temperature(settings.target_temperature)
            self.set_roi(*settings.roi)
        except BaseException:
            self.close()
            raise

    # -- calls -------------------------------------------------------------------------------------
    def call(self, name: str, *args) -> int:
        """Call TUCam; an error code becomes DetectorError (DetectorConnectionLost: camera gone)."""
        with self._lock:
            code = getattr(self.lib, name)(*args)
        return self._checked(name, code)

    @staticmethod
    def _checked(name: str, code: int) -> int:
        if code & 0x80000000:
            text = TUCAMRET_CODES.get(code, "unknown error")
            error = DetectorConnectionLost if code in CONNECTION_LOST else DetectorError
            raise error(f"TUCam {name}: {text} (0x{code:08X})")
        return code

    def info_text(self, info_id: int) -> str:
        text = ctypes.create_string_buffer(256)
        info = TUCAM_VALUE_INFO(info_id, 0, ctypes.cast(text, POINTER(c_char)), len(text))
        self.call("TUCAM_Dev_GetInfo", self.handle, ctypes.pointer(info))
        return text.value.decode(errors="replace") or str(info.nValue)

    def read_serial_number(self) -> str:
        text = ctypes.create_string_buffer(TUSN_SIZE)
        self.call("TUCAM_Reg_Read", self.handle, TUCAM_REG_RW(TUREG_SN, ctypes.cast(text, POINTER(c_char)), TUSN_SIZE))
        return text.value.decode(errors="replace")

    def capability(self, capability_id: int) -> int:
        value = c_int32()
        self.call("TUCAM_Capa_GetValue", self.handle, capability_id, ctypes.pointer(value))
        return value.value

    def property_value(self, property_id: int) -> float:
        value = c_double()
        self.call("TUCAM_Prop_GetValue", self.handle, property_id, ctypes.pointer(value), 0)
        return value.value

    def property_range(self, property_id: int) -> TUCAM_PROP_ATTR:
        attribute = TUCAM_PROP_ATTR(property_id, 0)
        self.call("TUCAM_Prop_GetAttr", self.handle, ctypes.pointer(attribute))
        return attribute

    # -- settings ----------------------------------------------------------------------------------
    def set_gain_mode(self, mode: str) -> None:
        if mode not in self.model.gain_modes:
            raise ConfigurationError(f"a {self.model.name} has gain modes {', '.join(self.model.gain_modes)}, "
                                     f"not {mode!r}")
        image_mode, gain = self.model.gain_modes[mode]
        self.call("TUCAM_Capa_SetValue", self.handle, TUIDC_IMGMODESELECT, image_mode)
        self.call("TUCAM_Prop_SetValue", self.handle, TUIDP_GLOBALGAIN, float(gain), 0)

    @property
    def gain_mode(self) -> str:
        current = (self.capability(TUIDC_IMGMODESELECT), int(self.property_value(TUIDP_GLOBALGAIN)))
        return next((name for name, values in self.model.gain_modes.items() if values == current), str(current))

    def set_bit_depth(self, bits: int) -> None:
        if bits not in (8, 16):
            raise ConfigurationError(f"bit depth must be 8 or 16, got {bits}")
        self.call("TUCAM_Capa_SetValue", self.handle, TUIDC_BITOFDEPTH, bits)

    @property
    def bit_depth(self) -> int:
        return self.capability(TUIDC_BITOFDEPTH)

    def set_fan_gear(self, gear: str) -> None:
        if gear not in FAN_GEARS:
            raise ConfigurationError(f"fan gear must be one of {', '.join(FAN_GEARS)}, got {gear!r}")
        self.call("TUCAM_Capa_SetValue", self.handle, TUIDC_FAN_GEAR, FAN_GEARS[gear])

    @property
    def fan_gear(self) -> str:
        value = self.capability(TUIDC_FAN_GEAR)
        return next((name for name, gear in FAN_GEARS.items() if gear == value), str(value))

    def temperature_limits(self) -> tuple[float, float, float]:
        """(lowest, highest) target in degC and the scale TUIDP_TEMPERATURE's raw values use."""
        raw = self.property_range(TUIDP_TEMPERATURE)
        scale = 10.0 if raw.dbValMax > 100 else 1.0
        return raw.dbValMin / scale - TEMPERATURE_ZERO, raw.dbValMax / scale - TEMPERATURE_ZERO, scale

    def set_target_temperature(self, celsius: float) -> None:
        lowest, highest, scale = self.temperature_limits()
        if not lowest <= celsius <= highest:
            raise ConfigurationError(f"target temperature {celsius} degC is outside what a {self.model.name} "
                                     f"accepts: {lowest:g} to {highest:g} degC")
        self.call("TUCAM_Prop_SetValue", self.handle, TUIDP_TEMPERATURE, (celsius + TEMPERATURE_ZERO) * scale, 0)
        self.target_temperature = celsius

    @property
    def sensor_temperature(self) -> float:
        """The sensor's temperature now, degC (reading TUIDP_TEMPERATURE gives it, not the target)."""
        return self.property_value(TUIDP_TEMPERATURE)

    def set_roi(self, x: int, y: int, width: int, height: int) -> None:
        """The region read out; all zero: the whole sensor. The camera aligns it; ``roi`` says what it took."""
        full = not any((x, y, width, height))
        if not full and not (x >= 0 and y >= 0 and width > 0 and height > 0
                             and x + width <= self.model.width and y + height <= self.model.height):
            raise ConfigurationError(
                f"ROI x={x} y={y} width={width} height={height} does not fit the {self.model.width}x"
                f"{self.model.height} sensor: need x + width <= {self.model.width}, y + height <= "
                f"{self.model.height}, width and height > 0; or all zero for the whole sensor")
        self.call("TUCAM_Cap_SetROI", self.handle, TUCAM_ROI_ATTR(0 if full else 1, x, y, width, height))
        taken = TUCAM_ROI_ATTR()
        self.call("TUCAM_Cap_GetROI", self.handle, ctypes.pointer(taken))
        self.roi = ((taken.nHOffset, taken.nVOffset, taken.nWidth, taken.nHeight) if taken.bEnable
                    else (0, 0, self.model.width, self.model.height))

    # -- the Camera interface ----------------------------------------------------------------------
    @property
    def frame_shape(self) -> tuple[int, int]:
        return self.roi[3], self.roi[2]

    @property
    def frame_dtype(self) -> str:
        return "uint8" if self.bit_depth == 8 else "uint16"

    def describe(self, settings: AcquisitionSettings) -> dict[str, Any]:
        return {
            "vendor": "Tucsen", "model": self.model.name, "serial_number": self.serial_number,
            "x_pixel_size": self.model.pixel_size, "y_pixel_size": self.model.pixel_size,
            "sensor_material": "Si", "bit_depth_readout": self.bit_depth, "gain_mode": self.gain_mode,
            "count_time": settings.exposure, "frame_time": settings.period, "trigger_mode": settings.trigger_mode,
            "sensor_temperature": self.sensor_temperature, "firmware_version": self.firmware,
            "roi": ",".join(str(n) for n in self.roi),
        }

    def check(self, settings: AcquisitionSettings) -> None:
        """Refuse what this camera cannot do, reading its ranges only (the Controller asks at Configure)."""
        if not self.min_exposure <= settings.exposure <= self.max_exposure:
            raise ConfigurationError(f"exposure {settings.exposure} s is outside what a {self.model.name} "
                                     f"accepts: {self.min_exposure:g} to {self.max_exposure:g} s")
        if TRIGGER_MODES[settings.trigger_mode][0] == TUCCM_SEQUENCE:
            fastest = self._fastest_frame_rate()
            if 1.0 / settings.period > fastest:
                raise ConfigurationError(
                    f"period {settings.period} s is shorter than a {self.model.name} reads out a {self.roi[2]}x"
                    f"{self.roi[3]} ROI: at most {fastest:.1f} frames/s, a period of at least {1 / fastest:.4f} s")

    def _fastest_frame_rate(self) -> float:
        try:
            return self.property_range(TUIDP_FRAME_RATE).dbValMax  # depends on the ROI's height
        except DetectorError as error:
            if not any(name in str(error) for name in ("TUCAMRET_NOT_SUPPORT", "TUCAMRET_INVALID_IDPROP")):
                raise
            raise ConfigurationError(
                f"this {self.model.name} has no frame rate control ({error}): use trigger mode software "
                "for frames a period apart") from None

    def prepare(self, settings: AcquisitionSettings) -> None:
        self.check(settings)
        capture_mode, exposure_mode = TRIGGER_MODES[settings.trigger_mode]
        self.call("TUCAM_Prop_SetValue", self.handle, TUIDP_EXPOSURETM, settings.exposure * 1000, 0)
        if capture_mode == TUCCM_SEQUENCE:
            self.call("TUCAM_Prop_SetValue", self.handle, TUIDP_FRAME_RATE, 1.0 / settings.period, 0)
        trigger = TUCAM_TRIGGER_ATTR(capture_mode, exposure_mode, TUCTD_RISING, 0, 1, 2)
        self.call("TUCAM_Cap_SetTrigger", self.handle, trigger)

    def frames(self, settings: AcquisitionSettings, stop: threading.Event) -> Iterator[tuple[int, np.ndarray, float]]:
        """Start capturing and yield each frame as TUCam hands it over (copied out of its buffer)."""
        capture_mode = TRIGGER_MODES[settings.trigger_mode][0]
        frame = TUCAM_FRAME()
        frame.ucFormatGet, frame.uiRsdSize = TUFRM_FMT_USUAL, 1
        self.call("TUCAM_Buf_Alloc", self.handle, ctypes.pointer(frame))
        try:
            self.call("TUCAM_Cap_Start", self.handle, capture_mode)
            yield from self._captured(settings, stop, frame, capture_mode)
        except BaseException:  # the first error is the one to report: the clean-up's own are only logged
            for name in ("TUCAM_Cap_Stop", "TUCAM_Buf_Release"):
                code = getattr(self.lib, name)(self.handle)
                if code & 0x80000000:
                    log.warning("%s after a failed capture: %s", name, TUCAMRET_CODES.get(code, hex(code)))
            raise
        self.call("TUCAM_Cap_Stop", self.handle)
        self.call("TUCAM_Buf_Release", self.handle)

    def _captured(self, settings, stop, frame, capture_mode) -> Iterator[tuple[int, np.ndarray, float]]:
        patience = settings.period + settings.exposure + self.settings.timeout
        waits_for_edges = capture_mode == TUCCM_TRIGGER_STANDARD  # external edges may be far apart
        pointer = ctypes.pointer(frame)
        trigger = SoftwareTrigger(settings.period, (lambda: self.call("TUCAM_Cap_DoSoftwareTrigger", self.handle, 0))
                                  if capture_mode == TUCCM_TRIGGER_SOFTWARE else None, self.clock)
        number, last_frame = 0, time.monotonic()
        while number < settings.frame_count and not stop.is_set():
            wait_ms = max(1, int(trigger.wait_time(0.2) * 1000))  # short waits, to see stop in time
            # not under the lock: other calls (a temperature reading) go on meanwhile
            code = self.lib.TUCAM_Buf_WaitForFrame(self.handle, pointer, wait_ms)
            if code == CODE["TUCAMRET_TIMEOUT"]:
                if not waits_for_edges and time.monotonic() - last_frame > patience:
                    raise DetectorError(f"TUCam: no frame from the camera within {patience:.1f} s")
                continue
            if code == CODE["TUCAMRET_ABORT"]:
                return
            self._checked("TUCAM_Buf_WaitForFrame", code)
            yield number, self._pixels(frame), time.time()
            number += 1
            last_frame = time.monotonic()

    @staticmethod
    def _pixels(frame: TUCAM_FRAME) -> np.ndarray:
        """The frame's pixels, copied out of TUCam's buffer (it is reused for the next frame)."""
        dtype = np.uint8 if frame.ucElemBytes == 1 else np.uint16
        height, row_bytes = frame.usHeight, frame.usWidth * frame.ucElemBytes
        stride = frame.uiWidthStep or row_bytes
        needed = stride * (height - 1) + row_bytes
        if not frame.pBuffer or frame.uiImgSize < needed:
            raise DetectorError(f"TUCam: a {frame.usWidth}x{height} frame came with {frame.uiImgSize} bytes, "
                                f"not {needed}")
        raw = np.frombuffer(ctypes.string_at(ctypes.addressof(frame.pBuffer.contents) + frame.usOffset, needed),
                            np.uint8)
        if stride == row_bytes:
            return raw.view(dtype).reshape(height, frame.usWidth)
        rows = np.lib.stride_tricks.as_strided(raw, shape=(height, row_bytes), strides=(stride, 1))
        return np.ascontiguousarray(rows).view(dtype)

    def abort(self) -> None:
        """End the wait for a frame at once (TUCam may wait a whole exposure, whatever the timeout)."""
        self.call("TUCAM_Buf_AbortWait", self.handle)

    def close(self) -> None:
        """Close the camera and the API (errors ignored: the camera may be gone already)."""
        if self.handle is not None:
            self.lib.TUCAM_Dev_Close(self.handle)
            self.handle = None
        if self._api_initialised:
            self.lib.TUCAM_Api_Uninit()
            self._api_initialised = False
