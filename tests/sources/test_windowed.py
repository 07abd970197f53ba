"""Windowed centroids for every source at once (streamer.sources.windowed) against sep's
winpos, source by source: the same positions within 10⁻³ px for 99 % of a field's sources and
10⁻² px for all (sep counts the subpixels of a pixel its window's edge crosses; here the share
is taken as if the edge crossed the pixel straight), on a crowded field of faint and bright
stars, near the edges and moving from a start half a pixel off; a source with no positive flux
in its window stays where it was put."""

from __future__ import annotations

import numpy as np
import pytest
import sep

from streamer.imaging.psf import moffat_psf
from streamer.imaging.synthetic import star_field
from streamer.sources.windowed import MIN_SIGMA, windowed_positions


@pytest.mark.parametrize("fwhm", [2.0, 3.6, 6.0])
def test_the_positions_are_seps(fwhm):
    # Stars up to 2 px from the edges: their windows reach past them.
    field = star_field((400, 500), moffat_psf(fwhm, 3.0), stars=300, margin=2,
                       seed=int(fwhm * 10))
    rng = np.random.default_rng(5)
    data = (field.image - field.background).astype(np.float32)
    x0 = field.columns + rng.uniform(-0.5, 0.5, field.columns.size)
    y0 = field.rows + rng.uniform(-0.5, 0.5, field.rows.size)
    assert min(x0.min(), y0.min()) < 4 and max(x0.max() - 499, y0.max() - 399) > -6
    sigma = fwhm / 2.3548
    expected_x, expected_y, _ = sep.winpos(data, x0, y0, np.full(x0.size, sigma))
    ours_x, ours_y = windowed_positions(data, x0, y0, sigma)
    distance = np.hypot(ours_x - expected_x, ours_y - expected_y)
    assert np.percentile(distance, 99) < 1e-3 and distance.max() < 1e-2
    assert np.median(np.hypot(expected_x - x0, expected_y - y0)) > 0.2  # they did move


def test_no_flux_no_move_and_seps_smallest_window():
    data = np.zeros((40, 40), np.float32)
    data[10, 10] = -5.0
    x, y = windowed_positions(data, np.array([10.3, 25.0]), np.array([9.8, 25.0]), 1.5)
    assert np.array_equal(x, [10.3, 25.0]) and np.array_equal(y, [9.8, 25.0])
    star = np.zeros((40, 40), np.float32)
    star[20, 21], star[20, 20] = 10.0, 5.0
    ours = windowed_positions(star, np.array([20.2]), np.array([20.1]), 0.1)
    expected = sep.winpos(star, np.array([20.2]), np.array([20.1]), np.array([0.1]))
    assert MIN_SIGMA > 0.1
    assert ours[0][0] == pytest.approx(expected[0][0], abs=1e-3)
    assert ours[1][0] == pytest.approx(expected[1][0], abs=1e-3)
