"""``streamer topics create``: the four topics with the configs they need — without weakening
a cluster an operator has tuned.

Existing topics are changed incrementally: the topic's own settings (what an operator set, say
``min.insync.replicas=2`` or a longer retention) are read first and kept, ours are added or
updated on top, and only when something differs is the topic altered (the AlterConfigs request
replaces a topic's whole set, so the kept settings are sent back with ours). A durability
setting is never lowered: an operator's larger ``min.insync.replicas`` stays. Each change is
reported.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from aiokafka.admin import NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import TopicAlreadyExistsError

from streamer.settings import StreamerSettings
from streamer.streaming.kafka_clients import admin_client, record_limit, start_client

log = logging.getLogger(__name__)

_TOPIC_OVERRIDE = 1     # DescribeConfigs config_source: DYNAMIC_TOPIC_CONFIG
_NEVER_LOWERED = ("min.insync.replicas",)


@dataclass
class TopicChange:
    """What ``topics create`` did to one topic."""

    action: str                                   # created | updated | unchanged
    changed: dict[str, tuple[str | None, str]] = field(default_factory=dict)  # name → (old, new)
    kept: dict[str, str] = field(default_factory=dict)  # operator settings left as they were

    def __str__(self) -> str:
        parts = [self.action]
        parts += [f"{name} {old or '(default)'} -> {new}" for name, (old, new) in self.changed.items()]
        parts += [f"kept {name}={value}" for name, value in self.kept.items()]
        return "; ".join(parts)


def min_insync_replicas(replication_factor: int) -> int:
    """Writes wait for this many replicas: with 3 or more, a write survives a broker's loss
    and one broker may be down; with fewer there is no room for both."""
    return 2 if replication_factor >= 3 else 1


def topic_configs(settings: StreamerSettings) -> dict[str, dict[str, str]]:
    """Topic name → configs. Frames are chunked, so record limits follow ``chunk_bytes``;
    the producer compresses (``compression.type=producer`` keeps its codec)."""
    topics = settings.topics
    retention = str(int(topics.retention_hours * 3600 * 1000))
    durable = {"min.insync.replicas": str(min_insync_replicas(topics.replication_factor))}
    frame = {
        "max.message.bytes": str(record_limit(settings)),
        "retention.ms": retention,
        "compression.type": "producer",
        "cleanup.policy": "delete",
        **durable,
    }
    return {
        topics.raw: frame,
        topics.restored: frame,
        topics.metrics: {"retention.ms": retention, "cleanup.policy": "delete", **durable},
        topics.sources: frame,  # chunked like frames: a crowded field's catalogue is large
        # Dead letters wait for a person: keep them four times longer.
        topics.dead_letter: {**frame, "retention.ms": str(int(retention) * 4)},
    }


def merge(current: dict[str, str], wanted: dict[str, str]) -> tuple[dict[str, str], TopicChange]:
    """The topic's settings after ours are applied over ``current`` (its own settings), and
    the change that makes."""
    merged = dict(current)
    change = TopicChange("unchanged")
    for name, value in wanted.items():
        old = current.get(name)
        if name in _NEVER_LOWERED and old is not None and int(old) >= int(value):
            if old != value:
                change.kept[name] = old
            continue
        if old != value:
            merged[name] = value
            change.changed[name] = (old, value)
    if change.changed:
        change.action = "updated"
    return merged, change


async def _overrides(admin, name: str) -> dict[str, str]:
    responses = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name)])
    found = {}
    for response in responses:
        for resource in response.to_object()["resources"]:
            for entry in resource["config_entries"]:
                if entry["config_source"] == _TOPIC_OVERRIDE:
                    found[entry["config_names"]] = entry["config_value"]
    return found


async def create_topics(settings: StreamerSettings) -> dict[str, TopicChange]:
    """Create missing topics and bring existing ones to our configs (keeping the operator's);
    returns name → what changed."""
    admin = admin_client(settings)
    await start_client(admin)
    changes: dict[str, TopicChange] = {}
    try:
        existing = set(await admin.list_topics())
        wanted = topic_configs(settings)
        new = [NewTopic(name, settings.topics.partitions, settings.topics.replication_factor,
                        topic_configs=configs)
               for name, configs in wanted.items() if name not in existing]
        if new:
            try:
                await admin.create_topics(new)
            except TopicAlreadyExistsError:
                pass  # another process created it between list and create
        for name, configs in wanted.items():
            if name not in existing:
                changes[name] = TopicChange("created", {k: (None, v) for k, v in configs.items()})
                continue
            merged, change = merge(await _overrides(admin, name), configs)
            if change.changed:
                await admin.alter_configs(
                    [ConfigResource(ConfigResourceType.TOPIC, name, configs=merged)])
            changes[name] = change
    finally:
        await admin.close()
    for name, change in changes.items():
        log.info("topic %s: %s", name, change)
    return changes
