"""Soak (slow, 30 minutes): worker and sink as processes on the real broker, frames of six
sizes (more than the worker's plan cache holds) and a dead letter every 50th, at one a
second. Memory must level off after the warm-up and the plan cache stay bounded."""

from __future__ import annotations

import asyncio

import pytest

from streamer.operations.soak import run_soak
from streamer.restoration.restorer import MAX_PLANS
from streamer.settings import StreamerSettings

pytestmark = [pytest.mark.slow, pytest.mark.kafka]
MAX_GROWTH = 0.05


def test_thirty_minutes_without_growth(tmp_path):
    report = asyncio.run(run_soak(StreamerSettings(), tmp_path, minutes=30, warmup_minutes=5,
                                  window_minutes=3))
    print(report.text())
    assert report.frames_published >= 30 * 60 * 0.95
    assert report.frames_restored + report.dead_letters == report.frames_published
    assert report.dead_letters == report.dead_letters_published
    assert report.frames_archived == report.frames_restored
    assert report.plans_cached_max <= 2 * MAX_PLANS  # backgrounds and deconvolutions
    for role, growth in report.growth.items():
        assert growth <= MAX_GROWTH, f"{role} RSS grew {growth:.1%}: {report.text()}"
