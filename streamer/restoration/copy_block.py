"""Thin wrapper of ``opencl/copy.cl``: a block copied between two buffer layouts, and a
buffer filled with a value."""

from __future__ import annotations

import numpy as np
import pyopencl as cl

from streamer.restoration.kernels import BUFFER, KernelDeclaration, KernelLibrary

COPY_BLOCK = KernelDeclaration(
    "copy", "copy_block", src=BUFFER, src_offset=np.int32, src_pitch=np.int32, dst=BUFFER,
    dst_offset=np.int32, dst_pitch=np.int32, columns=np.int32, rows=np.int32)
FILL_FLOATS = KernelDeclaration("copy", "fill_floats", dst=BUFFER, value=np.float32,
                                count=np.int32)


class BlockCopy:
    """``dst[dst_row + y, dst_column + x] = src[src_row + y, src_column + x]`` for a block."""

    def __init__(self, queue: cl.CommandQueue, library: KernelLibrary) -> None:
        self.queue = queue
        self._kernel = library.kernel(COPY_BLOCK)
        self._fill = library.kernel(FILL_FLOATS)

    def __call__(self, src: cl.Buffer, src_pitch: int, dst: cl.Buffer, dst_pitch: int,
                 rows: int, columns: int, src_origin: tuple[int, int] = (0, 0),
                 dst_origin: tuple[int, int] = (0, 0)) -> None:
        """Enqueue the copy of a ``rows × columns`` block."""
        self._kernel(
            self.queue, ((columns + 15) // 16 * 16, rows), None,
            src=src, src_offset=src_origin[0] * src_pitch + src_origin[1], src_pitch=src_pitch,
            dst=dst, dst_offset=dst_origin[0] * dst_pitch + dst_origin[1], dst_pitch=dst_pitch,
            columns=columns, rows=rows)

    def fill(self, dst: cl.Buffer, value: float, count: int | None = None) -> None:
        """Enqueue ``dst[:count] = value`` (default: the whole buffer)."""
        count = dst.size // 4 if count is None else count
        self._fill(self.queue, ((count + 255) // 256 * 256,), None, dst, value, count)
