"""Source Extractor's *cleaning* of a list of objects, as sep does it after its extraction:
a faint object that a brighter neighbour's wing could have raised above the threshold is
dropped (its pixels given to no one).

Each object is modelled as ``amp · (1 + α (cxx dx² + cyy dy² + cxy dx dy))^(−β)`` about its
centroid, with ``amp = cflux / (2π a b abcor)`` and α set so that the profile falls to the
detection threshold over the object's isophotal area; a neighbour closer than
``CLEAN_ZONE × (a₁ + a₂)`` with the smaller filtered flux is dropped when that profile at its
centre exceeds its ``mthresh`` (its filtered value ``minarea`` pixels down from its peak, above
the threshold). sep decides the pairs in its list's order, and an object dropped before its
turn eats no more, so that order is kept here — but only over the pairs whose test passes,
found together from a k-d tree of the centroids.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

CLEAN_ZONE = 10.0  # sep's: neighbours within 10 × (a₁ + a₂) are compared
CLEAN_PARAM = 1.0  # sep's default β, the Moffat-like profile's slope


def object_levels(labels: np.ndarray, smooth: np.ndarray, values: np.ndarray, count: int,
                  threshold: float, minarea: int, wanted: np.ndarray | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Each object's ``mthresh`` and ``abcor`` before its ellipse's area (sep's analysis)
    from its pixels: ``labels`` (object number + 1 of each pixel, 0: none; pixels in the
    scan's order), their filtered (``smooth``) and own ``values``; only the ``wanted``
    objects' (the others: 0 and 1). ``abcor``: the ellipse's area correction from the
    pixels above half-way between the threshold and the peak."""
    take = np.zeros(count + 1, bool)
    take[1:] = True if wanted is None else wanted
    keep = np.flatnonzero(take[labels])
    owner = labels[keep] - 1
    order = np.argsort(owner, kind="stable")
    owner, smooth, values = owner[order], smooth[keep][order], values[keep][order]
    npix = np.bincount(owner, minlength=count)
    starts = np.concatenate([[0], np.cumsum(npix)[:-1]])
    mthresh = _heap_levels(owner, smooth - np.float32(threshold), npix, starts, minarea)
    present = np.flatnonzero(npix)
    peak = np.full(count, np.inf)
    if present.size:
        peak[present] = np.maximum.reduceat(values, starts[present])
    half = (threshold + peak) / 2.0
    area2 = np.bincount(owner, weights=values > half[owner], minlength=count)
    dnpix = np.bincount(owner, weights=values > threshold, minlength=count)
    return mthresh, _area_correction(area2 - dnpix, threshold / half)


def _heap_levels(owner: np.ndarray, above: np.ndarray, npix: np.ndarray, starts: np.ndarray,
                 minarea: int) -> np.ndarray:
    """sep's ``mthresh`` of each object from its pixels' filtered values above the threshold
    (``above``, float32, grouped by ``owner`` and in the scan's order within each: ``npix``
    and ``starts`` its groups): what sep's bounded heap of ``minarea`` values holds at its
    root. That is not the ``minarea``-th largest value: sep fills the heap with the first
    ``minarea`` pixels, sorts it on the next (which it drops) and sifts each later pixel one
    level down only — so for ``minarea`` ≤ 5 its root is the ``min(minarea, 3)``-th largest
    of the first pixels' smallest ``min(minarea, 3)`` and every pixel after the dropped one
    (an object of exactly ``minarea`` pixels: its first pixel's)."""
    count = npix.size
    if minarea > 5:
        return _heap_levels_loop(above, npix, starts, minarea)
    rank = np.arange(owner.size) - np.repeat(starts, npix)
    active = min(minarea, 3)
    # Sorted as (object, value) keys in one unsigned 64-bit sort — exact, and many times
    # faster than a lexsort of float keys (6 ms for a frame's 40 000 pixels).
    head = np.flatnonzero(rank < minarea)
    head_keys = np.sort(_keys(owner[head], above[head]))       # each object's, ascending
    head_count = np.minimum(npix, minarea)
    head_rank = np.arange(head.size) - np.repeat(np.cumsum(head_count) - head_count,
                                                 head_count)
    lowest = head_keys[head_rank < active]                     # its smallest ``active``
    later = np.flatnonzero(rank > minarea)
    # Descending within each object: the value's order key inverted.
    held = np.sort(np.concatenate([
        lowest ^ _LOW, _keys(owner[later], above[later], descending=True)]))
    held_starts = np.concatenate([[0], np.cumsum(np.bincount(
        (held >> np.uint64(32)).astype(np.int64), minlength=count))])
    out = np.zeros(count, np.float32)
    enough = npix > minarea
    out[enough] = _values(held[held_starts[:-1][enough] + active - 1], descending=True)
    exact = npix == minarea
    out[exact] = above[starts[exact]]
    return out


_LOW = np.uint64(0xFFFFFFFF)


def _keys(owner: np.ndarray, values: np.ndarray, descending: bool = False) -> np.ndarray:
    """uint64 keys that sort as (owner, value) — value descending if asked: the object in
    the high 32 bits, the float32 value's bits made to sort as unsigned integers in the low
    (−0 below +0, NaN at an end: the filtered values above a threshold are neither)."""
    bits = np.asarray(values, np.float32).view(np.uint32)
    order = np.where(bits & np.uint32(0x80000000), ~bits, bits | np.uint32(0x80000000))
    if descending:
        order = ~order
    return (owner.astype(np.uint64) << np.uint64(32)) | order.astype(np.uint64)


def _values(keys: np.ndarray, descending: bool = False) -> np.ndarray:
    """The float32 values of :func:`_keys`."""
    order = (keys & _LOW).astype(np.uint32)
    if descending:
        order = ~order
    bits = np.where(order & np.uint32(0x80000000), order & np.uint32(0x7FFFFFFF), ~order)
    return bits.astype(np.uint32).view(np.float32)


def _heap_levels_loop(above: np.ndarray, npix: np.ndarray, starts: np.ndarray,
                      minarea: int) -> np.ndarray:
    """:func:`_heap_levels` for any ``minarea``, pixel by pixel as sep does it."""
    out = np.zeros(npix.size, np.float32)
    for number in np.flatnonzero(npix >= minarea):
        start = starts[number]
        out[number] = sep_heap_root(above[start: start + npix[number]].tolist(), minarea)
    return out


def sep_heap_root(pixels: list[float], minarea: int) -> float:
    """sep's ``analysemthresh`` heap on one object's pixel values, step by step."""
    heap: list[float] = []
    left = minarea
    for value in pixels:
        if left > 0:
            heap.append(value)
        elif left == 0:
            heap.sort()  # sep sorts here and does not insert this pixel
        elif value > heap[0]:
            heap[0] = value
            j = 0
            while (k := (j + 1) << 1) <= minarea:
                child = k - 1
                if k != minarea and heap[k - 1] > heap[k]:
                    child, k = k, k + 1
                if heap[j] <= heap[child]:
                    break
                heap[child], heap[j] = heap[j], heap[child]
                j = k  # sep goes on from the child's right neighbour
        left -= 1
    return heap[0]


def _area_correction(darea: np.ndarray, ratio: np.ndarray) -> np.ndarray:
    """sep's ``abcor`` before the ellipse's ``a b``: its caller divides by them."""
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(darea < 0.0, darea, -1.0) / (
            2.0 * np.pi * np.log(np.where(ratio < 1.0, ratio, 0.99)))
    return np.where(ratio > 0.0, out, np.inf)


def survivors(objects: np.ndarray, labels: np.ndarray, smooth: np.ndarray,
              values: np.ndarray, threshold: float, minarea: int,
              beta: float = CLEAN_PARAM) -> np.ndarray:
    """Which of ``objects`` (sep's records, in sep's order) survive sep's cleaning; their
    pixels as :func:`object_levels` takes them."""
    count = len(objects)
    if count < 2:
        return np.ones(count, bool)
    pairs = _near_pairs(objects)
    wanted = np.zeros(count, bool)
    wanted[pairs[0]] = wanted[pairs[1]] = True
    mthresh, abcor_area = object_levels(labels, smooth, values, count, threshold, minarea,
                                        wanted)
    return _decided(objects, pairs, mthresh, abcor_area, threshold, beta)


def survivors_of_levels(objects: np.ndarray, mthresh: np.ndarray, abcor_area: np.ndarray,
                        threshold: float, beta: float = CLEAN_PARAM) -> np.ndarray:
    """:func:`survivors` from the objects' :func:`object_levels` already known."""
    if len(objects) < 2:
        return np.ones(len(objects), bool)
    return _decided(objects, _near_pairs(objects), mthresh, abcor_area, threshold, beta)


def _decided(objects: np.ndarray, pairs: tuple[np.ndarray, ...], mthresh: np.ndarray,
             abcor_area: np.ndarray, threshold: float, beta: float) -> np.ndarray:
    """sep's loop over the near ``pairs`` (``i``, ``j``, ``dx``, ``dy``)."""
    i, j, dx, dy = pairs
    flux = objects["cflux"].astype(np.float32)
    i_bigger = flux[j] < flux[i]
    eaten = np.where(i_bigger, j, i)
    eats = _profile_exceeds(objects, np.where(i_bigger, i, j), eaten, dx, dy, mthresh,
                            abcor_area, threshold, beta)
    # sep's loop: object i, if not eaten before its turn, against every later j still
    # alive (pairs in (i, j) order); i goes on comparing after being eaten in its own turn.
    alive = np.ones(len(objects), bool)
    turn, turn_alive = -1, True
    for first, later, meal in zip(i[eats].tolist(), j[eats].tolist(), eaten[eats].tolist()):
        if first != turn:
            turn, turn_alive = first, bool(alive[first])
        if turn_alive and alive[later]:
            alive[meal] = False
    return alive


def _near_pairs(objects: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The pairs ``i < j`` closer than ``CLEAN_ZONE × (aᵢ + aⱼ)`` (sep's float32 arithmetic),
    in (i, j) order, and their offsets ``dx``, ``dy`` (float32)."""
    x = objects["x"].astype(np.float64)
    y = objects["y"].astype(np.float64)
    a = objects["a"].astype(np.float32)
    centres = np.column_stack([x, y])
    i, j = _candidate_pairs(centres, a.astype(np.float64))
    dx = (x[i] - x[j]).astype(np.float32)
    dy = (y[i] - y[j]).astype(np.float32)
    rlim = (a[i] + a[j]) * (a[i] + a[j])
    near = ((dx * dx + dy * dy).astype(np.float64)
            <= rlim.astype(np.float64) * CLEAN_ZONE * CLEAN_ZONE)
    return i[near], j[near], dx[near], dy[near]


LARGEST_APART = 64  # the objects with the largest ellipses, searched one by one


def _candidate_pairs(centres: np.ndarray, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every pair ``i < j`` that may lie within ``CLEAN_ZONE × (aᵢ + aⱼ)``, in (i, j) order:
    one k-d tree search at the reach of the ordinary objects' largest ``a``, and one each for
    the few larger ones (a saturated star's ``a`` would otherwise set everyone's reach)."""
    count = a.size
    big = np.argsort(a)[max(count - LARGEST_APART, 0):]
    ordinary = float(a[big[0]]) if count > LARGEST_APART else 0.0
    tree = cKDTree(centres)
    pairs = [tree.query_pairs(2.0 * CLEAN_ZONE * ordinary + 1e-3, output_type="ndarray")]
    reach = CLEAN_ZONE * (a[big] + float(a.max())) + 1e-3
    for one, found in zip(big.tolist(), tree.query_ball_point(centres[big], reach)):
        others = np.asarray(found, np.int64)
        pairs.append(np.column_stack([np.minimum(others, one), np.maximum(others, one)]))
    flat = np.concatenate(pairs).astype(np.int64)
    flat = flat[flat[:, 0] != flat[:, 1]]
    key = np.unique(flat[:, 0] * count + flat[:, 1])
    return key // count, key % count


def _profile_exceeds(objects: np.ndarray, eater: np.ndarray, eaten: np.ndarray,
                     dx: np.ndarray, dy: np.ndarray, mthresh: np.ndarray,
                     abcor_area: np.ndarray, threshold: float, beta: float) -> np.ndarray:
    """Whether the eater's profile at the other's centre exceeds the other's ``mthresh``, in
    sep's arithmetic: its fields and threshold are floats, the ellipse's quadratic form is
    summed in float, the rest in double."""
    f32 = np.float32
    a = objects["a"].astype(f32)[eater].astype(np.float64)
    b = objects["b"].astype(f32)[eater].astype(np.float64)
    unit_area = np.pi * a * b
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        abcor = np.minimum((abcor_area[eater] / (a * b)).astype(f32), f32(1.0))
        flux = objects["cflux"].astype(f32)[eater].astype(np.float64)
        amp = flux / (2.0 * unit_area * abcor.astype(np.float64))
        npix = objects["npix"][eater].astype(np.float64)
        alpha = ((amp / float(f32(threshold))) ** (1.0 / beta) - 1.0) * unit_area / npix
        quadratic = (objects["cxx"].astype(f32)[eater] * dx * dx
                     + objects["cyy"].astype(f32)[eater] * dy * dy
                     + objects["cxy"].astype(f32)[eater] * dx * dy)  # float32 throughout
        val = 1.0 + alpha * quadratic.astype(np.float64)
        profile = np.where(val < 1e10, amp * val ** (-beta), 0.0).astype(f32)
    return (val > 1.0) & (profile > mthresh[eaten])
