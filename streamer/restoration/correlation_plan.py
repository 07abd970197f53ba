"""Choosing the correlation method: by arithmetic estimate, then by timing on the device —
and remembering the measured choice on disk, so a fresh worker process plans in a moment.

The choice depends on the device, the frame shape, the kernel shape and which methods apply
to the kernel (a streak's zero taps make ``sparse`` a candidate, a Gaussian's rank 1 makes
``separable`` one), so those form the cache key. The cache is a :class:`PlanCache`
(:mod:`streamer.restoration.plan_cache`: ``$STREAMER_CACHE_DIR/plans.json``, default
``~/.cache/streamer``); delete it to measure again.
"""

from __future__ import annotations

import functools
import json
import logging
import time

import numpy as np
import pyopencl as cl

from streamer.errors import ParameterError
from streamer.restoration.convolution import (
    MAX_SEPARABLE_RANK, SEPARABLE_TOLERANCE, Correlation, DenseCorrelation,
    SeparableCorrelation, SparseCorrelation, separable_terms, source_buffer,
)
from streamer.restoration.fft_correlation import (
    FFTCorrelation, HostFFTCorrelation, fft_available,
)
from streamer.restoration.deferred_measurements import Cancelled, DeferredMeasurements, check
from streamer.restoration.kernels import KernelLibrary
from streamer.restoration.plan_cache import PlanCache

log = logging.getLogger(__name__)

METHODS = ("dense", "sparse", "separable", "fft", "host_fft")
_CACHE_VERSION = 1
_CLASSES = {"dense": DenseCorrelation, "sparse": SparseCorrelation,
            "separable": SeparableCorrelation, "fft": FFTCorrelation,
            "host_fft": HostFFTCorrelation}


def device_key(device: cl.Device) -> str:
    """Platform, device and driver: what makes timings comparable."""
    return " | ".join(" ".join(part.split()) for part in (
        device.platform.name, device.platform.version, device.name, device.driver_version))


def is_cpu(device: cl.Device) -> bool:
    """Whether ``device`` is a CPU (its buffers live in host memory)."""
    return bool(device.type & cl.device_type.CPU)


def candidate_costs(weights: np.ndarray, out_shape: tuple[int, int], device: cl.Device
                    ) -> dict[str, float]:
    """Methods that apply to this kernel on this device, with rough multiply-adds per output
    pixel (only to skip methods that cannot win)."""
    kh, kw = weights.shape
    costs = {"dense": float(kh * kw)}
    taps = np.count_nonzero(weights)
    if taps < 0.7 * kh * kw:
        costs["sparse"] = 1.5 * taps
    terms = separable_terms(weights)
    if terms:
        costs["separable"] = 1.2 * len(terms) * (kh + kw)
    size = (out_shape[0] + kh) * (out_shape[1] + kw)
    if is_cpu(device):
        costs["host_fft"] = 25.0 * np.log2(size)
    elif fft_available():
        costs["fft"] = 40.0 * np.log2(size)
    return costs


def build_correlation(method: str, queue: cl.CommandQueue, library: KernelLibrary,
                      weights: np.ndarray, out_shape: tuple[int, int],
                      cache: PlanCache | None = None,
                      deferred: DeferredMeasurements | None = None) -> Correlation:
    """Construct one method's correlation for ``weights`` (no timing); ``host_fft`` keeps its
    measured transform size in ``cache`` (default: the cache directory's), or with
    ``deferred`` takes the smallest size for now and queues the measurement there."""
    if method not in _CLASSES:
        raise ParameterError(f"unknown convolution method {method!r}; choose from {METHODS}")
    if method == "fft" and not fft_available():
        raise ParameterError("the fft method needs pyvkfft: pip install 'streamer[fft]'")
    if method == "separable" and separable_terms(weights) is None:
        raise ParameterError(
            f"this PSF is not separable within {SEPARABLE_TOLERANCE:g} with at most "
            f"{MAX_SEPARABLE_RANK} terms; use method dense, sparse, fft or host_fft")
    if method == "host_fft":
        correlation: Correlation = HostFFTCorrelation(queue, library, weights.shape, out_shape,
                                                      cache=cache, deferred=deferred)
    else:
        correlation = _CLASSES[method](queue, library, weights.shape, out_shape)
    correlation.set_weights(weights)
    return correlation


def time_correlation(correlation: Correlation, repeats: int = 2) -> float:
    """Best wall time of ``repeats`` runs on scratch buffers, seconds."""
    context = correlation.queue.context
    src = source_buffer(context, *correlation.src_shape)
    dst = cl.Buffer(context, cl.mem_flags.READ_WRITE, int(np.prod(correlation.out_shape)) * 4)
    cl.enqueue_copy(correlation.queue, src, np.ones(src.size // 4, dtype=np.float32))
    correlation.enqueue(src, dst)  # warm-up: first launch pays lazy compilation
    correlation.queue.finish()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        correlation.enqueue(src, dst)
        correlation.queue.finish()
        best = min(best, time.perf_counter() - started)
    return best


def plan_correlation(queue: cl.CommandQueue, library: KernelLibrary, weights: np.ndarray,
                     out_shape: tuple[int, int], method: str = "auto",
                     cache: PlanCache | None = None,
                     deferred: DeferredMeasurements | None = None
                     ) -> tuple[Correlation, dict[str, float]]:
    """Plan the correlation by ``method``, or with ``auto`` the fastest measured one (taken
    from ``cache`` when this device measured this case before). With ``deferred``, a case not
    measured yet gets the method the estimate favours now and its measurement is queued
    there (and a host FFT's size measurement with it); the plan's
    :attr:`~streamer.restoration.convolution.Correlation.provisional` names them.

    Returns the plan and the seconds measured for each method timed (empty unless measured
    now or cached).
    """
    weights = np.asarray(weights, dtype=np.float64)
    if method != "auto":
        return build_correlation(method, queue, library, weights, out_shape, cache,
                                 deferred), {}
    costs = candidate_costs(weights, out_shape, queue.device)
    cheapest = min(costs.values())
    candidates = sorted(name for name, cost in costs.items() if cost <= 4.0 * cheapest)
    if len(candidates) == 1:
        return build_correlation(candidates[0], queue, library, weights, out_shape, cache,
                                 deferred), {}
    key = json.dumps([_CACHE_VERSION, device_key(queue.device), list(out_shape),
                      list(weights.shape), candidates])
    known = _known(cache, key, candidates)
    if known is not None:
        return (build_correlation(known["method"], queue, library, weights, out_shape, cache,
                                  deferred), dict(known.get("timings", {})))
    if deferred is not None:
        estimated = (_nearest_measured(cache, queue.device, out_shape, weights.shape, candidates)
                     or min(candidates, key=costs.__getitem__))
        correlation = build_correlation(estimated, queue, library, weights, out_shape, cache,
                                        deferred)
        correlation.provisional += ((key, estimated),)
        deferred.add(key, functools.partial(_measure, queue, library, weights, out_shape,
                                            candidates, cache, key))
        log.info("convolution %dx%d on %s: %s for now (the estimate's); %s to be measured",
                 *weights.shape, out_shape, estimated, ", ".join(candidates))
        return correlation, {}
    return _measured(queue, library, weights, out_shape, candidates, cache, key)


def _known(cache: PlanCache | None, key: str, candidates: list[str]) -> dict | None:
    """The cached measurement of ``key``, when it chose one of ``candidates``."""
    known = cache.get(key) if cache is not None else None
    return known if known is not None and known.get("method") in candidates else None


def _nearest_measured(cache: PlanCache | None, device: cl.Device, out_shape: tuple[int, int],
                      kernel_shape: tuple[int, ...], candidates: list[str]) -> str | None:
    """The method this device measured fastest for the nearest case (frame and kernel areas
    on a log scale) among those with the same candidates, or None: on this machine's CPU
    device the estimate took dense for a 21×21 kernel at 2048², 4.6× slower than host_fft."""
    if cache is None:
        return None
    device_name = device_key(device)
    best, distance = None, float("inf")
    for key, entry in cache.entries().items():
        try:
            version, name, shape, kernel, methods = json.loads(key)
        except (ValueError, TypeError):
            continue  # another kind of entry (an FFT size)
        if version != _CACHE_VERSION or name != device_name or methods != candidates:
            continue
        gap = (abs(np.log(np.prod(shape) / np.prod(out_shape)))
               + abs(np.log(np.prod(kernel) / np.prod(kernel_shape))))
        if gap < distance and entry.get("method") in candidates:
            best, distance = str(entry["method"]), gap
    return best


def _measured(queue: cl.CommandQueue, library: KernelLibrary, weights: np.ndarray,
              out_shape: tuple[int, int], candidates: list[str], cache: PlanCache | None,
              key: str, cancelled: Cancelled | None = None
              ) -> tuple[Correlation, dict[str, float]]:
    """Every candidate built and timed; the fastest, kept in ``cache`` under ``key``
    (``cancelled`` is asked before each candidate)."""
    timings: dict[str, float] = {}
    best: Correlation | None = None
    for name in candidates:
        check(cancelled)
        correlation = build_correlation(name, queue, library, weights, out_shape, cache)
        timings[name] = time_correlation(correlation)
        if best is None or timings[name] < timings[best.method]:
            best = correlation
    assert best is not None  # candidates is never empty
    log.info("convolution %dx%d on %s: %s (measured %s)", *weights.shape, out_shape,
             best.method, ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in timings.items()))
    if cache is not None:
        cache.put(key, {"method": best.method, "timings": timings,
                        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S")})
    return best, timings


def _measure(queue: cl.CommandQueue, library: KernelLibrary, weights: np.ndarray,
             out_shape: tuple[int, int], candidates: list[str], cache: PlanCache | None,
             key: str, cancelled: Cancelled | None = None) -> str:
    """A deferred measurement: the method chosen (the candidates' buffers are let go), or
    the one another process measured meanwhile."""
    known = _known(cache, key, candidates)
    if known is not None:
        return str(known["method"])
    return _measured(queue, library, weights, out_shape, candidates, cache, key,
                     cancelled)[0].method
