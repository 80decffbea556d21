"""Diffraction-like frames for the simulated detector: Poisson photon counts on a pattern of
powder rings and Bragg spots around a beam centre, reproducible from a seed.

Drawing a fresh Poisson realisation of a 1065x1030 frame takes ~50 ms, far longer than a
2 ms frame period. So ``prepare`` draws a bank of independent realisations once, and frame
``n`` is assembled from horizontal bands of bank entries picked by the digits of ``n``:
every pixel is still an honest Poisson draw, consecutive frames differ, and frame ``n``
is unique for ``n < bank_size ** bands`` (65 536 with the defaults). ``frame(n)`` is a
pure function of the settings and ``n``, so a test regenerates exactly what was sent.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_BANK_SIZE = 16
DEFAULT_BANDS = 4


@dataclass(frozen=True)
class PatternSettings:
    """Everything the frames depend on; equal settings give identical frames."""

    height: int = 1065
    width: int = 1030
    dtype: str = "uint16"
    seed: int = 0
    exposure: float = 0.001
    beam_centre: tuple[float, float] | None = None  # (row, column); None = near the middle
    photon_flux: float = 20000.0  # photons per pixel per second on the brightest ring
    bank_size: int = DEFAULT_BANK_SIZE
    bands: int = DEFAULT_BANDS


def expected_counts(settings: PatternSettings) -> np.ndarray:
    """Mean photon count per pixel for one exposure: background, rings, spots, beamstop."""
    rng = np.random.default_rng([settings.seed, 0])
    rows, columns = settings.height, settings.width
    centre_row, centre_column = settings.beam_centre or (rows * 0.47, columns * 0.52)
    y, x = np.ogrid[:rows, :columns]
    radius = np.hypot(y - centre_row, x - centre_column).astype(np.float32)
    max_radius = float(np.hypot(max(centre_row, rows - centre_row), max(centre_column, columns - centre_column)))

    intensity = np.full((rows, columns), 0.02, dtype=np.float32)  # diffuse background
    intensity += 0.3 * np.exp(-radius / (0.15 * max_radius))  # air scatter near the beam
    for ring in range(1, 7):  # powder rings, fainter further out
        ring_radius = max_radius * ring / 8.0
        width = 1.5 + 0.4 * ring
        intensity += (1.0 / ring) * np.exp(-0.5 * ((radius - ring_radius) / width) ** 2)
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
    return intensity * (settings.photon_flux * settings.exposure)


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
        mean = expected_counts(settings)
        rng = np.random.default_rng([settings.seed, 1])
        limit = np.iinfo(self.dtype).max if self.dtype.kind in "ui" else None
        bank = np.empty((settings.bank_size, *self.shape), dtype=self.dtype)
        for index in range(settings.bank_size):
            counts = rng.poisson(mean)
            if limit is not None:
                np.minimum(counts, limit, out=counts)
            bank[index] = counts
        self._bank = bank
        bands = max(1, min(settings.bands, settings.height))
        self._band_edges = np.linspace(0, settings.height, bands + 1).astype(int)

    @property
    def unique_frames(self) -> int:
        """How many consecutive frame numbers give distinct frames."""
        return self.settings.bank_size ** (len(self._band_edges) - 1)

    def frame(self, frame_number: int) -> np.ndarray:
        """A new array holding frame ``frame_number`` (callers may hand it to ZeroMQ)."""
        if frame_number < 0:
            raise ValueError(f"frame number must be >= 0, got {frame_number}")
        out = np.empty(self.shape, dtype=self.dtype)
        digits = frame_number
        bank_size = self.settings.bank_size
        for band, (top, bottom) in enumerate(zip(self._band_edges[:-1], self._band_edges[1:], strict=True)):
            # Rotating by the band index keeps the bands of frame 0 from all being entry 0.
            entry = (digits + band) % bank_size
            digits //= bank_size
            out[top:bottom] = self._bank[entry, top:bottom]
        return out
