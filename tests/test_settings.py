"""One settings object: environment first, then flags; security options reach aiokafka; every
field reaches a child process."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
from typing import Literal, get_args, get_origin

import pytest
from pydantic import BaseModel, SecretStr, ValidationError
from pydantic.fields import FieldInfo

from streamer.operations.cli import build_parser
from streamer.operations.cli_options import (KAFKA_FLAGS, RESTORATION_FLAGS, WORKER_FLAGS,
                                             field_of, flag_help, plain_type, settings_from)
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


def _bounds(field: FieldInfo) -> tuple[float | None, float | None]:
    low = high = None
    for rule in field.metadata:
        low = getattr(rule, "ge", getattr(rule, "gt", low))
        high = getattr(rule, "le", getattr(rule, "lt", high))
    return low, high


def _other_value(path: str, field: FieldInfo):
    """A valid value of one field that is not its default."""
    kind, default = plain_type(field.annotation), field.get_default(call_default_factory=True)
    low, high = _bounds(field)
    if get_origin(kind) is Literal:  # the last choice: auto never, a fixed PSF kind always
        return [choice for choice in get_args(kind) if choice != default][-1]
    if kind is bool:
        return not default
    if kind is int:
        value = (low or 0) + 7 if default is None else default + 1
        return value if high is None or value <= high else default - 1
    if kind is float:
        if default is None:
            return (low + high) / 2 if None not in (low, high) else (low or 0) + 1.5
        return (default + high) / 2 if high is not None else default + 1.5
    if kind is str:
        return f"{path}-set"
    if get_origin(kind) is list and path == "warm_up":  # frames, HEIGHTxWIDTH[:dtype]
        return ["96x96:uint16", "64x80:float32"]
    raise AssertionError(f"{path}: no non-default value for {kind}; teach this test the type")


def _non_default(model: type[BaseModel], prefix: str = "") -> dict:
    """Every field of ``model`` (nested models walked) at a value other than its default;
    secrets left out (they never travel)."""
    values = {}
    for name, field in model.model_fields.items():
        path = prefix + name
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            values[name] = _non_default(field.annotation, path + ".")
        elif SecretStr not in (field.annotation, *get_args(field.annotation)):
            values[name] = _other_value(path, field)
    return values


def _leaves(model: BaseModel, prefix: str = "") -> dict[str, object]:
    found = {}
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            found.update(_leaves(value, f"{prefix}{name}."))
        else:
            found[prefix + name] = value
    return found


def _settings_in_a_child(environment: dict[str, str]) -> StreamerSettings:
    """The settings a real child Python builds from ``environment``."""
    code = "from streamer.settings import StreamerSettings as S; print(S().model_dump_json())"
    child = subprocess.run([sys.executable, "-c", code], env=environment, capture_output=True,
                           text=True, timeout=60)
    assert child.returncode == 0, child.stderr
    return StreamerSettings.model_validate_json(child.stdout)


def _parent_environment() -> dict[str, str]:
    """This process's environment, less a password (which the child would rightly read)."""
    return {name: value for name, value in os.environ.items()
            if name != "STREAMER_KAFKA__SASL_PASSWORD"}


def test_every_field_travels_to_a_child_process():
    defaults = StreamerSettings.model_validate({})
    chosen = StreamerSettings.model_validate(_non_default(StreamerSettings))
    default_leaves, chosen_leaves = _leaves(defaults), _leaves(chosen)
    same = [path for path, value in chosen_leaves.items()
            if value == default_leaves[path] and "password" not in path]
    assert not same, f"left at their defaults, so not tested: {same}"
    assert _settings_in_a_child(chosen.child_environment(_parent_environment())) == chosen


def test_none_travels_as_none_over_inherited_values():
    # The parent's environment names a value for every field (and the restoration as JSON);
    # these settings have None wherever a field allows it, and the child must see None.
    inherited = {**_parent_environment(),
                 **StreamerSettings.model_validate(_non_default(StreamerSettings)).to_environment(),
                 "STREAMER_RESTORATION": '{"tolerance": 0.5}', "STREAMER_KAFKA_VERSION": "3.9.1"}
    nothing = StreamerSettings.model_validate({})
    optional = [path for path, value in _leaves(nothing).items() if value is None]
    assert {"device", "metrics_address", "restoration.tolerance",
            "kafka.sasl_mechanism"} <= set(optional)
    environment = nothing.child_environment(inherited)
    assert "STREAMER_DEVICE" not in environment  # the restoration core reads it too
    assert environment["STREAMER_KAFKA_VERSION"] == "3.9.1"  # not a setting: kept
    assert _settings_in_a_child(environment) == nothing


def test_a_none_over_a_default_travels_as_null(monkeypatch):
    class Wider(StreamerSettings):
        limit: int | None = 5

    environment = Wider.model_validate({"limit": None}).to_environment()
    assert environment["STREAMER_LIMIT"] == "null"
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert Wider().limit is None


def test_the_password_stays_in_the_parent():
    parent = StreamerSettings(kafka=KafkaSettings(sasl_username="u", sasl_password="parent"))
    assert not any("PASSWORD" in name for name in parent.to_environment())
    environment = parent.child_environment(
        {**_parent_environment(), "STREAMER_KAFKA__SASL_PASSWORD": "its-own"})
    assert "parent" not in environment.values()
    child = _settings_in_a_child(environment)
    assert child.kafka.sasl_username == "u"
    assert child.kafka.sasl_password is not None  # its own, from its environment


def test_flags_are_the_fields_they_name():
    flags = (*KAFKA_FLAGS, *RESTORATION_FLAGS, *WORKER_FLAGS)
    assert len({flag.dest for flag in flags}) == len(flags)
    for flag in flags:
        field = field_of(flag.path)
        assert flag_help(flag).startswith(field.description), flag.path
        assert flag.variable in flag_help(flag)
    args = build_parser().parse_args(
        ["worker", "--group-id", "g", "--worker-id", "w", "--device", "cpu", "--partitions", "3",
         "--method", "fft", "--metrics-address", "", "--psf-fallback", "moffat:fwhm=3,beta=2"])
    settings = settings_from(args)
    assert (settings.group_id, settings.worker_id, settings.device) == ("g", "w", "cpu")
    assert settings.topics.partitions == 3 and settings.restoration.method == "fft"
    assert settings.metrics_address == "" and settings.restoration.psf_fallback.beta == 2
    with pytest.raises(SystemExit):
        build_parser().parse_args(["worker", "--method", "bogus"])
