"""The broker version matrix: the default (newest) release runs the whole suite; each older
supported release runs a smoke subset here (frames flow, exactly-once across a worker SIGKILL,
the archive) on a broker of its own. ``STREAMER_KAFKA_VERSION=3.9.1 bin/test -m kafka`` runs
the whole streaming suite on an older release."""

from __future__ import annotations

import inspect

import pytest

from streamer.errors import LocalKafkaError
from streamer.restoration.restorer import Restorer
from streamer.local_broker.broker import LocalKafka
from streamer.local_broker.versions import KAFKA_VERSION, SUPPORTED_VERSIONS, requested_version
from tests.streaming import test_streaming as suite

pytestmark = pytest.mark.kafka
SMOKE = [
    suite.test_frames_flow_and_equal_the_offline_restoration,
    suite.test_sigkill_mid_stream_loses_and_duplicates_nothing,
    suite.test_sink_archives_with_matching_names_idempotently,
]


def test_the_default_is_the_newest_supported_release(monkeypatch):
    assert KAFKA_VERSION == SUPPORTED_VERSIONS[0]
    assert [tuple(map(int, v.split("."))) for v in SUPPORTED_VERSIONS] == sorted(
        (tuple(map(int, v.split("."))) for v in SUPPORTED_VERSIONS), reverse=True)
    monkeypatch.delenv("STREAMER_KAFKA_VERSION", raising=False)
    assert requested_version() == KAFKA_VERSION
    monkeypatch.setenv("STREAMER_KAFKA_VERSION", "3.9.1")
    assert requested_version() == "3.9.1"
    monkeypatch.setenv("STREAMER_KAFKA_VERSION", "latest")
    with pytest.raises(LocalKafkaError, match="not a Kafka release number"):
        requested_version()


@pytest.fixture(scope="module", params=SUPPORTED_VERSIONS[1:])
def older_broker(request, tmp_path_factory):
    broker = LocalKafka(tmp_path_factory.mktemp(f"kafka-{request.param}"), version=request.param)
    bootstrap = broker.start()
    yield broker, bootstrap
    broker.stop()


def test_an_older_broker_runs_its_own_release_and_keeps_it(older_broker):
    broker, _ = older_broker
    assert f"Kafka version: {broker.version}" in broker.log_file.read_text()
    with pytest.raises(LocalKafkaError, match="start it fresh"):
        LocalKafka(broker.directory, version=KAFKA_VERSION).start()


@pytest.mark.parametrize("check", SMOKE, ids=[c.__name__.removeprefix("test_") for c in SMOKE])
def test_smoke_on_an_older_broker(check, older_broker, tmp_path):
    from tests.kafka_support import FAST_RESTORATION

    fixtures = {"kafka_bootstrap": older_broker[1], "tmp_path": tmp_path,
                "restorer": Restorer(FAST_RESTORATION)}
    check(**{name: fixtures[name] for name in inspect.signature(check).parameters})
