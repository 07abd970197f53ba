"""A scripted stand-in for aiokafka's transactional producer, for unit tests of the publishing
logic only (end-to-end tests use the real broker). It records every transaction and fails
the way a broker outage or a fencing does, when told to."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from aiokafka.errors import KafkaConnectionError, ProducerFenced


@dataclass
class Transaction:
    """What one committed transaction wrote."""

    producer: int
    records: list[tuple[str, bytes, bytes | None]] = field(default_factory=list)
    offsets: dict = field(default_factory=dict)
    group_id: str | None = None


class Broker:
    """The fake's shared state: committed transactions, producers made, failures to come."""

    def __init__(self) -> None:
        self.committed: list[Transaction] = []
        self.producers: list[FakeProducer] = []
        self.fail_starts = 0       # the next N starts fail (broker away)
        self.fail_commits = 0      # the next N transactions fail at commit
        self.fence_next = False    # the next transaction is fenced
        self.open_transactions = 0
        self.max_open = 0

    def factory(self, settings, transactional_id: str) -> FakeProducer:
        """A ``producer_factory`` for TransactionalPublisher."""
        producer = FakeProducer(self, len(self.producers), transactional_id)
        self.producers.append(producer)
        return producer


class FakeProducer:
    """Start, stop, transaction, send and send_offsets_to_transaction, as aiokafka's."""

    def __init__(self, broker: Broker, number: int, transactional_id: str) -> None:
        self.broker, self.number, self.transactional_id = broker, number, transactional_id
        self.started = self.stopped = False
        self._current: Transaction | None = None

    async def start(self) -> None:
        await asyncio.sleep(0)
        if self.broker.fail_starts > 0:
            self.broker.fail_starts -= 1
            raise KafkaConnectionError("fake broker away")
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    def transaction(self) -> _Transaction:
        return _Transaction(self)

    async def send(self, topic: str, value: bytes, *, key=None, headers=None) -> None:
        assert self._current is not None, "send outside a transaction"
        await asyncio.sleep(0)
        self._current.records.append((topic, value, key))

    async def send_offsets_to_transaction(self, offsets: dict, group_id: str) -> None:
        assert self._current is not None, "offsets outside a transaction"
        self._current.offsets.update(offsets)
        self._current.group_id = group_id


class _Transaction:
    def __init__(self, producer: FakeProducer) -> None:
        self.producer = producer

    async def __aenter__(self) -> None:
        producer, broker = self.producer, self.producer.broker
        assert producer.started and not producer.stopped, "transaction on a producer not running"
        assert producer._current is None, "a transaction began inside another"
        broker.open_transactions += 1
        broker.max_open = max(broker.max_open, broker.open_transactions)
        producer._current = Transaction(producer.number)

    async def __aexit__(self, kind, error, traceback) -> bool:
        producer, broker = self.producer, self.producer.broker
        transaction, producer._current = producer._current, None
        broker.open_transactions -= 1
        if error is not None:
            return False
        await asyncio.sleep(0)
        if broker.fence_next:
            broker.fence_next = False
            raise ProducerFenced()
        if broker.fail_commits > 0:
            broker.fail_commits -= 1
            raise KafkaConnectionError("fake broker away at commit")
        broker.committed.append(transaction)
        return False
