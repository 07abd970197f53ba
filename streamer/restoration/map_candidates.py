"""The frame's S/N map, read where the catalogue needs it: its pixels near and above the
detection threshold and a sample for its own background, found on the device
(``map_candidates`` and ``strided_sample`` of ``opencl/detection.cl``), so the map itself
stays there.

The host used to download the 4096² map (64 MB), level it by its mesh background and rms (a
whole-map pass) and hand it to sep (0.17-0.25 s of one core). The map's own background is
measured on its sample, which only the host can do, so the device cannot apply the threshold
itself; but it knows the frame's background through the filter (the offset the map's own
background is measured on top of, :func:`streamer.sources.detection.map_offset`), and the
map's own rms is at least white noise's. A pixel above the threshold on the levelled map is
therefore above ``threshold + own background`` on the map less the offset: the device lists
every pixel more than ``FLOOR_MARGIN`` below the threshold there, and the host levels those
and applies the threshold (:func:`streamer.sources.detection.candidate_snr`), making the map on
the host only for a frame whose own background dips below −``FLOOR_MARGIN``.
"""

from __future__ import annotations

import numpy as np
import pyopencl as cl

from streamer.imaging.mesh_background import MeshLevel, spline_rows
from streamer.restoration.appended import AppendedEntries
from streamer.restoration.kernels import BUFFER, KernelDeclaration, KernelLibrary
from streamer.restoration.restored_peaks import StridedSampler
from streamer.restoration.transfers import TransferMeter
from streamer.sources.detection import MapCandidates

# S/N below the threshold the candidates reach (on the map less the offset): the map's own
# background would have to dip this far below zero for a pixel above the threshold to be
# missed. On the worker bench's 4096² field that lists 366 000 pixels for 284 000 above.
FLOOR_MARGIN = 2.0
INITIAL_CAPACITY = 1 << 19  # candidates (8 bytes each); the buffers grow when a frame has more

MAP_CANDIDATES = KernelDeclaration(
    "detection", "map_candidates", map=BUFFER, raw=BUFFER, segment_rows=BUFFER,
    row_weights=BUFFER, row_segment=BUFFER, floor_value=np.float32, width=np.int32,
    height=np.int32, count=BUFFER, positions=BUFFER, values=BUFFER, capacity=np.uint32)


class MapCandidateFinder:
    """The candidates and sample of frame maps on one queue; its buffers are kept."""

    def __init__(self, queue: cl.CommandQueue, library: KernelLibrary,
                 sampler: StridedSampler) -> None:
        self.queue = queue
        self.library = library
        self.sampler = sampler
        self._found = AppendedEntries(queue, {"positions": (np.int32, 1),
                                              "values": (np.float32, 1)}, INITIAL_CAPACITY)
        self._tables: dict[str, cl.Buffer] = {}

    @property
    def capacity(self) -> int:
        """The candidates the buffers hold (they grow when a frame has more)."""
        return self._found.capacity

    def find(self, snr: cl.Buffer, raw: cl.Buffer, offset: MeshLevel, floor: float,
             stride: int, defines: dict[str, int | str], meter: TransferMeter
             ) -> MapCandidates:
        """The candidates of the frame-shaped float32 map ``snr`` (the frame's shape is
        ``offset``'s): its pixels above ``floor`` less ``offset``, the pixels excluded from the
        frame ``raw`` (as uploaded; ``defines``: its types) left out; and its every
        ``stride``-th pixel."""
        height, width = offset.shape
        segment_rows, row_weights, row_segment = spline_rows(offset)
        tables = {"segment_rows": segment_rows, "row_weights": row_weights,
                  "row_segment": row_segment}
        for name, table in tables.items():
            buffer = self._tables.get(name)
            if buffer is None or buffer.size < table.nbytes:
                buffer = self._tables[name] = cl.Buffer(
                    self.queue.context, cl.mem_flags.READ_ONLY, table.nbytes)
            meter.upload(buffer, table)
        kernel = self.library.kernel(MAP_CANDIDATES, **defines)
        found = self._found.run(
            lambda buffers, capacity: kernel(
                self.queue, (width, height), None, map=snr, raw=raw, **self._tables,
                floor_value=floor, width=width, height=height, **buffers,
                capacity=capacity), meter)
        # In the device's order: the catalogue sorts them (host work of its own, off the
        # device's stage).
        return MapCandidates(offset.shape, found["positions"], found["values"], float(floor),
                             self.sampler.sample(snr, offset.shape, stride, defines, meter),
                             stride, offset)

    def _reserve(self, capacity: int) -> None:
        self._found.reserve(capacity)
