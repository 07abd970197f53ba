"""``streamer topics create``: the four topics with the configs they need, idempotently."""

from __future__ import annotations

import logging

from aiokafka.admin import NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import TopicAlreadyExistsError

from streamer.streaming.kafka_clients import admin_client, record_limit
from streamer.settings import StreamerSettings

log = logging.getLogger(__name__)


def topic_configs(settings: StreamerSettings) -> dict[str, dict[str, str]]:
    """Topic name → configs. Frames are chunked, so record limits follow ``chunk_bytes``;
    the producer compresses (``compression.type=producer`` keeps its codec)."""
    topics = settings.topics
    retention = str(int(topics.retention_hours * 3600 * 1000))
    frame = {
        "max.message.bytes": str(record_limit(settings)),
        "retention.ms": retention,
        "compression.type": "producer",
        "cleanup.policy": "delete",
    }
    return {
        topics.raw: frame,
        topics.restored: frame,
        topics.metrics: {"retention.ms": retention, "cleanup.policy": "delete"},
        # Dead letters wait for a person: keep them four times longer.
        topics.dead_letter: {**frame, "retention.ms": str(int(retention) * 4)},
    }


async def create_topics(settings: StreamerSettings) -> dict[str, str]:
    """Create missing topics and bring existing ones to the configs; returns name → action."""
    admin = admin_client(settings)
    await admin.start()
    actions: dict[str, str] = {}
    try:
        existing = set(await admin.list_topics())
        wanted = topic_configs(settings)
        new = [
            NewTopic(name, settings.topics.partitions, settings.topics.replication_factor,
                     topic_configs=configs)
            for name, configs in wanted.items() if name not in existing
        ]
        if new:
            try:
                await admin.create_topics(new)
            except TopicAlreadyExistsError:
                pass  # another process created it between list and create
        for name, configs in wanted.items():
            if name in existing:
                await admin.alter_configs(
                    [ConfigResource(ConfigResourceType.TOPIC, name, configs=configs)]
                )
                actions[name] = "updated"
            else:
                actions[name] = "created"
    finally:
        await admin.close()
    for name, action in actions.items():
        log.info("topic %s %s", name, action)
    return actions
