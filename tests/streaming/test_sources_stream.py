"""Each restored frame's source catalogue on the real broker: one catalogue per restored frame
on the sources topic (read_committed, written in the frame's transaction), rows that follow
the contract, and the sink's ECSV beside the restored frame, listed in the manifest."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
from astropy.table import Table

from streamer.imaging.psf import PSFSpec
from streamer.streaming.camera import CameraPublisher, simulate
from streamer.streaming.messages import FrameMetrics, RestoredFrame, Source, SourceCatalog
from streamer.streaming.sink import Sink
from streamer.streaming.topics import create_topics
from streamer.worker.worker import Worker
from tests.kafka_support import read_topic, unique_settings

pytestmark = pytest.mark.kafka
FRAMES = 3


def test_every_restored_frame_has_its_catalogue_once_and_archived(kafka_bootstrap, tmp_path):
    settings = unique_settings(kafka_bootstrap, partitions=1)

    async def scenario():
        await create_topics(settings)
        async with CameraPublisher(settings, "cat1") as camera:
            await simulate(camera, count=FRAMES, size=160, cadence=0.0,
                           psf=PSFSpec(kind="gaussian", fwhm=2.5))
        # A group of its own: a sink of an earlier test in the default group cannot hold up
        # this one's assignment.
        worker = Worker(settings)
        sink = Sink(settings, tmp_path / "archive", group_id=f"sink-{settings.group_id}")
        # Each its own stop: the worker sets its own once it has handled FRAMES frames, and a
        # shared one stopped the sink before it had read the last of them (2 of 3 archived,
        # twice in loaded CI runs).
        worker_stop, stop = asyncio.Event(), asyncio.Event()
        tasks = [asyncio.create_task(worker.run(worker_stop, max_frames=FRAMES)),
                 asyncio.create_task(sink.run(stop))]
        await asyncio.wait_for(tasks[0], 180)
        for _ in range(900):
            if len(list((tmp_path / "archive" / "sources").rglob("*.ecsv"))) == FRAMES:
                break
            await asyncio.sleep(0.2)
        stop.set()
        await asyncio.gather(*tasks)
        # What the sink saw, should it have archived fewer.
        registry = sink.metrics.registry
        seen = {kind: registry.get_sample_value("streamer_frames_archived_total",
                                                {"kind": kind})
                for kind in ("input", "output", "sources")}
        report = (seen, sorted(p.name for p in (tmp_path / "archive").rglob("*")))
        restored = await read_topic(settings, settings.topics.restored, expect=FRAMES, settle=1)
        catalogues = await read_topic(settings, settings.topics.sources, expect=FRAMES, settle=1)
        metrics = await read_topic(settings, settings.topics.metrics, expect=FRAMES, settle=1,
                                   frames=False)
        return restored, catalogues, metrics, worker, report

    restored, catalogues, metrics, worker, report = asyncio.run(scenario())
    figures = {FrameMetrics.model_validate_json(r.value).frame_id:
               FrameMetrics.model_validate_json(r.value).catalogue for r in metrics}
    restored_ids = sorted(RestoredFrame.model_validate_json(i.envelope_json).frame_id
                          for i in restored)
    envelopes = [SourceCatalog.model_validate_json(i.envelope_json) for i in catalogues]
    assert sorted(e.frame_id for e in envelopes) == restored_ids  # one each, none twice
    for envelope, item in zip(envelopes, catalogues):
        rows = [Source.model_validate(row) for row in json.loads(item.payload)]
        assert envelope.count == len(rows) > 5  # a simulated field has stars
        assert [row.id for row in rows] == list(range(len(rows)))
        assert all(row.snr > 0 and 0 <= row.x < 160 and 0 <= row.y < 160 for row in rows)
        assert envelope.seeing == pytest.approx(2.5, rel=0.2)
        assert envelope.limiting_flux > 0 and envelope.wcs  # the simulator writes a TAN WCS
        assert all(row.ra is not None and row.dec_error > 0 for row in rows)
        assert envelope.mid_exposure > envelope.exposure_start
        assert figures[envelope.frame_id].sources == envelope.count  # the metrics record
        assert figures[envelope.frame_id].limiting_mag == envelope.limiting_mag
    exported = worker.metrics.registry.get_sample_value("streamer_catalogue_sources_count")
    assert exported == FRAMES  # Prometheus saw each catalogue
    archive = tmp_path / "archive"
    tables = sorted((archive / "sources").rglob("*.ecsv"))
    assert len(tables) == FRAMES, report
    for path in tables:
        table = Table.read(path, format="ascii.ecsv")
        place = path.relative_to(archive / "sources").with_suffix("")
        manifest = json.loads((archive / "manifest" / f"{place}.json").read_text())
        assert manifest["sources"]["count"] == len(table) == table.meta["count"]
        assert (archive / "output" / f"{place}.fits").is_file()  # beside its restored frame
        assert np.all(table["flux_error"] > 0) and not np.ma.is_masked(table["ra"])


def test_the_readme_consumer_prints_each_frames_sources(kafka_bootstrap, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    settings = unique_settings(kafka_bootstrap, partitions=1)

    async def publish_and_restore() -> None:
        await create_topics(settings)
        async with CameraPublisher(settings, "cat2") as camera:
            await simulate(camera, count=2, size=128, cadence=0.0,
                           psf=PSFSpec(kind="gaussian", fwhm=2.5))
        await asyncio.wait_for(Worker(settings).run(asyncio.Event(), max_frames=2), 180)

    asyncio.run(publish_and_restore())
    example = Path(__file__).parents[2] / "examples" / "sources_consumer.py"
    done = subprocess.run([sys.executable, str(example), "--bootstrap-servers", kafka_bootstrap,
                           "--topic", settings.topics.sources, "--frames", "2"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    headers = [line for line in done.stdout.splitlines() if line.startswith("cat2:")]
    assert len(headers) == 2 and all("sources, 5σ limit" in line for line in headers)
    assert "RA " in done.stdout and " S/N " in done.stdout
