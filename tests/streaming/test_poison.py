"""No record can stop the stream: a corpus of 34 kinds of bad records, interleaved with good
frames on the real broker, goes to dead letters (each once, with its reason and its bytes)
while every good frame is restored and archived once, and neither the worker nor the sink
stops."""

from __future__ import annotations

import asyncio
import collections
import json

import pytest

from streamer.streaming.messages import DeadLetter, RestoredFrame
from streamer.streaming.sink import Sink
from streamer.streaming.topics import create_topics
from streamer.worker.worker import Worker
from tests.kafka_support import read_topic, unique_settings
from tests.streaming.poison import corpus, good_frame

pytestmark = pytest.mark.kafka


def test_poison_corpus(kafka_bootstrap, tmp_path):
    from streamer.streaming.kafka_clients import transactional_producer

    settings = unique_settings(kafka_bootstrap, partitions=1, max_frame_pixels=1_000_000,
                               chunk_timeout_seconds=5.0)
    cases = corpus()
    assert len(cases) >= 30

    async def publish() -> dict[int, str]:
        await create_topics(settings)
        producer = transactional_producer(settings, "poisoner")
        await producer.start()
        first_offsets = {}
        try:
            for index, case in enumerate(cases):
                for frame in (good_frame(2 * index), None):
                    async with producer.transaction():
                        if frame is None:
                            futures = [await producer.send(settings.topics.raw, value, key=b"k",
                                                           headers=headers)
                                       for value, headers in case.records]
                        else:
                            from streamer.streaming.framing import frame_records

                            envelope, payload = frame
                            futures = [await producer.send(settings.topics.raw, value, key=b"k",
                                                           headers=headers)
                                       for value, headers in frame_records(
                                           envelope.model_dump_json().encode(), "raw", payload,
                                           settings.chunk_bytes)]
                    if frame is None:
                        first_offsets[(await futures[0]).offset] = case.name
        finally:
            await producer.stop()
        return first_offsets

    async def consume(first_offsets):
        worker = Worker(settings)
        sink = Sink(settings, tmp_path / "archive", group_id=f"{settings.group_id}-sink")
        stop = asyncio.Event()
        tasks = [asyncio.create_task(worker.run(stop)), asyncio.create_task(sink.run(stop))]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 240
        while loop.time() < deadline and (worker.restored < len(cases)
                                          or worker.failed < len(cases)
                                          or len(sink.dead_letters) < len(cases)
                                          or len(sink.restored_frames) < len(cases)):
            assert not any(task.done() for task in tasks), [t.exception() for t in tasks if t.done()]
            await asyncio.sleep(0.5)
        stop.set()
        await asyncio.gather(*tasks)  # both end normally: neither stopped on a record
        dead = await read_topic(settings, settings.topics.dead_letter, expect=len(cases))
        restored = await read_topic(settings, settings.topics.restored, expect=len(cases))
        return worker, sink, dead, restored

    first_offsets = asyncio.run(publish())
    worker, sink, dead, restored = asyncio.run(consume(first_offsets))

    assert worker.restored == len(cases) and worker.failed == len(cases)
    frames = collections.Counter(RestoredFrame.model_validate_json(i.envelope_json).frame_id
                                 for i in restored)
    assert frames == {f"good-{2 * i}": 1 for i in range(len(cases))}
    letters = {}
    for item in dead:
        letter = DeadLetter.model_validate_json(item.envelope_json)
        name = first_offsets[letter.source_offsets[0]]
        assert name not in letters, f"{name} dead-lettered twice"
        letters[name] = (letter, item.payload)
    assert set(letters) == {case.name for case in cases}
    for case in cases:
        letter, payload = letters[case.name]
        assert letter.reason, case.name
        if case.error is not None:
            assert letter.error_type == case.error, (case.name, letter.error_type, letter.reason)
        if case.name not in ("absurd chunk count",):  # refused unread: nothing was held
            assert payload == b"".join(value or b"" for value, _ in case.records), case.name
    archive = tmp_path / "archive"
    assert len(list((archive / "output").rglob("*.fits"))) == len(cases)
    assert len(list((archive / "input").rglob("*.fits"))) == len(cases)  # only good inputs
    assert len(list((archive / "deadletter").rglob("*.json"))) == len(cases)
    statuses = collections.Counter(json.loads(p.read_text()).get("status")
                                   for p in (archive / "manifest").rglob("*.json"))
    assert statuses == {"restored": len(cases), "dead-letter": len(cases)}
