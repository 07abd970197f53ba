"""Every kernel path on small frames, its outputs saved to an .npz: run once on the machine's
OpenCL device and once under Oclgrind (tests/restoration/test_oclgrind.py compares them).

Usage: python -m tests.restoration.kernel_paths OUT.npz [--device SPEC]
"""

from __future__ import annotations

import sys

import numpy as np
import pyopencl as cl

from streamer.imaging.noise import NoiseModel
from streamer.imaging.psf import PSFSpec, gaussian_psf, moffat_psf, streak_psf
from streamer.imaging.synthetic import star_field
from streamer.restoration.correlation_plan import build_correlation
from streamer.restoration.device import select_device
from streamer.restoration.fft_correlation import fft_available
from streamer.restoration.kernels import KernelLibrary
from streamer.restoration.median import MedianFilter
from streamer.restoration.restorer import Restorer
from streamer.restoration.richardson_lucy import RichardsonLucy
from streamer.settings import RestorationSettings

METHODS = ["dense", "sparse", "separable", "host_fft"] + (["fft"] if fft_available() else [])


def _frame(shape=(20, 23), seed=1) -> np.ndarray:
    return star_field(shape, gaussian_psf(2.0), stars=4, margin=4, seed=seed).image


def run(device: str | None) -> dict[str, np.ndarray]:
    """The outputs of every path, by name."""
    chosen = select_device(device)
    context = cl.Context([chosen])
    queue = cl.CommandQueue(context)
    library = KernelLibrary(context)
    out: dict[str, np.ndarray] = {}
    frame = _frame()
    # Plans stay alive to the end: Oclgrind 21.10 misreads writes into memory reused after a
    # buffer is freed as uninitialised (a simulator artefact, not a kernel's).
    keep: list[object] = []
    for method in ("histogram", "tiled"):
        for dtype in (np.float32, np.uint16):
            image = frame.astype(dtype)
            keep.append(MedianFilter(queue, library, image.shape, 5, dtype, method=method))
            out[f"median_{method}_{np.dtype(dtype).name}"] = keep[-1](image)
        tiny = frame[:4, :3].astype(np.float32)  # smaller than the window
        keep.append(MedianFilter(queue, library, tiny.shape, 7, method=method))
        out[f"median_{method}_smaller_than_window"] = keep[-1](tiny)
    psfs = {"gaussian": gaussian_psf(2.0, size=9), "streak": streak_psf(5, 30.0, 1.2, size=9)}
    src = np.random.default_rng(2).random((20 + 8, 23 + 8)).astype(np.float32)
    for method in METHODS:
        for name, weights in psfs.items():
            if method == "separable" and name == "streak":
                continue
            keep.append(build_correlation(method, queue, library, weights, (20, 23)))
            out[f"correlate_{method}_{name}"] = keep[-1](src)
    data = frame - frame.min() + 1.0
    weight = np.ones_like(data)
    weight[5:7, 8:10] = 0
    for method in ("dense", "host_fft", "host_fft_copies") + (("fft",) if fft_available() else ()):
        plan = RichardsonLucy(queue, library, data.shape, moffat_psf(2.5, 3.0, size=7),
                              method.removesuffix("_copies"))
        keep.append(plan)
        if method == "host_fft":  # whether the in-place kernels (rl_*_rows) ran
            out["rl_host_fft_in_place"] = np.array(plan._in_place is not None)
        if method.endswith("_copies"):
            plan._in_place = None
        out[f"rl_{method}_masked_damped"], _ = plan(
            data, num_iter=3, weight=weight, noise=NoiseModel(10.0, 3.0, 0.5), damping=1.0,
            sky=float(np.median(data)), stop_at_noise=True, pedestal=1.0)
    image = frame.copy()
    image[3, 4] = np.nan
    mask = np.zeros(image.shape, dtype=bool)
    mask[10, 10] = True
    restorer = Restorer(RestorationSettings(window=5, psf=PSFSpec(kind="gaussian", fwhm=2.0),
                                            iterations=3, method="dense"), str(chosen.name))
    out["restore_background_nan_mask"] = restorer.restore(image, mask=mask).data
    out["background_equalised"] = restorer.background_equalised(frame)
    return out


if __name__ == "__main__":
    target = sys.argv[1]
    spec = sys.argv[sys.argv.index("--device") + 1] if "--device" in sys.argv else None
    np.savez(target, **run(spec))
    print("kernel paths done")
