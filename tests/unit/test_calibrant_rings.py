"""The simulated powder rings are where physics puts them: integrated with pyFAI at the
geometry they were made for, the peaks sit at the calibrant's q = 2π/d."""

import math

import numpy as np
import pytest
from scipy.signal import find_peaks

from photonflow.simulators.diffraction import DiffractionFrames, PatternSettings, calibrant_d_spacings, ring_radii

GEOMETRY = PatternSettings(
    height=600, width=640, seed=5, exposure=0.05, calibrant="CeO2",
    wavelength=0.7e-10, distance=0.1, pixel_size=100e-6, beam_centre=(260.0, 300.0),
)


def test_the_first_three_peaks_sit_at_the_calibrants_q():
    from pyFAI.integrator.azimuthal import AzimuthalIntegrator

    frame = DiffractionFrames(GEOMETRY).frame(0)
    row, column = GEOMETRY.beam_centre
    integrator = AzimuthalIntegrator(
        dist=GEOMETRY.distance, poni1=row * GEOMETRY.pixel_size, poni2=column * GEOMETRY.pixel_size,
        pixel1=GEOMETRY.pixel_size, pixel2=GEOMETRY.pixel_size, wavelength=GEOMETRY.wavelength,
    )
    result = integrator.integrate1d(frame, 3000, unit="q_nm^-1", mask=(frame == 0).astype(np.int8))
    q, intensity = np.asarray(result.radial), np.asarray(result.intensity)
    peaks, _ = find_peaks(intensity, prominence=0.2 * intensity.max())
    d_nm = np.array(calibrant_d_spacings("CeO2")[:3]) / 10
    expected = 2 * math.pi / d_nm
    found = q[peaks[:3]]
    np.testing.assert_allclose(found, expected, rtol=0.005)


def test_ring_radii_follow_bragg_law_and_the_distance():
    d111 = calibrant_d_spacings("CeO2")[0]
    assert d111 == pytest.approx(3.1244, abs=1e-3)  # CeO2 a = 5.4116 Å: a / √3
    near, far = ring_radii(GEOMETRY)[0], ring_radii(PatternSettings(**{**GEOMETRY.__dict__, "distance": 0.2}))[0]
    two_theta = 2 * math.asin(0.7 / (2 * d111))
    assert near == pytest.approx(0.1 * math.tan(two_theta) / 100e-6)
    assert far == pytest.approx(2 * near)


def test_the_intensity_follows_the_scale_and_a_closed_shutter_gives_a_dark_frame():
    from photonflow.simulators.diffraction import expected_counts

    small = PatternSettings(height=64, width=64, exposure=0.01)
    full = expected_counts(small)
    half = expected_counts(PatternSettings(**{**small.__dict__, "scale": 0.5}))
    np.testing.assert_allclose(half, 0.5 * full, rtol=1e-5)
    dark = DiffractionFrames(PatternSettings(**{**small.__dict__, "scale": 0.0}))
    assert not dark.frame(3).any()


def test_an_unknown_calibrant_is_refused_with_the_known_names():
    with pytest.raises(ValueError, match="unknown calibrant 'Unobtainium'.*CeO2"):
        calibrant_d_spacings("Unobtainium")
