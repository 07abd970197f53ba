"""``streamer kafka fetch|start|stop|status``: the development broker of
:mod:`streamer.local_broker`, for the demo, the tests and a laptop.

Only the table of supported releases is loaded with the parser (for ``--help``); the broker
itself is imported when the command runs.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

from streamer.errors import LocalKafkaError
from streamer.local_broker.versions import SUPPORTED_VERSIONS

if TYPE_CHECKING:
    from streamer.local_broker.broker import SecuredListener


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``streamer kafka`` to the main parser."""
    kafka = commands.add_parser("kafka", help="fetch, start or stop the local Kafka broker",
                                description="A real single-node Kafka (KRaft) on 127.0.0.1 "
                                            "for development and tests; jars from Maven Central.")
    kafka.add_argument("action", choices=["fetch", "start", "stop", "status"])
    kafka.add_argument("--dir", type=Path, default=Path(".kafka"),
                       help="broker folder (default .kafka); start on a folder that holds a "
                            "broker's data restarts it on that data and address")
    kafka.add_argument("--fresh", action="store_true",
                       help="start: stop a broker running there, wipe the folder and format a "
                            "new cluster on free ports")
    kafka.add_argument("--version", dest="kafka_version", default=None,
                       help="Kafka release for a new folder or fetch (default "
                            "$STREAMER_KAFKA_VERSION, else the newest supported: "
                            f"{', '.join(SUPPORTED_VERSIONS)}); a folder with data keeps its own")
    kafka.add_argument("--sasl-user", default=None,
                       help="start --fresh: add a SASL_SSL listener (SCRAM-SHA-512, certificate "
                            "from a local CA in DIR/tls) with this user; the password is "
                            "$STREAMER_KAFKA__SASL_PASSWORD")
    kafka.set_defaults(run=run_kafka)


def run_kafka(args: argparse.Namespace) -> int:
    """``streamer kafka fetch|start|stop|status``."""
    from streamer.local_broker.broker import LocalKafka
    from streamer.local_broker.jars import fetch_broker

    broker = LocalKafka(args.dir, version=args.kafka_version, secured=_secured_listener(args))
    if args.action == "fetch":
        print(fetch_broker(args.kafka_version))
    elif args.action == "start":
        print(broker.start(fresh=args.fresh))
        if "SASL_SSL://" in broker.config_file.read_text():
            print(f"SASL_SSL {broker.secured_bootstrap_servers} "
                  f"(SCRAM-SHA-512, --ssl-cafile {broker.ca_file})")
    elif args.action == "stop":
        broker.stop()
    else:
        print(f"{broker.bootstrap_servers} (Kafka {broker.version})" if broker.running()
              else "stopped")
    return 0


def _secured_listener(args: argparse.Namespace) -> SecuredListener | None:
    """The SASL_SSL listener ``--sasl-user`` asks for (password from the environment)."""
    from streamer.local_broker.broker import SecuredListener

    if args.sasl_user is None:
        return None
    password = os.environ.get("STREAMER_KAFKA__SASL_PASSWORD")
    if not password:
        raise LocalKafkaError("--sasl-user needs the password in STREAMER_KAFKA__SASL_PASSWORD")
    try:
        return SecuredListener(users={args.sasl_user: password})
    except ValueError as error:
        raise LocalKafkaError(str(error).splitlines()[-1].strip()) from None
