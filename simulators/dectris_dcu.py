"""A simulated DECTRIS detector control unit (DCU): the SIMPLON API over HTTP, frames on ZeroMQ.

Why: the Dectris Acquirer must work unchanged against a real EIGER2 or PILATUS4, so it is
tested against a process that speaks the same interface on real sockets. What it follows
is SIMPLON API 1.8.0 as DECTRIS documents it:

- URLs ``/{subsystem}/api/1.8.0/{config|status|command}/{name}`` for the subsystems
  ``detector``, ``stream``, ``monitor``, ``filewriter`` and ``system``;
- ``GET`` of a config or status value answers JSON ``{value, value_type, access_mode, unit,
  min, max}`` (``allowed_values`` for strings with a fixed set); ``PUT {"value": ...}`` sets
  it and answers the list of parameters that changed; a wrong value is HTTP 400 with the
  reason as text, an unknown name 404, a read-only one 403;
- ``PUT`` commands ``initialize``, ``arm`` (answers ``{"sequence id": n}``), ``trigger``
  (with internal triggering it returns once that trigger's images are taken), ``disarm``,
  ``cancel``, ``abort``; ``detector/status/state`` is ``na`` until initialised, then
  ``idle``, ``ready`` (armed), ``acquire``, ``error``;
- trigger modes ``ints``, ``inte`` (internal, exposure given per trigger by the trigger
  command's ``value``), ``exts``, ``exte`` (external: the simulator takes a ``trigger``
  command as the edge);
- the stream: ``stream/config/format`` ``cbor`` (stream v2) or ``legacy`` (stream v1, with
  ``header_detail`` all/basic/none), ``stream/config/mode`` enabled/disabled,
  ``stream/config/header_appendix`` (text: v2's ``user_data``, v1's header appendix); series
  start at ``arm``, one message per image, the end at ``disarm`` (or after the last image);
- the goniometer in the detector config (``omega``, ``chi``, ``phi``, ``kappa``, ``two_theta``
  ``_start``/``_increment``), in the start message as v2 ``goniometer`` or v1's own names.

The frames are ``DiffractionFrames`` (CeO2 powder rings) at the geometry the DCU's own
detector config holds when armed: ``wavelength``, ``detector_distance``, ``beam_center_x``/``_y``
(column, row) and the model's pixel size. Those are the numbers its stream header reports
(``incident_wavelength``, ``beam_center_x/y``; the distance as ``detector_distance`` in v1 and
as ``detector_translation`` [0, 0, -distance] m in v2, the way a real EIGER2 reports it), so
the rings sit where the metadata say. The DCU cannot see the beamline's shutter or ring
current: the intensity is the nominal one. Frame n is a pure function of those values, the
count time and the seed (``SimulatedDcu.pattern_settings``), sent bslz4-compressed, the way a
DCU sends them. A fault can be injected through
``/simulator/api/1.0/command/fail`` ({"value": "http_error" | "drop" | "stall"}) so that the
driver's error paths are tested: the next SIMPLON request then gets HTTP 500 with a message,
has its connection dropped, or gets no answer.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

from photonflow.allocator import reuse_frame_buffers
from photonflow.camera import PLANCK_EV_ANGSTROM  # h c in eV Å: wavelength = this / photon energy
from photonflow.simulators.diffraction import DiffractionFrames, PatternSettings, preload_calibrant
from photonflow.simulators.frame_timing import REAL_TIME, FrameSchedule
from photonflow.simulators.trigger_line import Pulse, TriggerLineInput
from photonflow.stream import dectris as codec
from photonflow.stream.bslz4 import compress
from photonflow.stream.stins import BSLZ4
from photonflow.stream.transport import SendInterrupted, StreamSender

log = logging.getLogger(__name__)

API_VERSION = "1.8.0"
SUBSYSTEMS = ("detector", "stream", "monitor", "filewriter", "system")
TRIGGER_MODES = ("ints", "inte", "exts", "exte")
GONIOMETER_AXES = ("omega", "chi", "phi", "kappa", "two_theta")  # SIMPLON's <axis>_start/_increment
NANOSECONDS = 1_000_000_000  # the denominator of the stream's rational times


@dataclass(frozen=True)
class DetectorModel:
    """A DECTRIS model: what its sensor is, as ``detector/config`` reports it."""

    description: str
    width: int  # x_pixels_in_detector
    height: int  # y_pixels_in_detector
    pixel_size: float  # metres
    sensor_material: str
    sensor_thickness: float  # metres
    max_frame_rate: float  # Hz, at 16 bits
    min_count_time: float  # seconds


MODELS = {
    "eiger2_1m": DetectorModel("Dectris EIGER2 Si 1M", 1028, 1062, 75e-6, "Si", 450e-6, 4500.0, 3e-6),
    "eiger2_4m": DetectorModel("Dectris EIGER2 Si 4M", 2068, 2162, 75e-6, "Si", 450e-6, 2000.0, 3e-6),
    "eiger2_9m": DetectorModel("Dectris EIGER2 Si 9M", 3108, 3262, 75e-6, "Si", 450e-6, 1100.0, 3e-6),
    "eiger2_16m": DetectorModel("Dectris EIGER2 Si 16M", 4148, 4362, 75e-6, "Si", 450e-6, 560.0, 3e-6),
    "pilatus4_1m": DetectorModel("Dectris PILATUS4 CdTe 1M", 1033, 1063, 150e-6, "CdTe", 1000e-6, 2000.0, 1e-6),
}


class SimplonError(Exception):
    """A request SIMPLON refuses: ``status`` is the HTTP status, the message the body."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass
class Parameter:
    value: Any
    value_type: str  # "float", "uint", "int", "string", "bool"
    access_mode: str = "rw"  # "rw", "r"
    unit: str = ""
    min: float | None = None
    max: float | None = None
    allowed_values: tuple[str, ...] | None = None

    def describe(self) -> dict[str, Any]:
        answer: dict[str, Any] = {"value": self.value, "value_type": self.value_type, "access_mode": self.access_mode}
        if self.unit:
            answer["unit"] = self.unit
        if self.min is not None:
            answer["min"], answer["max"] = self.min, self.max
        if self.allowed_values is not None:
            answer["allowed_values"] = list(self.allowed_values)
        return answer

    def checked(self, name: str, value: Any) -> Any:
        """``value`` as this parameter's type, or SimplonError(400) saying what is allowed."""
        kind = self.value_type
        if kind in ("float", "uint", "int"):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise SimplonError(400, f"{name}: expected a number, got {value!r}")
            if kind != "float":
                if value != int(value) or (kind == "uint" and value < 0):
                    expected = "an unsigned integer" if kind == "uint" else "an integer"
                    raise SimplonError(400, f"{name}: expected {expected}, got {value!r}")
                value = int(value)
            else:
                value = float(value)
            if self.min is not None and not self.min <= value <= self.max:
                raise SimplonError(400, f"{name}: value {value} out of range [{self.min}, {self.max}]")
            return value
        if kind == "bool":
            if not isinstance(value, bool):
                raise SimplonError(400, f"{name}: expected true or false, got {value!r}")
            return value
        if not isinstance(value, str):
            raise SimplonError(400, f"{name}: expected a string, got {value!r}")
        if self.allowed_values is not None and value not in self.allowed_values:
            raise SimplonError(400, f"{name}: {value!r} is not one of {', '.join(self.allowed_values)}")
        return value


def detector_config(model: DetectorModel, serial_number: str, bit_depth_image: int = 16) -> dict[str, Parameter]:
    """``detector/config`` of a freshly started DCU for ``model``; ``bit_depth_image`` 32: images
    summed beyond the 16-bit readout, as an EIGER2 sends them at long count times."""
    min_frame_time = 1.0 / model.max_frame_rate
    return {
        "description": Parameter(model.description, "string", "r"),
        "detector_number": Parameter(serial_number, "string", "r"),
        "x_pixels_in_detector": Parameter(model.width, "uint", "r"),
        "y_pixels_in_detector": Parameter(model.height, "uint", "r"),
        "x_pixel_size": Parameter(model.pixel_size, "float", "r", "m"),
        "y_pixel_size": Parameter(model.pixel_size, "float", "r", "m"),
        "sensor_material": Parameter(model.sensor_material, "string", "r"),
        "sensor_thickness": Parameter(model.sensor_thickness, "float", "r", "m"),
        "bit_depth_image": Parameter(bit_depth_image, "uint", "r"),
        "bit_depth_readout": Parameter(16, "uint", "r"),
        # counts above it are not trusted (count-rate correction's limit); the image's top value flags them
        "countrate_correction_count_cutoff": Parameter(2**16 - 2, "uint", "r"),
        "count_time": Parameter(0.5, "float", "rw", "s", model.min_count_time, 3600.0),
        "frame_time": Parameter(0.5, "float", "rw", "s", min_frame_time, 3600.0),
        "nimages": Parameter(1, "uint", "rw", "", 1, 2_000_000_000),
        "ntrigger": Parameter(1, "uint", "rw", "", 1, 2_000_000_000),
        "trigger_mode": Parameter("ints", "string", "rw", allowed_values=TRIGGER_MODES),
        "photon_energy": Parameter(12400.0, "float", "rw", "eV", 2700.0, 100_000.0),
        "wavelength": Parameter(PLANCK_EV_ANGSTROM / 12400.0, "float", "rw", "Å",
                                PLANCK_EV_ANGSTROM / 100_000.0, PLANCK_EV_ANGSTROM / 2700.0),
        "threshold_energy": Parameter(6200.0, "float", "rw", "eV", 1350.0, 50_000.0),
        "beam_center_x": Parameter(model.width / 2, "float", "rw", "pixel", -1e6, 1e6),
        "beam_center_y": Parameter(model.height / 2, "float", "rw", "pixel", -1e6, 1e6),
        "detector_distance": Parameter(0.1, "float", "rw", "m", 0.0, 100.0),
        # the goniometer as SIMPLON 1.8 keeps it (a beamline writes it; the header tells it)
        **{f"{axis}_{name}": Parameter(0.0, "float", "rw", "degree", -1e6, 1e6)
           for axis in GONIOMETER_AXES for name in ("start", "increment")},
        "compression": Parameter("bslz4", "string", "rw", allowed_values=("bslz4", "lz4")),
        "countrate_correction_applied": Parameter(True, "bool"),
        "flatfield_correction_applied": Parameter(True, "bool"),
        "pixel_mask_applied": Parameter(True, "bool"),
        "virtual_pixel_correction_applied": Parameter(True, "bool"),
    }


class SimulatedDcu:
    """The DCU's logic: configuration, the state machine, and a thread producing each series."""

    def __init__(self, model: DetectorModel, stream_address: str = "tcp://127.0.0.1:*",
                 serial_number: str = "E-SIM-0001", seed: int = 0, trigger_line: str = "", user_data: str = "",
                 bit_depth_image: int = 16):
        """``trigger_line``: the address of the trigger line cabled to the external-trigger input
        (in exts/exte each pulse is a trigger, exte's exposure its width); empty: no cable.
        ``user_data``: the stream's ``header_appendix`` at start (text, JSON at a beamline: sample,
        space group...), which v2 sends as ``user_data`` and v1 as the header's last part."""
        self.model = model
        self.seed = seed
        self.config = {
            "detector": detector_config(model, serial_number, bit_depth_image),
            "stream": {
                "mode": Parameter("enabled", "string", allowed_values=("enabled", "disabled")),
                "format": Parameter("cbor", "string", allowed_values=("cbor", "legacy")),
                "header_detail": Parameter("basic", "string", allowed_values=("all", "basic", "none")),
                "header_appendix": Parameter(user_data, "string"),
            },
            "monitor": {"mode": Parameter("disabled", "string", allowed_values=("enabled", "disabled"))},
            "filewriter": {"mode": Parameter("disabled", "string", allowed_values=("enabled", "disabled"))},
            "system": {},
        }
        self.sender = StreamSender(stream_address)
        self.state = "na"
        self.error = ""
        self.sequence_id = 0
        self.images_sent = 0
        self._lock = threading.RLock()
        self._trigger_done = threading.Event()
        self._triggers: list[tuple[float | None, float]] = []  # (count time for inte/exte, edge time)
        self._arm_date = 0.0  # UNIX time of the arm: the images' start_time counts from it
        self._trigger_wanted = threading.Condition(self._lock)
        self._cancel = threading.Event()
        self._abort = threading.Event()
        self._thread: threading.Thread | None = None
        self._frames: DiffractionFrames | None = None
        preload_calibrant()
        self._triggers_done = 0
        self._trigger_line = TriggerLineInput(trigger_line, self._pulse) if trigger_line else None

    # -- configuration ----------------------------------------------------------------------
    def _parameter(self, subsystem: str, name: str) -> Parameter:
        if subsystem not in self.config:
            raise SimplonError(404, f"no subsystem {subsystem!r}")
        try:
            return self.config[subsystem][name]
        except KeyError:
            raise SimplonError(404, f"{subsystem}: no config parameter {name!r}") from None

    def get_config(self, subsystem: str, name: str) -> dict[str, Any]:
        with self._lock:
            return self._parameter(subsystem, name).describe()

    def set_config(self, subsystem: str, name: str, value: Any) -> list[str]:
        with self._lock:
            parameter = self._parameter(subsystem, name)
            if parameter.access_mode != "rw":
                raise SimplonError(403, f"{subsystem}: {name} is read-only")
            if subsystem == "detector" and self.state in ("ready", "acquire"):
                raise SimplonError(400, f"{name} cannot be changed while the detector is {self.state}; disarm first")
            parameter.value = parameter.checked(name, value)
            changed = [name]
            detector = self.config["detector"]
            if name == "photon_energy":
                if "wavelength" in detector:  # a DCU may have photon_energy only
                    detector["wavelength"].value = PLANCK_EV_ANGSTROM / parameter.value
                    changed.append("wavelength")
                detector["threshold_energy"].value = parameter.value / 2
                changed.append("threshold_energy")
            elif name == "wavelength":
                detector["photon_energy"].value = PLANCK_EV_ANGSTROM / parameter.value
                detector["threshold_energy"].value = detector["photon_energy"].value / 2
                changed += ["photon_energy", "threshold_energy"]
            elif name == "count_time" and detector["frame_time"].value < parameter.value:
                detector["frame_time"].value = parameter.value
                changed.append("frame_time")
            elif name == "frame_time" and detector["count_time"].value > parameter.value:
                detector["count_time"].value = parameter.value
                changed.append("count_time")
            return changed

    def get_status(self, subsystem: str, name: str) -> dict[str, Any]:
        with self._lock:
            values = {
                ("detector", "state"): Parameter(self.state, "string", "r"),
                ("detector", "error"): Parameter([self.error] if self.error else [], "list", "r"),
                ("detector", "temperature"): Parameter(24.5, "float", "r", "degC"),
                ("detector", "humidity"): Parameter(4.2, "float", "r", "%"),
                ("stream", "state"): Parameter(
                    "ready" if self.state in ("ready", "acquire") else "idle", "string", "r"),
                ("stream", "dropped"): Parameter(0, "uint", "r"),
                ("stream", "images_sent"): Parameter(self.images_sent, "uint", "r"),
            }
            if (subsystem, name) not in values:
                raise SimplonError(404, f"{subsystem}: no status parameter {name!r}")
            return values[(subsystem, name)].describe()

    def _value(self, name: str) -> Any:
        return self.config["detector"][name].value

    def wavelength(self) -> float:
        """Å: the ``wavelength`` config, or from ``photon_energy`` on a DCU without it."""
        if "wavelength" in self.config["detector"]:
            return self._value("wavelength")
        return PLANCK_EV_ANGSTROM / self._value("photon_energy")

    # -- commands ---------------------------------------------------------------------------
    def command(self, subsystem: str, name: str, argument: Any = None) -> dict[str, Any] | None:
        if subsystem != "detector":
            raise SimplonError(404, f"{subsystem}: no command {name!r}")
        handlers = {
            "initialize": self._initialize, "arm": self._arm, "trigger": self._trigger,
            "disarm": self._disarm, "cancel": self._cancel_series, "abort": self._abort_series,
        }
        if name not in handlers:
            raise SimplonError(404, f"detector: no command {name!r}")
        return handlers[name](argument)

    def _require(self, allowed: tuple[str, ...], command: str) -> None:
        if self.state not in allowed:
            raise SimplonError(400, f"{command} is not allowed in state {self.state}")

    def _initialize(self, _argument) -> None:
        self._abort_series(None)
        with self._lock:
            self.state, self.error = "idle", ""

    def pattern_settings(self) -> PatternSettings:
        """What the frames of the series armed now depend on: the detector config as it is
        (wavelength in Å, distance in m, beam centre in pixels) and the model's pixel size."""
        return PatternSettings(
            height=self.model.height, width=self.model.width, dtype=self._image_dtype(), seed=self.seed,
            exposure=self._value("count_time"),
            wavelength=self.wavelength() * 1e-10,
            distance=self._value("detector_distance"),
            pixel_size=self.model.pixel_size,
            beam_centre=(self._value("beam_center_y"), self._value("beam_center_x")),
        )

    def _arm(self, _argument) -> dict[str, Any]:
        with self._lock:
            self._require(("idle",), "arm")
            if not self._value("detector_distance") > 0:
                raise SimplonError(400, "the simulated DCU draws its rings only for a detector_distance > 0 m")
            settings = self.pattern_settings()
            if self._frames is None or self._frames.settings != settings:
                if self._frames is not None:
                    self._frames.cancel()
                self._frames = DiffractionFrames(settings)
            self._frames.draw(self._value("nimages") * self._value("ntrigger"))  # no frame late
            self.sequence_id += 1
            self.images_sent = 0
            self._triggers_done = 0
            self._triggers = []
            self._arm_date = time.time()
            self._cancel.clear()
            self._abort.clear()
            self.state = "ready"
            self._thread = threading.Thread(target=self._run_series, name="dcu-series", daemon=True)
            self._thread.start()
            return {"sequence id": self.sequence_id}

    def _trigger(self, argument) -> None:
        with self._lock:
            self._require(("ready", "acquire"), "trigger")
            if self._triggers_done + len(self._triggers) >= self._value("ntrigger"):
                raise SimplonError(400, f"all {self._value('ntrigger')} triggers of the series were given")
            count_time = None
            if self._value("trigger_mode") in ("inte", "exte"):
                if argument is None:
                    raise SimplonError(400, "trigger in mode inte/exte needs the exposure time as its value")
                count_time = self.config["detector"]["count_time"].checked("count_time", argument)
            self._trigger_done.clear()
            self._triggers.append((count_time, time.time()))
            self._trigger_wanted.notify_all()
            external = self._value("trigger_mode").startswith("ext")
        if not external:  # an internal trigger returns when its images are taken
            while not self._trigger_done.wait(0.05):
                if self._abort.is_set() or self._cancel.is_set():
                    break
        return None

    def _pulse(self, pulse: Pulse) -> None:
        """A pulse on the external-trigger input: a trigger of an armed series in exts/exte (its
        edge time is the images' start; exte exposes for its width), ignored otherwise, as by a DCU."""
        with self._lock:
            mode = self._value("trigger_mode")
            if self.state not in ("ready", "acquire") or not mode.startswith("ext"):
                return
            if self._triggers_done + len(self._triggers) >= self._value("ntrigger"):
                return
            count_time = (pulse.width or self._value("count_time")) if mode == "exte" else None
            self._triggers.append((count_time, pulse.time))
            self._trigger_wanted.notify_all()

    def _disarm(self, _argument) -> dict[str, Any]:
        self._cancel.set()
        self._join_series()
        with self._lock:
            if self.state in ("ready", "acquire"):
                self.state = "idle"
            return {"sequence id": self.sequence_id}

    def _cancel_series(self, _argument) -> dict[str, Any]:
        return self._disarm(None)

    def _abort_series(self, _argument) -> None:
        self._abort.set()
        self._join_series()
        with self._lock:
            if self.state in ("ready", "acquire"):
                self.state = "idle"

    def _join_series(self) -> None:
        with self._lock:
            self._trigger_wanted.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(30)

    # -- the series -------------------------------------------------------------------------
    def _detector_description(self) -> dict[str, Any]:
        return {
            "description": self._value("description"), "serial_number": self._value("detector_number"),
            "count_time": self._value("count_time"), "frame_time": self._value("frame_time"),
            "x_pixel_size": self._value("x_pixel_size"), "y_pixel_size": self._value("y_pixel_size"),
            "sensor_material": self._value("sensor_material"),
            "sensor_thickness": self._value("sensor_thickness"),
            "beam_center_x": self._value("beam_center_x"), "beam_center_y": self._value("beam_center_y"),
            "incident_energy": self._value("photon_energy"),
            "incident_wavelength": self.wavelength() * 1e-10,
            "threshold_energy": self._value("threshold_energy"),
            "saturation_value": self._value("countrate_correction_count_cutoff"),
            "bit_depth_readout": self._value("bit_depth_readout"),
            "distance": self._value("detector_distance"),
            # a real EIGER2 reports its translation as [0, 0, -detector_distance] (m)
            "detector_translation_x": 0.0, "detector_translation_y": 0.0,
            "detector_translation_z": -self._value("detector_distance"),
            "countrate_correction_applied": self._value("countrate_correction_applied"),
            "flatfield_applied": self._value("flatfield_correction_applied"),
            "pixel_mask_applied": self._value("pixel_mask_applied"),
            "virtual_pixel_interpolation_applied": self._value("virtual_pixel_correction_applied"),
        }

    def _goniometer(self) -> dict[str, dict[str, float]]:
        """The goniometer axes' start and increment as configured (``omega_start``...), as a DCU
        puts them in its start message: v2 ``goniometer``, v1 the config's own names."""
        detector = self.config["detector"]
        return {name[: -len("_start")]: {"start": self._value(name),
                                         "increment": self._value(name[: -len("_start")] + "_increment")}
                for name in detector if name.endswith("_start") and name[: -len("_start")] + "_increment" in detector}

    def _image_dtype(self) -> str:
        """The images' pixel type, as ``bit_depth_image`` says (the frames are drawn in it)."""
        return f"uint{self._value('bit_depth_image')}"

    def _streaming(self) -> bool:
        return self.config["stream"]["mode"].value == "enabled"

    def _v2(self) -> bool:
        return self.config["stream"]["format"].value == "cbor"

    def _send_start(self) -> None:
        if not self._streaming():
            return
        shape = (self.model.height, self.model.width)
        frames = self._value("nimages") * self._value("ntrigger")
        appendix = self.config["stream"]["header_appendix"].value or None  # empty: none sent
        if self._v2():
            extra: dict[str, Any] = {"goniometer": self._goniometer()}
            if appendix is not None:
                extra["user_data"] = appendix
            parts = codec.encode_start_v2(self.sequence_id, shape, frames, self._detector_description(),
                                          image_dtype=self._image_dtype(), extra=extra)
        else:
            goniometer = {f"{axis}_{name}": number
                          for axis, values in self._goniometer().items() for name, number in values.items()}
            parts = codec.encode_start_v1(self.sequence_id, shape, self._image_dtype(), frames,
                                          self._detector_description(),
                                          header_detail=self.config["stream"]["header_detail"].value,
                                          appendix=appendix, extra=goniometer)
        self._send(parts)

    def _send(self, parts: list) -> None:
        try:
            self.sender.send(parts, self._abort)
        except SendInterrupted:
            pass

    def frame(self, number: int) -> np.ndarray:
        """Image ``number`` (0-based) of the current series, as the detector measured it."""
        return self._frames.frame(number)

    def _run_series(self) -> None:
        """Sends wait for a receiver, as a DCU's do; only ``abort`` gives up on them."""
        images_per_trigger = self._value("nimages")
        try:
            self._send_start()
            while self._triggers_done < self._value("ntrigger"):
                with self._lock:
                    while not self._triggers and not (self._cancel.is_set() or self._abort.is_set()):
                        self._trigger_wanted.wait(0.1)
                    if self._cancel.is_set() or self._abort.is_set():
                        break
                    count_time, edge = self._triggers.pop(0)
                    self.state = "acquire"
                count_time = count_time or self._value("count_time")
                frame_time = max(self._value("frame_time"), count_time)
                # exts/exte: the images start at the edge, whenever it reached us; ints/inte: now
                external = self._value("trigger_mode").startswith("ext")
                schedule = FrameSchedule(edge if external else time.time(), frame_time)
                for in_trigger in range(images_per_trigger):
                    if self._abort.is_set() or self._cancel.is_set():  # cancel/disarm: after the current image
                        break
                    start = schedule.due(in_trigger)
                    if REAL_TIME.wait_until(self._abort, start + count_time):
                        break
                    if not (external and images_per_trigger == 1):
                        start = time.time() - count_time  # later than due when the machine fell behind
                    schedule.taken(in_trigger, start)
                    self._send_image(self.images_sent, start, count_time)
                    self.images_sent += 1
                self._triggers_done += 1
                with self._lock:
                    self.state = "ready"
                self._trigger_done.set()
                if self._abort.is_set():
                    break
        except Exception as error:  # a broken stream is the DCU's error state, as on a real one
            log.exception("series failed")
            with self._lock:
                self.state, self.error = "error", f"series {self.sequence_id} failed: {error}"
        finally:
            if self._streaming() and self.state != "error" and not self._abort.is_set():
                end = codec.encode_end_v2(self.sequence_id) if self._v2() else codec.encode_end_v1(self.sequence_id)
                self._send(end)
            self._trigger_done.set()
            with self._lock:
                if self.state in ("ready", "acquire") and self._triggers_done >= self._value("ntrigger"):
                    self.state = "idle"  # every image taken: the DCU disarms itself

    def _send_image(self, number: int, start: float, count_time: float) -> None:
        """Image ``number``, exposed from ``start`` (UNIX s) for ``count_time``: its times in ns
        since the arm, as a DCU's clock counts them (v2: with the arm's date, so a reader has UNIX times)."""
        if not self._streaming():
            return
        chunk = compress(self.frame(number))
        shape, dtype = (self.model.height, self.model.width), self._image_dtype()
        start_ns = round((start - self._arm_date) * 1e9)
        real_ns = round(count_time * 1e9)
        if self._v2():
            series_date = datetime.fromtimestamp(self._arm_date, UTC).isoformat()
            parts = codec.encode_image_v2(self.sequence_id, number, chunk, BSLZ4, shape, dtype,
                                          series_date=series_date, start_time=(start_ns, NANOSECONDS),
                                          stop_time=(start_ns + real_ns, NANOSECONDS),
                                          real_time=(real_ns, NANOSECONDS))
        else:
            parts = codec.encode_image_v1(self.sequence_id, number, chunk, BSLZ4, shape, dtype,
                                          start_time=start_ns, stop_time=start_ns + real_ns, real_time=real_ns)
        self._send(parts)

    def close(self) -> None:
        if self._trigger_line is not None:
            self._trigger_line.close()
        self._abort_series(None)
        self.sender.close()


# ---------------------------------------------------------------------------------------- HTTP

_URL = re.compile(r"^/(?P<subsystem>\w+)/api/(?P<version>[\d.]+)/(?P<task>config|status|command)/(?P<name>\w+)/?$")
FAULTS = ("http_error", "drop", "stall")


class SimplonServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], dcu: SimulatedDcu):
        super().__init__(address, SimplonHandler)
        self.dcu = dcu
        self.pending_fault: str | None = None
        self.stall_seconds = 30.0

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"


class SimplonHandler(BaseHTTPRequestHandler):
    server: SimplonServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def _answer(self, status: int, body: Any) -> None:
        if isinstance(body, str):
            data, kind = body.encode(), "text/plain"
        else:
            data, kind = json.dumps(body).encode(), "application/json; charset=utf-8"
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        if not length:
            return None
        try:
            return json.loads(self.rfile.read(length))
        except json.JSONDecodeError as error:
            raise SimplonError(400, f"the body is not JSON: {error}") from None

    def _injected_fault(self) -> bool:
        fault, self.server.pending_fault = self.server.pending_fault, None
        if fault == "http_error":
            self._answer(500, "internal error: simulated DCU failure")
        elif fault == "drop":
            self.close_connection = True
            self.connection.close()
        elif fault == "stall":
            time.sleep(self.server.stall_seconds)
            self.close_connection = True
        return fault is not None

    def _route(self, method: str) -> None:
        try:
            if self.path.startswith("/simulator/"):
                return self._simulator(method)
            match = _URL.match(self.path)
            if not match:
                raise SimplonError(404, f"no such resource {self.path}")
            if self._injected_fault():
                return
            subsystem, version, task, name = match.group("subsystem", "version", "task", "name")
            if version != API_VERSION:
                raise SimplonError(404, f"API version {version} is not served; this DCU serves {API_VERSION}")
            dcu = self.server.dcu
            if task == "config" and method == "GET":
                return self._answer(200, dcu.get_config(subsystem, name))
            if task == "config" and method == "PUT":
                body = self._body()
                if not isinstance(body, dict) or "value" not in body:
                    raise SimplonError(400, 'expected a JSON body {"value": ...}')
                return self._answer(200, dcu.set_config(subsystem, name, body["value"]))
            if task == "status" and method == "GET":
                return self._answer(200, dcu.get_status(subsystem, name))
            if task == "command" and method == "PUT":
                body = self._body()
                answer = dcu.command(subsystem, name, body.get("value") if isinstance(body, dict) else None)
                return self._answer(200, answer if answer is not None else "")
            raise SimplonError(405, f"{method} is not allowed on {task}")
        except SimplonError as error:
            self._answer(error.status, str(error))
        except Exception as error:  # a fault in the simulator answers as a DCU does: HTTP 500
            log.exception("%s %s failed", method, self.path)
            self._answer(500, f"internal error: {error}")

    def _simulator(self, method: str) -> None:
        if method != "PUT" or self.path.rstrip("/") != "/simulator/api/1.0/command/fail":
            raise SimplonError(404, f"no such resource {self.path}")
        body = self._body()
        fault = body.get("value") if isinstance(body, dict) else None
        if fault not in FAULTS:
            raise SimplonError(400, f"fault must be one of {', '.join(FAULTS)}")
        self.server.pending_fault = fault
        self.server.stall_seconds = float(body.get("seconds", 30.0))
        self._answer(200, "")

    def do_GET(self) -> None:
        self._route("GET")

    def do_PUT(self) -> None:
        self._route("PUT")


def start_server(dcu: SimulatedDcu, host: str = "127.0.0.1", port: int = 0) -> SimplonServer:
    """Serve SIMPLON for ``dcu`` on a background thread; ``server.url`` tells where."""
    server = SimplonServer((host, port), dcu)
    threading.Thread(target=server.serve_forever, name="simplon-http", daemon=True).start()
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="A simulated DECTRIS DCU: SIMPLON 1.8.0 over HTTP, frames on ZeroMQ")
    parser.add_argument("--model", choices=sorted(MODELS), default="eiger2_1m")
    parser.add_argument("--host", default="127.0.0.1", help="address to serve SIMPLON on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="HTTP port (default: a free one)")
    parser.add_argument("--stream", default="tcp://127.0.0.1:*", help="ZeroMQ address of the data stream")
    parser.add_argument("--serial-number", default="E-SIM-0001")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bit-depth-image", type=int, choices=(16, 32), default=16,
                        help="the images' pixel depth (32: uint32 images of the 16-bit readout); default 16")
    parser.add_argument("--user-data", default="", metavar="TEXT",
                        help="the stream's header_appendix (v2 user_data), JSON at a beamline: sample_name, "
                             "space_group, unit_cell...; default none")
    parser.add_argument("--trigger-input", default="", metavar="ADDRESS",
                        help="trigger line cabled to the external-trigger input (a ZeroMQ address); default none")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    reuse_frame_buffers()  # every image message is a fresh buffer: reuse their memory
    dcu = SimulatedDcu(MODELS[args.model], args.stream, args.serial_number, args.seed, args.trigger_input,
                       args.user_data, args.bit_depth_image)
    server = SimplonServer((args.host, args.port), dcu)
    print(json.dumps({"simplon": server.url, "stream": dcu.sender.endpoint, "model": args.model}), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        dcu.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
