"""The sky level the catalogue's fluxes stand on: the sources' discs painted on the sample grid
equal the brute-force distance test, and the level is the clipped mean of what they leave."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.stats import sigma_clipped_stats

from streamer.sources.catalog import _discs, _sky_offset


@pytest.mark.parametrize("step", [1, 3, 8])
def test_discs_are_the_grid_points_within_each_radius(step: int) -> None:
    rng = np.random.default_rng(step)
    shape = (57, 73)
    x, y = rng.uniform(-10, shape[1] * step + 10, 60), rng.uniform(-10, shape[0] * step + 10, 60)
    radii = rng.uniform(0.5, 6.0 * step, 60)
    rows, columns = np.mgrid[0:shape[0], 0:shape[1]] * step
    brute = np.zeros(shape, bool)
    for cx, cy, radius in zip(x, y, radii):
        brute |= (columns - cx) ** 2 + (rows - cy) ** 2 < radius**2
    assert brute.any() and not brute.all()
    assert np.array_equal(_discs(shape, step, x, y, radii), brute)


def test_discs_are_painted_in_batches(monkeypatch):
    from streamer.sources import catalog

    rng = np.random.default_rng(9)
    x, y, radii = rng.uniform(0, 400, 50), rng.uniform(0, 400, 50), rng.uniform(1, 30, 50)
    whole = _discs((100, 100), 4, x, y, radii)
    monkeypatch.setattr(catalog, "DISC_POINTS", 500)  # a few sources a batch
    assert whole.any() and np.array_equal(_discs((100, 100), 4, x, y, radii), whole)


def test_the_level_leaves_out_the_sources_and_their_halos() -> None:
    rng = np.random.default_rng(4)
    data = rng.normal(2.0, 1.0, (1024, 1024)).astype(np.float32)
    x, y = rng.uniform(0, 1024, 300), rng.uniform(0, 1024, 300)
    snr = rng.uniform(5, 5000, 300)
    rows, columns = np.mgrid[0:1024, 0:1024]
    covered = np.zeros(data.shape, bool)
    for cx, cy, s in zip(x, y, snr):
        reach = 9.0 * max(1.0, s / 20.0) ** (1.0 / 6.0)
        near = (columns - cx) ** 2 + (rows - cy) ** 2 < reach**2
        data[near] += 50.0  # light that must not lift the level
        covered |= near
    step = 2  # the grid _sky_offset samples a 1024² frame on
    expected = sigma_clipped_stats(data[::step, ::step][~covered[::step, ::step]], sigma=3.0,
                                   maxiters=10)[0]
    assert _sky_offset(data, x, y, snr, 9.0) == pytest.approx(expected, rel=1e-6)
    assert _sky_offset(data, x, y, snr, 9.0) == pytest.approx(2.0, abs=0.01)
