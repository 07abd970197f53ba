"""The ``streamer`` command line: ``restore``, ``bench`` and ``devices``."""

from __future__ import annotations

import argparse
import glob
import logging
import sys
from pathlib import Path

from streamer import __version__
from streamer.device import DEVICE_ENV_VAR, list_devices
from streamer.cli_streaming import add_streaming_commands, run_streaming_command
from streamer.errors import DeviceError, KernelBuildError, ParameterError, PSFError, StreamerError

EXIT_OK, EXIT_FRAME_ERRORS, EXIT_USAGE, EXIT_DEVICE = 0, 1, 2, 3


def _add_restoration_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("restoration")
    group.add_argument("--window", type=int, default=31, metavar="N",
                       help="median window side in pixels, odd, 3-255; larger than a star "
                            "(default: 31)")
    group.add_argument("--psf", default="gaussian:fwhm=3", metavar="SPEC",
                       help="gaussian:fwhm=F | moffat:fwhm=F,beta=B | "
                            "streak:length=L,angle=DEG,core=F | file:PATH.fits; "
                            "add size=N for the array side (default: gaussian:fwhm=3)")
    group.add_argument("--iterations", type=int, default=30, metavar="N",
                       help="Richardson-Lucy iterations (default: 30)")
    group.add_argument("--tolerance", type=float, default=None, metavar="X",
                       help="stop early once the relative change of an iteration is below X")
    group.add_argument("--method", default="auto",
                       choices=["auto", "dense", "sparse", "separable", "fft"],
                       help="convolution method; auto times the candidates on the device")
    parser.add_argument("--device", default=None, metavar="SPEC",
                        help=f"OpenCL device: auto, gpu, cpu, an index from `streamer devices`, "
                             f"or PLATFORM:DEVICE name parts (default: ${DEVICE_ENV_VAR} or auto)")


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
    _add_restoration_options(restore)

    bench = commands.add_parser(
        "bench", help="time the kernels beside SciPy / scikit-image on synthetic frames",
        description="Answer 'will my device keep up with my camera?': times the median "
                    "filter, one Richardson-Lucy iteration and a whole restoration on a "
                    "synthetic star field, beside the reference libraries in the same run.",
    )
    bench.add_argument("--size", type=int, default=2048, metavar="N", help="frame side (default 2048)")
    bench.add_argument("--window", type=int, default=31, metavar="N", help="median window (default 31)")
    bench.add_argument("--iterations", type=int, default=30, metavar="N",
                       help="RL iterations of the whole-restoration figure (default 30)")
    bench.add_argument("--cadence", type=float, default=None, metavar="SECONDS",
                       help="camera cadence: say whether the device keeps up")
    bench.add_argument("--no-reference", action="store_true",
                       help="skip SciPy/scikit-image (the SciPy median takes about a minute at 2048)")
    bench.add_argument("--json", action="store_true", help="print one JSON document")
    bench.add_argument("--device", default=None, metavar="SPEC", help="OpenCL device (see restore)")

    simulate = commands.add_parser(
        "simulate", help="write synthetic 16-bit star-field frames as FITS files",
        description="Write synthetic camera frames (stars blurred by a PSF, Poisson noise, "
                    "a sky gradient) to try the restoration on.",
    )
    simulate.add_argument("-o", "--output", required=True, type=Path, metavar="OUTDIR")
    simulate.add_argument("--count", type=int, default=4, metavar="N", help="frames (default 4)")
    simulate.add_argument("--size", type=int, default=512, metavar="N", help="frame side (default 512)")
    simulate.add_argument("--psf", default="gaussian:fwhm=3", metavar="SPEC",
                          help="PSF the stars are blurred with (default gaussian:fwhm=3)")
    simulate.add_argument("--seed", type=int, default=0)

    commands.add_parser("devices", help="list the OpenCL devices and their selection indexes")
    add_streaming_commands(commands)
    return parser


def _expand(patterns: list[str]) -> tuple[list[Path], list[str]]:
    files: list[Path] = []
    missing: list[str] = []
    for pattern in patterns:
        if Path(pattern).exists():
            files.append(Path(pattern))
            continue
        matches = sorted(glob.glob(pattern))
        if matches:
            files.extend(Path(m) for m in matches)
        else:
            missing.append(pattern)
    return files, missing


def _command_restore(args: argparse.Namespace) -> int:
    from streamer.batch import restore_files
    from streamer.psf import parse_psf_spec
    from streamer.restore import RestorationSettings

    settings = RestorationSettings(
        window=args.window, psf=parse_psf_spec(args.psf), iterations=args.iterations,
        tolerance=args.tolerance, method=args.method,
    )
    files, missing = _expand(args.inputs)
    for pattern in missing:
        print(f"streamer: error: {pattern}: no such file (or the glob matched nothing)",
              file=sys.stderr)
    failures = restore_files(files, args.output, settings, args.device, args.preview)
    return EXIT_FRAME_ERRORS if failures or missing else EXIT_OK


def _command_simulate(args: argparse.Namespace) -> int:
    from streamer.psf import parse_psf_spec
    from streamer.simulate import write_simulated_frames

    if args.count < 1 or args.size < 16:
        raise ParameterError("simulate needs --count >= 1 and --size >= 16")
    paths = write_simulated_frames(args.output, args.count, args.size, parse_psf_spec(args.psf),
                                   seed=args.seed)
    print(f"wrote {len(paths)} frames to {args.output}")
    return EXIT_OK


def _command_bench(args: argparse.Namespace) -> int:
    from streamer.bench import run_bench

    return run_bench(args)


class _TransientKafkaErrors(logging.Filter):
    """aiokafka logs the coordinator being unavailable while a fresh cluster creates its
    internal topics as ERROR; it retries by itself, so show those at DEBUG only."""

    TRANSIENT = ("GroupCoordinatorNotAvailableError", "Marking the coordinator dead",
                 "CoordinatorNotAvailableError")

    def filter(self, record: logging.LogRecord) -> bool:
        if any(text in record.getMessage() for text in self.TRANSIENT):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger().isEnabledFor(logging.DEBUG)
        return True


def quiet_transient_kafka_errors() -> None:
    """Install :class:`_TransientKafkaErrors` on aiokafka's loggers."""
    for name in ("aiokafka.consumer.group_coordinator", "aiokafka.producer.sender",
                 "aiokafka.cluster", "aiokafka"):
        logging.getLogger(name).addFilter(_TransientKafkaErrors())


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``streamer`` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    quiet_transient_kafka_errors()
    try:
        if args.command == "devices":
            for info in list_devices():
                print(info.describe())
            return EXIT_OK
        if args.command == "restore":
            return _command_restore(args)
        if args.command == "simulate":
            return _command_simulate(args)
        if args.command == "bench":
            return _command_bench(args)
        return run_streaming_command(args)
    except (DeviceError, KernelBuildError) as error:
        print(f"streamer: error: {error}", file=sys.stderr)
        return EXIT_DEVICE
    except (PSFError, ParameterError) as error:
        print(f"streamer: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except StreamerError as error:
        print(f"streamer: error: {error}", file=sys.stderr)
        return EXIT_FRAME_ERRORS


if __name__ == "__main__":
    sys.exit(main())
