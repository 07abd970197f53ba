"""One settings object: environment first, then flags; security options reach aiokafka."""

from __future__ import annotations

import ssl

import pytest
from pydantic import ValidationError

from streamer.operations.cli import build_parser
from streamer.operations.cli_options import settings_from
from streamer.settings import KafkaSettings, StreamerSettings


def test_environment_then_flags(monkeypatch):
    monkeypatch.setenv("STREAMER_KAFKA__BOOTSTRAP_SERVERS", "env-host:9092")
    monkeypatch.setenv("STREAMER_TOPICS__RAW", "night.raw")
    monkeypatch.setenv("STREAMER_RESTORATION", '{"window": 41, "iterations": 12}')
    monkeypatch.setenv("STREAMER_CHUNK_BYTES", "2097152")
    args = build_parser().parse_args(["worker", "--bootstrap-servers", "flag-host:9093",
                                      "--iterations", "20", "--psf", "moffat:fwhm=3,beta=2.5"])
    settings = settings_from(args)
    assert settings.kafka.bootstrap_servers == "flag-host:9093"  # flag wins
    assert settings.topics.raw == "night.raw"                  # environment kept
    assert settings.restoration.window == 41 and settings.restoration.iterations == 20
    assert settings.restoration.psf.kind == "moffat"
    assert settings.chunk_bytes == 2 * 1024 * 1024


def test_bad_values_are_refused(monkeypatch):
    monkeypatch.setenv("STREAMER_CHUNK_BYTES", "10")
    with pytest.raises(ValidationError, match="chunk_bytes"):
        StreamerSettings()


def test_sasl_and_ssl_pass_through(tmp_path):
    options = KafkaSettings(bootstrap_servers="b:9093", security_protocol="SASL_SSL",
                            sasl_mechanism="SCRAM-SHA-512", sasl_username="observer",
                            sasl_password="secret").client_options()
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["sasl_plain_username"] == "observer"
    assert options["sasl_plain_password"] == "secret"
    assert isinstance(options["ssl_context"], ssl.SSLContext)
    plain = KafkaSettings(bootstrap_servers="b:9092").client_options()
    assert "ssl_context" not in plain and "sasl_mechanism" not in plain


def test_password_is_not_printed():
    settings = KafkaSettings(sasl_password="hunter2")
    assert "hunter2" not in repr(settings) and "hunter2" not in settings.model_dump_json()


@pytest.mark.parametrize("command", ["worker", "camera", "sink", "topics", "demo", "kafka",
                                     "bench-pipeline", "restore", "bench"])
def test_help_reads_well(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: streamer " + command)
    if command in ("worker", "camera", "sink", "topics", "demo"):
        assert "--bootstrap-servers" in text and "--security-protocol" in text


def test_streaming_commands_need_a_cluster(monkeypatch):
    from tests.operations.test_cli import run_cli

    monkeypatch.delenv("STREAMER_KAFKA__BOOTSTRAP_SERVERS", raising=False)
    result = run_cli("worker")
    assert result.returncode == 2 and "no Kafka" in result.stderr


def test_settings_travel_to_a_child_process_through_the_environment(monkeypatch):
    from streamer.imaging.psf import PSFSpec
    from streamer.settings import RestorationSettings

    original = StreamerSettings(
        kafka=KafkaSettings(bootstrap_servers="h:1"), group_id="g", chunk_bytes=1 << 21,
        restoration=RestorationSettings(window=15, psf=PSFSpec(kind="streak", length=9)),
        metrics_address="127.0.0.1:0")
    for name, value in original.to_environment().items():
        monkeypatch.setenv(name, value)
    assert StreamerSettings() == original
