"""The Kafka releases the local broker runs: the supported ones, and the one asked for.

Kept apart from the broker so that ``streamer kafka --help`` can list the releases without
loading the broker itself.
"""

from __future__ import annotations

import os
import re

from streamer.errors import LocalKafkaError

# Newest first: the first is the default. Each passes the whole streaming suite
# (STREAMER_KAFKA_VERSION=... bin/test -m kafka); .ci/run runs a smoke subset on the others.
SUPPORTED_VERSIONS = ("4.4.0", "3.9.1")
KAFKA_VERSION = SUPPORTED_VERSIONS[0]
_VERSION_PATTERN = re.compile(r"^(\d+)\.(\d+)\.(\d+)$")


def requested_version() -> str:
    """The broker version to fetch and format with: ``$STREAMER_KAFKA_VERSION`` or the newest
    supported one. Any released ``X.Y.Z`` may be asked for; only the supported ones are tested."""
    version = os.environ.get("STREAMER_KAFKA_VERSION", "").strip() or KAFKA_VERSION
    if not _VERSION_PATTERN.match(version):
        raise LocalKafkaError(
            f"STREAMER_KAFKA_VERSION={version!r} is not a Kafka release number like "
            f"{KAFKA_VERSION}; supported: {', '.join(SUPPORTED_VERSIONS)}")
    return version


def major(version: str) -> int:
    """The major release of a version string (``"4.4.0"`` → 4)."""
    return int(version.split(".", 1)[0])
