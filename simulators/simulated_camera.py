"""The simulated detector, a vendor of its own (like LImA's simulator camera).

Internal trigger: frame ``n`` starts at ``t0 + n * period`` and ends its exposure an exposure
later; where the machine cannot keep that rate the frames come late but never in a burst to
catch up, each stamped with the time it was taken, and ``timing_shortfall`` says what rate was
achieved (``frame_timing``). Trigger mode ``client``: each frame starts when the client's
software trigger arrives, and ends an exposure later. With a trigger cable
(``trigger_line``, the Acquirer's ``SimulationTriggerInput``): ``external``, one frame of the set
exposure per pulse; ``external_enable``, one frame per pulse exposed for the pulse's width;
``external_start``, the first pulse starts the internal timing. Frame n belongs to pulse n and
carries its time (the end of its exposure: the pulse's edge + exposure); no pulse, no frame.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from photonflow.camera import (
    AcquisitionSettings,
    BeamConditions,
    Checkable,
    Closable,
    FrameSource,
    KeepsTime,
    TakesClientTriggers,
)
from photonflow.errors import ConfigurationError
from photonflow.simulators.diffraction import Beam, DiffractionFrames, PatternSettings, preload_calibrant
from photonflow.simulators.frame_timing import REAL_TIME, FrameSchedule, SimulatorClock
from photonflow.simulators.trigger_input import TriggerInput
from photonflow.stream.stins import PIXEL_TYPES

EXTERNAL_MODES = ("external", "external_enable", "external_start")


@dataclass(frozen=True)
class SimulatedSensor:
    """The sensor the simulated detector pretends to have."""

    height: int = 1065
    width: int = 1030
    dtype: str = "uint16"
    seed: int = 0
    pixel_size: float = 75e-6  # metres
    sensor_material: str = "Si"
    sensor_thickness: float = 450e-6  # metres
    serial_number: str = "SIM-0001"

    def validate(self) -> None:
        if not (1 <= self.height <= 16384 and 1 <= self.width <= 16384):
            raise ConfigurationError(
                f"frame shape must be 1..16384 pixels per side, got {self.height}x{self.width}"
            )
        if self.dtype not in PIXEL_TYPES or np.dtype(self.dtype).kind not in "ui":
            integer_types = [t for t in PIXEL_TYPES if np.dtype(t).kind in "ui"]
            raise ConfigurationError(
                f"pixel type {self.dtype!r} is not supported; choose one of {', '.join(integer_types)}"
            )


class SimulatedCamera(FrameSource, TakesClientTriggers, Checkable, KeepsTime, Closable):
    """Frames of Poisson photon counts on a diffraction pattern, on internal, client or external trigger."""

    trigger_modes = ("internal", "client", *EXTERNAL_MODES)
    min_exposure = 1e-6

    def __init__(
        self,
        sensor: SimulatedSensor,
        clock: SimulatorClock = REAL_TIME,
        beamline: Callable[[], BeamConditions] | None = None,
        beam_centre: tuple[float, float] | None = None,
        trigger_line: str = "",
    ):
        """``beamline`` gives the beam conditions at each Prepare (the beamline port's ``conditions``);
        without it, and for what it cannot say, the simulation's defaults hold (``Beam``).
        ``beam_centre``: (row, column) pixels. ``trigger_line``: the address of the trigger line
        cabled to the external-trigger input; empty: no cable."""
        sensor.validate()
        self.sensor = sensor
        self.clock = clock
        self._beamline = beamline
        self.beam_centre = beam_centre or (sensor.height * 0.47, sensor.width * 0.52)
        self.beam = Beam()
        self._frames: DiffractionFrames | None = None
        self._schedule: FrameSchedule | None = None
        self.trigger_input = TriggerInput(clock.now)
        self.trigger_input.plug(trigger_line)
        preload_calibrant()
    @property
    def frame_shape(self) -> tuple[int, int]:
        return (self.sensor.height, self.sensor.width)

    @property
    def frame_dtype(self) -> str:
        return self.sensor.dtype

    def pattern_settings(self, settings: AcquisitionSettings) -> PatternSettings:
        """What the frames of a series depend on; a test rebuilds them from this."""
        return PatternSettings(
            height=self.sensor.height,
            width=self.sensor.width,
            dtype=self.sensor.dtype,
            seed=self.sensor.seed,
            exposure=settings.exposure,
            beam_centre=self.beam_centre,
            wavelength=self.beam.wavelength,
            distance=self.beam.distance,
            pixel_size=self.sensor.pixel_size,
            scale=self.beam.scale,
        )

    def describe(self, settings: AcquisitionSettings) -> dict[str, Any]:
        return {
            "name": "simulator",
            "vendor": "photonflow",
            "model": "Simulated diffraction detector",
            "serial_number": self.sensor.serial_number,
            "x_pixel_size": self.sensor.pixel_size,
            "y_pixel_size": self.sensor.pixel_size,
            "sensor_material": self.sensor.sensor_material,
            "sensor_thickness": self.sensor.sensor_thickness,
            "bit_depth_readout": np.dtype(self.sensor.dtype).itemsize * 8,
            # the sensor clips at its pixel type's largest count: that count and above are not measured
            "saturation_value": int(np.iinfo(self.sensor.dtype).max) - 1,
            "count_time": settings.exposure,
            "frame_time": settings.period,
            "trigger_mode": settings.trigger_mode,
            "seed": self.sensor.seed,
            # the geometry the frames were made for (NXdetector: beam centre in pixels, column = x)
            "beam_center_x": self.beam_centre[1],
            "beam_center_y": self.beam_centre[0],
            "distance": self.beam.distance,
            "incident_wavelength": self.beam.wavelength,
            "photon_energy": self.beam.photon_energy,
            "beam_intensity_scale": self.beam.scale,
        }

    def check(self, settings: AcquisitionSettings) -> None:
        if settings.trigger_mode in EXTERNAL_MODES and not self.trigger_input.cabled:
            raise ConfigurationError(
                f"trigger mode {settings.trigger_mode!r} needs a trigger cable, and this simulated detector "
                "has none: set the Acquirer's SimulationTriggerInput property to the trigger line's address "
                "(e.g. ipc://var/run/omega.trigger), then Init")

    def prepare(self, settings: AcquisitionSettings) -> None:
        self.check(settings)
        if self._beamline is not None:
            self.beam = Beam.following(self._beamline())
        wanted = self.pattern_settings(settings)
        if self._frames is None or self._frames.settings != wanted:
            if self._frames is not None:
                self._frames.cancel()
            self._frames = DiffractionFrames(wanted)
        if settings.trigger_mode == "client":  # frames one by one, on a client's command: draw meanwhile
            self._frames.fill_in_background(settings.frame_count)
        else:  # on the detector's own timing or the trigger line's: every frame on time
            self._frames.draw(settings.frame_count)
        self.trigger_input.clear()  # pulses before the series are not its own
        self._schedule = None

    def frames(
        self, settings: AcquisitionSettings, stop: threading.Event
    ) -> Iterator[tuple[int, np.ndarray, float]]:
        frames = self._frames
        if frames is None:
            raise RuntimeError("the simulated camera was not prepared")
        mode = settings.trigger_mode
        if mode == "client":
            yield from self._client_triggered(frames, settings, stop)
        elif mode in ("external", "external_enable"):
            yield from self._pulse_per_frame(frames, settings, stop)
        else:
            origin = self.clock.now()
            if mode == "external_start":
                pulse = self.trigger_input.take(stop.is_set)
                if pulse is None:
                    return
                origin = pulse.time
            yield from self._on_own_timing(frames, settings, stop, origin)

    def _on_own_timing(self, frames: DiffractionFrames, settings: AcquisitionSettings, stop: threading.Event,
                       origin: float) -> Iterator[tuple[int, np.ndarray, float]]:
        self._schedule = schedule = FrameSchedule(origin, settings.period)
        for frame_number in range(settings.frame_count):
            if self.clock.wait_until(stop, schedule.due(frame_number) + settings.exposure):
                return
            end = self.clock.now()  # the achieved time: later than due when the machine fell behind
            schedule.taken(frame_number, end - settings.exposure)
            yield frame_number, frames.frame(frame_number), end

    def _pulse_per_frame(self, frames: DiffractionFrames, settings: AcquisitionSettings, stop: threading.Event):
        for frame_number in range(settings.frame_count):
            pulse = self.trigger_input.take(stop.is_set)
            if pulse is None:
                return
            gated = settings.trigger_mode == "external_enable" and pulse.width > 0
            end = pulse.time + (pulse.width if gated else settings.exposure)
            if self.clock.wait_until(stop, end):
                return
            yield frame_number, frames.frame(frame_number), end

    def _client_triggered(self, frames: DiffractionFrames, settings: AcquisitionSettings, stop: threading.Event):
        if self.client_triggers is None:
            raise RuntimeError("trigger mode client needs the Acquirer's client triggers")
        for frame_number in range(settings.frame_count):
            if not self.client_triggers.wait(stop):
                return
            if self.clock.wait(stop, settings.exposure):
                return
            yield frame_number, frames.frame(frame_number), self.clock.now()

    def timing_shortfall(self) -> str | None:
        return self._schedule.shortfall() if self._schedule is not None else None

    def close(self) -> None:
        self.trigger_input.unplug()
