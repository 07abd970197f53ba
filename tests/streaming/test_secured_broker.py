"""A secured cluster: the local broker with a SASL_SSL listener (SCRAM-SHA-512, a certificate
from a CA made at test time). Camera, worker and sink run as processes and authenticate; a
wrong password is one clear error and exit code 4, at once, not a hang."""

from __future__ import annotations

import asyncio
import secrets
import signal
import subprocess
import time

import pytest
from pydantic import SecretStr

from streamer.errors import ClusterAuthenticationError
from streamer.settings import KafkaSettings
from streamer.streaming.cluster_check import diagnose
from streamer.local_broker.broker import LocalKafka, SecuredListener
from streamer.streaming.messages import RestoredFrame
from streamer.streaming.sink import Archive
from streamer.streaming.topics import create_topics
from tests.kafka_support import read_topic, start_cli, unique_settings

pytestmark = pytest.mark.kafka
USER = "streamer-worker"
PASSWORD = secrets.token_urlsafe(18)


@pytest.fixture(scope="module")
def secured_broker(tmp_path_factory):
    broker = LocalKafka(tmp_path_factory.mktemp("secured"),
                        secured=SecuredListener(users={USER: SecretStr(PASSWORD)}))
    broker.start()
    yield broker
    broker.stop()


def secured_settings(broker: LocalKafka, password: str = PASSWORD, **kafka):
    connection = KafkaSettings(bootstrap_servers=broker.secured_bootstrap_servers,
                               security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512",
                               sasl_username=USER, sasl_password=SecretStr(password),
                               ssl_cafile=str(broker.ca_file), **kafka)
    return unique_settings(broker.secured_bootstrap_servers, kafka=connection)


def test_camera_worker_and_sink_authenticate(secured_broker, tmp_path):
    settings = secured_settings(secured_broker)
    frames = 6
    asyncio.run(create_topics(settings))
    log = tmp_path / "processes.log"
    sink = start_cli(settings, "sink", "--out", str(tmp_path / "archive"),
                     "--expect", str(frames), log=log)
    worker = start_cli(settings, "worker", log=log)
    camera = start_cli(settings, "camera", "--simulate", "--count", str(frames), "--size", "64",
                       "--camera-id", "secured-cam", log=log)
    try:
        assert camera.wait(120) == 0, log.read_text()[-3000:]
        assert sink.wait(240) == 0, log.read_text()[-3000:]
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(60) == 0, log.read_text()[-3000:]
    finally:
        for process in (camera, worker, sink):
            if process.poll() is None:
                process.kill()
    restored = asyncio.run(read_topic(settings, settings.topics.restored, expect=frames, settle=1))
    ids = [RestoredFrame.model_validate_json(item.envelope_json).frame_id for item in restored]
    assert len(ids) == len(set(ids)) == frames
    manifests = Archive(tmp_path / "archive").manifests()
    assert sorted(m["frame_id"] for m in manifests) == sorted(ids)
    assert "Traceback" not in log.read_text()


def test_plaintext_listener_is_not_what_the_clients_used(secured_broker):
    # The secured address speaks TLS only: a plaintext client there is turned away, so the
    # processes above really authenticated over SASL_SSL.
    plain = KafkaSettings(bootstrap_servers=secured_broker.secured_bootstrap_servers)
    problem = asyncio.run(diagnose(plain, timeout=10))
    assert problem is not None and "--security-protocol SASL_SSL" in str(problem)
    assert asyncio.run(diagnose(secured_settings(secured_broker).kafka)) is None


@pytest.mark.parametrize("command", [
    ("camera", "--simulate", "--count", "2", "--size", "64"),
    ("worker",),
    ("sink", "--out", "archive"),
    ("topics", "create"),
], ids=lambda command: command[0])
def test_a_wrong_password_is_one_clear_error(secured_broker, tmp_path, command):
    settings = secured_settings(secured_broker, password="not-" + PASSWORD)
    log = tmp_path / "out.log"
    started = time.monotonic()
    process = start_cli(settings, *[str(tmp_path / a) if a == "archive" else a for a in command],
                        log=log)
    try:
        code = process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail(f"{command[0]} hung on a wrong password: {log.read_text()[-2000:]}")
    output = log.read_text()
    errors = [line for line in output.splitlines() if "error" in line.lower()]
    assert code == 4, output
    assert len(errors) == 1, output
    assert errors[0].startswith("streamer: error: Kafka at ")
    assert f"refused SCRAM-SHA-512 authentication as '{USER}'" in errors[0]
    assert "Traceback" not in output and "Unclosed" not in output
    assert time.monotonic() - started < 30


def test_the_diagnosis_names_the_cause(secured_broker):
    wrong = asyncio.run(diagnose(secured_settings(secured_broker, password="wrong").kafka))
    assert isinstance(wrong, ClusterAuthenticationError)
    untrusted = asyncio.run(diagnose(
        secured_settings(secured_broker).kafka.model_copy(update={"ssl_cafile": None})))
    assert untrusted is not None and "--ssl-cafile" in str(untrusted)
    nothing = asyncio.run(diagnose(KafkaSettings(bootstrap_servers="127.0.0.1:1")))
    assert nothing is not None and "cannot reach Kafka at 127.0.0.1:1" in str(nothing)
