"""sep's default detection filter — the normalised ``[1 2 1]ᵀ[1 2 1]`` kernel, zero outside the
frame — over a whole frame, at chosen pixels, and thresholded, in one float32 arithmetic.

Every value here is made by the same float32 operations in the same order (the kernel's
column pass ``(2 f[y] + f[y−1]) + f[y+1]``, then its row pass on those sums the same way, then
× 1/16), so the three give the same bits at a pixel.

The threshold is the detection's question: which pixels of the filtered frame lie above it.
The kernel's weights are positive and sum to one, so a filtered value is a weighted mean of
its 3×3 neighbours and can exceed a threshold ``t ≥ 0`` only next to a pixel that does —
in float32 too: rounding to nearest is monotone, so nine pixels at most ``t`` filter to at
most what nine at ``t`` do, which is ``t`` exactly (``2t + t`` rounds to within an ulp of
``t`` of ``3t``, too little to move ``4t``; ``12t`` back to ``16t`` the same way; the zeros
past the frame's edge are at most ``t``). On a star field at 5σ that is a few per cent of the
pixels: only their neighbourhoods are filtered, the rest of the frame never is — 0.05 s of a
4096² frame became 0.02. A negative threshold lies below the zeros past the edge, which can
lift a border pixel above it: such a frame is filtered whole.
"""

from __future__ import annotations

import numpy as np

ROWS_PER_BLOCK = 64  # rows thresholded together: their buffers stay in the cache


def filtered(frame: np.ndarray) -> np.ndarray:
    """``frame`` (float32) correlated with sep's default 3×3 kernel, normalised, zero outside
    the frame; float32 (the whole frame: for tests and small frames)."""
    out = np.empty(frame.shape, np.float32)
    rows = np.empty(frame.shape, np.float32)
    height = frame.shape[0]
    np.multiply(frame, np.float32(2.0), out=rows)
    rows[1:] += frame[: height - 1]
    rows[: height - 1] += frame[1:]
    np.multiply(rows, np.float32(2.0), out=out)
    out[:, 1:] += rows[:, :-1]
    out[:, :-1] += rows[:, 1:]
    out *= np.float32(1.0 / 16.0)
    return out


def filtered_at(frame: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """:func:`filtered` at the row-major ``positions`` only (float32; equal values)."""
    height, width = frame.shape
    flat = frame.ravel()
    rows, columns = np.divmod(positions, width)

    def column_sums(at: np.ndarray, present: np.ndarray | None) -> np.ndarray:
        # A neighbour past the frame adds 0: the same value as not adding it.
        total = flat[at] * np.float32(2.0)
        total += np.where(rows > 0, flat[np.maximum(at - width, 0)], np.float32(0.0))
        total += np.where(rows < height - 1, flat[np.minimum(at + width, flat.size - 1)],
                          np.float32(0.0))
        return total if present is None else np.where(present, total, np.float32(0.0))

    left = column_sums(np.maximum(positions - 1, 0), columns > 0)
    right = column_sums(np.minimum(positions + 1, flat.size - 1), columns < width - 1)
    out = column_sums(positions, None) * np.float32(2.0)
    out += left
    out += right
    out *= np.float32(1.0 / 16.0)
    return out


def _inside_values(flat: np.ndarray, positions: np.ndarray, width: int) -> np.ndarray:
    """:func:`filtered_at` for pixels off the frame's border (the others' values are
    wrong): nine gathers, the same arithmetic."""
    def column_sums(at: np.ndarray) -> np.ndarray:
        total = flat.take(at, mode="clip") * np.float32(2.0)
        total += flat.take(at - width, mode="clip")
        total += flat.take(at + width, mode="clip")
        return total

    out = column_sums(positions) * np.float32(2.0)
    out += column_sums(positions - 1)
    out += column_sums(positions + 1)
    out *= np.float32(1.0 / 16.0)
    return out


def filtered_above(frame: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """The pixels of :func:`filtered` above ``threshold`` (row-major positions, ascending) and
    their filtered values, a block of rows at a time; only the neighbours of pixels near the
    threshold are filtered (see the module notes). ``frame``: float32."""
    height, width = frame.shape
    limit = np.float32(threshold)
    if not limit >= 0:  # see the module notes (and NaN: nothing is above it)
        smooth = filtered(frame)
        with np.errstate(invalid="ignore"):
            index = np.flatnonzero(smooth > limit)
        return index, smooth.ravel()[index]
    block = min(ROWS_PER_BLOCK, height)
    near = np.zeros((block + 4, width + 2), bool)  # the block's rows, two more each side
    stride = width + 2
    offsets = np.array([dy * stride + dx for dy in (-1, 0, 1) for dx in (-1, 0, 1)])
    positions, values = [], []
    for start in range(0, height, block):
        end = min(start + block, height)
        above, below = max(start - 1, 0), min(end + 1, height)
        with np.errstate(invalid="ignore"):
            hot = np.flatnonzero(frame[above:below] > limit)
        if hot.size == 0:
            continue
        near[:] = False
        # In ``near``, frame row y is row y − start + 2 and column x is x + 1: the rows
        # beyond the block's own (its hot pixels' neighbours there) fit, and are left out.
        hot_rows, hot_columns = np.divmod(hot, width)
        centres = (hot_rows + (above - start + 2)) * stride + hot_columns + 1
        for offset in offsets:
            near.ravel()[centres + offset] = True
        local = np.flatnonzero(near[2: end - start + 2, 1: width + 1])
        candidates = local + start * width
        smooth = _inside_values(frame.ravel(), candidates, width)
        # The frame's own border (its first and last rows and columns) reads zeros past the
        # edge: those few pixels again, the general way.
        border = np.concatenate([
            np.flatnonzero(near[2: end - start + 2, 1]) * width,
            np.flatnonzero(near[2: end - start + 2, width]) * width + width - 1,
            local[local < width] if start == 0 else local[:0],
            local[local >= (height - 1 - start) * width] if end == height else local[:0]])
        if border.size:
            at = np.searchsorted(local, border)
            smooth[at] = filtered_at(frame, candidates[at])
        with np.errstate(invalid="ignore"):
            kept = smooth > limit
        positions.append(candidates[kept])
        values.append(smooth[kept])
    if not positions:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    return np.concatenate(positions), np.concatenate(values)
