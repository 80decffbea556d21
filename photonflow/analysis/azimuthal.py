"""Azimuthal integration with pyFAI from a detector's geometry, and the peaks of an I(q): shared
by the live per-frame analysis and the DataManager's per-run integration."""

from __future__ import annotations

import numpy as np


def azimuthal_integrator(geometry: dict):
    """A pyFAI AzimuthalIntegrator for an ``nxmx_geometry``."""
    from pyFAI.integrator.azimuthal import AzimuthalIntegrator

    return AzimuthalIntegrator(
        dist=geometry["distance"], poni1=geometry["beam_center_y"] * geometry["y_pixel_size"],
        poni2=geometry["beam_center_x"] * geometry["x_pixel_size"], pixel1=geometry["y_pixel_size"],
        pixel2=geometry["x_pixel_size"], wavelength=geometry["wavelength"],
    )


def find_peaks(q: np.ndarray, intensity: np.ndarray, prominence: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Peaks of I(q) standing out by ``prominence`` x (max - median) above their surroundings;
    positions refined by a parabola through the top three points."""
    from scipy.signal import find_peaks as scipy_peaks

    finite = np.nan_to_num(intensity, nan=0.0)
    if finite.size < 3:
        return np.zeros(0), np.zeros(0)
    height = float(finite.max() - np.median(finite))
    indices, _ = scipy_peaks(finite, prominence=max(prominence * height, np.finfo(float).tiny))
    positions, heights = [], []
    step = np.gradient(q)
    for index in indices:
        left, centre, right = finite[index - 1], finite[index], finite[index + 1]
        curvature = left - 2 * centre + right
        offset = 0.5 * (left - right) / curvature if curvature < 0 else 0.0
        positions.append(q[index] + offset * step[index])
        heights.append(centre)
    return np.asarray(positions, dtype=np.float64), np.asarray(heights, dtype=np.float64)


