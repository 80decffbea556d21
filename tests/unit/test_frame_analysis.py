"""The live per-frame analysis: I(q) from the geometry the series announced puts the calibrant's
rings at its q, the spot finder counts what was drawn, ROI sums are the counts in the rectangle,
and a geometry the series does not give is reported missing, never guessed."""

from __future__ import annotations

import math

import numpy as np
import pytest

from photonflow.analysis.azimuthal import find_peaks
from photonflow.analysis.frame_analysis import (
    AnalysisSettings,
    FrameAnalyzer,
    Roi,
    count_spots,
    geometry_from_description,
    parse_rois,
)
from photonflow.errors import ConfigurationError
from photonflow.simulators.diffraction import DiffractionFrames, calibrant_d_spacings
from tests.helpers.analysis import DESCRIPTION, GEOMETRY


def test_the_rings_of_a_frame_sit_at_the_calibrants_q():
    frame = DiffractionFrames(GEOMETRY).frame(0)
    analyzer = FrameAnalyzer(AnalysisSettings(npt=3000), frame.shape, DESCRIPTION)
    result = analyzer.analyse(0, frame)
    peaks, _ = find_peaks(analyzer.q, result.intensity)
    expected = 2 * math.pi / (np.array(calibrant_d_spacings("CeO2")[:3]) / 10)  # q = 2π/d, in 1/nm
    found = [peaks[np.argmin(np.abs(peaks - q))] for q in expected]
    np.testing.assert_allclose(found, expected, rtol=0.005)


def test_the_photon_energy_stands_for_a_wavelength_not_given():
    geometry, missing = geometry_from_description({**DESCRIPTION, "incident_wavelength": None,
                                                   "photon_energy": 17711.9})
    assert missing == () and geometry["wavelength"] == pytest.approx(0.7e-10, rel=1e-4)


def test_a_geometry_the_series_does_not_give_is_reported_missing_and_no_i_of_q_is_made_up():
    description = {k: v for k, v in DESCRIPTION.items() if k not in ("distance", "beam_center_x")}
    analyzer = FrameAnalyzer(AnalysisSettings(), (600, 640), description)
    assert analyzer.missing_geometry == ("beam_center_x", "distance")
    result = analyzer.analyse(3, np.ones((600, 640), np.uint16))
    assert result.intensity is None and analyzer.q is None and result.spots == 0


def _spots(centres, shape=(200, 220), seed=1):
    rng = np.random.default_rng(seed)
    frame = rng.poisson(3.0, shape).astype(np.uint16)
    for row, column in centres:
        frame[row - 1: row + 2, column - 1: column + 2] += np.uint16(400)
    return frame


def test_the_spot_finder_counts_the_spots_drawn_and_none_in_noise():
    settings = AnalysisSettings()
    assert count_spots(_spots([]), settings) == 0
    assert count_spots(_spots([(20, 30), (100, 100), (150, 40), (180, 200), (60, 170)]), settings) == 5
    # a hot pixel alone is no spot (2 pixels at least), and saturated pixels are left out
    frame = _spots([(50, 50)])
    frame[10, 10] = 5000
    frame[120:123, 120:123] = 65535
    assert count_spots(frame, settings, saturation=65534) == 1


def test_roi_sums_are_the_counts_in_their_rectangles():
    frame = np.arange(100 * 120, dtype=np.uint32).reshape(100, 120)
    rois = parse_rois(["corner 0 0 10 20", "middle 40 50 5 5"])
    result = FrameAnalyzer(AnalysisSettings(npt=0, rois=rois), frame.shape, {}).analyse(0, frame)
    assert result.roi_sums == {"corner": float(frame[:10, :20].sum()), "middle": float(frame[40:45, 50:55].sum())}


@pytest.mark.parametrize("text, complaint", [
    ("centre 10 10 5", "give 'name top left height width'"),
    ("1x 0 0 5 5", "give 'name top left height width'"),
    ("big 0 0 0 5", "height and width must be at least 1 pixel"),
])
def test_a_malformed_roi_is_refused_with_what_to_write(text, complaint):
    with pytest.raises(ConfigurationError, match=complaint):
        Roi.parse(text)


def test_a_roi_outside_the_frame_is_refused_naming_it():
    with pytest.raises(ConfigurationError, match="ROI edge .* is outside the 100x120 frame"):
        FrameAnalyzer(AnalysisSettings(rois=(Roi("edge", 90, 0, 20, 5),)), (100, 120), {})


@pytest.mark.parametrize("values", [
    np.array([3, 1, 4, 1, 5, 9, 2, 6], np.uint16), np.array([7], np.uint16), np.array([2, 2, 2, 9, 9], np.uint16),
    np.random.default_rng(3).poisson(2.5, 10_001).astype(np.uint16),
    np.random.default_rng(4).poisson(40.0, 10_000).astype(np.uint8),
])
def test_the_median_and_mad_of_counts_are_numpys(values):
    from photonflow.analysis.frame_analysis import _median_and_mad

    median = float(np.median(values))
    assert _median_and_mad(values) == (median, float(np.median(np.abs(values.astype(float) - median))))
