"""The restoration the issue asked for, on a field like a real camera's (elliptical Moffat
seeing a little wider than the old default) and on astropy's real sky frames: the measured PSF
restores as well as the true one, no dark moats, no lost sharpness."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
from scipy.spatial import cKDTree
from skimage.restoration import richardson_lucy as skimage_richardson_lucy

from streamer.imaging.fits_io import read_image
from streamer.imaging.psf import PSFSpec, moffat_profile
from streamer.imaging.quality import frame_quality, measure_input, moat_depth
from streamer.imaging.synthetic import analytic_star_field
from streamer.restoration.restorer import Restorer
from streamer.restoration.richardson_lucy import RichardsonLucy
from streamer.settings import RestorationSettings
from tests.conftest import ASTROPY_FITS_DATA
from tests.reference import point_sources, restoration_error

SEEING = 3.6
# Classic RL (full deconvolution, the levelled estimate, plain steps): what the comparisons
# with plain RL and scikit-image measure, like with like.
CLASSIC = {"target_fwhm": 0.0, "restored_as": "estimate", "accelerate": False}


@pytest.fixture(scope="module")
def field():
    profile = partial(moffat_profile, fwhm=SEEING, beta=3.0, ellipticity=0.1, angle=40)
    return analytic_star_field((768, 768), profile, 30, stars=240, seed=11,
                               flux_range=(3e3, 3e5))


@pytest.fixture(scope="module")
def truth(field):
    return point_sources(field.image.shape, field.rows, field.columns, field.fluxes)


@pytest.fixture(scope="module")
def bright_isolated(field):
    tree = cKDTree(np.column_stack([field.rows, field.columns]))
    order = np.argsort(field.fluxes)[::-1]
    stars = [(field.rows[i], field.columns[i]) for i in order
             if len(tree.query_ball_point((field.rows[i], field.columns[i]), 40)) == 1]
    assert len(stars) >= 5
    return np.array(stars[:10])


@pytest.fixture(scope="module")
def plain_true(field):
    """Plain RL (eq. 3, no background, no damping) with the true PSF: the yardstick."""
    restorer = Restorer(RestorationSettings(window=31, psf=PSFSpec(kind="gaussian", fwhm=3)))
    data = restorer.background_equalised(field.image)
    plan = RichardsonLucy(restorer.session.queue, restorer.session.library, data.shape, field.psf)
    restored, _ = plan(data, num_iter=30)
    return data, restored


@pytest.mark.parametrize("mode", [{}, CLASSIC], ids=["default", "classic"])
def test_measured_psf_restores_within_10_percent_of_the_true_psf(field, truth, mode):
    restorer = Restorer(RestorationSettings(window=31, **mode))
    measured = restorer.restore(field.image)
    assert measured.psf.method == "empirical"
    yardstick = restoration_error(restorer.restore(field.image, psf=field.psf).data, truth)
    assert restoration_error(measured.data, truth) <= 1.10 * yardstick


def test_the_old_fixed_default_psf_was_far_worse(field, truth, plain_true):
    fixed = Restorer(RestorationSettings(window=31, psf=PSFSpec(kind="gaussian", fwhm=3.0)))
    assert restoration_error(fixed.restore(field.image).data, truth) \
        > 1.5 * restoration_error(plain_true[1], truth)


def test_no_moats_and_no_worse_than_plain_rl_with_the_true_psf(field, truth, plain_true,
                                                               bright_isolated):
    ours = Restorer(RestorationSettings(window=31, **CLASSIC)).restore(
        field.image, psf=field.psf).data
    assert moat_depth(ours, bright_isolated, SEEING) <= 1.5
    assert restoration_error(ours, truth) <= restoration_error(plain_true[1], truth)
    default = Restorer(RestorationSettings(window=31)).restore(field.image, psf=field.psf).data
    assert moat_depth(default, bright_isolated, SEEING) <= 1.5
    # The pitfall: plain RL, ours or scikit-image's, digs moats deeper than 1.5 sigma.
    assert moat_depth(plain_true[1], bright_isolated, SEEING) > 1.5
    data = plain_true[0]
    theirs = skimage_richardson_lucy(data / data.max(), field.psf, num_iter=30,
                                     clip=False) * data.max()
    assert moat_depth(theirs, bright_isolated, SEEING) > 1.5


@pytest.mark.parametrize("path", [
    ASTROPY_FITS_DATA / "tests" / "data" / "comp.fits",
    ASTROPY_FITS_DATA / "hdu" / "compressed" / "tests" / "data" / "m13.fits",
], ids=["NGC1316", "M13"])
def test_real_frames_get_sharper_without_dark_rings(path):
    image = read_image(path)
    result = Restorer(RestorationSettings(window=31)).restore(image.data, header=image.header)
    quality = frame_quality(measure_input(image.data), result.data)
    assert result.psf.method in ("empirical", "moffat") and not result.psf.is_fallback
    assert quality.fwhm_after < 0.9 * quality.fwhm_before
    assert quality.moat_depth is not None and quality.moat_depth <= 1.5


def _isolated_star_fluxes(path, settings: RestorationSettings) -> list[tuple[float, float]]:
    """(S/N, restored over input aperture flux) of the isolated, unsaturated, unflagged sep
    detections of a real frame: aperture 3 FWHM, sky the median of 4–6 FWHM."""
    import math

    import sep

    from streamer.operations.science.measure import aperture_flux

    image = read_image(path)
    restorer = Restorer(settings)
    result = restorer.restore(image.data, header=image.header)
    data = restorer.background_equalised(image.data).astype(np.float64)
    fwhm, noise = result.psf.fwhm, result.noise.sigma
    found = sep.extract(np.ascontiguousarray(data - np.median(data), dtype=np.float32), 10.0,
                        err=noise, minarea=5)
    tree = cKDTree(np.column_stack([found["x"], found["y"]]))
    margin = 6 * fwhm + 2
    out = []
    for star in found[found["flag"] == 0]:
        x, y = float(star["x"]), float(star["y"])
        if len(tree.query_ball_point((x, y), 6 * fwhm)) > 1 or not (
                margin < x < data.shape[1] - margin and margin < y < data.shape[0] - margin):
            continue
        before, _, pixels = aperture_flux(data, x, y, 3 * fwhm, (4 * fwhm, 6 * fwhm))
        after, _, _ = aperture_flux(result.data, x, y, 3 * fwhm, (4 * fwhm, 6 * fwhm))
        if before > 0 and np.isfinite(after):
            snr = before / math.sqrt(pixels * noise**2 + before * result.noise.inverse_gain)
            out.append((snr, after / before))
    return out


def test_flux_stays_with_its_star_on_a_real_frame():
    """NGC 1316 (astropy's comp.fits): isolated stars keep their aperture flux within 5 % at
    S/N ≥ 20 in the default restoration (measured 1.003 and 1.001); the classic estimate
    moves light into them (+33 % and +17 %)."""
    path = ASTROPY_FITS_DATA / "tests" / "data" / "comp.fits"
    default = np.array(_isolated_star_fluxes(path, RestorationSettings()))
    classic = np.array(_isolated_star_fluxes(path, RestorationSettings(**CLASSIC)))
    for low, high in ((20.0, 100.0), (100.0, np.inf)):
        inside = (default[:, 0] >= low) & (default[:, 0] < high)
        assert inside.sum() >= 10
        assert np.median(default[inside, 1]) == pytest.approx(1.0, abs=0.05)
        inside = (classic[:, 0] >= low) & (classic[:, 0] < high)
        assert np.median(classic[inside, 1]) > 1.1


def _gaussian_fwhm(stamp: np.ndarray) -> float:
    """FWHM (geometric mean of the axes) of an elliptical Gaussian plus constant fitted to
    ``stamp``: one estimator for the PSF and for single stars alike."""
    from scipy.optimize import least_squares

    rows, columns = stamp.shape
    ys, xs = np.mgrid[0:rows, 0:columns]

    def residual(p: np.ndarray) -> np.ndarray:
        amplitude, y0, x0, sy, sx, rho, level = p
        dy, dx = (ys - y0) / sy, (xs - x0) / sx
        model = amplitude * np.exp(-(dy**2 - 2 * rho * dx * dy + dx**2) / (2 * (1 - rho**2)))
        return (model + level - stamp).ravel()

    start = [stamp.max() - np.median(stamp), (rows - 1) / 2, (columns - 1) / 2, 1.2, 1.2, 0.0,
             np.median(stamp)]
    fit = least_squares(residual, start, bounds=([0, 0, 0, 0.3, 0.3, -0.9, -np.inf],
                                                 [np.inf, rows, columns, 20, 20, 0.9, np.inf]))
    _, _, _, sy, sx, rho, _ = fit.x
    return 2.3548 * float(((sy * sx) ** 2 * (1 - rho**2)) ** 0.25)


def test_the_measured_psf_is_the_width_of_single_faint_stars_on_a_real_frame():
    """M13: the PSF measured from the frame against isolated, unflagged stars well below the
    linear limit, each fitted on its own (the same estimator for both): within 15 %
    (measured 3.32 against a median of 3.23 px over 7 stars)."""
    import sep

    image = read_image(ASTROPY_FITS_DATA / "hdu" / "compressed" / "tests" / "data" / "m13.fits")
    prepared = Restorer(RestorationSettings()).preparer.prepare(image.data, image.header)
    data = np.asarray(image.data, dtype=np.float64)
    background = sep.Background(np.ascontiguousarray(data, dtype=np.float32))
    sky_free = data - background.back()
    found = sep.extract(np.ascontiguousarray(sky_free, dtype=np.float32), 10.0,
                        err=background.globalrms, minarea=5)
    fwhm = prepared.psf.fwhm
    half = int(np.ceil(2 * fwhm)) + 1
    limit = prepared.saturation.linear_limit
    tree = cKDTree(np.column_stack([found["x"], found["y"]]))
    widths = []
    for star in found[found["flag"] == 0]:
        row, column = int(round(star["y"])), int(round(star["x"]))
        if len(tree.query_ball_point((star["x"], star["y"]), 6 * fwhm)) > 1 or not (
                half < row < data.shape[0] - half - 1 and half < column < data.shape[1] - half - 1):
            continue
        if limit is not None and data[row, column] >= 0.5 * limit:
            continue
        if star["flux"] < 20 * background.globalrms * np.sqrt(star["npix"]):
            continue
        widths.append(_gaussian_fwhm(sky_free[row - half: row + half + 1,
                                              column - half: column + half + 1]))
    assert len(widths) >= 5
    assert _gaussian_fwhm(prepared.psf.psf) == pytest.approx(np.median(widths), rel=0.15)
