"""A real single-node Apache Kafka broker (KRaft) on 127.0.0.1, for tests and the demo.

:class:`LocalKafka` formats a KRaft log directory on free ports, starts the broker (jars from
:mod:`streamer.local_broker.jars`, the release from :mod:`streamer.local_broker.versions`;
a broker folder remembers the release it was formatted with), waits until it serves, and
stops it cleanly; started again on the same folder it comes back on its data and at its
address, as a broker does after a crash or a reboot. Production points ``bootstrap_servers``
at its own cluster instead.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from streamer.errors import LocalKafkaError
from streamer.local_broker.certificates import make_certificates
from streamer.local_broker.jars import fetch_broker, template
from streamer.local_broker.versions import major, requested_version

_SCRAM_TEXT = re.compile(r"^[A-Za-z0-9._~-]+$")


def _cluster_id() -> str:
    """A random KRaft cluster id (16 bytes, URL-safe base64). Kafka's own never starts with
    '-', which its command-line parser would take for an option; neither does ours."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


class SecuredListener(BaseModel):
    """A SASL_SSL listener (SCRAM-SHA-512 over TLS) beside the plaintext one, which stays on
    loopback for the broker's own traffic. Its certificate is made in the broker folder by a
    throwaway local CA (``tls/ca.pem`` is what clients trust)."""

    model_config = ConfigDict(extra="forbid")

    users: dict[str, SecretStr] = Field(min_length=1, description="SCRAM users and passwords")

    @field_validator("users")
    @classmethod
    def _plain_credentials(cls, users: dict[str, SecretStr]) -> dict[str, SecretStr]:
        # Kafka's --add-scram syntax has no escapes for these.
        for name, password in users.items():
            for text in (name, password.get_secret_value()):
                if not _SCRAM_TEXT.match(text):
                    raise ValueError(
                        "local SCRAM user names and passwords are letters, digits and ._~- "
                        f"only (user {name!r})")
        return users


def _server_properties(port: int, controller: int, data: Path,
                       secured: tuple[int, Path] | None = None) -> str:
    """A single-node broker+controller on 127.0.0.1; ``secured`` adds a SASL_SSL listener on
    that port with that PEM keystore."""
    listeners = [f"PLAINTEXT://127.0.0.1:{port}"]
    protocols = "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
    security: list[str] = []
    if secured is not None:
        secured_port, keystore = secured
        listeners.append(f"SASL_SSL://127.0.0.1:{secured_port}")
        protocols += ",SASL_SSL:SASL_SSL"
        security = [
            "sasl.enabled.mechanisms=SCRAM-SHA-512",
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config="
            "org.apache.kafka.common.security.scram.ScramLoginModule required;",
            "listener.name.sasl_ssl.ssl.keystore.type=PEM",
            f"listener.name.sasl_ssl.ssl.keystore.location={keystore}",
        ]
    return "\n".join([
        "process.roles=broker,controller",
        "node.id=1",
        f"controller.quorum.voters=1@127.0.0.1:{controller}",
        f"listeners={','.join(listeners)},CONTROLLER://127.0.0.1:{controller}",
        f"advertised.listeners={','.join(listeners)}",
        "controller.listener.names=CONTROLLER",
        f"listener.security.protocol.map={protocols}",
        "inter.broker.listener.name=PLAINTEXT",
        *security,
        f"log.dirs={data}",
        "num.partitions=1",
        "offsets.topic.replication.factor=1",
        "offsets.topic.num.partitions=4",
        "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1",
        "transaction.state.log.num.partitions=4",
        "group.initial.rebalance.delay.ms=0",
        "auto.create.topics.enable=false",
        # Room for a chunk of up to 64 MiB plus headers (topics set their own limit).
        "message.max.bytes=68157440",
        "replica.fetch.max.bytes=68157440",
        "socket.request.max.bytes=209715200",
        "transaction.max.timeout.ms=900000",
    ]) + "\n"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class LocalKafka:
    """One broker+controller in a folder of its own.

    Parameters
    ----------
    directory : Path
        Holds the config, the log directory, ``server.log``, ``broker.json`` (pid) and
        ``version`` (the Kafka release it was formatted with).
    version : str, optional
        The release for a new folder; default :func:`requested_version`. A folder with data
        restarts on the release that formatted it.
    secured : SecuredListener, optional
        Adds a SASL_SSL listener (SCRAM-SHA-512) with these users to a new folder.
    """

    def __init__(self, directory: Path, version: str | None = None,
                 secured: SecuredListener | None = None) -> None:
        self.directory = Path(directory).resolve()
        self.state_file = self.directory / "broker.json"
        self._requested = version
        self._secured = secured

    @property
    def version(self) -> str:
        """The release this folder runs: the one it was formatted with, else the requested one."""
        recorded = self.directory / "version"
        if recorded.exists():
            return recorded.read_text().strip()
        return self._requested or requested_version()

    @property
    def config_file(self) -> Path:
        """The broker's ``server.properties``."""
        return self.directory / "server.properties"

    @property
    def log_file(self) -> Path:
        """The broker's own log (``server.log``)."""
        return self.directory / "server.log"

    @property
    def bootstrap_servers(self) -> str:
        """``127.0.0.1:PORT`` of the broker in this folder (running or not)."""
        return f"127.0.0.1:{self._ports()[0]}"

    @property
    def secured_bootstrap_servers(self) -> str:
        """``127.0.0.1:PORT`` of the SASL_SSL listener (a folder made with ``secured``)."""
        match = re.search(r"^advertised\.listeners=.*SASL_SSL://[^:]+:(\d+)",
                          self._config_text(), re.M)
        if match is None:
            raise LocalKafkaError(f"the broker in {self.directory} has no SASL_SSL listener")
        return f"127.0.0.1:{match.group(1)}"

    @property
    def ca_file(self) -> Path:
        """The local CA certificate that clients of the SASL_SSL listener trust."""
        return self.directory / "tls" / "ca.pem"

    def _config_text(self) -> str:
        if not self.config_file.exists():
            raise LocalKafkaError(f"no broker configured in {self.directory}")
        return self.config_file.read_text()

    def _ports(self) -> tuple[int, int]:
        """The client and controller ports written in the folder's config."""
        text = self._config_text()
        client = re.search(r"^advertised\.listeners=PLAINTEXT://[^:]+:(\d+)", text, re.M)
        controller = re.search(r"^controller\.quorum\.voters=1@[^:]+:(\d+)", text, re.M)
        if not (client and controller):
            raise LocalKafkaError(f"{self.config_file} names no listener ports")
        return int(client.group(1)), int(controller.group(1))

    def _state(self) -> dict:
        if not self.state_file.exists():
            raise LocalKafkaError(f"no broker started in {self.directory}")
        return json.loads(self.state_file.read_text())

    def running(self) -> bool:
        """Whether the broker process recorded in the folder is alive."""
        try:
            pid = self._state()["pid"]
        except LocalKafkaError:
            return False
        try:  # a broker this process started and that died is a zombie until reaped
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return False
        except ChildProcessError:
            pass  # not our child
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True

    def formatted(self) -> bool:
        """Whether the folder holds a formatted KRaft log directory (data to restart on)."""
        return (self.directory / "data" / "meta.properties").exists() and self.config_file.exists()

    def start(self, timeout: float = 90.0, fresh: bool = False) -> str:
        """Start the broker and wait until it serves; return the bootstrap address.

        A folder that already holds a broker's data is restarted on that data and at the
        same address (as after a crash or a reboot); ``fresh=True`` stops a broker running
        there, wipes the folder and formats a new cluster on free ports. Starting a running
        broker otherwise returns its address."""
        keep = not fresh and self.formatted()
        if keep and self._requested and self._requested != self.version:
            raise LocalKafkaError(
                f"{self.directory} holds a Kafka {self.version} cluster; start it fresh "
                f"(streamer kafka start --fresh) to run {self._requested}")
        if keep and self._secured and "SASL_SSL://" not in self._config_text():
            raise LocalKafkaError(
                f"{self.directory} holds a broker without a SASL_SSL listener; start it "
                "fresh to add one")
        if self.running():
            if not fresh:
                return self.bootstrap_servers
            self.stop()
        if keep:
            libs = fetch_broker(self.version)
        else:
            version = self._requested or requested_version()
            libs = fetch_broker(version)
            self._create(libs, version)
        return self._launch(libs, timeout)

    def _java(self, libs: Path) -> list[str]:
        logging = (f"-Dlog4j2.configurationFile={self.directory / 'log4j2.properties'}"
                   if major(self.version) >= 4 else
                   f"-Dlog4j.configuration=file:{self.directory / 'log4j.properties'}")
        return ["java", "-Xms256m", "-Xmx1g", "-XX:+UseG1GC", "-cp", f"{libs}/*", logging]

    def _create(self, libs: Path, version: str) -> None:
        """A new folder: config on two free ports, and a formatted KRaft log directory."""
        if self.directory.exists():
            shutil.rmtree(self.directory)
        self.directory.mkdir(parents=True)
        (self.directory / "version").write_text(version)
        for name in ("log4j.properties", "log4j2.properties"):  # Kafka 3.x, 4.x
            (self.directory / name).write_text(template(name).format(log=self.log_file))
        secured, scram = None, []
        if self._secured is not None:
            certificates = make_certificates(self.directory / "tls")
            secured = (_free_port(), certificates.keystore_file)
            for name, password in self._secured.users.items():
                scram += ["--add-scram",
                          f"SCRAM-SHA-512=[name={name},password={password.get_secret_value()}]"]
        self.config_file.write_text(
            _server_properties(_free_port(), _free_port(), self.directory / "data", secured))
        formatted = subprocess.run(
            [*self._java(libs), "kafka.tools.StorageTool", "format",
             f"--cluster-id={_cluster_id()}", "-c", str(self.config_file), *scram],
            capture_output=True, text=True,
        )
        if formatted.returncode != 0:
            raise LocalKafkaError(f"formatting the KRaft log failed: {formatted.stderr[-2000:]}")

    def _launch(self, libs: Path, timeout: float) -> str:
        """Start the broker process on the folder's config; wait until it serves."""
        served_before = self.log_file.stat().st_size if self.log_file.exists() else 0
        with open(self.directory / "stdout.log", "ab") as out:
            process = subprocess.Popen(
                [*self._java(libs), "kafka.Kafka", str(self.config_file)], stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True,  # outlives the CLI
            )
        self.state_file.write_text(json.dumps({"pid": process.pid, "version": self.version}))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                self.state_file.unlink(missing_ok=True)
                raise LocalKafkaError(
                    f"the broker exited with {process.returncode}; see {self.log_file} and "
                    f"{self.directory / 'stdout.log'}"
                )
            if self._log_since(served_before).find("Kafka Server started") >= 0:
                return self.bootstrap_servers
            time.sleep(0.2)
        self.stop()
        raise LocalKafkaError(f"the broker did not start within {timeout:.0f} s; see {self.log_file}")

    def _log_since(self, offset: int) -> str:
        if not self.log_file.exists():
            return ""
        with open(self.log_file, "rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the broker (SIGTERM, then SIGKILL after ``timeout``)."""
        if not self.running():
            return
        pid = self._state()["pid"]
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            try:  # reap it if it is our child
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
            time.sleep(0.1)
        else:
            os.kill(pid, signal.SIGKILL)
        self.state_file.unlink(missing_ok=True)
