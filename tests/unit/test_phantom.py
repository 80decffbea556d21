"""The phantom's projections are the line integrals of its true slices."""

import numpy as np

from photonflow.simulators.phantom import Phantom

SHAPE, PIXEL = (64, 96), 150e-6


def test_a_projection_at_angle_zero_sums_the_true_slice_along_the_beam():
    phantom = Phantom()
    projection = phantom.line_integrals(0.0, SHAPE, PIXEL)
    for row in (20, 32, 40):
        expected = phantom.true_slice(row, SHAPE, PIXEL).sum(axis=0) * PIXEL
        np.testing.assert_allclose(projection[row], expected, atol=0.1 * expected.max())  # the sum samples a shell ~1 pixel thin


def test_moved_out_of_the_field_the_phantom_casts_no_shadow():
    assert Phantom().line_integrals(30.0, SHAPE, PIXEL, shift=0.03).max() == 0.0
