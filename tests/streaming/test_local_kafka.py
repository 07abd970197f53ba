"""The local broker restarts on its own data and address."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streamer.local_broker.broker import LocalKafka, _cluster_id

pytestmark = pytest.mark.kafka


def test_cluster_ids_never_look_like_options():
    assert not any(_cluster_id().startswith("-") for _ in range(2000))


def test_restart_keeps_data_and_address_fresh_wipes_them(tmp_path):
    broker = LocalKafka(tmp_path / "broker")
    address = broker.start()

    async def produce() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=address)
        await producer.start()
        try:
            await producer.send_and_wait("kept", b"before the restart")
        finally:
            await producer.stop()

    async def read(bootstrap: str) -> list[bytes]:
        consumer = AIOKafkaConsumer("kept", bootstrap_servers=bootstrap,
                                    auto_offset_reset="earliest")
        await consumer.start()
        try:
            batches = await consumer.getmany(timeout_ms=5000)
            return [record.value for records in batches.values() for record in records]
        finally:
            await consumer.stop()

    from streamer.settings import KafkaSettings, StreamerSettings
    from streamer.streaming.kafka_clients import admin_client

    async def create_topic() -> None:
        from aiokafka.admin import NewTopic

        admin = admin_client(StreamerSettings(kafka=KafkaSettings(bootstrap_servers=address)))
        await admin.start()
        try:
            await admin.create_topics([NewTopic("kept", 1, 1)])
        finally:
            await admin.close()

    try:
        asyncio.run(create_topic())
        asyncio.run(produce())
        broker.stop()
        assert not broker.running()
        assert broker.start() == address
        assert asyncio.run(read(address)) == [b"before the restart"]
        broker.stop()
        assert (tmp_path / "broker" / "data" / "kept-0").is_dir()
        broker.start(fresh=True)
        assert broker.running()
        assert not (tmp_path / "broker" / "data" / "kept-0").exists()
    finally:
        broker.stop()
