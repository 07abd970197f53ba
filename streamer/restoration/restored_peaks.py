"""The restored frame's S/N map, read where the catalogue needs it: its local peaks and a sample
for its sky level, found on the device (``peak_candidates`` and ``strided_sample`` of
``opencl/detection.cl``), so the map itself stays there.

The host found them on the downloaded map: a 4096² map less its sky is a whole-map pass, and its
local peaks read the pixels above the threshold with nine gathers each — about 0.1 s of one
core a frame, and 64 MB across the bus. The map's sky (SExtractor's mode, measured on the host
from the sample) is not known when the device looks, so it lists every local maximum above a
floor ``FLOOR_MARGIN`` below the threshold with its 3×3 neighbourhood, and the host applies the
threshold on the map less its sky (:class:`streamer.sources.peaks.PeakCandidates`): the same
peaks, bit for bit, as the host's own search of the whole map.
"""

from __future__ import annotations

import numpy as np
import pyopencl as cl

from streamer.restoration.appended import AppendedEntries
from streamer.restoration.kernels import BUFFER, KernelDeclaration, KernelLibrary
from streamer.restoration.transfers import TransferMeter
from streamer.sources.peaks import PeakCandidates, sky_step

# S/N below the threshold the device's candidates reach: the map's sky mode (above the
# −min B the device took off, by construction; 0.78 on the sources profile's field, −0.02 on
# the worker bench's) would have to sit this far below zero for a peak to be missed.
FLOOR_MARGIN = 2.0
INITIAL_CAPACITY = 1 << 15  # candidates (40 bytes each); the buffers grow when a frame has more

PEAK_CANDIDATES = KernelDeclaration(
    "detection", "peak_candidates", map=BUFFER, raw=BUFFER, floor_value=np.float32,
    width=np.int32, height=np.int32, count=BUFFER, positions=BUFFER, neighbourhoods=BUFFER,
    capacity=np.uint32)
STRIDED_SAMPLE = KernelDeclaration(
    "detection", "strided_sample", map=BUFFER, width=np.int32, stride=np.int32, sample=BUFFER,
    sample_width=np.int32, sample_height=np.int32)


class StridedSampler:
    """Every ``step``-th pixel of each axis of maps on one queue; its buffer is kept."""

    def __init__(self, queue: cl.CommandQueue, library: KernelLibrary) -> None:
        self.queue = queue
        self.library = library
        self._sample: cl.Buffer | None = None

    def sample(self, snr: cl.Buffer, shape: tuple[int, int], step: int,
               defines: dict[str, int | str], meter: TransferMeter) -> np.ndarray:
        """The frame-shaped float32 map ``snr`` at every ``step``-th pixel (downloaded)."""
        height, width = shape
        sample = np.empty((-(-height // step), -(-width // step)), np.float32)
        if self._sample is None or self._sample.size < sample.nbytes:
            self._sample = cl.Buffer(self.queue.context, cl.mem_flags.READ_WRITE,
                                     sample.nbytes)
        self.library.kernel(STRIDED_SAMPLE, **defines)(  # one program for the file
            self.queue, (sample.shape[1], sample.shape[0]), None, map=snr, width=width,
            stride=step, sample=self._sample, sample_width=sample.shape[1],
            sample_height=sample.shape[0])
        return meter.download(sample, self._sample)


class PeakFinder:
    """The peak candidates and sky sample of maps on one queue; its buffers are kept."""

    def __init__(self, queue: cl.CommandQueue, library: KernelLibrary) -> None:
        self.queue = queue
        self.library = library
        self._found = AppendedEntries(queue, {"positions": (np.int32, 1),
                                              "neighbourhoods": (np.float32, 9)},
                                      INITIAL_CAPACITY)
        self.sampler = StridedSampler(queue, library)

    @property
    def capacity(self) -> int:
        """The candidates the buffers hold (they grow when a frame has more)."""
        return self._found.capacity

    def find(self, snr: cl.Buffer, raw: cl.Buffer, shape: tuple[int, int], floor: float,
             defines: dict[str, int | str], meter: TransferMeter) -> PeakCandidates:
        """The candidates of the frame-shaped float32 map ``snr`` above ``floor``, the pixels
        excluded from the frame ``raw`` (as uploaded; ``defines``: its types) left out."""
        height, width = shape
        kernel = self.library.kernel(PEAK_CANDIDATES, **defines)
        found = self._found.run(
            lambda buffers, capacity: kernel(
                self.queue, (width, height), None, map=snr, raw=raw, floor_value=floor,
                width=width, height=height, **buffers, capacity=capacity), meter)
        positions, near = found["positions"], found["neighbourhoods"]
        order = np.argsort(positions, kind="stable")  # the device's order is its own
        rows, columns = np.divmod(positions[order].astype(np.int64), width)
        return PeakCandidates(rows, columns, near[order], float(floor),
                              self.sampler.sample(snr, shape, sky_step(shape), defines, meter))

    def _reserve(self, capacity: int) -> None:
        self._found.reserve(capacity)
