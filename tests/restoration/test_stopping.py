"""When Richardson–Lucy stops (streamer.restoration.rl_stopping): the rules one by one, and the
plateau rule firing on a real plate whose reduced chi² levels off above 1."""

from __future__ import annotations

from pathlib import Path

import astropy
import numpy as np
import pytest
from astropy.io import fits

from streamer.restoration.restorer import Restorer
from streamer.restoration.rl_stopping import PLATEAU_SPAN, StoppingRule
from streamer.settings import RestorationSettings

ASTROPY = Path(astropy.__file__).parent
DSS_PLATE = ASTROPY / "wcs" / "tests" / "data" / "dss.14.29.56-62.41.05.fits.gz"
NGC1316 = ASTROPY / "io" / "fits" / "tests" / "data" / "comp.fits"


def _run(rule: StoppingRule, chi2s: list[float | None], changes: list[float] | None = None
         ) -> tuple[int, str | None]:
    changes = changes or [1.0] * len(chi2s)
    for done, (chi2, change) in enumerate(zip(chi2s, changes), 1):
        reason = rule.reason(chi2, change)
        if reason:
            return done, reason
    return len(chi2s), None


def test_discrepancy_fires_at_one():
    assert _run(StoppingRule(True, 0.01), [9.0, 3.0, 1.2, 0.98, 0.9]) == (4, "discrepancy")


def test_plateau_fires_after_its_span_of_small_gains_only():
    falling = [100.0 * 0.9**i for i in range(20)]  # 10 % an iteration: never a plateau
    assert _run(StoppingRule(True, 0.01), falling) == (20, None)
    levelling = [50.0, 20.0, 10.0, 9.95, 9.91, 9.90, 9.89, 9.88]
    done, reason = _run(StoppingRule(True, 0.01), levelling)
    assert reason == "plateau" and done == 3 + PLATEAU_SPAN
    # One larger gain inside the span restarts the count.
    done, reason = _run(StoppingRule(True, 0.01), [10.0, 9.95, 9.0, 8.99, 8.98, 8.97])
    assert (done, reason) == (6, "plateau")


def test_off_without_noise_or_when_asked():
    levelling = [10.0, 9.99, 9.98, 9.97, 9.96]
    assert _run(StoppingRule(False, 0.01), levelling) == (5, None)
    assert _run(StoppingRule(True, 0.0), levelling) == (5, None)
    assert not StoppingRule(False, 0.0).needs_chi2
    assert _run(StoppingRule(False, 0.0, tolerance=1e-3), [None] * 3, [0.1, 1e-2, 1e-4]) == (
        3, "tolerance")


def test_a_real_frame_stops_on_its_plateau():
    """Astropy's NGC 1316 frame: χ² levels off far above 1 (a galaxy's structure the window
    partly removed, a PSF measured from a few stars), so the discrepancy rule never fires; the
    plateau rule ends it early, and its history is in the report."""
    with fits.open(NGC1316) as hdus:
        data = np.asarray(hdus[1].data if hdus[0].data is None else hdus[0].data,
                          dtype=np.float32)
    restored = Restorer(RestorationSettings(iterations=60)).restore(data)
    report = restored.deconvolution
    assert report.stopped_by == "plateau" and report.iterations < 60
    history = report.chi2_history
    assert len(history) == report.iterations and history[-1] > 1.0
    assert all(a - b < 0.01 * a for a, b in zip(history[-PLATEAU_SPAN - 1:],
                                                history[-PLATEAU_SPAN:]))
    off = Restorer(RestorationSettings(iterations=report.iterations + 10, plateau=0.0))
    assert off.restore(data).deconvolution.stopped_by == "iterations"


def test_a_plate_whose_data_are_explained_stops_at_once():
    """Astropy's UK Schmidt plate cutout, restored to its target resolution: the few
    iterations the narrower kernel needs explain its stars to their noise."""
    with fits.open(DSS_PLATE) as hdus:
        data = np.asarray(hdus[0].data, dtype=np.float32)
    report = Restorer(RestorationSettings()).restore(data).deconvolution
    assert report.stopped_by == "discrepancy" and report.chi2 <= 1.0


@pytest.mark.parametrize("plateau", [-0.1, 1.0])
def test_the_setting_is_checked(plateau):
    with pytest.raises(ValueError):
        RestorationSettings(plateau=plateau)
