"""What real frames do to a catalogue, drawn here with a truth table: correlated noise (a
plate's grain, a resampled frame) that the white-noise figure underrates, and star wings
beyond the PSF's stamp that a PSF fit does not see — the measured S/N unit and the aperture
correction must put both right."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter
from scipy.spatial import cKDTree

from streamer.imaging.noise import NoiseModel
from streamer.sources.catalog import measure_sources
from streamer.sources.detection import matched_filter_snr, measured_snr
from streamer.sources.photometry import _placed

SIDE, FWHM, SKY = 512, 3.0, 1000.0
START = dt.datetime(2026, 11, 30, 3, 0, 0, tzinfo=dt.timezone.utc)


def _moffat(fwhm: float, beta: float, side: int) -> np.ndarray:
    alpha = fwhm / (2.0 * np.sqrt(2.0 ** (1.0 / beta) - 1.0))
    yy, xx = np.mgrid[:side, :side] - (side - 1) / 2
    psf = (1.0 + (xx**2 + yy**2) / alpha**2) ** -beta
    return psf / psf.sum()


def _stars(rng, count: int, unit_error: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions at least 40 px apart (isolated) and fluxes of S/N 20–2000."""
    points: list[tuple[float, float]] = []
    while len(points) < count:
        candidate = rng.uniform(40, SIDE - 40, 2)
        if all(np.hypot(*(candidate - p)) > 40 for p in points):
            points.append(tuple(candidate))
    x, y = np.array(points).T
    return x, y, 10 ** rng.uniform(np.log10(20), np.log10(2000), count) * unit_error


def _correlated_noise(rng, sigma: float, smoothing: float) -> np.ndarray:
    """Gaussian noise of per-pixel std ``sigma`` correlated over ``smoothing`` px."""
    noise = gaussian_filter(rng.normal(0.0, 1.0, (SIDE, SIDE)), smoothing)
    return noise * (sigma / noise.std())


def test_correlated_noise_is_not_detected_and_errors_stay_honest():
    rng = np.random.default_rng(3)
    psf = _moffat(FWHM, 4.0, 31)
    sigma = 10.0  # per pixel; at the PSF's scale the grain makes it ~2.5× noisier
    noise_map = _correlated_noise(rng, sigma, 1.2)
    theory = matched_filter_snr(noise_map, sigma, psf)
    measured, ratio = measured_snr(noise_map, sigma, psf, FWHM, 5.0)
    # On the white-noise unit the grain is a field of false stars; on the measured unit not.
    assert np.count_nonzero(theory > 5) > 500
    assert np.count_nonzero(measured > 5) < 10
    assert 1.8 < ratio.median() < 3.5
    unit_error = sigma * ratio.median() / np.sqrt(np.sum(psf**2))
    x, y, flux = _stars(rng, 40, unit_error)
    image = SKY + noise_map
    for fx, fy, f in zip(x, y, flux):
        image += f * _placed(psf, fy, fx, image.shape)
    noise = NoiseModel(sky=SKY, sigma=sigma, inverse_gain=0.0)
    found = measure_sources(image, None, psf, FWHM, noise, exposure_start=START,
                            exposure_seconds=30.0)
    distance, index = cKDTree(np.column_stack([found.x, found.y])).query(np.column_stack([x, y]))
    assert np.all(distance < 1.0)  # every star found
    assert len(found) <= len(x) + 3  # and next to nothing else
    pull = (found.flux[index] - flux) / found.flux_error[index]
    # Errors from the white-noise σ would be 2.5× too small (pull spread ~2.5). Above S/N 300
    # the fit's few-per-mille systematics (a sub-pixel shifted PSF) outgrow the noise.
    faint = flux / unit_error < 300
    assert faint.sum() >= 20 and 0.6 < np.std(pull[faint]) < 1.5, np.std(pull[faint])
    assert found.noise_ratio == pytest.approx(ratio.median(), rel=0.05)


@pytest.mark.parametrize("beta, half", [(3.0, 6), (4.0, 5)])
def test_wings_beyond_the_stamp_are_put_back(beta, half):
    rng = np.random.default_rng(int(beta * 10))
    sigma = np.sqrt(SKY)
    true_psf = _moffat(FWHM, beta, 101)  # the light out to 33 FWHM
    stamp = true_psf[50 - half:51 + half, 50 - half:51 + half]  # a frame's PSF stamp keeps
    missing = 1.0 - stamp.sum()  # 1.5–2 % of the light outside it
    stamp = stamp / stamp.sum()
    unit_error = sigma / np.sqrt(np.sum(stamp**2))
    x, y, flux = _stars(rng, 60, unit_error)
    model = np.full((SIDE, SIDE), SKY)
    for fx, fy, f in zip(x, y, flux):
        model += f * _placed(true_psf, fy, fx, model.shape)
    image = rng.poisson(model).astype(float)
    noise = NoiseModel(sky=SKY, sigma=sigma, inverse_gain=1.0)
    found = measure_sources(image, None, stamp, FWHM, noise, exposure_start=START,
                            exposure_seconds=30.0)
    distance, index = cKDTree(np.column_stack([found.x, found.y])).query(np.column_stack([x, y]))
    matched = distance < 1.0
    ratio = found.flux[index[matched]] / flux[matched]
    # Fitted with the stamp alone the fluxes would be this much low; the halo carried on past
    # the stamp (a power law) and the aperture correction put it back.
    assert missing > 0.012
    assert found.aperture_stars >= 10 and abs(found.aperture_correction - 1.0) < 0.05
    assert np.median(ratio) == pytest.approx(1.0, abs=0.01), (missing, np.median(ratio))
