"""Flag groups shared by several subcommands, and the settings object built from them.

Flags carry no defaults of their own: an absent flag leaves the environment's value
(``STREAMER_*``) or the model's default in place, so the defaults live in one place — the
pydantic models of :mod:`streamer.settings`.
"""

from __future__ import annotations

import argparse
import glob
from pathlib import Path

from streamer.settings import RestorationSettings, StreamerSettings

DEVICE_HELP = ("OpenCL device: auto, gpu, cpu, an index from `streamer devices`, or "
               "PLATFORM:DEVICE name parts (default: $STREAMER_DEVICE or auto)")
_KAFKA_FIELDS = ("bootstrap_servers", "security_protocol", "sasl_mechanism", "sasl_username",
                 "sasl_password", "ssl_cafile", "ssl_certfile", "ssl_keyfile")
_TOP_FIELDS = ("chunk_bytes", "max_frame_bytes", "compression", "group_id", "worker_id",
               "device", "metrics_address")
_RESTORATION_FIELDS = ("window", "median_method", "iterations", "tolerance", "method", "damping",
                       "pedestal")


def kafka_flags(parser: argparse.ArgumentParser) -> None:
    """Connection, security, sizes and metrics flags of the streaming processes."""
    group = parser.add_argument_group("kafka (also STREAMER_KAFKA__<NAME>)")
    group.add_argument("--bootstrap-servers", metavar="HOST:PORT,...",
                       help="cluster to use (STREAMER_KAFKA__BOOTSTRAP_SERVERS)")
    group.add_argument("--security-protocol",
                       choices=["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"])
    group.add_argument("--sasl-mechanism", choices=["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
    group.add_argument("--sasl-username")
    group.add_argument("--sasl-password", help="prefer STREAMER_KAFKA__SASL_PASSWORD")
    group.add_argument("--ssl-cafile", metavar="PEM")
    group.add_argument("--ssl-certfile", metavar="PEM")
    group.add_argument("--ssl-keyfile", metavar="PEM")
    group.add_argument("--chunk-bytes", type=int, metavar="N",
                       help="payload bytes per record (default 1 MiB)")
    group.add_argument("--max-frame-bytes", type=int, metavar="N",
                       help="largest frame accepted (default 512 MiB)")
    group.add_argument("--compression", choices=["none", "gzip", "lz4", "zstd"],
                       help="producer compression (default none)")
    group.add_argument("--partitions", type=int, metavar="N", help="topic partitions (default 6)")
    group.add_argument("--metrics-address", metavar="HOST:PORT",
                       help="serve Prometheus /metrics here (default 127.0.0.1 and the role's "
                            "port: camera 9471, worker 9472, sink 9473; '' turns it off)")


def restoration_flags(parser: argparse.ArgumentParser) -> None:
    """Window, PSF, iterations, tolerance, convolution method and device."""
    defaults = RestorationSettings()
    group = parser.add_argument_group("restoration (also STREAMER_RESTORATION__<NAME>)")
    group.add_argument("--window", type=int, metavar="N",
                       help="median window side in pixels, odd, 3-255; larger than a star "
                            f"(default {defaults.window})")
    group.add_argument("--median-method", choices=["auto", "histogram", "tiled"],
                       help="median algorithm: histogram (CPUs), tiled (GPUs: the tile in local "
                            "memory); auto picks by device type (default auto)")
    group.add_argument("--psf", metavar="SPEC",
                       help="auto (measured from each frame's stars) | gaussian:fwhm=F | "
                            "moffat:fwhm=F,beta=B[,ellipticity=E,angle=DEG] | "
                            "streak:length=L,angle=DEG,core=F | file:PATH.fits; add size=N "
                            f"for the array side (default {defaults.psf})")
    group.add_argument("--psf-fallback", metavar="SPEC",
                       help="PSF for a camera that has not shown a measurable star yet "
                            f"(default {defaults.psf_fallback})")
    group.add_argument("--iterations", type=int, metavar="N",
                       help="Richardson-Lucy iterations, at most (default "
                            f"{defaults.iterations}); fewer once the stars fit to the noise")
    group.add_argument("--damping", type=float, metavar="SIGMA",
                       help="damped RL threshold in noise sigmas, 0 undamped "
                            f"(default {defaults.damping:g})")
    group.add_argument("--pedestal", type=float, metavar="SIGMA",
                       help="sky pedestal the estimate keeps, noise sigmas; bounds dark moats "
                            f"around bright stars (default {defaults.pedestal:g})")
    group.add_argument("--tolerance", type=float, metavar="X",
                       help="stop early once the relative change of an iteration is below X")
    group.add_argument("--method",
                       choices=["auto", "dense", "sparse", "separable", "fft", "host_fft"],
                       help="convolution method; auto times the candidates on the device")
    group.add_argument("--device", metavar="SPEC", help=DEVICE_HELP)


def restoration_from(args: argparse.Namespace, base: RestorationSettings | None = None
                     ) -> RestorationSettings:
    """``base`` (default: the model's defaults) with the restoration flags that were given."""
    from streamer.imaging.psf import parse_psf_spec

    values = (base or RestorationSettings()).model_dump()
    values.update({name: getattr(args, name) for name in _RESTORATION_FIELDS
                   if getattr(args, name, None) is not None})
    if getattr(args, "psf", None):
        values["psf"] = parse_psf_spec(args.psf)
    if getattr(args, "psf_fallback", None):
        values["psf_fallback"] = parse_psf_spec(args.psf_fallback)
    return RestorationSettings.model_validate(values)


def settings_from(args: argparse.Namespace) -> StreamerSettings:
    """Environment first, then the flags that were given."""
    settings = StreamerSettings()
    data = settings.model_dump()
    data["kafka"].update({name: getattr(args, name) for name in _KAFKA_FIELDS
                          if getattr(args, name, None)})
    if getattr(args, "partitions", None):
        data["topics"]["partitions"] = args.partitions
    data["restoration"] = restoration_from(args, settings.restoration)
    data.update({name: getattr(args, name) for name in _TOP_FIELDS
                 if getattr(args, name, None) is not None})
    return StreamerSettings.model_validate(data)


def expand_inputs(patterns: list[str]) -> tuple[list[Path], list[str]]:
    """Files named or matched by ``patterns``, and the patterns that matched nothing."""
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
