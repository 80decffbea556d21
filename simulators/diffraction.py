"""Diffraction-like frames for the simulated detector: Poisson photon counts on the powder
rings of a real calibrant (CeO2 by default, d-spacings from pyFAI) at the geometry of the
beamline (wavelength, sample-detector distance, pixel size, beam centre), plus Bragg spots
and air scatter, reproducible from a seed. Ring ``k`` of d-spacing ``d`` sits at
2θ = 2·asin(λ / 2d), ``distance · tan(2θ) / pixel_size`` pixels from the beam centre.

Drawing a fresh Poisson realisation of a 1065x1030 frame takes ~100 ms, far longer than a
2 ms frame period. So frames come from a bank of independent realisations, and frame ``n``
is assembled from horizontal bands of bank entries picked by the digits of ``n``: every
pixel is still an honest Poisson draw, consecutive frames differ, and frame ``n`` is unique
for ``n < bank_size ** bands`` (65 536 with the defaults). Each (entry, band) block of the
bank has its own seed and is drawn when first needed, or beforehand: at arming (``draw``) for a
series on the detector's own timing, so no frame is late, or in a thread
(``fill_in_background``) for frames triggered one by one by a client, whose arming then costs
only the mean pattern (~50 ms instead of 1.6 s). A series draws only the blocks it uses. ``frame(n)`` is a pure
function of the settings and ``n``, so a test regenerates exactly what was sent.
"""

from __future__ import annotations

import functools
import math
import threading
from dataclasses import dataclass

import numpy as np

DEFAULT_BANK_SIZE = 16
DEFAULT_BANDS = 4
HC_KEV_ANGSTROM = 12.398419843320026
DEFAULT_WAVELENGTH = HC_KEV_ANGSTROM / 20.0 * 1e-10  # m, 20 keV
DEFAULT_DISTANCE = 0.12  # m
DEFAULT_PIXEL_SIZE = 75e-6  # m
MAX_TWO_THETA = math.radians(80.0)  # rings beyond are left out (tan grows without bound)


@functools.lru_cache(maxsize=16)
def calibrant_d_spacings(name: str) -> tuple[float, ...]:
    """The calibrant's d-spacings in Å, largest first (pyFAI's calibrant library)."""
    from pyFAI.calibrant import get_calibrant, names  # ~1 s to import: only when frames are made

    try:
        calibrant = get_calibrant(name)
    except KeyError:
        raise ValueError(f"unknown calibrant {name!r}; pyFAI knows {', '.join(sorted(names()))}") from None
    # pyFAI 2025.07 made it a property and deprecated the getter
    spacings = calibrant.dspacing if hasattr(type(calibrant), "dspacing") else calibrant.get_dSpacing()
    return tuple(sorted((float(d) for d in spacings if d > 0), reverse=True))


def ring_radii(settings: PatternSettings, max_radius: float = math.inf) -> list[float]:
    """Radii in pixels of the calibrant's rings, innermost first, up to ``max_radius``."""
    wavelength_angstrom = settings.wavelength * 1e10
    radii = []
    for d_spacing in calibrant_d_spacings(settings.calibrant):
        ratio = wavelength_angstrom / (2 * d_spacing)
        if ratio >= 1:
            break
        two_theta = 2 * math.asin(ratio)
        if two_theta > MAX_TWO_THETA:
            break
        radius = settings.distance * math.tan(two_theta) / settings.pixel_size
        if radius > max_radius:
            break
        radii.append(radius)
    return radii


def preload_calibrant(name: str = "CeO2") -> None:
    """Read the calibrant (and import pyFAI, ~1.8 s) in a daemon thread now, at the simulator's
    start, rather than when the first series is armed."""
    threading.Thread(target=calibrant_d_spacings, args=(name,), name="preload-calibrant", daemon=True).start()


@dataclass(frozen=True)
class Beam:
    """The beam simulated frames are drawn for: what the beamline gave, and this simulation's
    defaults (20 keV, 120 mm, the nominal intensity) where it gave nothing."""

    wavelength: float = DEFAULT_WAVELENGTH  # m
    distance: float = DEFAULT_DISTANCE  # m
    scale: float = 1.0  # ring current / nominal x attenuator transmission x shutter open

    @classmethod
    def following(cls, conditions) -> Beam:
        """``conditions``: a reading of the beamline port (photonflow.acquisition.beamline's
        BeamConditions): ``wavelength`` and ``distance`` in m, None where unknown, and
        ``intensity_scale``."""
        wavelength, distance = conditions.wavelength, conditions.distance
        return cls(DEFAULT_WAVELENGTH if wavelength is None else wavelength,
                   DEFAULT_DISTANCE if distance is None else distance, conditions.intensity_scale)

    @property
    def photon_energy(self) -> float:
        """eV"""
        return HC_KEV_ANGSTROM * 1000.0 / (self.wavelength * 1e10)


@dataclass(frozen=True)
class PatternSettings:
    """Everything the frames depend on; equal settings give identical frames."""

    height: int = 1065
    width: int = 1030
    dtype: str = "uint16"
    seed: int = 0
    exposure: float = 0.001
    # (row, column) in pixels from the outer corner of the first pixel (pixel i spans i..i+1,
    # as in pyFAI: poni1 = row * pixel_size); None = near the middle
    beam_centre: tuple[float, float] | None = None
    photon_flux: float = 20000.0  # photons per pixel per second on the brightest ring
    calibrant: str = "CeO2"  # a name pyFAI's calibrant library knows
    wavelength: float = DEFAULT_WAVELENGTH  # m
    distance: float = DEFAULT_DISTANCE  # m, sample to detector
    pixel_size: float = DEFAULT_PIXEL_SIZE  # m
    # beam intensity relative to nominal: ring current / nominal x attenuator transmission x shutter open
    scale: float = 1.0
    bank_size: int = DEFAULT_BANK_SIZE
    bands: int = DEFAULT_BANDS


def expected_counts(settings: PatternSettings) -> np.ndarray:
    """Mean photon count per pixel for one exposure: background, rings, spots, beamstop."""
    for name in ("wavelength", "distance", "pixel_size"):
        value = getattr(settings, name)
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive number of metres, got {value}")
    if not (math.isfinite(settings.scale) and settings.scale >= 0):
        raise ValueError(f"the intensity scale must be >= 0, got {settings.scale}")
    rng = np.random.default_rng([settings.seed, 0])
    rows, columns = settings.height, settings.width
    centre_row, centre_column = settings.beam_centre or (rows * 0.47, columns * 0.52)
    y, x = np.ogrid[:rows, :columns]
    radius = np.hypot(y + 0.5 - centre_row, x + 0.5 - centre_column).astype(np.float32)
    max_radius = float(np.hypot(max(centre_row, rows - centre_row), max(centre_column, columns - centre_column)))

    intensity = np.full((rows, columns), 0.02, dtype=np.float32)  # diffuse background
    intensity += 0.3 * np.exp(-radius / (0.15 * max_radius))  # air scatter near the beam
    for order, ring_radius in enumerate(ring_radii(settings, max_radius + 20), start=1):
        width = 1.2 + 0.002 * ring_radius  # pixels (sigma); wider further out
        band = np.abs(radius - ring_radius) < 8 * width  # the rest adds nothing visible
        intensity[band] += (1.0 / math.sqrt(order)) * np.exp(-0.5 * ((radius[band] - ring_radius) / width) ** 2)
    spot_count = max(4, rows * columns // 20000)
    spot_rows = rng.uniform(0, rows, spot_count)
    spot_columns = rng.uniform(0, columns, spot_count)
    spot_heights = rng.uniform(0.5, 4.0, spot_count)
    for spot_row, spot_column, height in zip(spot_rows, spot_columns, spot_heights, strict=True):
        top, bottom = int(max(spot_row - 6, 0)), int(min(spot_row + 7, rows))
        left, right = int(max(spot_column - 6, 0)), int(min(spot_column + 7, columns))
        if top >= bottom or left >= right:
            continue
        patch_y, patch_x = np.ogrid[top:bottom, left:right]
        intensity[top:bottom, left:right] += height * np.exp(
            -((patch_y - spot_row) ** 2 + (patch_x - spot_column) ** 2) / (2 * 1.2**2)
        )
    intensity[radius < max(2.0, 0.015 * max_radius)] = 0.0  # beamstop shadow
    return intensity * (settings.photon_flux * settings.exposure * settings.scale)


class DiffractionFrames:
    """Frame ``n`` of a simulated series, generated on demand from a bank of realisations."""

    def __init__(self, settings: PatternSettings):
        if settings.height < 1 or settings.width < 1:
            raise ValueError(f"frame shape must be positive, got {settings.height}x{settings.width}")
        if settings.bank_size < 1:
            raise ValueError("bank_size must be at least 1")
        self.settings = settings
        self.dtype = np.dtype(settings.dtype)
        self.shape = (settings.height, settings.width)
        self._mean = expected_counts(settings)
        self._limit = np.iinfo(self.dtype).max if self.dtype.kind in "ui" else None
        bands = max(1, min(settings.bands, settings.height))
        self._band_edges = np.linspace(0, settings.height, bands + 1).astype(int)
        self._blocks: dict[tuple[int, int], np.ndarray] = {}  # (entry, band) -> rows of that band
        self._lock = threading.Lock()
        self._cancelled = threading.Event()

    @property
    def unique_frames(self) -> int:
        """How many consecutive frame numbers give distinct frames."""
        return self.settings.bank_size ** (len(self._band_edges) - 1)

    def _entries(self, frame_number: int) -> list[tuple[int, int]]:
        """The (entry, band) blocks frame ``frame_number`` is made of."""
        digits, bank_size, blocks = frame_number, self.settings.bank_size, []
        for band in range(len(self._band_edges) - 1):
            # Rotating by the band index keeps the bands of frame 0 from all being entry 0.
            blocks.append(((digits + band) % bank_size, band))
            digits //= bank_size
        return blocks

    def _block(self, entry: int, band: int) -> np.ndarray:
        block = self._blocks.get((entry, band))
        if block is not None:
            return block
        top, bottom = self._band_edges[band], self._band_edges[band + 1]
        counts = np.random.default_rng([self.settings.seed, 1, entry, band]).poisson(self._mean[top:bottom])
        if self._limit is not None:
            np.minimum(counts, self._limit, out=counts)
        with self._lock:  # two threads may draw the same block: equal seeds, equal blocks; keep one
            return self._blocks.setdefault((entry, band), counts.astype(self.dtype))

    def frame(self, frame_number: int) -> np.ndarray:
        """A new array holding frame ``frame_number`` (callers may hand it to ZeroMQ)."""
        if frame_number < 0:
            raise ValueError(f"frame number must be >= 0, got {frame_number}")
        out = np.empty(self.shape, dtype=self.dtype)
        for (entry, band), top, bottom in zip(
            self._entries(frame_number), self._band_edges[:-1], self._band_edges[1:], strict=True
        ):
            out[top:bottom] = self._block(entry, band)
        return out

    def draw(self, frames: int) -> None:
        """Draw now the blocks frames ``0..frames-1`` need, in the order they need them (a series
        on the detector's own timing must not wait for one); ``cancel`` ends it early."""
        last = min(frames, self.unique_frames)
        total = self.settings.bank_size * (len(self._band_edges) - 1)
        for frame_number in range(last):
            if self._cancelled.is_set() or len(self._blocks) == total:
                return
            for entry, band in self._entries(frame_number):
                self._block(entry, band)

    def fill_in_background(self, frames: int) -> threading.Thread:
        """``draw`` in a daemon thread (numpy draws without the GIL): for frames that come one
        per client trigger, so arming does not wait for the bank."""
        thread = threading.Thread(target=self.draw, args=(frames,), name="diffraction-bank", daemon=True)
        thread.start()
        return thread

    def cancel(self) -> None:
        """Stop drawing ahead (these frames are no longer wanted)."""
        self._cancelled.set()
