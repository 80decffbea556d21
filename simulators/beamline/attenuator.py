"""Filters in the beam and what fraction of the photons they let through.

Mass attenuation coefficients μ/ρ (cm²/g, coherent scattering included) are NIST's
(J. H. Hubbell and S. M. Seltzer, "Tables of X-Ray Mass Attenuation Coefficients",
NIST Standard Reference Database 126, https://physics.nist.gov/PhysRefData/XrayMassCoef/),
interpolated log-log between the tabulated energies as NIST recommends; an absorption edge
is two entries at the same energy (below, above).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable
from dataclasses import dataclass

from photonflow.errors import ConfigurationError, StateError

# energy (keV), μ/ρ (cm²/g)
MASS_ATTENUATION: dict[str, tuple[tuple[float, float], ...]] = {
    "Al": (
        (4.0, 3.605e2), (5.0, 1.934e2), (6.0, 1.153e2), (8.0, 5.033e1), (10.0, 2.623e1), (15.0, 7.955),
        (20.0, 3.441), (30.0, 1.128), (40.0, 0.5685),
    ),
    "Cu": (
        (4.0, 4.778e2), (5.0, 2.613e2), (6.0, 1.593e2), (8.0, 7.348e1), (8.97893, 5.304e1), (8.97893, 4.154e2),
        (10.0, 3.155e2), (15.0, 1.057e2), (20.0, 4.828e1), (30.0, 1.585e1), (40.0, 7.212),
    ),
}
DENSITY = {"Al": 2.699, "Cu": 8.96}  # g/cm³


def mass_attenuation(material: str, energy_kev: float) -> float:
    """μ/ρ in cm²/g of ``material`` at ``energy_kev``."""
    table = MASS_ATTENUATION.get(material)
    if table is None:
        raise ConfigurationError(f"unknown filter material {material!r}; known: {', '.join(MASS_ATTENUATION)}")
    energies = [energy for energy, _ in table]
    if not energies[0] <= energy_kev <= energies[-1]:
        raise ConfigurationError(
            f"{material} attenuation is tabulated from {energies[0]:g} to {energies[-1]:g} keV, got {energy_kev:g} keV"
        )
    # bisect_right: exactly at an edge, the value above it
    upper = min(bisect.bisect_right(energies, energy_kev), len(table) - 1)
    (e0, mu0), (e1, mu1) = table[upper - 1], table[upper]
    if e1 == e0:
        return mu1
    fraction = math.log(energy_kev / e0) / math.log(e1 / e0)
    return math.exp(math.log(mu0) + fraction * math.log(mu1 / mu0))


@dataclass(frozen=True)
class Filter:
    material: str
    thickness: float  # mm

    def __post_init__(self):
        if self.material not in MASS_ATTENUATION:
            raise ConfigurationError(
                f"unknown filter material {self.material!r}; known: {', '.join(MASS_ATTENUATION)}"
            )
        if not (math.isfinite(self.thickness) and self.thickness > 0):
            raise ConfigurationError(f"a filter's thickness must be positive (mm), got {self.thickness}")

    @classmethod
    def parse(cls, text: str) -> Filter:
        """``"Al 0.5"``: material and thickness in mm."""
        parts = text.replace(":", " ").split()
        try:
            material, thickness = parts
            return cls(material, float(thickness))
        except ValueError:
            raise ConfigurationError(
                f"a filter is written 'material thickness_mm', e.g. 'Al 0.5', got {text!r}"
            ) from None

    def transmission(self, energy_kev: float) -> float:
        return math.exp(-mass_attenuation(self.material, energy_kev) * DENSITY[self.material] * self.thickness / 10)

    def __str__(self) -> str:
        return f"{self.material} {self.thickness:g} mm"


class Attenuator:
    """A set of filters, each in or out of the beam."""

    def __init__(self, filters: Iterable[Filter], inserted: Iterable[int] = ()):
        self.filters = tuple(filters)
        self.inserted = [False] * len(self.filters)
        for index in inserted:
            self.insert(index)

    def _check(self, index: int) -> int:
        if not 0 <= index < len(self.filters):
            if not self.filters:
                raise StateError("this attenuator has no filters; list them in its Filters property")
            raise ConfigurationError(
                f"there is no filter {index}; filters are numbered 0 to {len(self.filters) - 1}: "
                + ", ".join(f"{i}: {f}" for i, f in enumerate(self.filters))
            )
        return index

    def insert(self, index: int) -> None:
        self.inserted[self._check(index)] = True

    def extract(self, index: int) -> None:
        self.inserted[self._check(index)] = False

    def transmission(self, energy_kev: float) -> float:
        """Fraction of the photons of ``energy_kev`` that pass the inserted filters."""
        result = 1.0
        for flt, inserted in zip(self.filters, self.inserted, strict=True):
            if inserted:
                result *= flt.transmission(energy_kev)
        return result

    @property
    def status(self) -> str:
        inside = [str(f) for f, inserted in zip(self.filters, self.inserted, strict=True) if inserted]
        return f"Filters in the beam: {', '.join(inside)}." if inside else "No filter in the beam."
