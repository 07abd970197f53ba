"""The Richardson–Lucy program, ``opencl/richardson_lucy.cl``: its constants (passed to it as
defines, from these names only), the slots of the statistics buffer its steps share on the
device, and its kernels' argument lists — used by the plan (``richardson_lucy``) and by the
iterations on the host FFT's buffers (``in_place_iterations``) alike.
"""

from __future__ import annotations

import numpy as np

from streamer.restoration.kernels import BUFFER, KernelDeclaration

TINY = 1e-12
NORM_FLOOR = 1e-6
DAMPING_POWER = 10      # White's N
SIGNAL_SIGMAS = 3.0     # a pixel holds signal when its model is this far above the sky
STATISTICS = ("SKY", "DATA_SUM", "DATA_COUNT", "CHI2", "CHI2_COUNT", "CHANGE", "TOTAL",
              "ESTIMATE_SUM", "ACCEL_NUM", "ACCEL_DEN", "OUTPUT_SUM")
STAT = {name: index for index, name in enumerate(STATISTICS)}
DEFINES: dict[str, int | str] = {
    "TINY": f"{TINY:e}f", "NORM_FLOOR": f"{NORM_FLOOR:e}f", "DAMPING_POWER": DAMPING_POWER,
    **{f"STAT_{name}": index for name, index in STAT.items()}}

_FRAME = {"width": np.int32, "height": np.int32, "radius_y": np.int32, "radius_x": np.int32}
_NOISE = {"threshold_squared": np.float32, "variance": np.float32,
          "inverse_gain": np.float32}

DATA_SUMS = KernelDeclaration(
    "richardson_lucy", "rl_data_sums", data=BUFFER, weight=BUFFER, count=np.int32,
    partial_sum=BUFFER, partial_count=BUFFER)
RATIO = KernelDeclaration(
    "richardson_lucy", "rl_ratio", data=BUFFER, weight=BUFFER, model=BUFFER,
    ratio_padded=BUFFER, **_FRAME, **_NOISE, pedestal=np.float32, stats=BUFFER)
CHI2 = KernelDeclaration(
    "richardson_lucy", "rl_chi2", data=BUFFER, weight=BUFFER, model=BUFFER, count=np.int32,
    variance=np.float32, inverse_gain=np.float32, signal_sigmas=np.float32,
    pedestal=np.float32, stats=BUFFER, partial_chi2=BUFFER, partial_count=BUFFER)
INITIAL_ESTIMATE = KernelDeclaration(
    "richardson_lucy", "rl_initial_estimate", data=BUFFER, weight=BUFFER, estimate=BUFFER,
    **_FRAME, pedestal=np.float32, stats=BUFFER)
UPDATE = KernelDeclaration(
    "richardson_lucy", "rl_update", estimate=BUFFER, correction=BUFFER, norm=BUFFER,
    count=np.int32)
UPDATE_MEASURED = KernelDeclaration(
    "richardson_lucy", "rl_update_measured", estimate=BUFFER, correction=BUFFER, norm=BUFFER,
    count=np.int32, partial_change=BUFFER, partial_total=BUFFER)
ESTIMATE_SUMS = KernelDeclaration(
    "richardson_lucy", "rl_estimate_sums", estimate=BUFFER, weight=BUFFER, **_FRAME,
    partial_sum=BUFFER)
OUTPUT = KernelDeclaration(
    "richardson_lucy", "rl_output", estimate=BUFFER, weight=BUFFER, restored=BUFFER, **_FRAME,
    pedestal=np.float32, stats=BUFFER)
RESTORED = KernelDeclaration(
    "richardson_lucy", "rl_restored", data=BUFFER, weight=BUFFER, sources=BUFFER,
    model=BUFFER, restored=BUFFER, **_FRAME)
NOISE_MAP = KernelDeclaration(
    "richardson_lucy", "rl_noise_map", data=BUFFER, weight=BUFFER, stats=BUFFER, error=BUFFER,
    count=np.int32, variance=np.float32, inverse_gain=np.float32)
ACCEL_STEP = KernelDeclaration(
    "richardson_lucy", "rl_accel_step", estimate=BUFFER, current_step=BUFFER, previous_step=BUFFER,
    count=np.int32, partial_num=BUFFER, partial_den=BUFFER)
ACCEL_EXTRAPOLATE = KernelDeclaration(
    "richardson_lucy", "rl_accel_extrapolate", estimate=BUFFER, previous=BUFFER,
    count=np.int32, max_alpha=np.float32, stats=BUFFER)
SOURCES = KernelDeclaration(
    "richardson_lucy", "rl_sources", estimate=BUFFER, gate=BUFFER, sources=BUFFER, **_FRAME,
    pedestal=np.float32)
GATE_SEED = KernelDeclaration(
    "richardson_lucy", "rl_gate_seed", model=BUFFER, seed=BUFFER, width=np.int32,
    height=np.int32, pedestal=np.float32, sigma=np.float32, threshold=np.float32)
GATE_GROW = KernelDeclaration(
    "richardson_lucy", "rl_gate_grow", source=BUFFER, grown=BUFFER, width=np.int32,
    height=np.int32, reach=np.int32, along_rows=np.int32)
# On the host FFT's buffers (in_place_iterations): rows of a transform, `pitch` floats apart.
_ROWS = {"out_pitch": np.int32, "out_rows": np.int32, "out_columns": np.int32}
RATIO_ROWS = KernelDeclaration(
    "richardson_lucy", "rl_ratio_rows", data=BUFFER, weight=BUFFER, model=BUFFER,
    model_pitch=np.int32, ratio_out=BUFFER, **_ROWS, **_FRAME, **_NOISE, pedestal=np.float32,
    signal_sigmas=np.float32, measure=np.int32, stats=BUFFER, partial_chi2=BUFFER,
    partial_count=BUFFER)
UPDATE_ROWS = KernelDeclaration(
    "richardson_lucy", "rl_update_rows", estimate=BUFFER, correction=BUFFER,
    correction_pitch=np.int32, norm=BUFFER, estimate_out=BUFFER, **_ROWS,
    ext_width=np.int32, ext_height=np.int32, measure=np.int32, partial_change=BUFFER,
    partial_total=BUFFER)
STAGE_ROWS = KernelDeclaration(
    "richardson_lucy", "rl_stage_rows", estimate=BUFFER, estimate_out=BUFFER, **_ROWS,
    ext_width=np.int32, ext_height=np.int32)
