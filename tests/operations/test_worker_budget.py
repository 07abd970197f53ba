"""``streamer bench --profile worker`` on a small frame: it runs the worker's own stages, each
is timed, and the frames/s it prints follow from them."""

from __future__ import annotations

import pytest

from streamer.operations.worker_budget import (DTYPES, THREADED_FRAMES, collect, print_profile,
                                               sustained)


@pytest.fixture(scope="module")
def budget():
    # A device named as the GPU script names it (a RestorationSettings field once, which
    # failed on the first GPU run): the profile takes any device spec.
    return collect(256, "cpu")


def test_every_stage_of_both_frame_types_is_timed(budget):
    assert [(row["size"], row["dtype"]) for row in budget["rows"]] == [(256, d) for d in DTYPES]
    for row in budget["rows"]:
        assert all(row[stage] > 0 for stage in ("decode", "prepare", "device", "finish"))
        assert 0 < row["kernels"] <= row["device"]  # the profiling events within its wall
        assert row["psf"] <= row["prepare"] and row["sources"] + row["encode"] <= row["finish"]
        here, bound = sustained(row)
        # Three stages, one frame each: the slowest sets the pace; without the device only the
        # host stages do.
        slowest = max(row["decode"] + row["prepare"], row["device"], row["finish"])
        assert here == pytest.approx(1 / slowest) and bound >= here


def test_the_table_says_what_it_measured(budget, capsys):
    print_profile(budget)
    text = capsys.readouterr().out
    assert "256² uint16" in text and "256² float32" in text
    assert "host-bound" in text and "0.5 s at 4096²" in text


def test_host_frames_per_second_are_measured_against_threads(budget, capsys):
    from streamer.worker.host_pool import available_cores

    rates = budget["threads"]
    counts = sorted({1, 2, available_cores()})
    assert [(rate["threads"], rate["catalogue_processes"]) for rate in rates] == \
        [(t, 0) for t in counts] + [(t, t) for t in counts]
    assert all(rate["frames_per_second"] > 0 for rate in rates)
    # Each thread gets a frame at least, else a 16-core machine's threads would idle.
    assert [rate["frames"] for rate in rates] == [max(THREADED_FRAMES, rate["threads"])
                                                  for rate in rates]
    print_profile(budget)
    text = capsys.readouterr().out
    assert " 1 thread(s), 0 catalogue" in text and " 2 thread(s), 2 catalogue" in text
    assert "x one thread" in text
