"""libTUCam, simulated: TUCam's C functions, with its prototypes, over a simulated Dhyana camera.

Why: the Tucsen driver calls Tucsen's C library through ctypes. ``SimulatedTucam.functions``
offers the same functions as real C function pointers (ctypes callbacks built from the
driver's own ``PROTOTYPES``), so the driver's calls go through ctypes exactly as they would
into libTUCam: structures by pointer and by value, doubles, the frame buffer the library owns
and fills. The camera behind them keeps capabilities and properties with their ranges,
refuses what TUCam refuses with its TUCAMRET codes, reads out at its frame rate (faster for
a smaller ROI, as a rolling-shutter sCMOS does), on an external edge (``trigger``) or on a
software trigger, and cools towards its target as the fan allows.

As Tucsen's recent Linux library does, ``TUCAM_Buf_WaitForFrame`` waits at least one exposure
whatever its timeout; ``TUCAM_Buf_AbortWait`` ends the wait at once.

Faults, from the hardware side (nothing the API offers): ``unplug``/``plug_in`` (the USB
cable), ``fail_next(function, code)`` (the next call of that function returns that code),
``stall`` (the sensor stops delivering frames).
"""

from __future__ import annotations

import ctypes
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from types import SimpleNamespace

import numpy as np

from photonflow.camera import BeamConditions
from photonflow.drivers.tucam import (
    CODE,
    HANDLE,
    MODELS,
    PROTOTYPES,
    TEMPERATURE_ZERO,
    TUCAMRET,
    TUCCM_SEQUENCE,
    TUCCM_TRIGGER_SOFTWARE,
    TUCCM_TRIGGER_STANDARD,
    TUCTE_WIDTH,
    TUIDC_BITOFDEPTH,
    TUIDC_FAN_GEAR,
    TUIDC_IMGMODESELECT,
    TUIDI_CAMERA_MODEL,
    TUIDI_PRODUCT,
    TUIDI_VERSION_FRMW,
    TUIDP_EXPOSURETM,
    TUIDP_FRAME_RATE,
    TUIDP_GLOBALGAIN,
    TUIDP_TEMPERATURE,
    TUREG_SN,
)
from photonflow.simulators.frame_timing import REAL_TIME, FrameSchedule
from photonflow.simulators.phantom import ImagingSettings, ProjectionFrames
from photonflow.simulators.trigger_input import TriggerInput

log = logging.getLogger(__name__)

SUCCESS = CODE["TUCAMRET_SUCCESS"]
HANDLE_VALUE = 0x7C0DE  # the one camera's HDTUCAM
IMAGE_HEADER_BYTES = 1024  # TUCAM_IMG_HEADER before the pixels in the frame buffer
BUFFERED_FRAMES = 32  # frames the camera holds for a host that is slow to read
AMBIENT = 22.0  # degC
FAN_COOLING = {0: 45.0, 1: 40.0, 2: 35.0, 3: 55.0}  # degrees below ambient the sensor can reach; 3: water
# the frames' counts in each gain mode: (factor on the photon counts, highest value the ADC gives)
GAIN_RESPONSE = {"HDR": (1.0, 65535), "CMS": (1.0, 4095), "High": (2.0, 4095), "Low": (0.5, 4095),
                 "HighSpeed": (1.0, 2047)}


class TucamFailure(Exception):
    def __init__(self, name: str):
        super().__init__(name)
        self.code = CODE[name]


class Setting:
    """A capability or property: value and range, as Capa/Prop_GetAttr report them."""

    def __init__(self, value: float, low: float, high: float, step: float = 1, allowed: tuple | None = None):
        self.value, self.default, self.low, self.high, self.step, self.allowed = value, value, low, high, step, allowed

    def set(self, value: float) -> None:
        if not self.low <= value <= self.high:
            raise TucamFailure("TUCAMRET_OUT_OF_RANGE")
        if self.allowed is not None and value not in self.allowed:
            raise TucamFailure("TUCAMRET_INVALID_VALUE")
        self.value = value


class SimulatedTucam:
    """The TUCam library with one simulated Dhyana on its bus."""

    def __init__(self, model: str = "dhyana95", serial_number: str = "DH95-SIM-0001", seed: int = 0,
                 clock: Callable[[], float] = time.monotonic, trigger_line: str = "",
                 beamline: Callable[[], BeamConditions] | None = None):
        """``clock``: the time the sensor's cooling follows (tests pass one they move). ``trigger_line``:
        the address of the trigger line cabled to the camera's trigger input; empty: no cable.
        ``beamline`` gives the beam at each capture's start (the beamline port's ``conditions``): the
        frames scale with it (shutter closed: dark frames) and show the phantom where the sample
        translation put it (``photonflow.simulators.phantom``)."""
        self._beamline = beamline
        self._beam: BeamConditions | None = None  # as read at the capture's start
        self.clock = clock
        self.model = MODELS[model]
        self.serial_number = serial_number
        self.seed = seed
        modes = sorted({image_mode for image_mode, _ in self.model.gain_modes.values()})
        self.capabilities = {
            TUIDC_BITOFDEPTH: Setting(16, 8, 16, 8, allowed=(8, 16)),
            TUIDC_FAN_GEAR: Setting(0, 0, 3),
            TUIDC_IMGMODESELECT: Setting(modes[0], modes[0], modes[-1], allowed=tuple(modes)),
        }
        water_scale = 10.0 if model == "dhyana400bsi" else 1.0  # the V3 takes tenths of a degree
        self.temperature_scale = water_scale
        self.properties = {
            TUIDP_GLOBALGAIN: Setting(0, 0, 2),
            TUIDP_EXPOSURETM: Setting(10.0, 0.021 if model == "dhyana95" else 0.0112,
                                      10000.0 if model == "dhyana95" else 17615.0, 0.001),
            TUIDP_TEMPERATURE: Setting((TEMPERATURE_ZERO + 0) * water_scale, 0, 100 * water_scale),
            TUIDP_FRAME_RATE: Setting(10.0, 0.1, self.model.max_frame_rate, 0.01),
        }
        self.roi = (0, 0, 0, self.model.width, self.model.height)  # enabled, x, y, width, height
        self.trigger = (TUCCM_SEQUENCE, 0, 1, 0, 1, 2)
        self.plugged = True
        self.stalled = False
        self.api_initialised = False
        self.opened = False
        self.capturing = False
        self.frames_lost = 0
        # what tests observe instead of timing: a WaitForFrame is under way, and how each one ended
        self.waiting_for_frame = threading.Event()
        self.frame_wait_endings: deque[str] = deque(maxlen=64)  # "frame", "timeout", "abort", "unplugged"
        self._failures: dict[str, str] = {}
        self._temperature = (AMBIENT, AMBIENT, clock())  # from, towards, since
        self._condition = threading.Condition()
        self._ready: deque = deque()
        self._aborted = False
        self._buffer = None
        self._sensor: threading.Thread | None = None
        self._stop_sensor = threading.Event()
        self.trigger_input = TriggerInput()
        self.trigger_input.plug(trigger_line)
        self._pattern: ProjectionFrames | None = None
        self.functions = SimpleNamespace(**{
            name: ctypes.CFUNCTYPE(TUCAMRET, *argtypes)(self._entry(name)) for name, argtypes in PROTOTYPES.items()
        })

    # -- the hardware side ---------------------------------------------------------------------------
    def unplug(self) -> None:
        self.plugged = False
        with self._condition:
            self._condition.notify_all()

    def plug_in(self) -> None:
        self.plugged = True

    def fail_next(self, function: str, code_name: str) -> None:
        self._failures[function] = code_name

    def stall(self) -> None:
        self.stalled = True

    def fire_trigger(self, width: float | None = None) -> None:
        """An edge on the trigger input (``width``: the pulse's, for width exposure)."""
        self.trigger_input.fire(width)

    @property
    def gain_mode(self) -> str:
        current = (self.capabilities[TUIDC_IMGMODESELECT].value, int(self.properties[TUIDP_GLOBALGAIN].value))
        return next((name for name, values in self.model.gain_modes.items() if values == current), "HDR")

    def frame(self, number: int, angle: float | None = None) -> np.ndarray:
        """Frame ``number`` of the capture, as the camera delivers it in the current settings, the
        sample turned to ``angle`` deg (the trigger pulse's position; None: as at the start)."""
        _, _, _, width, height = self.roi
        exposure = self.properties[TUIDP_EXPOSURETM].value / 1000
        settings = ImagingSettings(height, width, self.model.pixel_size, "uint32", self.seed, exposure
                                   ).following(self._beam)
        if self._pattern is None or self._pattern.settings != settings:
            self._pattern = ProjectionFrames(settings)
        counts = self._pattern.frame(number, angle)
        factor, highest = GAIN_RESPONSE[self.gain_mode]
        values = np.minimum((counts * factor).astype(np.uint32), highest)
        if self.capabilities[TUIDC_BITOFDEPTH].value == 8:  # the ADC's top 8 bits
            return (values >> (int(highest).bit_length() - 8)).astype(np.uint8)
        return values.astype(np.uint16)

    def sensor_temperature(self) -> float:
        start, goal, since = self._temperature
        return goal + (start - goal) * math.exp(-(self.clock() - since) / 2.0)

    def _cool_towards_target(self) -> None:
        target = self.properties[TUIDP_TEMPERATURE].value / self.temperature_scale - TEMPERATURE_ZERO
        reachable = AMBIENT - FAN_COOLING[int(self.capabilities[TUIDC_FAN_GEAR].value)]
        self._temperature = (self.sensor_temperature(), max(target, reachable), self.clock())

    # -- the C functions -----------------------------------------------------------------------------
    def _entry(self, name: str):
        implementation = getattr(self, "_" + name[len("TUCAM_"):].lower())
        takes_handle = bool(PROTOTYPES[name]) and PROTOTYPES[name][0] is HANDLE

        def entry(*args):
            try:
                failure = self._failures.pop(name, None)
                if failure is not None:
                    return CODE[failure]
                if takes_handle:
                    self._check_handle(name, args[0])
                result = implementation(*args)
                return SUCCESS if result is None else result
            except TucamFailure as failure:
                return failure.code
            except Exception:  # an exception must not cross into C: it would return 0
                log.exception("simulated %s failed", name)
                return CODE["TUCAMRET_FAILURE"]

        return entry

    def _check_handle(self, name: str, handle) -> None:
        if handle != HANDLE_VALUE or not self.opened:
            raise TucamFailure("TUCAMRET_INVALID_HANDLE")
        if not self.plugged and name != "TUCAM_Dev_Close":  # closing what is gone still frees it
            raise TucamFailure("TUCAMRET_FAIL_READ_CAMERA")

    def _api_init(self, init, _timeout):
        if self.api_initialised:
            raise TucamFailure("TUCAMRET_INIT")
        self.api_initialised = True
        init.contents.uiCamCount = 1 if self.plugged else 0

    def _api_uninit(self):
        if self.opened:
            self._dev_close(HANDLE_VALUE)
        self.api_initialised = False
        self.trigger_input.unplug()  # the library is let go for good (the device's Init makes a new one)

    def _dev_open(self, opened):
        if not self.api_initialised:
            raise TucamFailure("TUCAMRET_NOT_INIT")
        if not self.plugged or opened.contents.uiIdxOpen != 0:
            raise TucamFailure("TUCAMRET_NO_CAMERA")
        self.opened = True
        opened.contents.hIdxTUCam = HANDLE_VALUE

    def _dev_close(self, _handle):
        self._stop_capture()
        self.opened = False

    def _dev_getinfo(self, _handle, info):
        texts = {TUIDI_CAMERA_MODEL: self.model.name, TUIDI_VERSION_FRMW: "0x2116"}
        numbers = {TUIDI_PRODUCT: self.model.product_id}
        info = info.contents
        if info.nID in texts:
            text = texts[info.nID].encode()[: info.nTextSize - 1]
            ctypes.memmove(info.pText, text + b"\0", len(text) + 1)
        elif info.nID in numbers:
            info.nValue = numbers[info.nID]
        else:
            raise TucamFailure("TUCAMRET_INVALID_IDPARAM")

    def _reg_read(self, _handle, register):
        if register.nRegType != TUREG_SN:
            raise TucamFailure("TUCAMRET_INVALID_PARAM")
        text = self.serial_number.encode()[: register.nBufSize - 1]
        ctypes.memmove(register.pBuf, text + b"\0", len(text) + 1)

    def _setting(self, table: dict, identifier: int, missing: str) -> Setting:
        if identifier not in table:
            raise TucamFailure(missing)
        return table[identifier]

    def _capa_getattr(self, _handle, attribute):
        setting = self._setting(self.capabilities, attribute.contents.idCapa, "TUCAMRET_INVALID_IDCAPA")
        a = attribute.contents
        a.nValMin, a.nValMax, a.nValDft, a.nValStep = int(setting.low), int(setting.high), int(setting.default), \
            int(setting.step)

    def _capa_getvalue(self, _handle, capability, value):
        value.contents.value = int(self._setting(self.capabilities, capability, "TUCAMRET_INVALID_IDCAPA").value)

    def _capa_setvalue(self, _handle, capability, value):
        setting = self._setting(self.capabilities, capability, "TUCAMRET_INVALID_IDCAPA")
        if self.capturing and capability != TUIDC_FAN_GEAR:
            raise TucamFailure("TUCAMRET_BUSY")
        setting.set(value)
        if capability == TUIDC_FAN_GEAR:
            self._cool_towards_target()

    def _prop_getattr(self, _handle, attribute):
        a = attribute.contents
        setting = self._setting(self.properties, a.idProp, "TUCAMRET_INVALID_IDPROP")
        high = setting.high
        if a.idProp == TUIDP_FRAME_RATE:
            high = self._max_frame_rate()
        a.dbValMin, a.dbValMax, a.dbValDft, a.dbValStep = setting.low, high, setting.default, setting.step

    def _prop_getvalue(self, _handle, prop, value, _channel):
        setting = self._setting(self.properties, prop, "TUCAMRET_INVALID_IDPROP")
        value.contents.value = self.sensor_temperature() if prop == TUIDP_TEMPERATURE else setting.value

    def _prop_setvalue(self, _handle, prop, value, _channel):
        setting = self._setting(self.properties, prop, "TUCAMRET_INVALID_IDPROP")
        if prop == TUIDP_FRAME_RATE:
            setting.high = self._max_frame_rate()
        if self.capturing and prop in (TUIDP_GLOBALGAIN, TUIDP_FRAME_RATE):
            raise TucamFailure("TUCAMRET_BUSY")
        setting.set(value)
        if prop == TUIDP_TEMPERATURE:
            self._cool_towards_target()

    def _max_frame_rate(self) -> float:
        """A rolling shutter reads row by row: fewer rows, more frames per second."""
        return self.model.max_frame_rate * self.model.height / self.roi[4]

    def _cap_setroi(self, _handle, roi):
        if self.capturing:
            raise TucamFailure("TUCAMRET_BUSY")
        if not roi.bEnable:
            self.roi = (0, 0, 0, self.model.width, self.model.height)
            return
        x, y = roi.nHOffset // 4 * 4, roi.nVOffset // 4 * 4  # offsets to 4 pixels, sizes to 8, as the camera
        width, height = max(32, roi.nWidth // 8 * 8), max(8, roi.nHeight // 8 * 8)
        if x + width > self.model.width or y + height > self.model.height:
            raise TucamFailure("TUCAMRET_INVALID_SUBARRAY")
        self.roi = (1, x, y, width, height)
        rate = self.properties[TUIDP_FRAME_RATE]
        rate.value = min(rate.value, self._max_frame_rate())

    def _cap_getroi(self, _handle, roi):
        r = roi.contents
        r.bEnable, r.nHOffset, r.nVOffset, r.nWidth, r.nHeight = self.roi

    def _cap_settrigger(self, _handle, trigger):
        if self.capturing:
            raise TucamFailure("TUCAMRET_BUSY")
        if trigger.nTgrMode not in (TUCCM_SEQUENCE, TUCCM_TRIGGER_STANDARD, TUCCM_TRIGGER_SOFTWARE, 2, 3):
            raise TucamFailure("TUCAMRET_INVALID_PARAM")
        self.trigger = (trigger.nTgrMode, trigger.nExpMode, trigger.nEdgeMode, trigger.nDelayTm, trigger.nFrames,
                        trigger.nBufFrames)

    def _buf_alloc(self, _handle, frame):
        _, _, _, width, height = self.roi
        elem = 1 if self.capabilities[TUIDC_BITOFDEPTH].value == 8 else 2
        self._buffer = (ctypes.c_uint8 * (IMAGE_HEADER_BYTES + width * height * elem))()
        f = frame.contents
        f.pBuffer = ctypes.cast(self._buffer, ctypes.POINTER(ctypes.c_uint8))
        f.usHeader = f.usOffset = IMAGE_HEADER_BYTES
        f.usWidth, f.usHeight, f.uiWidthStep = width, height, width * elem
        f.ucElemBytes = f.ucDepth = elem
        f.ucChannels, f.ucFormat = 1, f.ucFormatGet

    def _buf_release(self, _handle):
        if self.capturing:
            raise TucamFailure("TUCAMRET_BUSY")
        self._buffer = None

    def _buf_abortwait(self, _handle):
        with self._condition:
            self._aborted = True
            self._condition.notify_all()

    def _cap_start(self, _handle, mode):
        if self._buffer is None:
            raise TucamFailure("TUCAMRET_NOT_READY")
        if self.capturing:
            raise TucamFailure("TUCAMRET_BUSY")
        if mode != self.trigger[0]:
            raise TucamFailure("TUCAMRET_INVALID_PARAM")
        self._beam = self._beamline() if self._beamline is not None else None
        self.frame(0)  # the pattern for these settings, before the first readout
        with self._condition:
            self._ready.clear()
            self._aborted = False
        self.trigger_input.clear()
        self.capturing, self.frames_lost = True, 0
        self._stop_sensor.clear()
        self._sensor = threading.Thread(target=self._read_out, args=(mode,), name="tucam-sim", daemon=True)
        self._sensor.start()

    def _cap_stop(self, _handle):
        self._stop_capture()

    def _stop_capture(self) -> None:
        self._stop_sensor.set()
        with self._condition:
            self._condition.notify_all()
        if self._sensor is not None:
            self._sensor.join(10)
            self._sensor = None
        self.capturing = False

    def _cap_dosoftwaretrigger(self, _handle, _kind):
        if not self.capturing or self.trigger[0] != TUCCM_TRIGGER_SOFTWARE:
            raise TucamFailure("TUCAMRET_NOT_READY")
        self.fire_trigger()

    def _read_out(self, mode: int) -> None:
        """The sensor: one frame per period (late ones never caught up in a burst), or one per
        trigger edge, exposed from the edge on, into the camera's buffer."""
        exposure = self.properties[TUIDP_EXPOSURETM].value / 1000
        period = max(1.0 / self.properties[TUIDP_FRAME_RATE].value, exposure)
        schedule, number = FrameSchedule(time.time(), period), 0
        while not self._stop_sensor.is_set():
            angle = None  # the sample's, as at the start
            if mode == TUCCM_SEQUENCE:
                if REAL_TIME.wait_until(self._stop_sensor, schedule.due(number) + exposure):
                    return
                schedule.taken(number, time.time() - exposure)
            else:
                pulse = self.trigger_input.take(self._stop_sensor.is_set)
                if pulse is None:
                    return
                angle = pulse.position
                hold = pulse.width if (pulse.width and mode == TUCCM_TRIGGER_STANDARD
                                       and self.trigger[1] == TUCTE_WIDTH) else exposure
                if REAL_TIME.wait_until(self._stop_sensor, pulse.time + hold):
                    return
            if self.stalled or not self.plugged:
                number += 1
                continue
            image = self.frame(number, angle)
            with self._condition:
                if len(self._ready) >= BUFFERED_FRAMES:
                    self._ready.popleft()
                    self.frames_lost += 1
                self._ready.append((number, image))
                self._condition.notify_all()
            number += 1

    def _buf_waitforframe(self, _handle, frame, timeout_ms):
        # as Tucsen's Linux library does, a timeout shorter than the exposure is not honoured
        exposure_ms = self.properties[TUIDP_EXPOSURETM].value
        with self._condition:
            self.waiting_for_frame.set()
            try:
                arrived = self._condition.wait_for(
                    lambda: self._ready or self._aborted or not self.plugged, max(timeout_ms, exposure_ms) / 1000)
            finally:
                self.waiting_for_frame.clear()
            self.frame_wait_endings.append(
                "abort" if self._aborted else "unplugged" if not self.plugged else "frame" if arrived else "timeout")
            if self._aborted:
                self._aborted = False
                raise TucamFailure("TUCAMRET_ABORT")
            if not self.plugged:
                raise TucamFailure("TUCAMRET_USB_STATUS_ERROR")
            if not arrived:
                raise TucamFailure("TUCAMRET_TIMEOUT")
            number, image = self._ready.popleft()
        f = frame.contents
        if self._buffer is None:
            raise TucamFailure("TUCAMRET_NOT_READY")
        payload = image.tobytes()
        ctypes.memmove(ctypes.addressof(self._buffer) + IMAGE_HEADER_BYTES, payload, len(payload))
        ctypes.memmove(ctypes.addressof(self._buffer), b"TU1\0", 4)
        f.szSignature = b"TU1"
        f.uiIndex, f.uiImgSize = number, len(payload)
        f.usWidth, f.usHeight = image.shape[1], image.shape[0]
        f.ucElemBytes = image.itemsize
        f.uiWidthStep = image.shape[1] * image.itemsize
