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
