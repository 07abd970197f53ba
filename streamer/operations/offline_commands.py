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
    _register_psf(commands)
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
    bench.add_argument("--profile", choices=["cpu", "gpu", "science", "sources", "worker"],
                       default="cpu",
                       help="cpu: the kernels beside SciPy/scikit-image (default); gpu: a "
                            "4096² uint16 frame upload to download, per-stage device times, "
                            "beside CuPy when installed; science: fluxes, sizes, pairs, rings, "
                            "noise and saturated stars against a truth table, each way of "
                            "restoring beside the raw frame; sources: the catalogue against "
                            "a truth table beside sep's matched filter; worker: each stage's "
                            "seconds per frame at 1024², 2048² and 4096² (or --size), uint16 "
                            "and float32, and the frames/s they sustain")
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


def _register_psf(commands: argparse._SubParsersAction) -> None:
    psf = commands.add_parser(
        "psf", help="measure the PSF of FITS frames from their stars",
        description="Measure each frame's PSF from its own stars (as --psf auto does) and "
                    "write OUTDIR/<name>.psf.fits (the PSF, with FWHM, ellipticity, angle, "
                    "stars used and method as keywords) and OUTDIR/<name>.psf.png (the PSF "
                    "and its radial profile).")
    psf.add_argument("inputs", nargs="+", metavar="INPUT", help="FITS files or globs")
    psf.add_argument("-o", "--output", type=Path, default=Path("."), metavar="OUTDIR",
                     help="folder for the PSF files (default: here)")
    psf.add_argument("--max-size", type=int, metavar="N", help="largest PSF side (default 63)")
    psf.add_argument("--saturation", type=float, metavar="ADU",
                     help="saturation level (default: header SATURATE, or detected)")
    psf.add_argument("--detect-sigma", type=float, metavar="X",
                     help="source detection threshold in sigmas (default 5)")
    psf.set_defaults(run=run_psf)


def run_psf(args: argparse.Namespace) -> int:
    """``streamer psf``: measure and write each frame's PSF."""
    from streamer.errors import FrameError, PSFError
    from streamer.imaging.fits_io import read_image, write_psf
    from streamer.imaging.psf_measure import PSFMeasureSettings, measure_psf
    from streamer.imaging.psf_plot import write_psf_png
    from streamer.operations.batch import output_name
    from streamer.restoration.provenance import psf_keywords

    options = {name: getattr(args, name) for name in ("max_size", "saturation", "detect_sigma")
               if getattr(args, name) is not None}
    settings = PSFMeasureSettings(**options)
    files, missing = expand_inputs(args.inputs)
    for pattern in missing:
        print(f"streamer: error: {pattern}: no such file (or the glob matched nothing)",
              file=sys.stderr)
    args.output.mkdir(parents=True, exist_ok=True)
    failures = 0
    for path in files:
        try:
            image = read_image(path)
            measured = measure_psf(image.data, header=image.header, settings=settings)
        except (FrameError, PSFError) as error:
            failures += 1
            print(f"streamer: error: {path}: {error}", file=sys.stderr)
            continue
        stem = output_name(path)[: -len(".fits")]
        write_psf(args.output / f"{stem}.psf.fits", measured.psf, psf_keywords(measured))
        write_psf_png(args.output / f"{stem}.psf.png", measured)
        print(f"{path.name}: {measured.method} PSF {measured.psf.shape[0]}x"
              f"{measured.psf.shape[1]}, FWHM {measured.fwhm:.2f} px, ellipticity "
              f"{measured.ellipticity:.3f} at {measured.angle:.0f} deg, "
              f"{measured.stars_used} of {measured.stars_found} sources, "
              f"{measured.seconds:.2f} s")
    return EXIT_FRAME_ERRORS if failures or missing else EXIT_OK


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
