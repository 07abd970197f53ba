"""A real single-node Apache Kafka broker (KRaft) on 127.0.0.1, for tests and the demo.

The broker's jars come from Maven Central once (``kafka/pom.xml``, resolved with the
machine's Maven into ``~/.cache/streamer/kafka-<version>``, or ``$STREAMER_KAFKA_CACHE``).
:class:`LocalKafka` formats a KRaft log directory on free ports, starts the broker, waits until
it serves, and stops it cleanly; started again on the same folder it comes back on its data and
at its address, as a broker does after a crash or a reboot. Production points ``bootstrap_servers`` at its own
cluster instead.
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
from importlib import resources
from pathlib import Path

from streamer.errors import LocalKafkaError

KAFKA_VERSION = "3.9.1"
_LOG4J = """log4j.rootLogger=INFO, file
log4j.appender.file=org.apache.log4j.FileAppender
log4j.appender.file.File={log}
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
log4j.logger.state.change.logger=WARN
"""



def broker_pom_text() -> str:
    """``kafka/pom.xml`` of a source checkout, else the copy installed as package data."""
    checkout = Path(__file__).resolve().parents[2] / "kafka" / "pom.xml"
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


def _cluster_id() -> str:
    """A random KRaft cluster id (16 bytes, URL-safe base64). Kafka's own never starts with
    '-', which its command-line parser would take for an option; neither does ours."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


def _server_properties(port: int, controller: int, data: Path) -> str:
    """A single-node broker+controller on 127.0.0.1."""
    return "\n".join([
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
        Holds the config, the log directory, ``server.log`` and ``broker.json`` (pid, ports).
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory).resolve()
        self.state_file = self.directory / "broker.json"

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

    def _ports(self) -> tuple[int, int]:
        """The client and controller ports written in the folder's config."""
        if not self.config_file.exists():
            raise LocalKafkaError(f"no broker configured in {self.directory}")
        text = self.config_file.read_text()
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
        same address (as after a crash or a reboot); ``fresh=True`` wipes it and formats a
        new cluster on free ports. Starting a running broker returns its address."""
        if self.running():
            return self.bootstrap_servers
        libs = fetch_broker()
        if fresh or not self.formatted():
            self._create(libs)
        return self._launch(libs, timeout)

    def _java(self, libs: Path) -> list[str]:
        return ["java", "-Xms256m", "-Xmx1g", "-XX:+UseG1GC", "-cp", f"{libs}/*",
                f"-Dlog4j.configuration=file:{self.directory / 'log4j.properties'}"]

    def _create(self, libs: Path) -> None:
        """A new folder: config on two free ports, and a formatted KRaft log directory."""
        if self.directory.exists():
            shutil.rmtree(self.directory)
        self.directory.mkdir(parents=True)
        (self.directory / "log4j.properties").write_text(_LOG4J.format(log=self.log_file))
        self.config_file.write_text(
            _server_properties(_free_port(), _free_port(), self.directory / "data"))
        formatted = subprocess.run(
            [*self._java(libs), "kafka.tools.StorageTool", "format",
             f"--cluster-id={_cluster_id()}", "-c", str(self.config_file)],
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
        self.state_file.write_text(json.dumps({"pid": process.pid, "version": KAFKA_VERSION}))
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
