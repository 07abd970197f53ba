"""The output of a kernel that appends entries at slots of their own (an atomic ``count``)
and, past its ``capacity``, only counts them: the buffers kept between frames, grown — and
the kernel run again — until every entry fits, then downloaded (the restored map's peak
candidates, the frame's map candidates)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyopencl as cl

from streamer.restoration.transfers import TransferMeter

Launch = Callable[[dict[str, cl.Buffer], int], None]  # (count and field buffers, capacity)


class AppendedEntries:
    """A count buffer and one buffer per field (``fields``: name → dtype and values per
    entry) on one queue."""

    def __init__(self, queue: cl.CommandQueue, fields: dict[str, tuple[type, int]],
                 initial: int) -> None:
        self.queue = queue
        self.fields = fields
        self.initial = initial
        self.capacity = 0
        self._count = cl.Buffer(queue.context, cl.mem_flags.READ_WRITE, 4)
        self._buffers: dict[str, cl.Buffer] = {}

    def reserve(self, capacity: int) -> None:
        """Room for ``capacity`` entries (the old buffers dropped)."""
        self.capacity = capacity
        self._buffers = {
            name: cl.Buffer(self.queue.context, cl.mem_flags.READ_WRITE,
                            np.dtype(dtype).itemsize * width * capacity)
            for name, (dtype, width) in self.fields.items()}

    def run(self, launch: Launch, meter: TransferMeter) -> dict[str, np.ndarray]:
        """Each field's entries (one row of its width per entry, in the device's order)
        after ``launch`` enqueued the kernel with the buffers (``count`` among them) and the
        capacity."""
        if self.capacity == 0:
            self.reserve(self.initial)
        while True:
            # A fill on the device, not an upload: the frame's is its only one.
            cl.enqueue_fill_buffer(self.queue, self._count, np.uint32(0), 0, 4)
            launch({"count": self._count, **self._buffers}, self.capacity)
            count = int(meter.download(np.empty(1, np.uint32), self._count)[0])
            if count <= self.capacity:
                break
            self.reserve(count + count // 4)  # and again, with room for every one
        found = {name: np.empty((count, width) if width > 1 else count, dtype)
                 for name, (dtype, width) in self.fields.items()}
        if count:
            for name, array in found.items():
                meter.download(array, self._buffers[name])
        return found
