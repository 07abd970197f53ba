"""Richardson–Lucy iterations on the host FFT's own buffers (CPU devices, ``host_fft``).

The plain iteration moves every frame-sized array through a copy on each side of each
transform: the estimate into the forward transform, the model out, the ratio in, the
correction out, each with its zero margins; on two cores those passes cost about as much as one
of the two transform pairs. Here the kernels of ``opencl/richardson_lucy.cl`` read and write
the transforms' buffers directly (FFTW's memory, seen by the device through
``CL_MEM_USE_HOST_PTR`` and mapped around each transform): the ratio kernel writes the backward
transform's whole input, margins included, and computes χ² on the way; the update kernel writes
the new estimate into the forward transform's input and sums the change on the way. The
arithmetic is the plain iteration's, value for value.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pyopencl as cl

from streamer.restoration.fft_correlation import HostFFTCorrelation

if TYPE_CHECKING:
    from streamer.restoration.richardson_lucy import RichardsonLucy


class InPlaceIterations:
    """The iteration of one :class:`RichardsonLucy` plan on its two host-FFT correlations."""

    def __init__(self, plan: RichardsonLucy, program: cl.Program) -> None:
        forward, backward = plan.forward, plan.backward
        assert isinstance(forward, HostFFTCorrelation) and isinstance(backward, HostFFTCorrelation)
        assert forward.view is not None and backward.view is not None
        # The plan is passed to each call, not kept: plan -> this -> plan would be a cycle,
        # and a cycle frees an evicted plan's transform buffers only when the cyclic garbage
        # collector next runs (a worker grew 9.5 % in a soak that way).
        self.forward, self.backward = forward, backward
        self._ratio = cl.Kernel(program, "rl_ratio_rows")
        self._update = cl.Kernel(program, "rl_update_rows")
        self._stage = cl.Kernel(program, "rl_stage_rows")
        rows = max(forward.fft_shape[0], backward.fft_shape[0])
        context = plan.queue.context
        self._partial_a = cl.Buffer(context, cl.mem_flags.READ_WRITE, rows * 4)
        self._partial_b = cl.Buffer(context, cl.mem_flags.READ_WRITE, rows * 4)

    @staticmethod
    def available(plan: RichardsonLucy) -> bool:
        """Whether both of ``plan``'s correlations run on host FFT buffers the device sees."""
        return all(isinstance(c, HostFFTCorrelation) and c.view is not None
                   for c in (plan.forward, plan.backward))

    def stage(self, plan: RichardsonLucy) -> None:
        """``plan``'s initial estimate into the forward transform's input."""
        forward = self.forward
        rows, columns = forward.fft_shape
        self._stage(plan.queue, (rows,), None, plan.estimate, forward.view,
                    np.int32(forward.pitch), np.int32(rows), np.int32(columns),
                    np.int32(plan.extended_shape[1]), np.int32(plan.extended_shape[0]))

    def iterate(self, plan: RichardsonLucy, threshold_squared: float, variance: float,
                inverse_gain: float, pedestal: float, signal_sigmas: float,
                measure_change: bool, measure_chi2: bool) -> None:
        """One iteration of ``plan``; the statistics slots as
        :meth:`RichardsonLucy._iterate` fills them."""
        from streamer.restoration.richardson_lucy import STAT

        forward, backward = self.forward, self.backward
        queue, reduce = plan.queue, plan._reduce
        height, width = plan.shape
        ry, rx = plan.radius
        forward.transform_in_place()  # the model, at the forward buffer's origin
        rows, columns = backward.fft_shape
        self._ratio(queue, (rows,), None, plan.data, plan.weight, forward.view,
                    np.int32(forward.pitch), backward.view, np.int32(backward.pitch),
                    np.int32(rows), np.int32(columns), np.int32(width), np.int32(height),
                    np.int32(ry), np.int32(rx), np.float32(threshold_squared),
                    np.float32(variance), np.float32(inverse_gain), np.float32(pedestal),
                    np.float32(signal_sigmas), np.int32(measure_chi2), plan.statistics,
                    self._partial_a, self._partial_b)
        if measure_chi2:
            reduce.sum(self._partial_a, rows, plan.statistics, STAT["CHI2"])
            reduce.sum(self._partial_b, rows, plan.statistics, STAT["CHI2_COUNT"])
        backward.transform_in_place()  # the correction, at the backward buffer's origin
        rows, columns = forward.fft_shape
        self._update(queue, (rows,), None, plan.estimate, backward.view,
                     np.int32(backward.pitch), plan.norm, forward.view, np.int32(forward.pitch),
                     np.int32(rows), np.int32(columns), np.int32(plan.extended_shape[1]),
                     np.int32(plan.extended_shape[0]), np.int32(measure_change),
                     self._partial_a, self._partial_b)
        if measure_change:
            reduce.sum(self._partial_a, rows, plan.statistics, STAT["CHANGE"])
            reduce.sum(self._partial_b, rows, plan.statistics, STAT["TOTAL"])
