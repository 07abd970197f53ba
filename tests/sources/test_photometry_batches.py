"""The isolated sources' PSF fits, made all at once, against the one-group fit each would get
on its own: the same fluxes, errors and masked flags, at the frame's edges, beside excluded
pixels, at integer and half-integer positions."""

from __future__ import annotations

import numpy as np
import pytest

from streamer.imaging.psf import gaussian_psf
from streamer.sources import photometry
from streamer.sources.photometry import (
    _fit_group,
    add_placed,
    as_spline,
    extended_psf,
    fit_radius,
    psf_photometry,
)


@pytest.mark.parametrize("seed", range(3))
def test_isolated_sources_are_fitted_as_their_own_groups_would_be(seed: int, monkeypatch) -> None:
    if seed == 2:  # several batches, the last one partial
        monkeypatch.setattr(photometry, "SINGLES_PER_BATCH", 37)
    rng = np.random.default_rng(seed)
    size, fwhm = 600, 3.0 + seed
    psf = extended_psf(gaussian_psf(fwhm), fwhm)
    data = rng.normal(0.0, 5.0, (size, size))
    x = rng.uniform(-3.0, size + 3.0, 500)
    y = rng.uniform(-3.0, size + 3.0, 500)
    x[:6] = [10.0, 20.0, 30.5, 300.0, 1.0, 598.7]  # integer, half-integer, at the edges
    y[:6] = [10.0, 20.5, 30.0, 300.0, 599.0, 2.0]
    clear = (x > 380) & (x < 620) & (y > 380) & (y < 620)  # a corner kept for the cases below
    x, y = x[~clear], y[~clear]
    for column, row in zip(x, y):
        add_placed(data, psf, row, column, rng.uniform(100.0, 10000.0))
    data[200:260, 200:260] = np.nan  # excluded pixels: some sources' cores reach in
    data[430:472, 430:472] = np.nan  # ... and one keeps two pixels: too few to fit
    data[450, 450:452] = 1.0
    for row, column in ((530.0, 470.0), (480.5, 540.0)):  # dips: negative fluxes
        add_placed(data, psf, row, column, -500.0)
    x = np.append(x, [450.0, 470.0, 540.0])
    y = np.append(y, [450.0, 530.0, 480.5])
    data = data.astype(np.float32)
    sigma = rng.uniform(4.0, 6.0, x.size)
    batch = psf_photometry(data, sigma, 0.5, psf, fwhm, x, y)
    single = batch.group_size == 1
    assert single.sum() > 100 and batch.masked[single].any()
    assert single[-3:].all() and np.isnan(batch.flux[-3]) and np.all(batch.flux[-2:] < 0)
    spline, radius = as_spline(psf), fit_radius(fwhm)
    for index in np.flatnonzero(single):
        alone = _fit_group(data, float(sigma[index]), 0.5, spline, radius,
                           x[index:index + 1], y[index:index + 1])
        if alone is None:
            assert np.isnan(batch.flux[index]) and np.isnan(batch.flux_error[index])
            continue
        assert batch.flux[index] == pytest.approx(alone[0][0], rel=1e-12, abs=1e-9)
        assert batch.flux_error[index] == pytest.approx(alone[1][0], rel=1e-12)
        assert batch.masked[index] == alone[2][0]


@pytest.mark.parametrize("fwhm", [1.2, 3.0, 6.5])
@pytest.mark.parametrize("extended", [True, False])
def test_many_placed_psfs_equal_one_by_one(fwhm: float, extended: bool) -> None:
    # Sub-pixel positions, integer ones, and boxes reaching past the PSF's footprint and its
    # edge (where SciPy's boundary rule decides the spline's value); a measured PSF's stamp
    # is often smaller than the fit's box.
    rng = np.random.default_rng(int(fwhm * 10))
    psf = gaussian_psf(fwhm, size=max(3, int(2 * fwhm) | 1)) if not extended else None
    spline = as_spline(extended_psf(gaussian_psf(fwhm), fwhm) if extended else psf)
    side = 2 * fit_radius(fwhm) + 2
    count = 400
    rows, columns = rng.uniform(50.0, 60.0, count), rng.uniform(50.0, 60.0, count)
    rows[:3], columns[:3] = [55.0, 55.5, 57.0], [52.0, 52.0, 51.5]
    offset = rng.integers(-spline.shape[0] // 2, side + spline.shape[0] // 2, (2, count))
    offset[:, :count // 2] = fit_radius(fwhm)  # the fits' own boxes
    top = np.floor(rows).astype(int) - offset[0]
    left = np.floor(columns).astype(int) - offset[1]
    models = spline.placed_many(rows, columns, top, left, side)
    for index in range(count):
        one = photometry._placed(spline, rows[index] - top[index], columns[index] - left[index],
                                 (side, side))
        assert np.allclose(models[index], one, rtol=1e-12, atol=1e-15), index
    assert np.all(models[:count // 2].sum(axis=(1, 2)) > 0.5)
