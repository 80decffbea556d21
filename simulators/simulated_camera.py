"""The simulated detector, a vendor of its own (like LImA's simulator camera).

Internal trigger: frame ``n`` ends its exposure at ``t0 + n * period + exposure``. Trigger mode
``client``: each frame starts when the client's software trigger arrives, and ends an exposure later.
When generating and sending a frame takes longer than the period, frames come late rather
than being skipped, and the timestamps say so.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from photonflow.camera import AcquisitionSettings, BeamConditions, FrameSource, TakesClientTriggers
from photonflow.errors import ConfigurationError
from photonflow.simulators.diffraction import Beam, DiffractionFrames, PatternSettings, preload_calibrant
from photonflow.stream.stins import PIXEL_TYPES


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


class SimulatedCamera(FrameSource, TakesClientTriggers):
    """Frames of Poisson photon counts on a diffraction pattern, delivered on internal trigger."""

    trigger_modes = ("internal", "client")
    min_exposure = 1e-6

    def __init__(
        self,
        sensor: SimulatedSensor,
        wall_clock: Callable[[], float] = time.time,
        beamline: Callable[[], BeamConditions] | None = None,
        beam_centre: tuple[float, float] | None = None,
    ):
        """``beamline`` gives the beam conditions at each Prepare (the beamline port's ``conditions``);
        without it, and for what it cannot say, the simulation's defaults hold (``Beam``).
        ``beam_centre``: (row, column) pixels."""
        sensor.validate()
        self.sensor = sensor
        self._wall_clock = wall_clock
        self._beamline = beamline
        self.beam_centre = beam_centre or (sensor.height * 0.47, sensor.width * 0.52)
        self.beam = Beam()
        self._frames: DiffractionFrames | None = None
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

    def prepare(self, settings: AcquisitionSettings) -> None:
        if self._beamline is not None:
            self.beam = Beam.following(self._beamline())
        wanted = self.pattern_settings(settings)
        if self._frames is None or self._frames.settings != wanted:
            if self._frames is not None:
                self._frames.cancel()
            self._frames = DiffractionFrames(wanted)
        if settings.trigger_mode == "client":  # frames one by one, on a client's command: draw meanwhile
            self._frames.fill_in_background(settings.frame_count)
        else:  # on the detector's own timing: every frame on time
            self._frames.draw(settings.frame_count)

    def frames(
        self, settings: AcquisitionSettings, stop: threading.Event
    ) -> Iterator[tuple[int, np.ndarray, float]]:
        frames = self._frames
        if frames is None:
            raise RuntimeError("the simulated camera was not prepared")
        if settings.trigger_mode == "client":
            yield from self._client_triggered(frames, settings, stop)
            return
        start = time.monotonic()
        for frame_number in range(settings.frame_count):
            due = start + frame_number * settings.period + settings.exposure
            remaining = due - time.monotonic()
            if remaining > 0 and stop.wait(remaining):
                return
            if stop.is_set():
                return
            yield frame_number, frames.frame(frame_number), self._wall_clock()

    def _client_triggered(self, frames: DiffractionFrames, settings: AcquisitionSettings, stop: threading.Event):
        if self.client_triggers is None:
            raise RuntimeError("trigger mode client needs the Acquirer's client triggers")
        for frame_number in range(settings.frame_count):
            if not self.client_triggers.wait(stop):
                return
            if stop.wait(settings.exposure):
                return
            yield frame_number, frames.frame(frame_number), self._wall_clock()
