"""The catalogue's two whole-frame passes on the device: the PSF-matched filter of the frame and
of the restored frame, as S/N maps (:mod:`streamer.sources.detection` thresholds them). The
frame's map is downloaded; the restored frame's stays on the device, which finds its local
peaks there (:mod:`streamer.restoration.restored_peaks`), and only they cross to the host.

On the host each is an FFT correlation of the whole frame — 1.2 s at 4096² on one core of the
development machine, the largest part of the catalogue — while the device already holds both
frames after Richardson–Lucy, and the correlation is one it has planned methods for. The
frame's map correlates the frame as uploaded less its sky level (saturated cores included: they
are where a star is; excluded pixels and the border past the edges filled with eq. 1's local
median background, so that a sky gradient makes no step there) with the PSF; the restored
frame's, that frame less its sky ``−min B`` with the target PSF. The host then takes the
frame's 64 px mesh background off the frame's map
(:func:`streamer.sources.catalog._on_the_mesh`) and the restored frame's sky mode off its map,
as its own FFT filters of the background-subtracted frames had them (a 31 px median background
here instead of the sky level would lift the sky near every star of a crowded field and cost
its faint stars S/N). Both are divided by the noise of a PSF fit on white noise of the frame's
σ (:func:`streamer.imaging.psf.matched_filter_weights`); the restored frame's excluded pixels
and border are its sky (0), as the host's ``fftconvolve(..., mode="same")`` of a background-
subtracted frame with its NaN set to 0.
"""

from __future__ import annotations

import numpy as np
import pyopencl as cl

from streamer.imaging.psf import matched_filter_weights
from streamer.restoration.background import BackgroundEqualiser, key_dtype
from streamer.restoration.convolution import Correlation, source_buffer
from streamer.restoration.copy_block import BlockCopy
from streamer.restoration.correlation_plan import plan_correlation
from streamer.restoration.deferred_measurements import DeferredMeasurements
from streamer.restoration.kernels import BUFFER, KernelDeclaration, KernelLibrary
from streamer.restoration.median import input_type
from streamer.restoration.plan_cache import PlanCache
from streamer.restoration.plan_store import PlanStore
from streamer.restoration.map_candidates import FLOOR_MARGIN as MAP_FLOOR_MARGIN
from streamer.restoration.map_candidates import MapCandidateFinder
from streamer.restoration.restored_peaks import FLOOR_MARGIN, PeakFinder
from streamer.restoration.richardson_lucy import RichardsonLucy
from streamer.restoration.richardson_lucy_kernels import STAT
from streamer.restoration.transfers import TransferMeter
from streamer.imaging.mesh_background import MeshLevel
from streamer.sources.detection import SNRMaps, map_mesh, map_offset

_PADDED = {"padded": BUFFER, "width": np.int32, "height": np.int32, "pad_y": np.int32,
           "pad_x": np.int32}
SKY_LEVELLED_PADDED = KernelDeclaration(
    "detection", "sky_levelled_padded", raw=BUFFER, median_keys=BUFFER, sky=np.float32,
    **_PADDED)
LEVELLED_PADDED = KernelDeclaration(
    "detection", "levelled_padded", image=BUFFER, weight=BUFFER, stats=BUFFER,
    sky_index=np.int32, **_PADDED)


class MatchedFilter:
    """One planned matched filter: a frame shape and a kernel shape on one device; the padded
    source it reads is written by one of this module's kernels."""

    def __init__(self, queue: cl.CommandQueue, library: KernelLibrary, shape: tuple[int, int],
                 weights: np.ndarray, method: str = "auto", cache: PlanCache | None = None,
                 deferred: DeferredMeasurements | None = None) -> None:
        self.queue = queue
        self.shape = shape
        self.correlation: Correlation
        self.correlation, _ = plan_correlation(queue, library, weights, shape, method, cache,
                                               deferred)
        self.pad = (weights.shape[0] // 2, weights.shape[1] // 2)
        self.padded = source_buffer(queue.context, *self.correlation.src_shape)
        BlockCopy(queue, library).fill(self.padded, 0.0)  # the slack past the source, once
        self.out = cl.Buffer(queue.context, cl.mem_flags.READ_WRITE, shape[0] * shape[1] * 4)

    @property
    def padded_size(self) -> tuple[int, int]:
        """Global size of the padding kernels: the source's columns and rows."""
        return (self.shape[1] + 2 * self.pad[1], self.shape[0] + 2 * self.pad[0])

    def accepts(self, weights: np.ndarray) -> bool:
        """Whether this plan can load ``weights``."""
        return self.correlation.accepts(weights)

    def enqueue(self, weights: np.ndarray) -> None:
        """Correlate the padded source with ``weights`` into :attr:`out`."""
        self.correlation.set_weights(weights)
        self.correlation.enqueue(self.padded, self.out)

    def download(self, meter: TransferMeter) -> np.ndarray:
        """The map."""
        return meter.download(np.empty(self.shape, dtype=np.float32), self.out)


class DetectionMaps:
    """The S/N maps of a frame just restored, from the buffers its restoration left."""

    def __init__(self, queue: cl.CommandQueue, library: KernelLibrary, plans: PlanStore,
                 method: str = "auto", cache: PlanCache | None = None) -> None:
        self.queue = queue
        self.library = library
        self.plans = plans  # the device session's, shared with its other plans
        self.method = method
        self.cache = cache
        # Set by the restorer when its method measurements are put off.
        self.deferred: DeferredMeasurements | None = None
        self.peaks = PeakFinder(queue, library)
        self.candidates = MapCandidateFinder(queue, library, self.peaks.sampler)
        # The catalogue reads the maps through their candidates; tests and diagnostics may
        # want the maps themselves too.
        self.download_restored = False
        self.download_data = False

    def _filter(self, role: str, shape: tuple[int, int], weights: np.ndarray
                ) -> MatchedFilter:
        # One plan per map: with a measured PSF and a Gaussian target of the same side, the
        # target's map would otherwise run by the PSF's method, never its separable passes.
        key = (role, shape, weights.shape, self.method)
        plan = self.plans.get("matched_filter", key)
        if (isinstance(plan, MatchedFilter) and plan.accepts(weights)
                and not self._superseded(plan.correlation)):
            return plan
        plan = MatchedFilter(self.queue, self.library, shape, weights, self.method, self.cache,
                             self.deferred)
        return self.plans.put("matched_filter", key, plan)

    def _superseded(self, correlation: Correlation) -> bool:
        return self.deferred is not None and correlation.superseded_by(self.deferred)

    def compute(self, background: BackgroundEqualiser, deconvolution: RichardsonLucy,
                psf: np.ndarray, target: np.ndarray | None, sky: float, sigma: float,
                threshold: float, fwhm: float, level: MeshLevel | None = None) -> SNRMaps:
        """Both maps (enqueued after the restoration) of a frame of sky level ``sky``, white
        noise ``sigma`` and PSF FWHM ``fwhm``, for a catalogue at S/N ``threshold``: the
        frame's as its candidates (:mod:`streamer.restoration.map_candidates`) where its
        mesh background ``level`` is known and on the map's mesh (else, or when
        :attr:`download_data`, downloaded), the restored frame's as its peak candidates (and
        downloaded too when :attr:`download_restored`)."""
        shape = deconvolution.shape
        height, width = shape
        meter = deconvolution.meter
        weights = matched_filter_weights(psf, sigma)
        frame = self._filter("frame", shape, weights)
        # One program for both kernels: the frame's types are its defines.
        defines = {"INPUT_TYPE": input_type(background.input_dtype),
                   "KEY_IS_FLOAT": int(key_dtype(background.input_dtype) == np.float32)}
        levelled_raw = self.library.kernel(SKY_LEVELLED_PADDED, **defines)
        levelled_raw(self.queue, frame.padded_size, None, raw=background.raw,
                     median_keys=background.median.output_buffer, sky=sky,
                     padded=frame.padded, width=width, height=height, pad_y=frame.pad[0],
                     pad_x=frame.pad[1])
        frame.enqueue(weights)
        mesh, stride = map_mesh(shape, fwhm)
        candidates = None
        if (level is not None and stride > 1 and level.mesh == mesh and level.shape == shape
                and level.nodes.shape[0] >= 2):
            candidates = self.candidates.find(
                frame.out, background.raw, map_offset(level, sky, psf, sigma),
                threshold - MAP_FLOOR_MARGIN, stride, defines, meter)
        data = frame.download(meter) if candidates is None or self.download_data else None
        target_weights = matched_filter_weights(
            target if target is not None else np.ones((1, 1)), sigma)
        restored = self._filter("restored", shape, target_weights)
        levelled = self.library.kernel(LEVELLED_PADDED, **defines)
        levelled(self.queue, restored.padded_size, None, image=deconvolution.restored,
                 weight=deconvolution.weight, stats=deconvolution.statistics,
                 sky_index=STAT["SKY"], padded=restored.padded, width=width, height=height,
                 pad_y=restored.pad[0], pad_x=restored.pad[1])
        restored.enqueue(target_weights)
        peaks = self.peaks.find(restored.out, background.raw, shape, threshold - FLOOR_MARGIN,
                                defines, meter)
        return SNRMaps(data, restored.download(meter) if self.download_restored else None,
                       peaks, candidates)
