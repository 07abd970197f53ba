"""The measured PSF against fields drawn independently of the simulator
(streamer.operations.science.truth), across the issue's range of seeing: Moffat β 2.5–4,
ellipticity up to 0.2, FWHM 2–6 px — its FWHM within 5 % of the truth's, the unsaturated
stars' of a saturating detector included."""

from __future__ import annotations

import pytest

from streamer.imaging.moments import half_maximum_fwhm
from streamer.imaging.preparation import FramePreparer
from streamer.operations.science.truth import Detector, Seeing, truth_field
from streamer.settings import RestorationSettings

SEEINGS = [Seeing(2.0, 4.0, 0.0, 0.0), Seeing(2.5, 2.5, 0.2, 35.0), Seeing(3.6, 3.0, 0.1, 80.0),
           Seeing(4.5, 4.0, 0.15, 120.0), Seeing(6.0, 2.5, 0.2, 10.0), Seeing(6.0, 4.0, 0.0, 0.0)]


@pytest.mark.parametrize("seeing", SEEINGS,
                         ids=lambda s: f"fwhm{s.fwhm}-beta{s.beta}-e{s.ellipticity}")
def test_measured_fwhm_within_5_percent(seeing):
    field = truth_field((512, 512), seeing, stars=160, seed=int(seeing.fwhm * 10 + seeing.beta))
    psf = FramePreparer.from_settings(RestorationSettings()).prepare(field.image).psf
    assert not psf.is_fallback
    assert psf.fwhm == pytest.approx(half_maximum_fwhm(field.psf), rel=0.05)
    assert psf.ellipticity == pytest.approx(seeing.ellipticity, abs=0.06)


def test_a_saturating_detector_measures_its_linear_stars():
    seeing = Seeing(3.0, 3.0, 0.1, 45.0)
    detector = Detector(gain=1.0, read_noise=20.0, saturation=13000.0, soft=True, dtype="int16")
    field = truth_field((512, 512), seeing, detector, stars=200, seed=9)
    assert field.stars["saturated"].sum() >= 10
    psf = FramePreparer.from_settings(RestorationSettings()).prepare(field.image).psf
    assert psf.fwhm == pytest.approx(half_maximum_fwhm(field.psf), rel=0.05)
