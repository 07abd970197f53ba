"""One transactional producer ridden through broker outages — the single place where the
camera and the worker publish, back off, renew a failed producer and meet fencing.

A :class:`TransactionalPublisher` owns one ``transactional.id``. :meth:`~TransactionalPublisher.
publish` writes a group of records (and, for the worker, the consumer offsets they answer) in
**one transaction**. When the broker is away the transaction fails; the publisher waits (a
doubling backoff, 1 s to 30 s), replaces its producer with a new one of the same id — which
fences the failed one and aborts its open transaction — and tries again, for as long as the
caller's ``keep_trying`` says the records are still wanted, or until a ``deadline``. A
:class:`~aiokafka.errors.ProducerFenced` answer means another process took the id over (the
partition's next owner): the records are that process's to write now, and the publisher says
so instead of retrying. One warning line per outage, however long it lasts.

Transactions on one producer never overlap: aiokafka's state machine asserts (and the calling
task dies) when a transaction begins inside another, so every transaction and every renewal
takes the publisher's lock.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Protocol, Sequence

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError, ProducerFenced
from aiokafka.structs import OffsetAndMetadata

from streamer.settings import StreamerSettings
from streamer.streaming.kafka_clients import start_client, transactional_producer

log = logging.getLogger(__name__)

# What a broker outage looks like to a client: Kafka's errors, timeouts, refused sockets.
TRANSIENT_ERRORS = (KafkaError, asyncio.TimeoutError, OSError)
STOP_SECONDS = 10.0  # a failed producer's stop waits at most this long


@dataclass
class OutgoingRecord:
    """One Kafka record of a transaction."""

    topic: str
    key: bytes
    value: bytes | memoryview  # a view of a frame's payload: its chunk, not a copy
    headers: list[tuple[str, bytes]] = field(default_factory=list)


class Outcome(enum.Enum):
    """How a :meth:`TransactionalPublisher.publish` ended."""

    COMMITTED = "committed"
    """The transaction committed (or, by ``landed``, is known to have committed earlier)."""
    FENCED = "fenced"
    """Another producer with the same transactional id took over; nothing was written."""
    ABANDONED = "abandoned"
    """``keep_trying`` turned false (the partition moved, a stop was asked); nothing written."""


@dataclass
class Published:
    """What a publish did: its outcome, tries, and the seconds spent sending the records and
    committing (those of the try that committed)."""

    outcome: Outcome
    tries: int = 0
    send_seconds: float = 0.0
    commit_seconds: float = 0.0


class Producer(Protocol):
    """The part of aiokafka's producer the publisher uses (fakes implement it in tests)."""

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    def transaction(self): ...
    async def send(self, topic: str, value: bytes, *, key: bytes | None = None,
                   headers: list[tuple[str, bytes]] | None = None): ...
    async def send_offsets_to_transaction(self, offsets: dict, group_id: str) -> None: ...


class Backoff:
    """Waits that double from ``first`` to ``limit`` seconds; :meth:`reset` starts over."""

    def __init__(self, first: float = 1.0, limit: float = 30.0) -> None:
        self.first, self.limit = first, limit
        self.delay = first

    async def wait(self, stop: asyncio.Event | None = None) -> None:
        """Sleep the current delay (less if ``stop`` is set meanwhile), then double it."""
        delay, self.delay = self.delay, min(self.delay * 2, self.limit)
        if stop is None:
            await asyncio.sleep(delay)
            return
        try:
            await asyncio.wait_for(stop.wait(), delay)
        except asyncio.TimeoutError:
            pass

    def reset(self) -> None:
        """Back to the first delay."""
        self.delay = self.first


ProducerFactory = Callable[[StreamerSettings, str], Producer]


def _always() -> bool:
    return True


class TransactionalPublisher:
    """Publishes groups of records, each in one transaction, through broker outages.

    Parameters
    ----------
    settings : StreamerSettings
        Connection, security and producer options.
    transactional_id : str
        One per writer whose work must never be duplicated (a camera, a raw partition).
    name : str
        Who publishes, for log lines (``camera cam1``, ``worker w1 partition 3``).
    producer_factory : callable, optional
        ``(settings, transactional_id) -> producer``; aiokafka's by default (tests pass
        fakes).
    first_delay, max_delay : float
        The backoff between tries, seconds.
    """

    def __init__(self, settings: StreamerSettings, transactional_id: str, name: str, *,
                 producer_factory: ProducerFactory | None = None, first_delay: float = 1.0,
                 max_delay: float = 30.0) -> None:
        self.settings = settings
        self.transactional_id = transactional_id
        self.name = name
        self._factory = producer_factory or transactional_producer
        self._delays = (first_delay, max_delay)
        self._producer: Producer | None = None
        self._lock = asyncio.Lock()
        self._in_outage = False

    @property
    def started(self) -> bool:
        """Whether a producer is up (a renewal that failed leaves none until the next try)."""
        return self._producer is not None

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the producer once (InitProducerId fences the id's previous owner); errors go
        to the caller, which can explain them (an unreachable cluster at start-up)."""
        producer = self._factory(self.settings, self.transactional_id)
        await start_client(producer)
        self._producer = producer

    async def start_when_reachable(self, keep_trying: Callable[[], bool] = _always,
                                   stop: asyncio.Event | None = None) -> bool:
        """Start the producer, retrying while the broker is away and ``keep_trying()``; one
        warning per outage. Returns whether it started."""
        backoff = Backoff(*self._delays)
        while keep_trying() and not (stop is not None and stop.is_set()):
            try:
                async with self._lock:
                    await self._replace_producer()
            except TRANSIENT_ERRORS as error:
                self._outage(f"cannot start the producer ({type(error).__name__}); retrying "
                             "until the broker answers")
                await backoff.wait(stop)
                continue
            self._recovered()
            return True
        return False

    async def stop(self) -> None:
        """Stop the producer (an open transaction is aborted by the id's next owner)."""
        async with self._lock:
            await self._stop_producer()

    # -- publishing -----------------------------------------------------------------------------
    async def publish(self, records: Sequence[OutgoingRecord],
                      offsets: dict[TopicPartition, int | OffsetAndMetadata] | None = None,
                      group_id: str | None = None, *, what: str = "records",
                      keep_trying: Callable[[], bool] = _always,
                      deadline: float | None = None, stop: asyncio.Event | None = None,
                      landed: Callable[[], Awaitable[bool]] | None = None) -> Published:
        """Write ``records`` (and commit ``offsets`` for ``group_id``) in one transaction,
        retried through broker outages on a renewed producer.

        Parameters
        ----------
        what : str
            What is published, for log lines (``frame cam1:0042``).
        keep_trying : callable
            Checked before every try: False abandons the records (the partition moved).
        deadline : float, optional
            ``loop.time()`` after which a failure is raised instead of retried.
        stop : asyncio.Event, optional
            Set: the records are abandoned at the next try (a shutdown).
        landed : coroutine function, optional
            Asked after a failed try: True when the transaction committed although its answer
            was lost (the camera looks for its frame in the topic).

        Raises
        ------
        KafkaError, asyncio.TimeoutError, OSError
            The last failure, once ``deadline`` has passed.
        """
        loop = asyncio.get_running_loop()
        backoff = Backoff(*self._delays)
        tries = 0
        while keep_trying() and not (stop is not None and stop.is_set()):
            tries += 1
            try:
                send, commit = await self._transaction(records, offsets, group_id)
            except ProducerFenced:
                log.warning("%s: fenced by a newer producer of %s; %s are its to write now",
                            self.name, self.transactional_id, what)
                return Published(Outcome.FENCED, tries)
            except TRANSIENT_ERRORS as error:
                if deadline is not None and loop.time() > deadline:
                    raise
                self._outage(f"publishing {what} failed ({type(error).__name__}); retrying "
                             "until the broker answers")
                await backoff.wait(stop)
                await self.renew()
                if landed is not None and await self._landed(landed):
                    return Published(Outcome.COMMITTED, tries)
                continue
            self._recovered()
            return Published(Outcome.COMMITTED, tries, send, commit)
        return Published(Outcome.ABANDONED, tries)

    async def commit_offsets(self, offsets: dict[TopicPartition, int | OffsetAndMetadata],
                             group_id: str, what: str = "offsets") -> bool:
        """Commit ``offsets`` alone in one transaction, once; on failure the producer is
        renewed (so the next transaction starts clean) and False returned."""
        try:
            await self._transaction((), offsets, group_id)
        except TRANSIENT_ERRORS as error:
            log.warning("%s: committing %s failed (%s)", self.name, what, type(error).__name__)
            await self.renew()
            return False
        return True

    async def renew(self) -> None:
        """Replace the producer with a new one of the same id: it fences the failed one and
        aborts its open transaction. A start that fails (the broker still away) leaves no
        producer; the next try starts one."""
        async with self._lock:
            try:
                await self._replace_producer()
            except TRANSIENT_ERRORS:
                pass

    # -- inside the lock ------------------------------------------------------------------------
    async def _transaction(self, records: Sequence[OutgoingRecord],
                           offsets: dict | None, group_id: str | None) -> tuple[float, float]:
        async with self._lock:
            if self._producer is None:
                await self._replace_producer()
            producer = self._producer
            started = time.perf_counter()
            async with producer.transaction():
                for record in records:
                    await producer.send(record.topic, record.value, key=record.key,
                                        headers=record.headers)
                sent = time.perf_counter()
                if offsets:
                    await producer.send_offsets_to_transaction(offsets, group_id)
            return sent - started, time.perf_counter() - sent

    async def _replace_producer(self) -> None:
        await self._stop_producer()
        producer = self._factory(self.settings, self.transactional_id)
        try:
            await producer.start()
        except BaseException:
            await self._stop_quietly(producer)
            raise
        self._producer = producer

    async def _stop_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await self._stop_quietly(producer)

    @staticmethod
    async def _stop_quietly(producer: Producer) -> None:
        try:
            await asyncio.wait_for(producer.stop(), STOP_SECONDS)
        except TRANSIENT_ERRORS:
            pass  # a producer that cannot stop cleanly is fenced by its successor anyway

    async def _landed(self, landed: Callable[[], Awaitable[bool]]) -> bool:
        try:
            return await landed()
        except TRANSIENT_ERRORS:
            return False  # still away: try again later

    def _outage(self, message: str) -> None:
        if not self._in_outage:
            log.warning("%s: %s", self.name, message)
            self._in_outage = True
        else:
            log.debug("%s: %s", self.name, message)

    def _recovered(self) -> None:
        if self._in_outage:
            log.info("%s: the broker answers again", self.name)
            self._in_outage = False
