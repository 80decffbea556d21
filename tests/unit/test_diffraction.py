"""Simulated frames: reproducible from the settings, distinct per frame, diffraction-like."""

import numpy as np
import pytest

from photonflow.simulators.diffraction import DiffractionFrames, PatternSettings, expected_counts

SMALL = PatternSettings(height=128, width=96, seed=3, exposure=0.01)


def test_same_settings_give_identical_frames():
    first, second = DiffractionFrames(SMALL), DiffractionFrames(SMALL)
    for n in (0, 1, 17, 4000):
        np.testing.assert_array_equal(first.frame(n), second.frame(n))


def test_another_seed_gives_other_frames():
    other = DiffractionFrames(PatternSettings(height=128, width=96, seed=4, exposure=0.01))
    assert not np.array_equal(DiffractionFrames(SMALL).frame(0), other.frame(0))


def test_consecutive_frames_differ_up_to_the_unique_count():
    frames = DiffractionFrames(SMALL)
    assert frames.unique_frames == 16**4
    seen = {frames.frame(n).tobytes() for n in range(300)}
    assert len(seen) == 300


def test_frames_have_the_requested_shape_and_type():
    frames = DiffractionFrames(PatternSettings(height=10, width=20, dtype="uint32", exposure=0.01))
    frame = frames.frame(5)
    assert frame.shape == (10, 20) and frame.dtype == np.uint32


def test_counts_follow_the_pattern_rings_bright_beamstop_dark():
    settings = PatternSettings(height=256, width=256, seed=1, exposure=0.05)
    mean = expected_counts(settings)
    frames = DiffractionFrames(settings)
    average = np.mean([frames.frame(n) for n in range(16)], axis=0)
    # Poisson: the average of independent draws tracks the expected counts.
    assert np.corrcoef(mean.ravel(), average.ravel())[0, 1] > 0.9
    centre = (int(256 * 0.47), int(256 * 0.52))
    assert mean[centre] == 0.0  # beamstop shadow
    assert mean.max() > 20 * np.median(mean)  # rings and spots stand out of the background


def test_counts_scale_with_exposure():
    short = expected_counts(PatternSettings(height=64, width=64, exposure=0.001))
    long = expected_counts(PatternSettings(height=64, width=64, exposure=0.01))
    np.testing.assert_allclose(long, 10 * short, rtol=1e-5)


def test_counts_saturate_at_the_pixel_type_limit():
    frames = DiffractionFrames(PatternSettings(height=64, width=64, dtype="uint8", exposure=1.0))
    assert frames.frame(0).max() == 255


def test_negative_frame_numbers_are_refused():
    with pytest.raises(ValueError, match=r"frame number must be >= 0, got -1"):
        DiffractionFrames(SMALL).frame(-1)


def test_frames_drawn_ahead_in_the_background_equal_frames_drawn_on_demand_in_any_order():
    settings = PatternSettings(height=64, width=48, seed=7, bank_size=4, bands=3)
    ahead = DiffractionFrames(settings)
    ahead.fill_in_background(70).join()
    on_demand = DiffractionFrames(settings)
    for number in (69, 3, 17, 0, 42):  # out of order: each block has its own seed
        np.testing.assert_array_equal(on_demand.frame(number), ahead.frame(number))


def test_a_cancelled_background_fill_stops_and_frames_are_still_drawn_on_demand():
    settings = PatternSettings(height=64, width=48, seed=7, bank_size=4, bands=3)
    frames = DiffractionFrames(settings)
    frames.cancel()
    frames.fill_in_background(70).join()
    assert not frames._blocks  # nothing drawn ahead once cancelled
    np.testing.assert_array_equal(frames.frame(5), DiffractionFrames(settings).frame(5))
