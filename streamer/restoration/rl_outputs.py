"""The two outputs a Richardson–Lucy plan can write from its final estimate.

* ``estimate`` — classic RL: the estimate ``u`` plus the model's background, levelled by a
  constant so its sum over the valid pixels is the data's (what scikit-image and STSDAS
  ``lucy`` return, flux-conserving). ``streamer.richardson_lucy`` returns this.
* ``residual`` — the restoration at the kernel's resolution with the residuals added back:
  ``C + s − k ⊛ s`` (``rl_restored``), where ``s`` is the estimate's sources — ``u`` less its
  sky where the model is significant, 0 elsewhere (``rl_sources``). With the kernel ``k`` the
  part of the PSF wider than a target ``g`` (``h = k ⊛ g``), ``s`` is the sources at ``g``'s
  resolution and ``C − k ⊛ s`` the data's residual: each star keeps the flux the data gave it
  (``s − k ⊛ s`` sums to zero around it) and the sky keeps the data's noise (Magain, Courbin &
  Sohy 1998 restore to a finite resolution; Högbom's CLEAN (1974) adds the residuals to its
  components likewise). The restorer writes this.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pyopencl as cl

from streamer.restoration.convolution import source_buffer
from streamer.restoration.copy_block import BlockCopy
from streamer.restoration.copying_iterations import CopyingIterations, frame_grid
from streamer.restoration.in_place_iterations import InPlaceIterations, IterationArrays
from streamer.restoration.kernels import KernelLibrary
from streamer.restoration.reduction import Reduction
from streamer.restoration.richardson_lucy_kernels import (
    DEFINES, ESTIMATE_SUMS, GATE_GROW, GATE_SEED, NOISE_MAP, OUTPUT, RESTORED, SOURCES, STAT,
)

Output = Literal["estimate", "residual"]
# The estimate is a source where its model (a 3x3 mean) stands GATE_SIGMAS noise sigmas above
# the sky, grown by the radius holding GATE_LIGHT of the kernel's light (u is sharper than its
# model by the kernel, so this takes in the whole of a source's estimate). Without a noise
# model the gate is open everywhere.
GATE_SIGMAS = 2.0
GATE_LIGHT = 0.5
OUTPUTS = ("estimate", "residual")


class OutputWriter:
    """Writes a plan's ``restored`` buffer from its arrays, in either form."""

    def __init__(self, queue: cl.CommandQueue, library: KernelLibrary, arrays: IterationArrays,
                 restored: cl.Buffer, partial: cl.Buffer, items: int) -> None:
        self.queue, self.arrays, self.restored = queue, arrays, restored
        self._partial, self._items = partial, items
        self._estimate_sums = library.kernel(ESTIMATE_SUMS, **DEFINES)
        self._levelled = library.kernel(OUTPUT, **DEFINES)
        self._residual = library.kernel(RESTORED, **DEFINES)
        self._seed = library.kernel(GATE_SEED, **DEFINES)
        self._grow = library.kernel(GATE_GROW, **DEFINES)
        self._sources = library.kernel(SOURCES, **DEFINES)
        self._noise_map = library.kernel(NOISE_MAP, **DEFINES)
        self._reduce = Reduction(queue, library)
        size = arrays.shape[0] * arrays.shape[1]
        self._gate = cl.Buffer(queue.context, cl.mem_flags.READ_WRITE, size)
        self._gate_scratch = cl.Buffer(queue.context, cl.mem_flags.READ_WRITE, size)
        # The last write's noise model (variance, inverse gain) and the frame-sized buffer free
        # after it (the model's): the noise map is made there only when it is asked for.
        self._noise: tuple[float, float] | None = None
        self._free: cl.Buffer | None = None
        self.sources = source_buffer(queue.context, *arrays.extended_shape)
        BlockCopy(queue, library).fill(self.sources, 0.0)  # the slack the correlations read

    def write(self, output: Output, pedestal: float, sigma: float, reach: int,
              copying: CopyingIterations, in_place: InPlaceIterations | None,
              noise: tuple[float, float] | None = None) -> None:
        """Enqueue the output from the final estimate; ``noise`` (the noise model's variance
        and inverse gain) makes :meth:`noise_map` available."""
        self._noise, self._free = noise, copying.model
        arrays = self.arrays
        height, width = arrays.shape
        ry, rx = arrays.radius
        frame = {"width": width, "height": height, "radius_y": ry, "radius_x": rx}
        grid = frame_grid(width, height)
        if output == "estimate":
            self._estimate_sums(self.queue, (self._items,), None, estimate=arrays.estimate,
                                weight=arrays.weight, **frame, partial_sum=self._partial)
            self._reduce.sum(self._partial, self._items, arrays.statistics, STAT["ESTIMATE_SUM"])
            self._levelled(self.queue, grid, None, estimate=arrays.estimate,
                           weight=arrays.weight, restored=self.restored, **frame,
                           pedestal=pedestal, stats=arrays.statistics)
            return
        model = copying.model
        self._model_into(arrays.estimate, model, copying, in_place)  # k ⊛ u
        self._grow_gate(model, pedestal, sigma, reach)
        self._sources(self.queue, frame_grid(*arrays.extended_shape[::-1]), None,
                      estimate=arrays.estimate, gate=self._gate, sources=self.sources,
                      **frame, pedestal=pedestal)
        self._model_into(self.sources, model, copying, in_place)  # k ⊛ s
        self._residual(self.queue, grid, None, data=arrays.data, weight=arrays.weight,
                       sources=self.sources, model=model, restored=self.restored, **frame)

    def noise_map(self) -> cl.Buffer | None:
        """Enqueue the last write's data's per-pixel sigma (``rl_noise_map``) into a free
        frame-sized buffer and return it; None when that write had no noise model."""
        if self._noise is None or self._free is None:
            return None
        variance, inverse_gain = self._noise
        count = self.arrays.shape[0] * self.arrays.shape[1]
        self._noise_map(self.queue, ((count + 255) // 256 * 256,), None, data=self.arrays.data,
                        weight=self.arrays.weight, stats=self.arrays.statistics,
                        error=self._free, count=count, variance=variance,
                        inverse_gain=inverse_gain)
        return self._free

    @staticmethod
    def _model_into(source: cl.Buffer, model: cl.Buffer, copying: CopyingIterations,
                    in_place: InPlaceIterations | None) -> None:
        if in_place is None:
            copying.forward.enqueue(source, model)
        elif source is in_place.arrays.estimate:
            in_place.model_into(model)  # the last update left k ⊛ u in the transform's input
        else:
            in_place.stage(source)
            in_place.model_into(model)

    def _grow_gate(self, model: cl.Buffer, pedestal: float, sigma: float, reach: int) -> None:
        """Seeds where the model is significant, grown by ``reach`` pixels (rows, then
        columns) into ``self._gate``."""
        height, width = self.arrays.shape
        grid = frame_grid(width, height)
        self._seed(self.queue, grid, None, model=model, seed=self._gate_scratch, width=width,
                   height=height, pedestal=pedestal, sigma=sigma, threshold=GATE_SIGMAS)
        self._grow(self.queue, grid, None, source=self._gate_scratch, grown=self._gate,
                   width=width, height=height, reach=reach, along_rows=1)
        self._grow(self.queue, grid, None, source=self._gate, grown=self._gate_scratch,
                   width=width, height=height, reach=reach, along_rows=0)
        self._gate, self._gate_scratch = self._gate_scratch, self._gate


def kernel_reach(kernel: np.ndarray, share: float = GATE_LIGHT) -> int:
    """The radius (pixels, a square's half side) around the kernel's centre that holds
    ``share`` of its light."""
    weights = np.asarray(kernel, dtype=np.float64)
    weights = weights / weights.sum()
    cy, cx = weights.shape[0] // 2, weights.shape[1] // 2
    for half in range(max(cy, cx) + 1):
        top, left = max(cy - half, 0), max(cx - half, 0)
        if weights[top: cy + half + 1, left: cx + half + 1].sum() >= share:
            return half
    return max(cy, cx)
