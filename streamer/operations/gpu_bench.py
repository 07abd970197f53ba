"""``streamer bench --profile gpu``: the figures a GPU is judged by, and the CuPy anchor.

A 4096² uint16 camera frame, median 31, 30 Richardson–Lucy iterations with a 25×25 Moffat PSF:
the whole restoration from upload to download (wall time and per-stage device times from
OpenCL profiling events), the bytes it moved, and the median alone on a float32 frame in
megapixels per second. Beside them, in the same run on the same card when CuPy is there: its
``cupyx.scipy.ndimage.median_filter`` and a Richardson–Lucy with CuPy's FFT. Targets on an H100:
the whole restoration ≤ 50 ms, the median 31×31 float32 ≥ 500 MP/s.
"""

from __future__ import annotations

import time
from functools import partial
from typing import Any, Callable

import numpy as np

from streamer.imaging.psf import PSFSpec, moffat_profile, moffat_psf
from streamer.imaging.psf_measure import describe
from streamer.imaging.synthetic import analytic_star_field
from streamer.restoration.restorer import Restorer
from streamer.settings import RestorationSettings

SIZE = 4096
WINDOW = 31
ITERATIONS = 30
PSF = PSFSpec(kind="moffat", fwhm=5.0, beta=2.5, size=25)


def _best(function: Callable[[], Any], repeats: int = 3) -> tuple[float, Any]:
    best, value = float("inf"), None
    for _ in range(repeats):
        started = time.perf_counter()
        value = function()
        best = min(best, time.perf_counter() - started)
    return best, value


def gpu_frame(size: int = SIZE) -> np.ndarray:
    """A camera-like 16-bit frame: Moffat seeing, sub-pixel stars, a sky gradient."""
    field = analytic_star_field((size, size), partial(moffat_profile, fwhm=5.0, beta=2.5), 30,
                                stars=size * size // 4000, seed=5)
    return np.clip(np.round(field.image), 0, 65535).astype(np.uint16)


def streamer_figures(device: str | None, size: int = SIZE) -> dict[str, Any]:
    """The whole restoration and the median alone, on the OpenCL device."""
    frame = gpu_frame(size)
    settings = RestorationSettings(window=WINDOW, psf=PSF, iterations=ITERATIONS,
                                   stop_at_noise=False)
    restorer = Restorer(settings, device)
    psf = settings.psf.build()
    restorer.restore(frame, psf=psf)  # plan, compile, first touch
    wall, result = _best(lambda: restorer.restore(frame, psf=psf))
    # The worker's device stage alone, with the catalogue's detection maps as the worker
    # makes them: the host's preparation (checks, saturation, noise) is done once beforehand,
    # as the worker's fetch stage does it on another thread.
    prepared = restorer.preparer.prepare(frame, None, "bench", None, psf=describe(psf, "given",
                                                                                  0, 0))
    stage, staged = _best(lambda: restorer.restore_prepared(frame, prepared, snr_maps=True))
    medians = _median_figures(restorer, frame.astype(np.float32))
    median_seconds = min(medians.values())
    return {
        "device": restorer.device_name,
        "frame": f"{size}x{size} uint16",
        "restore_seconds": wall,
        "device_stage_seconds": stage,
        "device_stage_events": staged.device_seconds,
        "restore_device_seconds": result.device_seconds,
        "convolution_method": result.deconvolution.method,
        "bytes_per_pixel": result.transfers.per_pixel(frame.size),
        "median_float32_seconds": median_seconds,
        "median_megapixels_per_second": frame.size / median_seconds / 1e6,
        "median_method": min(medians, key=medians.__getitem__),
        "median_seconds_by_method": medians,
    }


def _median_figures(restorer: Restorer, image: np.ndarray) -> dict[str, float]:
    """The float32 median alone, each method that runs on this device, upload to finish."""
    from streamer.errors import ParameterError
    from streamer.restoration.median import METHODS, MedianFilter

    seconds: dict[str, float] = {}
    for method in METHODS:
        try:
            median = MedianFilter(restorer.session.queue, restorer.session.library, image.shape,
                                  WINDOW,
                                  np.float32, method=method)
        except ParameterError:
            continue  # the tile does not fit this device's local memory
        median(image)

        def median_only() -> None:
            median.upload(image)
            median.run()
            restorer.session.queue.finish()

        seconds[method], _ = _best(median_only)
    return seconds


def cupy_figures(size: int = SIZE) -> dict[str, Any] | None:
    """CuPy's median filter and an FFT Richardson–Lucy on the same frame, or None without
    CuPy."""
    try:
        import cupy
        from cupyx.scipy.ndimage import median_filter
    except ImportError:
        return None
    frame = cupy.asarray(gpu_frame(size).astype(np.float32))
    psf = cupy.asarray(moffat_psf(5.0, 2.5, 25).astype(np.float32))

    def timed(function: Callable[[], Any]) -> float:
        function()
        start, end = cupy.cuda.Event(), cupy.cuda.Event()
        start.record()
        function()
        end.record()
        end.synchronize()
        return cupy.cuda.get_elapsed_time(start, end) / 1e3

    def richardson_lucy() -> Any:
        shape = (size + 24, size + 24)
        kernel = cupy.zeros(shape, cupy.float32)
        kernel[:25, :25] = psf
        kernel = cupy.roll(kernel, (-12, -12), axis=(0, 1))
        spectrum = cupy.fft.rfft2(kernel)
        data = cupy.zeros(shape, cupy.float32)
        data[:size, :size] = frame - frame.min()
        estimate = cupy.full(shape, float(data.mean()), cupy.float32)
        for _ in range(ITERATIONS):
            model = cupy.fft.irfft2(cupy.fft.rfft2(estimate) * spectrum, shape)
            ratio = data / cupy.maximum(model, 1e-12)
            estimate *= cupy.fft.irfft2(cupy.fft.rfft2(ratio) * cupy.conj(spectrum), shape)
        return estimate

    median_seconds = timed(lambda: median_filter(frame, size=WINDOW, mode="reflect"))
    return {
        "anchor": f"CuPy {cupy.__version__}",
        "median_float32_seconds": median_seconds,
        "median_megapixels_per_second": size * size / median_seconds / 1e6,
        "richardson_lucy_fft_seconds": timed(richardson_lucy),
    }


def collect(device: str | None, size: int = SIZE) -> dict[str, Any]:
    """The GPU profile: streamer's figures and the anchor's, with the targets."""
    return {
        "profile": "gpu",
        "targets": {"device_stage_seconds": 0.050, "median_megapixels_per_second": 500.0},
        "streamer": streamer_figures(device, size),
        "anchor": cupy_figures(size),
    }
