"""``streamer bench``: this project's kernels beside the reference libraries, one run.

Not a test: it prints figures. Every ratio is reference time / streamer time from the same
process on the same frame, so ``> 1`` means streamer is faster.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from typing import Any, Callable

import numpy as np

from streamer import __version__
from streamer.restoration.device import DEVICE_ENV_VAR
from streamer.imaging.psf import PSFSpec, gaussian_psf, streak_psf
from streamer.restoration.restorer import Restorer
from streamer.settings import RestorationSettings
from streamer.restoration.richardson_lucy import RichardsonLucy
from streamer.imaging.synthetic import star_field


def _best_of(function: Callable[[], object], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - started)
    return best


def time_iterations(plan: RichardsonLucy, num_iter: int) -> float:
    """Seconds for ``num_iter`` iterations on the data already uploaded to ``plan``."""
    plan.queue.finish()
    started = time.perf_counter()
    plan.run(num_iter)
    plan.queue.finish()
    return time.perf_counter() - started


def _row(name: str, ours: float, reference: float | None, reference_name: str) -> dict[str, Any]:
    return {
        "name": name,
        "streamer_seconds": ours,
        "reference": reference_name,
        "reference_seconds": reference,
        "speedup": (reference / ours) if reference else None,
    }


def _rl_iteration(restorer: Restorer, frame: np.ndarray, psf: np.ndarray, label: str,
                  with_reference: bool, iterations: int = 5) -> dict[str, Any]:
    plan = RichardsonLucy(restorer.queue, restorer.library, frame.shape, psf)
    data = frame - frame.min()
    plan.set_weights(None)
    plan.set_data(data)
    time_iterations(plan, 1)  # warm-up
    ours = time_iterations(plan, iterations) / iterations
    reference = None
    if with_reference:
        from skimage.restoration import richardson_lucy

        reference = _best_of(
            lambda: richardson_lucy(data, psf.astype(np.float32), num_iter=2, clip=False), 1
        ) / 2
    row = _row(f"RL iteration, {label}", ours, reference, "skimage.restoration.richardson_lucy")
    row["method"] = plan.method
    return row


def run_bench(args: argparse.Namespace) -> int:
    """Run the benchmark described by the CLI arguments; print a table or JSON."""
    size = args.size
    with_reference = not args.no_reference
    gaussian = gaussian_psf(5.0, 25)
    field = star_field((size, size), gaussian, stars=max(50, size * size // 20000))
    frame = field.image
    settings = RestorationSettings(window=args.window, psf=PSFSpec(kind="gaussian", fwhm=5.0, size=25),
                                   iterations=args.iterations)
    restorer = Restorer(settings, args.device if args.device is not None else os.environ.get(DEVICE_ENV_VAR))
    rows: list[dict[str, Any]] = []

    median_plan = restorer.plan(frame.shape).background.median
    median_plan(frame)  # warm-up: compilation and first-touch of buffers
    ours = _best_of(lambda: median_plan(frame), 2)
    reference = None
    if with_reference:
        from scipy.ndimage import median_filter

        reference = _best_of(lambda: median_filter(frame, size=args.window, mode="reflect"), 1)
    rows.append(_row(f"median {args.window}x{args.window}", ours, reference,
                     "scipy.ndimage.median_filter"))

    rows.append(_rl_iteration(restorer, frame, gaussian, "25x25 Gaussian PSF", with_reference))
    streak = streak_psf(41, 30.0, 1.5)
    rows.append(_rl_iteration(restorer, frame, streak,
                              f"41-px streak PSF ({streak.shape[0]}x{streak.shape[1]})",
                              with_reference))

    restorer.restore(frame)  # warm-up of the whole path
    whole = _best_of(lambda: restorer.restore(frame), 2)
    rows.append(_row(f"whole restore (median {args.window} + {args.iterations} RL, 25x25 PSF)",
                     whole, None, ""))

    result = {
        "streamer_version": __version__,
        "device": restorer.device_name,
        "host": f"{platform.node()} {platform.processor() or platform.machine()}, "
                f"{os.cpu_count()} CPUs",
        "frame": f"{size}x{size} float32",
        "rows": rows,
        "frames_per_second": 1.0 / whole,
    }
    if args.cadence:
        result["keeps_up_with_cadence"] = whole <= args.cadence
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        print()
        return 0
    print(f"streamer {__version__} bench — {result['frame']} on {result['device']}")
    print(f"host: {result['host']}")
    print(f"{'stage':<58} {'streamer':>10} {'reference':>10} {'speedup':>8}")
    for row in rows:
        ref = f"{row['reference_seconds']:.3f} s" if row["reference_seconds"] else "-"
        speed = f"{row['speedup']:.1f}x" if row["speedup"] else "-"
        method = f" [{row['method']}]" if "method" in row else ""
        print(f"{row['name'] + method:<58} {row['streamer_seconds']:>8.3f} s {ref:>10} {speed:>8}")
    print(f"whole restoration: {result['frames_per_second']:.2f} frames/s")
    if args.cadence:
        verdict = "keeps up with" if result["keeps_up_with_cadence"] else "does NOT keep up with"
        print(f"this device {verdict} a {args.cadence:g} s cadence")
    return 0
