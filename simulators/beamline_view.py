"""What a simulated detector needs to know of the beamline when it is armed: wavelength,
sample-detector distance and how much beam reaches the sample (ring current / nominal x
attenuator transmission x shutter open).

The devices are read through a ``read(device, attribute)`` port that the Tango layer
provides (simulators import no Tango); each device is optional, and one that cannot be read
leaves its default in place, with a note saying so, so a detector still arms without a beamline.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from photonflow.simulators.diffraction import DEFAULT_DISTANCE, DEFAULT_WAVELENGTH

log = logging.getLogger(__name__)

Reader = Callable[[str, str], Any]


@dataclass(frozen=True)
class BeamlineNames:
    """Tango names of the beamline devices to follow; empty: not followed."""

    ring: str = ""
    monochromator: str = ""
    shutter: str = ""
    attenuator: str = ""
    distance_motor: str = ""  # its Position in mm


@dataclass(frozen=True)
class BeamConditions:
    wavelength: float = DEFAULT_WAVELENGTH  # m
    distance: float = DEFAULT_DISTANCE  # m
    ring_fraction: float = 1.0  # ring current / nominal current
    transmission: float = 1.0
    shutter_open: bool = True
    notes: tuple[str, ...] = field(default=(), compare=False)

    @property
    def scale(self) -> float:
        return self.ring_fraction * self.transmission * (1.0 if self.shutter_open else 0.0)

    @property
    def photon_energy(self) -> float:
        """eV"""
        return 12398.419843320026 / (self.wavelength * 1e10)


class BeamlineView:
    def __init__(self, names: BeamlineNames, read: Reader, defaults: BeamConditions = BeamConditions()):
        self.names = names
        self._read = read
        self.defaults = defaults

    def _value(self, device: str, attribute: str, notes: list[str]) -> Any:
        try:
            return self._read(device, attribute)
        except Exception as error:  # a device that is down must not stop the detector from arming
            note = f"cannot read {device}/{attribute} ({error}); using the default"
            log.warning(note)
            notes.append(note)
            return None

    @staticmethod
    def _positive(value: Any) -> float | None:
        try:
            number = float(value)
        except (TypeError, ValueError):
            return None
        return number if math.isfinite(number) and number > 0 else None

    def read(self) -> BeamConditions:
        """The conditions now; what cannot be read keeps its default."""
        names, conditions, notes = self.names, self.defaults, []
        if names.monochromator:
            wavelength = self._positive(self._value(names.monochromator, "Wavelength", notes))  # Å
            if wavelength is not None:
                conditions = replace(conditions, wavelength=wavelength * 1e-10)
        if names.distance_motor:
            distance = self._positive(self._value(names.distance_motor, "Position", notes))  # mm
            if distance is not None:
                conditions = replace(conditions, distance=distance * 1e-3)
        if names.ring:
            current = self._value(names.ring, "Current", notes)
            nominal = self._positive(self._value(names.ring, "NominalCurrent", notes)) if current is not None else None
            if current is not None and nominal is not None:
                conditions = replace(conditions, ring_fraction=max(float(current), 0.0) / nominal)
        if names.attenuator:
            transmission = self._value(names.attenuator, "Transmission", notes)
            if transmission is not None and math.isfinite(float(transmission)):
                conditions = replace(conditions, transmission=min(max(float(transmission), 0.0), 1.0))
        if names.shutter:
            state = self._value(names.shutter, "State", notes)
            if state is not None:
                conditions = replace(conditions, shutter_open=str(state) == "OPEN")
        return replace(conditions, notes=tuple(notes))
