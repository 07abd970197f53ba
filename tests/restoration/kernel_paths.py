"""Every kernel path on small frames, its outputs saved to an .npz: run once on the machine's
OpenCL device and under Oclgrind (tests/restoration/test_oclgrind.py compares them).

The paths through VkFFT (the ``fft`` method) run apart from ours under the simulator
(``--paths vkfft``): VkFFT's undefined values flow on into our kernels that read its output,
and would hide whether ours are clean.

Usage: python -m tests.restoration.kernel_paths OUT.npz [--device SPEC] [--paths ours|vkfft|all]
"""

from __future__ import annotations

import sys
from pathlib import Path

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

OURS = ["dense", "sparse", "separable", "host_fft"]
VKFFT = ["fft"] if fft_available() else []
METHODS = OURS + VKFFT
# Damped RL with masked pixels, a whole run as a user makes it, by every method (host_fft also
# with its copying iteration instead of the in-place one).
RL_METHODS = [*OURS, "host_fft_copies", *VKFFT]


def _frame(shape=(20, 23), seed=1) -> np.ndarray:
    return star_field(shape, gaussian_psf(2.0), stars=4, margin=4, seed=seed).image


class KernelPaths:
    """The paths' outputs on one device, by name. Plans stay alive to the end: Oclgrind 21.10
    misreads writes into memory reused after a buffer is freed as uninitialised (a simulator
    artefact, not a kernel's)."""

    def __init__(self, device: cl.Device) -> None:
        self.device = device
        context = cl.Context([device])
        self.queue = cl.CommandQueue(context)
        self.library = KernelLibrary(context)
        self.frame = _frame()
        self.out: dict[str, np.ndarray] = {}
        self.keep: list[object] = []
        self._canary(context)

    def _canary(self, context: cl.Context) -> None:
        source = (Path(__file__).with_name("oclgrind_canary.cl")).read_text()
        canary = cl.Kernel(cl.Program(context, source).build(), "oclgrind_canary")
        never_written = cl.Buffer(context, cl.mem_flags.READ_WRITE, 4)
        out = cl.Buffer(context, cl.mem_flags.READ_WRITE, 4)
        canary(self.queue, (1,), None, never_written, out)
        self.queue.finish()
        self.keep += [never_written, out]

    def medians(self) -> None:
        queue, library = self.queue, self.library
        for method in ("histogram", "tiled"):
            for dtype in (np.float32, np.uint16):
                image = self.frame.astype(dtype)
                self.keep.append(MedianFilter(queue, library, image.shape, 5, dtype,
                                              method=method))
                self.out[f"median_{method}_{np.dtype(dtype).name}"] = self.keep[-1](image)
            tiny = self.frame[:4, :3].astype(np.float32)  # smaller than the window
            self.keep.append(MedianFilter(queue, library, tiny.shape, 7, method=method))
            self.out[f"median_{method}_smaller_than_window"] = self.keep[-1](tiny)

    def correlations(self, methods: list[str]) -> None:
        psfs = {"gaussian": gaussian_psf(2.0, size=9),
                "streak": streak_psf(5, 30.0, 1.2, size=9)}
        src = np.random.default_rng(2).random((20 + 8, 23 + 8)).astype(np.float32)
        for method in methods:
            for name, weights in psfs.items():
                if method == "separable" and name == "streak":
                    continue
                self.keep.append(build_correlation(method, self.queue, self.library, weights,
                                                   (20, 23)))
                self.out[f"correlate_{method}_{name}"] = self.keep[-1](src)

    def richardson_lucy(self, methods: list[str]) -> None:
        data = self.frame - self.frame.min() + 1.0
        weight = np.ones_like(data)
        weight[5:7, 8:10] = 0
        for method in methods:
            # The extended domain is 26 x 29: neither side a whole number of the correlation
            # blocks (convolution.cl), so the edge blocks read past the rows they store.
            psf = (gaussian_psf(2.0, size=7) if method == "separable"
                   else moffat_psf(2.5, 3.0, size=7))
            plan = RichardsonLucy(self.queue, self.library, data.shape, psf,
                                  method.removesuffix("_copies"))
            self.keep.append(plan)
            if method == "host_fft":  # whether the in-place kernels (rl_*_rows) ran
                self.out["rl_host_fft_in_place"] = np.array(plan._in_place is not None)
            if method.endswith("_copies"):
                plan._in_place = None
            self.out[f"rl_{method}_masked_damped"], _ = plan(
                data, num_iter=3, weight=weight, noise=NoiseModel(10.0, 3.0, 0.5), damping=1.0,
                sky=float(np.median(data)), stop_at_noise=True, pedestal=1.0)

    def restorer(self) -> None:
        image = self.frame.copy()
        image[3, 4] = np.nan
        mask = np.zeros(image.shape, dtype=bool)
        mask[10, 10] = True
        restorer = Restorer(RestorationSettings(window=5, psf=PSFSpec(kind="gaussian", fwhm=2.0),
                                                iterations=3, method="dense"),
                            str(self.device.name))
        self.keep.append(restorer)  # its buffers stay allocated (see the class notes)
        self.out["restore_background_nan_mask"] = restorer.restore(image, mask=mask).data
        self.out["background_equalised"] = restorer.background_equalised(self.frame)
        # To a target resolution, the detail added back around significant signal
        # (rl_restored and the gate's kernels), by the copying and the in-place iterations.
        for method in ("dense", "host_fft"):
            target = Restorer(RestorationSettings(
                window=5, psf=PSFSpec(kind="moffat", fwhm=3.0, beta=3.0), iterations=3,
                method=method, target_fwhm=None, restored_as="residual"),
                str(self.device.name))
            self.keep.append(target)
            target.detection_maps.download_restored = True
            result = target.restore(image, mask=mask, snr_maps=True)
            self.out[f"restore_residual_{method}"] = result.data
            # The catalogue's matched filters (opencl/detection.cl), by the same method.
            self.out[f"snr_map_data_{method}"] = result.snr_maps.data
            self.out[f"snr_map_restored_{method}"] = result.snr_maps.restored
            peaks = result.snr_maps.restored_peaks  # (opencl/detection.cl's candidates)
            self.out[f"snr_map_peak_positions_{method}"] = np.column_stack(
                [peaks.rows, peaks.columns])
            self.out[f"snr_map_peak_neighbourhoods_{method}"] = peaks.near
            self.out[f"snr_map_sky_sample_{method}"] = peaks.sample


    def map_candidates(self) -> None:
        """The frame's S/N map read near and above a threshold (opencl/detection.cl's
        map_candidates, through a spline offset) with an excluded pixel, and its sample."""
        from streamer.imaging.mesh_background import MeshLevel
        from streamer.restoration.map_candidates import MapCandidateFinder
        from streamer.restoration.restored_peaks import StridedSampler
        from streamer.restoration.transfers import TransferMeter

        shape = (32, 40)
        rng = np.random.default_rng(3)
        snr = rng.normal(0.0, 2.0, shape).astype(np.float32)
        raw = np.full(shape, 100.0, np.float32)
        raw[5, 7] = np.nan
        offset = MeshLevel(rng.normal(0.0, 1.0, (4, 5)).astype(np.float32), shape, 8)
        context = self.queue.context
        buffers = [cl.Buffer(context, cl.mem_flags.READ_ONLY | cl.mem_flags.COPY_HOST_PTR,
                             hostbuf=array) for array in (snr, raw)]
        finder = MapCandidateFinder(self.queue, self.library,
                                    StridedSampler(self.queue, self.library))
        self.keep.extend([buffers, finder])
        found = finder.find(*buffers, offset, 1.0, 2, {"INPUT_TYPE": "float",
                                                       "KEY_IS_FLOAT": 1},
                            TransferMeter(self.queue))
        order = np.argsort(found.index)  # the device's order is its own
        self.out["map_candidate_positions"] = found.index[order]
        self.out["map_candidate_values"] = found.values[order]
        self.out["map_candidate_sample"] = found.sample


def run(device: str | None, paths: str = "all") -> dict[str, np.ndarray]:
    """The outputs of ``paths`` (``ours``, ``vkfft`` or ``all``), by name."""
    collected = KernelPaths(select_device(device))
    if paths in ("ours", "all"):
        collected.medians()
        collected.correlations(OURS)
        collected.richardson_lucy([method for method in RL_METHODS if method not in VKFFT])
        collected.restorer()
        collected.map_candidates()
    if paths in ("vkfft", "all"):
        collected.correlations(VKFFT)
        collected.richardson_lucy(VKFFT)
    return collected.out


def _option(name: str, default: str | None) -> str | None:
    return sys.argv[sys.argv.index(name) + 1] if name in sys.argv else default


if __name__ == "__main__":
    np.savez(sys.argv[1], **run(_option("--device", None), _option("--paths", "all")))
    print("kernel paths done")
