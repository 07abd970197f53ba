"""aiokafka producers, consumers and admin clients configured from :class:`StreamerSettings`.

The size limits of all of them follow ``chunk_bytes``: one record holds one chunk plus its
headers, so nothing depends on the broker accepting frame-sized messages.
"""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from streamer.settings import StreamerSettings

RECORD_OVERHEAD = 256 * 1024  # headers (envelope JSON) and batch framing, generously


def record_limit(settings: StreamerSettings) -> int:
    """Largest record a producer may send and a topic must accept."""
    return settings.chunk_bytes + RECORD_OVERHEAD


def transactional_producer(settings: StreamerSettings, transactional_id: str) -> AIOKafkaProducer:
    """An idempotent, acks=all, transactional producer."""
    compression = None if settings.compression == "none" else settings.compression
    return AIOKafkaProducer(
        **settings.kafka.client_options(),
        transactional_id=transactional_id,
        enable_idempotence=True,
        acks="all",
        compression_type=compression,
        max_request_size=record_limit(settings),
        max_batch_size=max(16384, min(record_limit(settings), 1 << 20)),
        transaction_timeout_ms=int(settings.transaction_timeout_seconds * 1000),
        request_timeout_ms=60000,
    )


def consumer(settings: StreamerSettings, *topics: str, group_id: str | None,
             **options: object) -> AIOKafkaConsumer:
    """A read_committed consumer with manual commits and fetch sizes fit for chunks."""
    limit = record_limit(settings)
    return AIOKafkaConsumer(
        *topics,
        **settings.kafka.client_options(),
        group_id=group_id,
        isolation_level="read_committed",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=limit,
        fetch_max_bytes=max(limit * 4, 52428800),
        **options,
    )


async def start_client(client: AIOKafkaProducer | AIOKafkaConsumer | AIOKafkaAdminClient) -> None:
    """Start an aiokafka client; one that fails to start is closed before the error goes on
    (else it is left half open and asyncio complains about it at exit)."""
    try:
        await client.start()
    except BaseException:
        await (client.close() if isinstance(client, AIOKafkaAdminClient) else client.stop())
        raise


def admin_client(settings: StreamerSettings) -> AIOKafkaAdminClient:
    """An admin client for topic management."""
    return AIOKafkaAdminClient(**settings.kafka.client_options())


async def topic_partitions(settings: StreamerSettings, topic: str) -> list[TopicPartition]:
    """The partitions of ``topic`` as the cluster describes them (none if it does not exist).
    A consumer's own metadata only follows the topics it subscribes to."""
    admin = admin_client(settings)
    await start_client(admin)
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return [TopicPartition(topic, p["partition"])
            for t in described if t["topic"] == topic for p in t["partitions"]]
