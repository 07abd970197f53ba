"""The ``streamer`` command line: one parser; each subcommand registered by the module that
runs it (:mod:`offline_commands`, :mod:`streaming_commands`)."""

from __future__ import annotations

import argparse
import logging
import sys

from streamer import __version__
from streamer.errors import (ClusterConnectionError, DeviceError, KernelBuildError, ParameterError,
                             PSFError, StreamerError)
from streamer.operations import offline_commands, sources_export, streaming_commands
from streamer.operations.kafka_logs import quiet_kafka_logs

EXIT_OK, EXIT_FRAME_ERRORS, EXIT_USAGE, EXIT_DEVICE, EXIT_CLUSTER = 0, 1, 2, 3, 4


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="streamer",
        description="Restore astronomical CCD frames: median background removal and "
                    "Richardson-Lucy deconvolution on an OpenCL device.",
    )
    parser.add_argument("--version", action="version", version=f"streamer {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="log more (-v: info, -vv: debug)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    offline_commands.register(commands)
    streaming_commands.register(commands)
    sources_export.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``streamer`` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    quiet_kafka_logs()
    try:
        return args.run(args)
    except (DeviceError, KernelBuildError) as error:
        print(f"streamer: error: {error}", file=sys.stderr)
        return EXIT_DEVICE
    except ClusterConnectionError as error:
        print(f"streamer: error: {error}", file=sys.stderr)
        return EXIT_CLUSTER
    except (PSFError, ParameterError) as error:
        print(f"streamer: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except StreamerError as error:
        print(f"streamer: error: {error}", file=sys.stderr)
        return EXIT_FRAME_ERRORS


if __name__ == "__main__":
    sys.exit(main())
