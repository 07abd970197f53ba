"""Adaptive moments of many stamps at once against the same iteration run stamp by stamp:
the same centres and shapes, the same failures (NaN, no flux, blends running off) and the same
fall-back on aperture moments where the weight collapses."""

from __future__ import annotations

import numpy as np
import pytest

from streamer.imaging.moments import adaptive_moments, adaptive_moments_many


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
