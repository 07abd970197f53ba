"""Adaptive moments of many stamps at once against the same iteration run stamp by stamp:
the same centres and shapes, the same failures (NaN, no flux, blends running off) and the same
fall-back on aperture moments where the weight collapses."""

from __future__ import annotations

import numpy as np
import pytest

from streamer.imaging.moments import (
    _COLLAPSE, _from_covariance, adaptive_moments, adaptive_moments_batch, adaptive_moments_many,
)


def _stamps(count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:17, 0:17]
    out = []
    for index in range(count):
        sigma, squash = rng.uniform(0.5, 3.5), rng.uniform(0.0, 0.4)
        cy, cx = 8 + rng.normal(0.0, 1.0, 2)
        stamp = 1000 * np.exp(-0.5 * (((ys - cy) / sigma) ** 2
                                      + ((xs - cx) / (sigma * (1 - squash))) ** 2))
        stamp += rng.normal(0.0, rng.uniform(0.1, 30.0), stamp.shape)
        if index % 17 == 0:
            stamp[3, 3] = np.nan            # excluded pixel: no moments
        if index % 23 == 0:
            stamp = -stamp                  # no flux
        if index % 29 == 0:                 # a bright neighbour in the corner
            stamp += 2000 * np.exp(-0.5 * (((ys - 2) / 1.2) ** 2 + ((xs - 14) / 1.2) ** 2))
        out.append(stamp)
    return np.array(out)


@pytest.mark.parametrize("seed", range(2))
def test_many_at_once_equal_one_by_one(seed: int) -> None:
    stamps = _stamps(150, seed)
    singly = [adaptive_moments(stamp) for stamp in stamps]
    together = adaptive_moments_many(stamps)
    assert sum(m is None for m in singly) >= 10
    assert sum(m is not None and m.fwhm < 2.0 for m in singly) >= 5  # aperture fall-backs
    for one, many in zip(singly, together):
        assert (one is None) == (many is None)
        if one is not None:
            for field in ("row", "column", "fwhm", "ellipticity", "sigma_major",
                          "sigma_minor"):
                assert getattr(many, field) == pytest.approx(getattr(one, field), rel=1e-9,
                                                             abs=1e-12), field


def _batch_on_grids(stamps: np.ndarray, iterations: int = 20, start_sigma: float = 1.5):
    """The fixed-iteration batch written plainly, on whole coordinate grids: centres and the
    moment matrix entries (myy, mxx, mxy) after ``iterations``, and the last total."""
    boxes = np.where(np.all(np.isfinite(stamps), axis=(1, 2))[:, None, None], stamps, 0.0)
    count, rows, columns = boxes.shape
    ys, xs = np.mgrid[0:rows, 0:columns].astype(np.float64)
    cy, cx = np.full(count, (rows - 1) / 2.0), np.full(count, (columns - 1) / 2.0)
    myy = np.full(count, 2.0 * start_sigma**2)
    mxx, mxy = myy.copy(), np.zeros(count)
    for _ in range(iterations):
        det = np.maximum(myy * mxx - mxy**2, 1e-12)
        iyy, ixx, ixy = mxx / det, myy / det, -mxy / det
        dy, dx = ys[None] - cy[:, None, None], xs[None] - cx[:, None, None]
        r2 = (iyy[:, None, None] * dy**2 + 2 * ixy[:, None, None] * dy * dx
              + ixx[:, None, None] * dx**2)
        weighted = boxes * np.exp(-0.5 * np.clip(r2, 0.0, 1400.0))
        total = weighted.sum(axis=(1, 2))
        safe = np.where(total > 0, total, 1.0)
        cy = (weighted * ys).sum(axis=(1, 2)) / safe
        cx = (weighted * xs).sum(axis=(1, 2)) / safe
        dy, dx = ys[None] - cy[:, None, None], xs[None] - cx[:, None, None]
        myy = np.maximum(2.0 * (weighted * dy**2).sum(axis=(1, 2)) / safe, 0.25 * _COLLAPSE)
        mxx = np.maximum(2.0 * (weighted * dx**2).sum(axis=(1, 2)) / safe, 0.25 * _COLLAPSE)
        mxy = 2.0 * (weighted * dy * dx).sum(axis=(1, 2)) / safe
    return cy, cx, myy, mxx, mxy


@pytest.mark.parametrize("seed", range(2))
def test_the_batch_is_the_plain_iteration_on_grids(seed: int) -> None:
    """The batch's separable sums (per-axis offsets and partial sums) equal the iteration on
    whole coordinate grids, stamp for stamp, to rounding."""
    stamps = _stamps(120, seed)
    cy, cx, myy, mxx, mxy = _batch_on_grids(stamps)
    for index, found in enumerate(adaptive_moments_batch(stamps)):
        matrix = np.array([[myy[index], mxy[index]], [mxy[index], mxx[index]]])
        if found is None or np.linalg.eigvalsh(matrix)[0] < _COLLAPSE:
            continue  # failed, or an aperture fall-back (tested above)
        expected = _from_covariance(cy[index], cx[index], matrix)
        for field in ("row", "column", "fwhm", "ellipticity", "sigma_major", "sigma_minor"):
            assert getattr(found, field) == pytest.approx(getattr(expected, field), rel=1e-9,
                                                          abs=1e-9), field
    assert sum(m is not None for m in adaptive_moments_batch(stamps)) >= 80


def test_the_half_maximum_fwhm_is_scipys_zoom():
    # The upsampling as two one-axis zoom matrices about the PSF: SciPy's 2-D cubic zoom to
    # rounding, and the same FWHM, on odd and even, square and oblong, noisy, off-centre PSFs.
    import math

    from scipy.ndimage import zoom

    from streamer.imaging.moments import half_maximum_fwhm

    rng = np.random.default_rng(8)
    for _ in range(60):
        height, width = (int(side) for side in rng.integers(3, 40, 2))
        ys, xs = np.mgrid[:height, :width]
        sigma_y, sigma_x = rng.uniform(0.6, 4.0, 2)
        image = np.exp(-((xs - (width - 1) / 2 + rng.normal(0, 0.3)) ** 2 / (2 * sigma_x**2)
                         + (ys - (height - 1) / 2 + rng.normal(0, 0.3)) ** 2 / (2 * sigma_y**2)))
        image += rng.normal(0, 0.01, image.shape)
        fine = zoom(image, 8, order=3, mode="nearest")
        step_y, step_x = (height - 1) / (fine.shape[0] - 1), (width - 1) / (fine.shape[1] - 1)
        area = np.count_nonzero(fine >= fine.max() / 2.0) * step_y * step_x
        assert half_maximum_fwhm(image) == 2.0 * math.sqrt(area / math.pi)
