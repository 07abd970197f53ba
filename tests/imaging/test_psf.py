"""PSF models are normalised, odd, centred and the size they claim; bad PSFs are refused."""

from __future__ import annotations

import math

import numpy as np
import pytest
from astropy.io import fits

from streamer.errors import PSFError
from streamer.imaging.psf import (
    PSFSpec,
    gaussian_psf,
    load_psf_fits,
    moffat_psf,
    parse_psf_spec,
    streak_psf,
    validate_psf,
)
from tests.reference import measure_fwhm


def _half_maximum_width(profile: np.ndarray) -> float:
    """Width at half maximum of a 1-D profile through the peak, by linear interpolation."""
    peak = profile.argmax()
    half = profile[peak] / 2.0

    def crossing(step: int) -> float:
        i = peak
        while profile[i + step] > half:
            i += step
        a, b = profile[i], profile[i + step]
        return i + step * (a - half) / (a - b)

    return crossing(1) - crossing(-1)


@pytest.mark.parametrize("psf", [gaussian_psf(3.0), moffat_psf(4.0, 2.5), streak_psf(21, 40.0, 1.5),
                                 gaussian_psf(2.0, size=25)])
def test_models_are_valid(psf):
    assert psf.shape[0] % 2 == 1 and psf.shape[1] % 2 == 1
    assert np.all(psf >= 0)
    assert math.isclose(psf.sum(), 1.0, rel_tol=1e-12)
    rows, columns = np.indices(psf.shape)
    assert abs((rows * psf).sum() - psf.shape[0] // 2) < 1e-6
    assert abs((columns * psf).sum() - psf.shape[1] // 2) < 1e-6


@pytest.mark.parametrize("fwhm", [2.0, 3.5, 6.0])
def test_gaussian_and_moffat_fwhm(fwhm):
    for psf in (gaussian_psf(fwhm, size=41), moffat_psf(fwhm, 3.0, size=41)):
        centre = psf.shape[0] // 2
        assert _half_maximum_width(psf[centre]) == pytest.approx(fwhm, rel=0.03)


@pytest.mark.filterwarnings("ignore::scipy.optimize.OptimizeWarning")
def test_gaussian_fitted_fwhm():
    assert measure_fwhm(gaussian_psf(4.0, size=41), 20, 20, half=20) == pytest.approx(4.0, rel=0.01)


def test_streak_length_and_angle():
    psf = streak_psf(31, 30.0, 1.0)
    rows, columns = np.indices(psf.shape)
    y = -(rows - psf.shape[0] // 2)  # image rows grow downwards in the array
    x = columns - psf.shape[1] // 2
    cov = np.cov(np.vstack([x.ravel(), -y.ravel()]), aweights=psf.ravel())
    values, vectors = np.linalg.eigh(cov)
    major = vectors[:, -1]
    angle = math.degrees(math.atan2(major[1], major[0])) % 180
    assert angle == pytest.approx(30.0, abs=1.0)
    # a uniform segment of length L has variance L²/12 along it
    assert math.sqrt(12 * values[-1]) == pytest.approx(31, rel=0.05)


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.ones((4, 5)), "odd"),
        (np.ones(5), "2-D"),
        (np.full((3, 3), np.nan), "NaN"),
        (np.array([[0, 0, 0], [0, 1, 0], [0, 0, -0.1]]), "negative"),
        (np.zeros((3, 3)), "sums to"),
        (np.pad(np.ones((1, 1)), ((0, 4), (0, 4))), "centroid"),
    ],
)
def test_invalid_psfs_are_refused(bad, message):
    with pytest.raises(PSFError, match=message):
        validate_psf(bad)


def test_validate_normalises():
    psf = np.zeros((3, 3))
    psf[1, 1] = 5.0
    assert validate_psf(psf)[1, 1] == 1.0


@pytest.mark.parametrize(
    "text, kind",
    [("gaussian:fwhm=3", "gaussian"), ("moffat:fwhm=3,beta=2.5,size=21", "moffat"),
     ("streak:length=41,angle=30,core=1.5", "streak"), ("GAUSSIAN: fwhm = 2", "gaussian")],
)
def test_spec_parsing_round_trips(text, kind):
    spec = parse_psf_spec(text)
    assert spec.kind == kind
    assert parse_psf_spec(str(spec)) == spec
    assert spec.build().sum() == pytest.approx(1.0)


@pytest.mark.parametrize(
    "text, message",
    [("airy:fwhm=3", "kind"), ("gaussian", "fwhm"), ("gaussian:fwhm=-1", "greater than 0"),
     ("moffat:fwhm=3,beta=0.5", "greater than 1"), ("gaussian:fwhm", "NAME=VALUE"),
     ("gaussian:fwhm=3,size=4", "odd"), ("streak:angle=3", "length"),
     ("gaussian:fwhm=3,colour=red", "colour")],
)
def test_bad_specs_are_refused(text, message):
    with pytest.raises(PSFError, match=message):
        parse_psf_spec(text).build()


def test_psf_from_fits(tmp_path):
    psf = moffat_psf(3.0, 2.5, size=15)
    path = tmp_path / "psf.fits"
    fits.PrimaryHDU(psf * 1000).writeto(path)
    loaded = parse_psf_spec(f"file:{path}").build()
    np.testing.assert_allclose(loaded, psf, rtol=1e-12)
    bad = tmp_path / "even.fits"
    fits.PrimaryHDU(np.ones((4, 4))).writeto(bad)
    with pytest.raises(PSFError, match="odd"):
        load_psf_fits(bad)
    with pytest.raises(PSFError, match="cannot read PSF"):
        load_psf_fits(tmp_path / "absent.fits")


def test_spec_is_a_pydantic_model():
    spec = PSFSpec(kind="moffat", fwhm=3.0, beta=2.5)
    assert PSFSpec.model_validate_json(spec.model_dump_json()) == spec
