"""The one-call API (streamer.median_filter / richardson_lucy / restore): numpy in and out,
against SciPy and the float64 reference, with clear errors."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

import streamer
from streamer.errors import (
    DeviceError, FrameDtypeError, FrameShapeError, MaskError, NonFinitePixelError, ParameterError,
    PSFError,
)
from streamer.imaging.psf import PSFSpec, gaussian_psf, moffat_psf
from streamer.imaging.synthetic import star_field
from streamer.restoration.restorer import Restorer
from streamer.settings import RestorationSettings
from tests.reference import richardson_lucy_reference


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.uint16, np.int32, np.uint32,
                                   np.float32, np.float64, np.int64, ">u2"])
def test_median_filter_equals_scipy_in_the_input_type(dtype):
    rng = np.random.default_rng(1)
    image = (rng.random((61, 83)) * 200).astype(dtype)
    got = streamer.median_filter(image, 9)
    if np.dtype(dtype) in (np.dtype(np.float64), np.dtype(np.int64)):
        expected = ndimage.median_filter(image.astype(np.float32), 9, mode="reflect")
        assert got.dtype == np.float32
    else:
        expected = ndimage.median_filter(image, 9, mode="reflect")
        assert got.dtype == np.dtype(dtype).str[1:]  # the type, in this machine's byte order
    np.testing.assert_array_equal(got, expected)


def test_median_filter_keeps_large_integers_exact_or_says_float32():
    small = np.arange(40 * 40, dtype=np.int32).reshape(40, 40) * 1000  # below 2**24
    assert streamer.median_filter(small, 5).dtype == np.int32
    large = small.astype(np.int64) * 100_000  # beyond float32's integers
    assert streamer.median_filter(large, 5).dtype == np.float32


@pytest.mark.parametrize("image, size, error, message", [
    (np.zeros((8, 8, 3)), 3, FrameShapeError, "2-D"),
    (np.zeros((0, 8)), 3, FrameShapeError, "empty"),
    (np.full((8, 8), np.nan), 3, NonFinitePixelError, "NaN"),
    (np.zeros((8, 8), dtype=complex), 3, FrameDtypeError, "real numbers"),
    (np.zeros((8, 8)), 4, ParameterError, "odd"),
    (np.zeros((8, 8)), 257, ParameterError, "255"),
])
def test_median_filter_refuses_bad_input_clearly(image, size, error, message):
    with pytest.raises(error, match=message):
        streamer.median_filter(image, size)


def _blurred(psf: np.ndarray, seed: int = 0) -> np.ndarray:
    field = star_field((72, 90), psf, stars=20, margin=4, seed=seed)
    return field.image - field.image.min() + 1.0


@pytest.mark.parametrize("psf", [gaussian_psf(2.5), moffat_psf(3.0, 3.0, size=15)],
                         ids=["gaussian", "moffat"])
def test_richardson_lucy_matches_the_float64_reference(psf):
    data = _blurred(psf)
    got = streamer.richardson_lucy(data, psf, num_iter=12)
    expected = richardson_lucy_reference(data, psf, 12)
    assert got.dtype == np.float32 and got.shape == data.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-3 * expected.max())


def test_richardson_lucy_with_weights_and_a_psf_that_is_not_normalised():
    psf = gaussian_psf(2.0)
    data = _blurred(psf, seed=3)
    weight = np.ones_like(data)
    weight[20:24, 30:40] = 0
    got = streamer.richardson_lucy(data, psf * 7.0, 8, weight=weight)
    expected = richardson_lucy_reference(data, psf, 8, weight)
    valid = weight > 0
    np.testing.assert_allclose(got[valid], expected[valid], rtol=0,
                               atol=1e-3 * expected.max())


@pytest.mark.parametrize("psf, message", [
    (np.ones((4, 5)), "odd"),
    (-gaussian_psf(2.0), "negative"),
    (np.pad(gaussian_psf(2.0), ((0, 6), (0, 6))), "centr"),
    (np.full((5, 5), np.nan), "NaN"),
])
def test_richardson_lucy_checks_its_psf(psf, message):
    with pytest.raises(PSFError, match=message):
        streamer.richardson_lucy(np.ones((32, 32)), psf, 3)


def test_richardson_lucy_refuses_a_weight_of_another_shape():
    with pytest.raises(MaskError, match="weight has shape"):
        streamer.richardson_lucy(np.ones((32, 32)), gaussian_psf(2.0), 3, weight=np.ones((8, 8)))


def test_restore_equals_the_restorer_and_full_output_tells_more():
    psf = moffat_psf(3.0, 3.0, size=15)
    frame = np.clip(np.round(star_field((128, 128), psf, stars=40, seed=5).image), 0,
                    65535).astype(np.uint16)
    settings = dict(window=15, iterations=10, psf="moffat:fwhm=3,beta=3")
    got = streamer.restore(frame, **settings)
    from streamer.imaging.psf import parse_psf_spec

    reference = Restorer(RestorationSettings(window=15, iterations=10,
                                             psf=parse_psf_spec("moffat:fwhm=3,beta=3")))
    np.testing.assert_array_equal(got, reference.restore(frame).data)
    full = streamer.restore(frame, full_output=True, **settings)
    np.testing.assert_array_equal(full.data, got)
    assert full.deconvolution.iterations <= 10 and full.psf.fwhm > 0


def test_restore_takes_a_psf_array():
    psf = gaussian_psf(2.5)
    frame = star_field((96, 96), psf, stars=30, seed=2).image
    result = streamer.restore(frame, psf=psf, window=11, iterations=5, full_output=True)
    assert result.data.shape == frame.shape and np.isfinite(result.data).all()


def test_devices_are_chosen_once_and_named():
    name = streamer.current_device()
    assert name and streamer.use_device("cpu") == streamer.current_device()
    streamer.use_device(None)
    with pytest.raises(DeviceError):
        streamer.median_filter(np.ones((8, 8)), 3, device="no-such-platform:nothing")


def test_import_streamer_needs_no_opencl():
    assert set(streamer._ONE_CALL) <= set(dir(streamer))
    with pytest.raises(AttributeError):
        streamer.not_a_function  # noqa: B018


def test_restorers_and_the_one_call_api_share_one_device_session(gaussian_field, monkeypatch):
    """One context, one kernel library per device: new settings cost no compilation."""
    from streamer.restoration import device as device_module

    session = device_module.open_session()
    made: list[object] = []
    real_init = device_module.DeviceSession.__init__
    monkeypatch.setattr(device_module.DeviceSession, "__init__",
                        lambda self, *a: made.append(self) or real_init(self, *a))
    image = gaussian_field.image
    streamer.restore(image, window=15, psf="gaussian:fwhm=3", iterations=3)
    programs = dict(session.library._programs)
    streamer.restore(image, window=15, psf="gaussian:fwhm=3", iterations=4, damping=2.0)
    restorer = Restorer(RestorationSettings(window=15, iterations=2,
                                            psf=PSFSpec(kind="gaussian", fwhm=3.0)))
    restorer.restore(image)
    assert restorer.session is session and restorer.device_name == streamer.current_device()
    assert made == []  # no second context
    assert session.library._programs == programs  # nothing built again
