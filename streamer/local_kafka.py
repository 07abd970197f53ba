"""A real single-node Apache Kafka broker (KRaft) on 127.0.0.1, for tests and the demo.

The broker's jars come from Maven Central once (``kafka/pom.xml``, resolved with the
machine's Maven into ``~/.cache/streamer/kafka-<version>``, or ``$STREAMER_KAFKA_CACHE``).
:class:`LocalKafka` formats a fresh KRaft log directory, starts the broker on free ports, waits
until it serves, and stops it cleanly. Production points ``bootstrap_servers`` at its own
cluster instead.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from importlib import resources
from pathlib import Path

from streamer.errors import StreamerError

KAFKA_VERSION = "3.9.1"
_LOG4J = """log4j.rootLogger=INFO, file
log4j.appender.file=org.apache.log4j.FileAppender
log4j.appender.file.File={log}
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
log4j.logger.state.change.logger=WARN
"""


class LocalKafkaError(StreamerError):
    """The local broker could not be fetched, started or stopped."""


def broker_pom_text() -> str:
    """``kafka/pom.xml`` of a source checkout, else the copy installed as package data."""
    checkout = Path(__file__).resolve().parent.parent / "kafka" / "pom.xml"
    if checkout.is_file():
        return checkout.read_text()
    return resources.files("streamer.kafka_broker").joinpath("pom.xml").read_text()


def cache_dir() -> Path:
    """Where the broker jars are kept (outside the repository)."""
    root = os.environ.get("STREAMER_KAFKA_CACHE") or Path.home() / ".cache" / "streamer"
    return Path(root) / f"kafka-{KAFKA_VERSION}"


def fetch_broker() -> Path:
    """Resolve the broker jars with Maven once; return the folder holding them."""
    libs = cache_dir() / "libs"
    stamp = cache_dir() / "fetched"
    if stamp.exists():
        return libs
    if shutil.which("mvn") is None or shutil.which("java") is None:
        raise LocalKafkaError("fetching the Kafka broker needs Java 17+ and Maven on PATH")
    libs.mkdir(parents=True, exist_ok=True)
    pom = cache_dir() / "pom.xml"
    pom.write_text(broker_pom_text())
    result = subprocess.run(
        ["mvn", "-q", "-B", "-f", str(pom), "dependency:copy-dependencies",
         f"-DoutputDirectory={libs}"],
        capture_output=True, text=True,
    )
    if result.returncode != 0:
        raise LocalKafkaError(
            f"Maven could not fetch Kafka {KAFKA_VERSION}: {result.stdout[-2000:]}{result.stderr[-2000:]}"
        )
    stamp.write_text(KAFKA_VERSION)
    return libs


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class LocalKafka:
    """One broker+controller in a folder of its own.

    Parameters
    ----------
    directory : Path
        Holds the config, the log directory, ``server.log`` and ``broker.json`` (pid, ports).
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory).resolve()
        self.state_file = self.directory / "broker.json"

    @property
    def bootstrap_servers(self) -> str:
        """``127.0.0.1:PORT`` of the running broker."""
        return f"127.0.0.1:{self._state()['port']}"

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
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True

    def start(self, timeout: float = 90.0) -> str:
        """Format a fresh log directory, start the broker, wait until it serves; return the
        bootstrap address. Starting a running broker returns its address."""
        if self.running():
            return self.bootstrap_servers
        libs = fetch_broker()
        if self.directory.exists():
            shutil.rmtree(self.directory)
        self.directory.mkdir(parents=True)
        port, controller = _free_port(), _free_port()
        data = self.directory / "data"
        log = self.directory / "server.log"
        (self.directory / "log4j.properties").write_text(_LOG4J.format(log=log))
        config = self.directory / "server.properties"
        config.write_text("\n".join([
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@127.0.0.1:{controller}",
            f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
            "controller.listener.names=CONTROLLER",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name=PLAINTEXT",
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
        ]) + "\n")
        java = ["java", "-Xms256m", "-Xmx1g", "-XX:+UseG1GC", "-cp", f"{libs}/*",
                f"-Dlog4j.configuration=file:{self.directory / 'log4j.properties'}"]
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        formatted = subprocess.run(
            [*java, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(config)],
            capture_output=True, text=True,
        )
        if formatted.returncode != 0:
            raise LocalKafkaError(f"formatting the KRaft log failed: {formatted.stderr[-2000:]}")
        with open(self.directory / "stdout.log", "wb") as out:
            process = subprocess.Popen(
                [*java, "kafka.Kafka", str(config)], stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,  # outlives `streamer kafka start`
            )
        self.state_file.write_text(json.dumps(
            {"pid": process.pid, "port": port, "controller_port": controller,
             "version": KAFKA_VERSION}
        ))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise LocalKafkaError(
                    f"the broker exited with {process.returncode}; see {log} and "
                    f"{self.directory / 'stdout.log'}"
                )
            if log.exists() and "Kafka Server started" in log.read_text(errors="replace"):
                return self.bootstrap_servers
            time.sleep(0.2)
        self.stop()
        raise LocalKafkaError(f"the broker did not start within {timeout:.0f} s; see {log}")

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
