"""``streamer bench --profile sources`` on a small field: it runs, prints both sides, and the
catalogue holds the goals #14 sets against sep's matched filter on the same field."""

from __future__ import annotations

import pytest

from streamer.operations.science.sources_profile import collect, print_profile


@pytest.fixture(scope="module")
def profile():
    return collect(512)


def test_the_catalogue_against_the_reference(profile):
    ours, ref = profile["ours"], profile["reference"]
    # At (near) equal false detections, complete in every bin from S/N 5 within 2 points.
    for bin_, (mine, theirs) in enumerate(zip(ours["completeness"], ref["completeness"])):
        if mine is not None:
            assert mine >= theirs - 0.02, (bin_, mine, theirs)
    assert ours["false_per_4mpx"] <= 50
    close, apart = ours["pairs_split"]["1.0-1.5"], ours["pairs_split"]["1.5-2.0"]
    assert close[0] >= 0.5 * close[1]
    # #14's goal is 95 % at 1.5-2 FWHM: 75 of 75 at 1024² (README); on this small field one
    # pair short of it would be 94 %, so the test holds 90 %.
    assert apart[0] >= 0.9 * apart[1]
    assert ours["centroid_rms"] <= 1.1 * ref["centroid_rms"]  # 0.7-0.86×: blends PSF-fitted
    assert ours["radec_rms"] <= 0.2
    # #14's goal, 1 %: +0.15 % here and at 1024² (the aperture correction restores the Moffat
    # wings beyond the PSF's stamp; the sky is taken clear of the bright stars' halos).
    assert ours["flux_median"] == pytest.approx(1.0, abs=0.01)
    assert ours["flux_scatter"] <= 1.2 * ref["flux_scatter"]


def test_the_profile_prints_both_sides(profile, capsys):
    print_profile(profile)
    text = capsys.readouterr().out
    assert "catalogue" in text and "sep matched (ref)" in text
    assert "pairs split at 1.5-2.0 FWHM" in text and "ratios: centroid" in text
