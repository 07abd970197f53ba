"""Subcommands that work on files and the local device, without Kafka: ``restore``,
``simulate``, ``bench`` and ``devices``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from streamer.errors import ParameterError
from streamer.operations.cli_options import (
    DEVICE_HELP, expand_inputs, restoration_flags, restoration_from,
)

EXIT_OK, EXIT_FRAME_ERRORS = 0, 1


def register(commands: argparse._SubParsersAction) -> None:
    """Add the offline subcommands to the main parser."""
    _register_restore(commands)
    _register_bench(commands)
    _register_simulate(commands)
    devices = commands.add_parser("devices", help="list the OpenCL devices and their "
                                                  "selection indexes")
    devices.set_defaults(run=run_devices)


def _register_restore(commands: argparse._SubParsersAction) -> None:
    restore = commands.add_parser(
        "restore", help="restore FITS files into an output folder",
        description="Restore FITS frames. Each INPUT is a file or a glob; each output is "
                    "OUTDIR/<input name>.fits, float32, with the input header and provenance.",
    )
    restore.add_argument("inputs", nargs="+", metavar="INPUT", help="FITS files or globs")
    restore.add_argument("-o", "--output", required=True, type=Path, metavar="OUTDIR",
                         help="folder for the restored frames (created if missing)")
    restore.add_argument("--preview", action="store_true",
                         help="also write OUTDIR/<name>.png, input beside restored")
    restoration_flags(restore)
    restore.set_defaults(run=run_restore)


def _register_bench(commands: argparse._SubParsersAction) -> None:
    bench = commands.add_parser(
        "bench", help="time the kernels beside SciPy / scikit-image on synthetic frames",
        description="Answer 'will my device keep up with my camera?': times the median "
                    "filter, one Richardson-Lucy iteration and a whole restoration on a "
                    "synthetic star field, beside the reference libraries in the same run.",
    )
    bench.add_argument("--size", type=int, default=2048, metavar="N",
                       help="frame side (default 2048)")
    bench.add_argument("--window", type=int, default=31, metavar="N",
                       help="median window (default 31)")
    bench.add_argument("--iterations", type=int, default=30, metavar="N",
                       help="RL iterations of the whole-restoration figure (default 30)")
    bench.add_argument("--cadence", type=float, default=None, metavar="SECONDS",
                       help="camera cadence: say whether the device keeps up")
    bench.add_argument("--no-reference", action="store_true",
                       help="skip SciPy/scikit-image (the SciPy median takes about a minute "
                            "at 2048)")
    bench.add_argument("--json", action="store_true", help="print one JSON document")
    bench.add_argument("--device", default=None, metavar="SPEC", help=DEVICE_HELP)
    bench.set_defaults(run=run_bench)


def _register_simulate(commands: argparse._SubParsersAction) -> None:
    simulate = commands.add_parser(
        "simulate", help="write synthetic 16-bit star-field frames as FITS files",
        description="Write synthetic camera frames (stars blurred by a PSF, Poisson noise, "
                    "a sky gradient) to try the restoration on.",
    )
    simulate.add_argument("-o", "--output", required=True, type=Path, metavar="OUTDIR")
    simulate.add_argument("--count", type=int, default=4, metavar="N", help="frames (default 4)")
    simulate.add_argument("--size", type=int, default=512, metavar="N",
                          help="frame side (default 512)")
    simulate.add_argument("--psf", default="gaussian:fwhm=3", metavar="SPEC",
                          help="PSF the stars are blurred with (default gaussian:fwhm=3)")
    simulate.add_argument("--seed", type=int, default=0)
    simulate.set_defaults(run=run_simulate)


def run_restore(args: argparse.Namespace) -> int:
    """``streamer restore``: every input file into the output folder."""
    from streamer.operations.batch import restore_files

    settings = restoration_from(args)
    files, missing = expand_inputs(args.inputs)
    for pattern in missing:
        print(f"streamer: error: {pattern}: no such file (or the glob matched nothing)",
              file=sys.stderr)
    failures = restore_files(files, args.output, settings, args.device, args.preview)
    return EXIT_FRAME_ERRORS if failures or missing else EXIT_OK


def run_simulate(args: argparse.Namespace) -> int:
    """``streamer simulate``: synthetic frames as FITS files."""
    from streamer.imaging.psf import parse_psf_spec
    from streamer.imaging.simulate import write_simulated_frames

    if args.count < 1 or args.size < 16:
        raise ParameterError("simulate needs --count >= 1 and --size >= 16")
    paths = write_simulated_frames(args.output, args.count, args.size,
                                   parse_psf_spec(args.psf), seed=args.seed)
    print(f"wrote {len(paths)} frames to {args.output}")
    return EXIT_OK


def run_bench(args: argparse.Namespace) -> int:
    """``streamer bench``: kernels beside the reference libraries."""
    from streamer.operations.bench import run_bench as bench

    return bench(args)


def run_devices(args: argparse.Namespace) -> int:
    """``streamer devices``: one line per OpenCL device."""
    from streamer.restoration.device import list_devices

    for info in list_devices():
        print(info.describe())
    return EXIT_OK
