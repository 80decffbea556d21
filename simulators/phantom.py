"""A 3-D phantom for the simulated imaging cameras: the ellipsoids of Kak & Slaney's 3-D
Shepp-Logan head (Toft's modified densities), each turned about the rotation axis only.

Why: a tomography of nothing reconstructs nothing; with this object in the beam a
reconstruction can be compared with the truth (``true_slice``). Every ellipsoid has one axis
along the rotation axis, so its chord along the beam has a closed form per detector row and
column (no ray marching): fast enough to draw each frame when its angle is known.

``ProjectionFrames`` is what every simulated imaging camera (Andor, Tucsen) sees through it: the
flat field of the beam times exp(-line integrals) at the frame's angle, with the sample where
the beamline's sample translation put it, plus photon noise. One module for all vendors: each
vendor's simulator only says its frame shape, pixel size, pixel type and when a frame is taken.
Coordinates: x across the beam (detector columns), y along the beam, z up the rotation axis
(detector rows), in units of the phantom's radius.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from photonflow.camera import BeamConditions

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

    @classmethod
    def filling(cls, field_of_view: float) -> Phantom:
        """A phantom a good fraction of a field of view ``field_of_view`` m wide (its widest
        ellipsoid spans 55 % of it), as opaque as the default one (the same attenuation x radius):
        any camera, binning or ROI sees it as clearly."""
        radius = FILLED_FRACTION * field_of_view / (2 * 0.92)
        return cls(radius, cls.attenuation * cls.radius / radius)

    def projector(self, shape: tuple[int, int], pixel_size: float) -> Projector:
        """What the line integrals on this detector depend on, computed once (see ``Projector``)."""
        return Projector(self, shape, pixel_size)

    def line_integrals(self, angle_deg: float, shape: tuple[int, int], pixel_size: float,
                       shift: float = 0.0) -> np.ndarray:
        """The attenuation integrated along the beam at each pixel with the sample turned by
        ``angle_deg`` and moved ``shift`` m across the beam; the rotation axis at the frame's middle."""
        return self.projector(shape, pixel_size).line_integrals(angle_deg, shift)

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


FILLED_FRACTION = 0.55  # of the field of view's width the phantom spans (Phantom.filling)


class Projector:
    """The phantom's line integrals on one detector: what depends only on the geometry (each
    column's position across the beam, each ellipsoid's rows and their squared half-widths) is
    computed once; a frame then costs one chord per ellipsoid over its own rows and columns."""

    def __init__(self, phantom: Phantom, shape: tuple[int, int], pixel_size: float):
        rows, columns = shape
        self.phantom, self.shape = phantom, shape
        scale = pixel_size / phantom.radius
        self._u = ((np.arange(columns) + 0.5 - columns / 2) * scale).astype(np.float32)  # increasing
        z = ((rows / 2 - (np.arange(rows) + 0.5)) * scale).astype(np.float32)
        self._ellipsoids = []  # (density, a, b, x0, y0, phi, top, bottom, s2 of those rows as a column)
        for density, (a, b, c), (x0, y0, z0), phi in SHEPP_LOGAN_3D:
            s2 = 1.0 - ((z - z0) / c) ** 2
            inside = np.nonzero(s2 > 0)[0]
            if inside.size:
                top, bottom = int(inside[0]), int(inside[-1]) + 1
                self._ellipsoids.append((density, a, b, x0, y0, np.radians(phi), top, bottom,
                                         s2[top:bottom, None].astype(np.float32)))
        self._scale = np.float32(phantom.attenuation * phantom.radius)

    def line_integrals(self, angle_deg: float, shift: float = 0.0) -> np.ndarray:
        """As ``Phantom.line_integrals``, on this detector."""
        total = np.zeros(self.shape, dtype=np.float32)
        integrals, box = self.shadow(angle_deg, shift)
        total[box] = integrals
        return total

    def shadow(self, angle_deg: float, shift: float = 0.0) -> tuple[np.ndarray, tuple[slice, slice]]:
        """The line integrals over the rectangle of the frame the phantom shadows, and that
        rectangle (rows, columns): outside it they are 0, and a camera need not compute exp(-0)."""
        theta = np.radians(angle_deg)
        cos, sin = np.cos(theta), np.sin(theta)
        offset = shift / self.phantom.radius
        u = self._u
        chords = []
        for density, a, b, x0, y0, phi, top, bottom, s2 in self._ellipsoids:
            w2 = a * a * np.cos(phi + theta) ** 2 + b * b * np.sin(phi + theta) ** 2
            centre = x0 * cos - y0 * sin + offset
            reach = np.sqrt(w2)
            left, right = (int(edge) for edge in np.searchsorted(u, (centre - reach, centre + reach)))
            if left < right:
                chords.append((density * 2 * a * b / w2, w2, centre, top, bottom, left, right, s2))
        if not chords:
            return np.zeros((0, 0), dtype=np.float32), (slice(0, 0), slice(0, 0))
        first, last = min(c[3] for c in chords), max(c[4] for c in chords)
        leftmost, rightmost = min(c[5] for c in chords), max(c[6] for c in chords)
        total = np.zeros((last - first, rightmost - leftmost), dtype=np.float32)
        for factor, w2, centre, top, bottom, left, right, s2 in chords:
            across = u[left:right] - np.float32(centre)
            chord2 = s2 * np.float32(w2) - across * across
            np.maximum(chord2, 0.0, out=chord2)
            np.sqrt(chord2, out=chord2)
            chord2 *= np.float32(factor)
            total[top - first:bottom - first, left - leftmost:right - leftmost] += chord2
        total *= self._scale
        return total, (slice(first, last), slice(leftmost, rightmost))


@dataclass(frozen=True)
class ImagingSettings:
    """Everything an imaging camera's frames depend on; equal settings give identical frames."""

    height: int
    width: int
    pixel_size: float  # m, at the sample (a binned pixel's)
    dtype: str = "uint16"
    seed: int = 0
    exposure: float = 0.01  # s
    highest: int | None = None  # the highest count the camera gives (None: its pixel type's)
    photon_flux: float = 1.2e6  # photons per pixel per second at the beam's middle, nominal beam
    scale: float = 1.0  # the beam's fraction of nominal: ring current x transmission x shutter open
    sample_position: float = 0.0  # m across the beam (the sample translation's position); 0: centred
    rotation: float = 0.0  # deg, the sample's angle for a frame that comes with none of its own

    def following(self, beamline: BeamConditions | None) -> ImagingSettings:
        """These settings with what the beamline said at the series' start (None: not followed):
        the beam's intensity (closed shutter: no light), the sample translation's position (mm) and
        the rotation's angle; what it could not say keeps these settings' value."""
        if beamline is None:
            return self
        sample = beamline.sample_position_mm
        return replace(self, scale=beamline.intensity_scale,
                       sample_position=self.sample_position if sample is None else sample / 1000.0,
                       rotation=self.rotation if beamline.rotation_deg is None else beamline.rotation_deg)


def flat_field(settings: ImagingSettings) -> np.ndarray:
    """Mean counts per pixel with nothing in the beam: a broad beam, brightest in the middle and
    80 % of that at the frame's edges (a bending magnet's or a wiggler's beam through a scintillator)."""
    rows, columns = settings.height, settings.width
    y = (np.arange(rows, dtype=np.float32) + 0.5 - rows / 2) / rows
    x = (np.arange(columns, dtype=np.float32) + 0.5 - columns / 2) / columns
    fall = np.float32(4 * np.log(1 / 0.8))  # exp(-fall * 0.5**2) = 0.8 at each edge
    profile = np.exp(-fall * y[:, None] ** 2) * np.exp(-fall * x[None, :] ** 2)
    return profile * np.float32(settings.photon_flux * settings.exposure * settings.scale)


NOISE_FRAMES = 2  # standard normals drawn per series, in frames' worth: each frame reads them from its own offset
NOISE_STRIDE = 104_729  # a prime: consecutive frames read the noise from far-apart offsets


class ProjectionFrames:
    """Frame ``n`` at angle ``angle``: the flat field x exp(-the phantom's line integrals), the
    phantom where the sample translation put it (moved out of the field of view: no object; the
    shutter closed, ``scale`` 0: no light), with photon noise.

    Why a noise bank: a fresh Poisson draw of a megapixel frame costs ~50 ms, more than a fast
    camera's frame period. The noise is drawn once per series as standard normals, and frame n
    reads a frame's worth of them from its own offset (mean + sqrt(mean) x normal, Poisson's
    mean and variance): ``frame(n, angle)`` is a pure function of the settings, n and the angle,
    so a test regenerates exactly what a camera sent.
    """

    def __init__(self, settings: ImagingSettings, phantom: Phantom | None = None):
        if settings.height < 1 or settings.width < 1:
            raise ValueError(f"frame shape must be positive, got {settings.height}x{settings.width}")
        self.settings = settings
        self.shape = (settings.height, settings.width)
        self.dtype = np.dtype(settings.dtype)
        self.highest = settings.highest if settings.highest is not None else np.iinfo(self.dtype).max
        self.phantom = phantom or Phantom.filling(settings.width * settings.pixel_size)
        self.projector = self.phantom.projector(self.shape, settings.pixel_size)
        self.flat = flat_field(settings)
        pixels = settings.height * settings.width
        self._noise = np.random.default_rng([settings.seed, 2]).standard_normal(
            pixels * NOISE_FRAMES, dtype=np.float32)

    def mean(self, angle: float | None = None) -> np.ndarray:
        """The expected counts of a frame at ``angle`` deg (None: the settings' rotation)."""
        angle = self.settings.rotation if angle is None else angle
        integrals, box = self.projector.shadow(angle, self.settings.sample_position)
        np.negative(integrals, out=integrals)
        np.exp(integrals, out=integrals)
        counts = self.flat.copy()
        counts[box] *= integrals
        return counts

    def frame(self, number: int, angle: float | None = None) -> np.ndarray:
        """A new array holding frame ``number``, taken with the sample at ``angle`` deg (None:
        the settings' rotation)."""
        if number < 0:
            raise ValueError(f"frame number must be >= 0, got {number}")
        counts = self.mean(angle)
        pixels = counts.size
        offset = (number * NOISE_STRIDE) % (self._noise.size - pixels + 1)
        spread = np.sqrt(counts)
        spread *= self._noise[offset:offset + pixels].reshape(self.shape)
        counts += spread
        np.clip(counts, 0, self.highest, out=counts)
        return np.rint(counts, out=counts).astype(self.dtype)
