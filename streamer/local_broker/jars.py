"""A Kafka release's broker jars, resolved from Maven Central once per machine.

``pom.xml`` (package data) names the broker artifacts; the machine's Maven copies them into
``~/.cache/streamer/kafka-<version>/libs`` (or under ``$STREAMER_KAFKA_CACHE``), outside the
repository. Nothing is built.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from importlib import resources
from pathlib import Path

from streamer.errors import LocalKafkaError
from streamer.local_broker.versions import KAFKA_VERSION, major, requested_version


def template(name: str) -> str:
    """The text of one of this package's files (``pom.xml``, ``log4j.properties``...)."""
    return resources.files(__package__).joinpath(name).read_text()


def cache_dir(version: str = KAFKA_VERSION) -> Path:
    """Where one version's broker jars are kept (outside the repository)."""
    root = os.environ.get("STREAMER_KAFKA_CACHE") or Path.home() / ".cache" / "streamer"
    return Path(root) / f"kafka-{version}"


def fetch_broker(version: str | None = None) -> Path:
    """Resolve one version's broker jars with Maven once; return the folder holding them."""
    version = version or requested_version()
    folder = cache_dir(version)
    libs, stamp = folder / "libs", folder / "fetched"
    if stamp.exists():
        return libs
    if shutil.which("mvn") is None or shutil.which("java") is None:
        raise LocalKafkaError("fetching the Kafka broker needs Java 17+ and Maven on PATH")
    if libs.exists():  # a fetch that stopped half way: start clean
        shutil.rmtree(libs)
    libs.mkdir(parents=True)
    pom = folder / "pom.xml"
    pom.write_text(template("pom.xml"))
    result = subprocess.run(
        ["mvn", "-q", "-B", "-f", str(pom), "dependency:copy-dependencies",
         f"-Dkafka.version={version}", f"-Dkafka.major={major(version)}",
         f"-DoutputDirectory={libs}"],
        capture_output=True, text=True,
    )
    if result.returncode != 0:
        raise LocalKafkaError(
            f"Maven could not fetch Kafka {version} (is it a released version on Maven "
            f"Central?): {result.stdout[-2000:]}{result.stderr[-2000:]}"
        )
    stamp.write_text(version)
    return libs
