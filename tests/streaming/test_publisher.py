"""The transactional publisher's logic — one transaction per group of records, outages ridden
on renewed producers, fencing, abandonment, deadlines — against a scripted fake producer.
The same publisher on the real broker: tests/streaming/test_streaming.py and
test_broker_restart.py."""

from __future__ import annotations

import asyncio
import logging

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaConnectionError

from streamer.settings import StreamerSettings
from streamer.streaming.publisher import Backoff, Outcome, OutgoingRecord, TransactionalPublisher
from tests.streaming.fake_kafka import Broker

RECORDS = [OutgoingRecord("out", b"k", b"one"), OutgoingRecord("out", b"k", b"two")]
OFFSETS = {TopicPartition("in", 0): 7}


def publisher(broker: Broker) -> TransactionalPublisher:
    return TransactionalPublisher(StreamerSettings(), "test-id", "test", first_delay=0.001,
                                  max_delay=0.002, producer_factory=broker.factory)


def run(coroutine):
    return asyncio.run(coroutine)


def test_records_and_offsets_commit_in_one_transaction():
    broker = Broker()

    async def scenario():
        sender = publisher(broker)
        await sender.start()
        return await sender.publish(RECORDS, OFFSETS, "group")

    published = run(scenario())
    assert published.outcome is Outcome.COMMITTED and published.tries == 1
    [transaction] = broker.committed
    assert [value for _, value, _ in transaction.records] == [b"one", b"two"]
    assert transaction.offsets == OFFSETS and transaction.group_id == "group"


def test_an_outage_renews_the_producer_and_retries_with_one_warning(caplog):
    broker = Broker()

    async def scenario():
        sender = publisher(broker)
        await sender.start()
        broker.fail_commits, broker.fail_starts = 3, 2
        return await sender.publish(RECORDS, OFFSETS, "group", what="frame x")

    with caplog.at_level(logging.DEBUG, logger="streamer.streaming.publisher"):
        published = run(scenario())
    assert published.outcome is Outcome.COMMITTED and published.tries >= 4
    assert len(broker.committed) == 1 and broker.committed[0].producer == len(broker.producers) - 1
    assert all(p.stopped for p in broker.producers[:-1])  # each failed producer was replaced
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "publishing frame x failed" in warnings[0].getMessage()
    assert any("answers again" in r.getMessage() for r in caplog.records)


def test_a_fenced_publisher_writes_nothing_and_does_not_retry():
    broker = Broker()

    async def scenario():
        sender = publisher(broker)
        await sender.start()
        broker.fence_next = True
        return await sender.publish(RECORDS, OFFSETS, "group")

    published = run(scenario())
    assert published.outcome is Outcome.FENCED and published.tries == 1
    assert broker.committed == []


def test_records_no_longer_wanted_are_abandoned_during_an_outage():
    broker = Broker()
    wanted = [True]

    async def scenario():
        sender = publisher(broker)
        await sender.start()
        broker.fail_commits = 1000

        async def revoke_soon():
            await asyncio.sleep(0.05)
            wanted[0] = False

        revoking = asyncio.create_task(revoke_soon())
        published = await sender.publish(RECORDS, OFFSETS, "group", keep_trying=lambda: wanted[0])
        await revoking
        return published

    published = run(scenario())
    assert published.outcome is Outcome.ABANDONED and broker.committed == []


def test_a_stop_event_abandons_the_retry_loop_promptly():
    broker = Broker()

    async def scenario():
        sender = TransactionalPublisher(StreamerSettings(), "id", "test", first_delay=30.0,
                                        producer_factory=broker.factory)
        await sender.start()
        broker.fail_commits = 1000
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(0.1, stop.set)
        return await asyncio.wait_for(sender.publish(RECORDS, stop=stop), 5)

    assert run(scenario()).outcome is Outcome.ABANDONED


def test_after_the_deadline_the_failure_is_raised():
    broker = Broker()

    async def scenario():
        sender = publisher(broker)
        await sender.start()
        broker.fail_commits = 1000
        deadline = asyncio.get_running_loop().time() + 0.05
        await sender.publish(RECORDS, deadline=deadline)

    with pytest.raises(KafkaConnectionError):
        run(scenario())


def test_a_commit_whose_answer_was_lost_is_found_and_not_repeated():
    broker = Broker()
    asked: list[int] = []

    async def scenario():
        sender = publisher(broker)
        await sender.start()
        broker.fail_commits = 1

        async def landed() -> bool:
            asked.append(1)
            return True  # the camera found its frame in the topic

        return await sender.publish(RECORDS, landed=landed)

    published = run(scenario())
    assert published.outcome is Outcome.COMMITTED and asked == [1]
    assert broker.committed == []  # not written a second time


def test_transactions_on_one_publisher_never_overlap():
    broker = Broker()

    async def scenario():
        sender = publisher(broker)
        await sender.start()
        broker.fail_commits = 2
        await asyncio.gather(
            sender.publish(RECORDS, OFFSETS, "group"),
            sender.commit_offsets({TopicPartition("in", 0): 3}, "group"),
            sender.publish(RECORDS, OFFSETS, "group"),
            sender.renew())

    run(scenario())
    assert broker.max_open == 1


def test_a_failed_offset_commit_renews_the_producer():
    broker = Broker()

    async def scenario():
        sender = publisher(broker)
        await sender.start()
        broker.fail_commits = 1
        first = await sender.commit_offsets(OFFSETS, "group")
        second = await sender.commit_offsets(OFFSETS, "group")
        return first, second

    assert run(scenario()) == (False, True)
    assert len(broker.producers) == 2 and broker.producers[0].stopped
    assert broker.committed[0].offsets == OFFSETS and broker.committed[0].records == []


def test_start_when_reachable_waits_out_the_outage_or_gives_up():
    broker = Broker()

    async def scenario():
        sender = publisher(broker)
        broker.fail_starts = 3
        started = await sender.start_when_reachable()
        gone = publisher(broker)
        broker.fail_starts = 1000
        calls = iter([True, True, False])
        given_up = await gone.start_when_reachable(keep_trying=lambda: next(calls))
        return started, sender.started, given_up, gone.started

    assert run(scenario()) == (True, True, False, False)


def test_backoff_doubles_to_its_limit_and_resets():
    async def scenario():
        backoff = Backoff(0.001, 0.004)
        seen = []
        for _ in range(4):
            seen.append(backoff.delay)
            await backoff.wait()
        backoff.reset()
        return seen, backoff.delay

    assert run(scenario()) == ([0.001, 0.002, 0.004, 0.004], 0.001)
