"""A 3-D phantom for the simulated imaging cameras: the ellipsoids of Kak & Slaney's 3-D
Shepp-Logan head (Toft's modified densities), each turned about the rotation axis only.

Why: a tomography of nothing reconstructs nothing; with this object in the beam a
reconstruction can be compared with the truth (``true_slice``). Every ellipsoid has one axis
along the rotation axis, so its chord along the beam has a closed form per detector row and
column (no ray marching): fast enough to draw each frame when its angle is known.
Coordinates: x across the beam (detector columns), y along the beam, z up the rotation axis
(detector rows), in units of the phantom's radius.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# density, semi-axes (a, b, c), centre (x, y, z), angle about z in degrees
SHEPP_LOGAN_3D = (
    (1.0, (0.69, 0.92, 0.81), (0.0, 0.0, 0.0), 0.0),
    (-0.8, (0.6624, 0.874, 0.78), (0.0, -0.0184, 0.0), 0.0),
    (-0.2, (0.11, 0.31, 0.22), (0.22, 0.0, 0.0), -18.0),
    (-0.2, (0.16, 0.41, 0.28), (-0.22, 0.0, 0.0), 18.0),
    (0.1, (0.21, 0.25, 0.41), (0.0, 0.35, -0.15), 0.0),
    (0.1, (0.046, 0.046, 0.05), (0.0, 0.1, 0.25), 0.0),
    (0.1, (0.046, 0.046, 0.05), (0.0, -0.1, 0.25), 0.0),
    (0.1, (0.046, 0.023, 0.05), (-0.08, -0.605, 0.0), 0.0),
    (0.1, (0.023, 0.023, 0.02), (0.0, -0.606, 0.0), 0.0),
    (0.1, (0.023, 0.046, 0.02), (0.06, -0.605, 0.0), 0.0),
)


@dataclass(frozen=True)
class Phantom:
    """The phantom's size and attenuation: ``radius`` in m, ``attenuation`` (1/m) of density 1."""

    radius: float = 6e-3
    attenuation: float = 400.0

    def line_integrals(self, angle_deg: float, shape: tuple[int, int], pixel_size: float,
                       shift: float = 0.0) -> np.ndarray:
        """The attenuation integrated along the beam at each pixel with the sample turned by
        ``angle_deg`` and moved ``shift`` m across the beam; the rotation axis at the frame's middle."""
        rows, columns = shape
        scale = pixel_size / self.radius
        u = ((np.arange(columns) + 0.5 - columns / 2) * scale - shift / self.radius).astype(np.float32)
        z = ((rows / 2 - (np.arange(rows) + 0.5)) * scale).astype(np.float32)
        theta = np.radians(angle_deg)
        total = np.zeros(shape, dtype=np.float32)
        for density, (a, b, c), (x0, y0, z0), phi in SHEPP_LOGAN_3D:
            s2 = 1.0 - ((z - z0) / c) ** 2
            inside = np.nonzero(s2 > 0)[0]
            if inside.size == 0:
                continue
            alpha = np.radians(phi) + theta
            w2 = a * a * np.cos(alpha) ** 2 + b * b * np.sin(alpha) ** 2
            centre = x0 * np.cos(theta) - y0 * np.sin(theta)
            reach = np.sqrt(w2)
            cols = np.nonzero(np.abs(u - centre) < reach)[0]
            if cols.size == 0:
                continue
            top, bottom, left, right = inside[0], inside[-1] + 1, cols[0], cols[-1] + 1
            chord2 = s2[top:bottom, None] * w2 - (u[None, left:right] - centre) ** 2
            total[top:bottom, left:right] += (density * 2 * a * b / w2) * np.sqrt(np.maximum(chord2, 0.0))
        return total * np.float32(self.attenuation * self.radius)

    def true_slice(self, row: int, shape: tuple[int, int], pixel_size: float) -> np.ndarray:
        """The attenuation map (1/m) of the slice detector row ``row`` sees, on a square grid of
        the detector's columns: [y along the beam, x across it] at angle 0."""
        rows, columns = shape
        scale = pixel_size / self.radius
        grid = (np.arange(columns) + 0.5 - columns / 2) * scale
        x, y = grid[None, :], grid[:, None]
        z = (rows / 2 - (row + 0.5)) * scale
        values = np.zeros((columns, columns))
        for density, (a, b, c), (x0, y0, z0), phi in SHEPP_LOGAN_3D:
            s2 = 1.0 - ((z - z0) / c) ** 2
            if s2 <= 0:
                continue
            cos, sin = np.cos(np.radians(phi)), np.sin(np.radians(phi))
            along, across = (x - x0) * cos + (y - y0) * sin, -(x - x0) * sin + (y - y0) * cos
            values += density * ((along / a) ** 2 + (across / b) ** 2 <= s2)
        return values * self.attenuation
