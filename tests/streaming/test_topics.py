"""``topics create`` keeps what an operator set and never lowers a durability setting."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from streamer.streaming.kafka_clients import admin_client
from streamer.streaming.topics import _overrides, create_topics, merge, min_insync_replicas
from tests.kafka_support import unique_settings


def test_merge_keeps_operator_settings_and_never_lowers_durability():
    merged, change = merge({"segment.ms": "1000", "min.insync.replicas": "3"},
                           {"min.insync.replicas": "2", "retention.ms": "5"})
    assert merged == {"segment.ms": "1000", "min.insync.replicas": "3", "retention.ms": "5"}
    assert change.action == "updated" and change.changed == {"retention.ms": (None, "5")}
    assert change.kept == {"min.insync.replicas": "3"}
    _, same = merge({"retention.ms": "5"}, {"retention.ms": "5"})
    assert same.action == "unchanged" and not same.changed


@pytest.mark.parametrize("replicas, expected", [(1, 1), (2, 1), (3, 2), (5, 2)])
def test_min_insync_follows_the_replication_factor(replicas, expected):
    assert min_insync_replicas(replicas) == expected


@pytest.mark.kafka
def test_an_operators_settings_survive_a_second_run(kafka_bootstrap):
    settings = unique_settings(kafka_bootstrap, partitions=1)
    raw = settings.topics.raw

    async def scenario():
        first = await create_topics(settings)
        admin = admin_client(settings)
        await admin.start()
        try:  # the operator tunes the raw topic by hand (a whole-set alter, as kafka-configs)
            tuned = {**(await _overrides(admin, raw)), "segment.ms": "123456",
                     "min.insync.replicas": "2"}
            await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, raw, configs=tuned)])
            again = await create_topics(settings)
            longer = settings.model_copy(update={"topics": settings.topics.model_copy(
                update={"retention_hours": 96.0})})
            third = await create_topics(longer)
            return first, again, third, await _overrides(admin, raw)
        finally:
            await admin.close()

    first, again, third, final = asyncio.run(scenario())
    assert first[raw].action == "created"
    assert again[raw].action == "unchanged" and again[raw].kept == {"min.insync.replicas": "2"}
    assert third[raw].changed == {"retention.ms": (str(72 * 3600 * 1000), str(96 * 3600 * 1000))}
    assert final["segment.ms"] == "123456" and final["min.insync.replicas"] == "2"
    assert final["retention.ms"] == str(96 * 3600 * 1000)


def test_a_worker_before_its_topics_says_what_to_do(kafka_bootstrap, tmp_path):
    """Started on a cluster without the topics (the broker does not create them), a worker
    ends with one line that names them and the command to make them: no traceback."""
    import subprocess
    import sys

    from tests.kafka_support import settings_env

    settings = unique_settings(kafka_bootstrap)  # its topics are never created
    done = subprocess.run([sys.executable, "-m", "streamer", "worker"], env=settings_env(settings),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 4, done.stderr[-2000:]
    assert f"{settings.topics.raw}" in done.stderr and "streamer topics create" in done.stderr
    assert "Traceback" not in done.stderr
