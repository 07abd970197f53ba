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
pixels: only their neighbourhoods are filtered, the rest of the frame never is — 0.042 s of a
4096² frame became 0.029 (a block with more than a few per cent of its pixels above, a
nebula's or a cluster's, is filtered whole: the same values). A negative threshold lies below
the zeros past the edge, which can lift a border pixel above it, and one above float32's
largest sixteenth overflows the sums: such frames are filtered whole.
"""

from __future__ import annotations

import numpy as np

ROWS_PER_BLOCK = 64  # rows thresholded together: their buffers stay in the cache
# A block with more than this share of its pixels above the threshold is filtered whole: nine
# gathers a pixel cost more than the whole block's passes past a few per cent.
DENSE_SHARE = 0.03


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


def filtered_above(frame: np.ndarray, threshold: float, limit: int | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """The pixels of :func:`filtered` above ``threshold`` (row-major positions, ascending) and
    their filtered values, a block of rows at a time; only the neighbours of pixels above the
    threshold are filtered (see the module notes), or a block whole when more than
    :data:`DENSE_SHARE` of it is above. ``frame``: float32. With ``limit``, the search stops
    once more than ``limit`` pixels are found (the lists returned then hold more than
    ``limit``, not all)."""
    frame = np.ascontiguousarray(frame)
    height, width = frame.shape
    level = np.float32(threshold)
    # A negative threshold (or NaN: nothing is above it), or one so high that sixteen times
    # it overflows float32 (nine pixels at it no longer filter to it): the whole frame.
    if not 0 <= level <= np.finfo(np.float32).max / 16:
        smooth = filtered(frame)
        with np.errstate(invalid="ignore"):
            index = np.flatnonzero(smooth > level)
        return index, smooth.ravel()[index]
    block = min(ROWS_PER_BLOCK, height)
    positions, values = [], []
    found = 0
    for start in range(0, height, block):
        end = min(start + block, height)
        above, below = max(start - 1, 0), min(end + 1, height)
        with np.errstate(invalid="ignore"):
            hot = np.flatnonzero(frame[above:below] > level)
        if hot.size == 0:
            continue
        if hot.size > DENSE_SHARE * (below - above) * width:
            # Crowded (a nebula, a cluster's core): the block filtered whole is cheaper than
            # nine gathers a pixel. Its rows are interior to the rows read, or at the frame's
            # edge: the same values as the whole frame filtered.
            local_smooth = filtered(frame[above:below])[start - above: end - above].ravel()
            with np.errstate(invalid="ignore"):
                local = np.flatnonzero(local_smooth > level)
            smooth = local_smooth[local]
            candidates = local + start * width
        else:
            candidates = _neighbourhoods(hot, start, end, above, width) + start * width
            smooth = _candidate_values(frame, candidates, start, end)
            with np.errstate(invalid="ignore"):
                kept = smooth > level
            candidates, smooth = candidates[kept], smooth[kept]
        positions.append(candidates)
        values.append(smooth)
        found += candidates.size
        if limit is not None and found > limit:
            break
    if not positions:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    return np.concatenate(positions), np.concatenate(values)


def _neighbourhoods(hot: np.ndarray, start: int, end: int, above: int, width: int
                    ) -> np.ndarray:
    """The positions in rows ``start:end`` (row-major, from ``start``'s first pixel,
    ascending) within a pixel of the ``hot`` ones (positions from row ``above``'s first)."""
    stride = width + 2
    # In ``near``, frame row y is row y − start + 2 and column x is x + 1: the rows beyond
    # the block's own (its hot pixels' neighbours there) fit, and are left out.
    near = np.zeros((end - start + 4, stride), bool)
    hot_rows, hot_columns = np.divmod(hot, width)
    centres = (hot_rows + (above - start + 2)) * stride + hot_columns + 1
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            near.ravel()[centres + (dy * stride + dx)] = True
    return np.flatnonzero(near[2: end - start + 2, 1: width + 1])


def _candidate_values(frame: np.ndarray, candidates: np.ndarray, start: int, end: int
                      ) -> np.ndarray:
    """:func:`filtered_at` of the ``candidates`` in rows ``start:end``: nine gathers each,
    the frame's border (its first and last rows and columns, which read zeros past the edge)
    again the general way."""
    height, width = frame.shape
    smooth = _inside_values(frame.ravel(), candidates, width)
    columns = candidates % width
    border = (columns == 0) | (columns == width - 1)
    if start == 0:
        border |= candidates < width
    if end == height:
        border |= candidates >= (height - 1) * width
    at = np.flatnonzero(border)
    if at.size:
        smooth[at] = filtered_at(frame, candidates[at])
    return smooth
