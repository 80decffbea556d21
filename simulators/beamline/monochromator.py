"""A double-crystal monochromator: photon energy <-> wavelength <-> Bragg angle, the Bragg axis
being a Motor, so a change of energy takes the time the axis needs."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from photonflow.errors import ConfigurationError
from photonflow.simulators.beamline.motor import LimitError, Motor

HC_KEV_ANGSTROM = 12.398419843320026  # h·c in keV·Å (CODATA 2018)
SI_111_D_SPACING = 3.13560  # Å, Si(111) at room temperature


def wavelength_from_energy(energy_kev: float) -> float:
    """Wavelength in Å of a photon of ``energy_kev``."""
    if not energy_kev > 0:
        raise ConfigurationError(f"the photon energy must be positive, got {energy_kev} keV")
    return HC_KEV_ANGSTROM / energy_kev


def energy_from_wavelength(wavelength: float) -> float:
    """Photon energy in keV of X-rays of ``wavelength`` Å."""
    if not wavelength > 0:
        raise ConfigurationError(f"the wavelength must be positive, got {wavelength} Å")
    return HC_KEV_ANGSTROM / wavelength


def bragg_angle(energy_kev: float, d_spacing: float = SI_111_D_SPACING) -> float:
    """Bragg angle in degrees that reflects ``energy_kev`` off planes ``d_spacing`` Å apart."""
    ratio = wavelength_from_energy(energy_kev) / (2 * d_spacing)
    if ratio > 1:
        raise ConfigurationError(
            f"{energy_kev} keV cannot be reflected by planes {d_spacing} Å apart: the lowest energy is "
            f"{HC_KEV_ANGSTROM / (2 * d_spacing):.4f} keV"
        )
    return math.degrees(math.asin(ratio))


def energy_from_bragg_angle(angle_deg: float, d_spacing: float = SI_111_D_SPACING) -> float:
    return energy_from_wavelength(2 * d_spacing * math.sin(math.radians(angle_deg)))


class Monochromator:
    """Si(111) by default; energies in keV, wavelengths in Å, angles in degrees."""

    def __init__(
        self,
        energy: float = 12.4,
        low_energy: float = 5.0,
        high_energy: float = 25.0,
        d_spacing: float = SI_111_D_SPACING,
        bragg_velocity: float = 2.0,
        bragg_acceleration: float = 8.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        if not 0 < low_energy < high_energy:
            raise ConfigurationError(
                f"the energy range must be 0 < low < high, got {low_energy} to {high_energy} keV"
            )
        self.d_spacing = d_spacing
        self.low_energy, self.high_energy = float(low_energy), float(high_energy)
        self.check_energy(energy)
        # A higher energy is a smaller angle: the high energy limit is the low angle limit.
        self.bragg = Motor(
            "bragg",
            position=bragg_angle(energy, d_spacing),
            velocity=bragg_velocity,
            acceleration=bragg_acceleration,
            low=bragg_angle(high_energy, d_spacing),
            high=bragg_angle(low_energy, d_spacing),
            unit="deg",
            clock=clock,
        )

    def check_energy(self, energy: float) -> float:
        if not (math.isfinite(energy) and self.low_energy <= energy <= self.high_energy):
            raise LimitError(
                f"energy {energy:g} keV is outside the monochromator's range; choose between "
                f"{self.low_energy:g} and {self.high_energy:g} keV"
            )
        return float(energy)

    @property
    def energy(self) -> float:
        """keV, from where the Bragg axis is now."""
        return energy_from_bragg_angle(self.bragg.position, self.d_spacing)

    @property
    def target_energy(self) -> float:
        return energy_from_bragg_angle(self.bragg.target, self.d_spacing)

    @property
    def wavelength(self) -> float:
        """Å"""
        return wavelength_from_energy(self.energy)

    @property
    def state(self) -> str:
        return "MOVING" if self.bragg.moving else "ON"

    @property
    def status(self) -> str:
        if self.bragg.moving:
            return f"Moving to {self.target_energy:.4f} keV, at {self.energy:.4f} keV."
        return f"At {self.energy:.4f} keV ({self.wavelength:.5f} Å, Bragg angle {self.bragg.position:.4f}°)."

    def move_energy(self, energy: float) -> float:
        """Start moving the Bragg axis to ``energy`` keV; returns the time it takes (s)."""
        return self.bragg.move_to(bragg_angle(self.check_energy(energy), self.d_spacing))

    def move_wavelength(self, wavelength: float) -> float:
        return self.move_energy(energy_from_wavelength(wavelength))

    def stop(self) -> None:
        self.bragg.stop()
