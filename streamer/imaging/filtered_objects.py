"""sep's extraction of a frame with nothing excluded — its default 3×3 filter, a threshold, the
objects, their deblending and segmentation map — from the pixels above the threshold.

``sep.extract`` with its default filter (the normalised ``[1 2 1]ᵀ[1 2 1]`` kernel) and a
scalar noise thresholds the *filtered* frame at ``threshold × noise`` (not a matched filter's
S/N: that needs a noise map) and measures each object on the frame itself — centroid, moments,
flux and peak from the unfiltered pixels, ``cflux`` and ``cpeak`` from the filtered ones. On a
4096² frame that is 0.17–0.25 s of one core, most of it scanning 16 M pixels for the 130 000 of
3300 objects. Here the filter is applied only around the pixels above the threshold
(:mod:`streamer.imaging.default_filter`), the filtered pixels above it are joined and
described as the catalogue's map objects are (:mod:`streamer.imaging.pixel_objects`), and sep
runs only on the objects holding two or more
local maxima of the filtered frame — the only ones its deblending can split — each on its own
window of the frame (two pixels wider, so the filter reads there what it reads on the whole
frame), with its cleaning on as before.

sep's cleaning across objects (a faint object a brighter neighbour's wing could have made
is dropped) then runs on the whole list (:mod:`streamer.imaging.object_cleaning`). What
differs from one sep call on the whole frame: a deblended piece's pixels are handed out by
sep's random draws, so they differ by a few, and its pixels' order (which sep's cleaning
level depends on) is taken as the scan's; on astropy's real frames the objects are sep's on
DSS and NGC 1316, and one pair of M13's 281 swaps.
"""

from __future__ import annotations

import numpy as np

from streamer.imaging import object_cleaning, sep_calls
from streamer.imaging.default_filter import filtered_above
from streamer.imaging.segment_map import SegmentMap
from streamer.imaging.pixel_objects import (
    _components, _described, _local_maxima, group_peaks, grouped, placed, sep_dtype,
)

WINDOW_MARGIN = 2  # pixels around a deblended object's box: the filter reaches one


def extract(subtracted: np.ndarray, threshold: float, minarea: int, deblend_cont: float,
            deblend_nthresh: int, limit: int | None = None
            ) -> tuple[np.ndarray, SegmentMap] | None:
    """sep's objects and segmentation map (object index + 1; 0: sky) of ``subtracted`` (the
    frame less its background, float32, nothing excluded) with its default filter, above
    ``threshold`` (in the frame's units: sep's ``thresh × err``); the map as its pixels in
    objects and their labels (no frame to write and scan for them). None when
    more than ``limit`` pixels lie above the threshold: a frame that full (a nebula, the
    Moon's limb) holds huge objects of many maxima, which one sep call on the whole frame
    deblends faster than a window each (1.4 s against 0.6 on such a 2048² frame)."""
    height, width = subtracted.shape
    index, smooth_values = filtered_above(subtracted, threshold, limit)
    if limit is not None and index.size > limit:
        return None
    dtype = sep_dtype()
    if index.size == 0:
        return np.zeros(0, dtype), SegmentMap(subtracted.shape, index, np.zeros(0, np.int32))
    rows, columns = np.divmod(index, width)
    owner, count = _components(rows, columns, width)
    detected = smooth_values.astype(np.float64)
    # sep's centroid and moments weigh the pixels by their filtered values; the flux and
    # peak are the frame's own (and the filtered ones cflux, cpeak).
    groups = grouped(owner, count)  # one ordering of the pixels for both descriptions
    described = _described(dtype, count, owner, rows, columns, detected, threshold,
                           subtracted.shape, groups)
    _unfiltered_fields(described, owner, count, rows, columns,
                       subtracted.ravel()[index].astype(np.float64), detected, threshold,
                       groups)
    maxima = np.bincount(owner[_local_maxima(index, detected, rows, columns, width)],
                         minlength=count)
    large = described["npix"] >= minarea
    single = np.flatnonzero(large & (maxima <= 1))
    pieces, pixel_lists = [described[single]], []
    several = np.flatnonzero(large & (maxima >= 2))
    members = np.flatnonzero(np.isin(owner, several))
    members = members[np.argsort(owner[members], kind="stable")]
    bounds = np.cumsum(np.bincount(owner[members], minlength=count)[several])
    for component, pixels_of in zip(several, np.split(members, bounds[:-1])):
        found, found_pixels = _deblended(subtracted, index[pixels_of], described[component],
                                         threshold, minarea, deblend_cont, deblend_nthresh)
        pieces.append(found)
        pixel_lists.extend(found_pixels)
    found = np.concatenate(pieces)
    order = np.lexsort((found["xmin"], found["ymax"]))  # sep's: by last row, then first column
    rank = np.empty(order.size, np.int64)
    rank[order] = np.arange(order.size)
    number = np.zeros(count, np.int32)  # each single object's number in the output, + 1
    number[single] = rank[: single.size] + 1
    labels = number[owner]  # the map at ``index``; a deblended object's pieces' pixels:
    for at, pixels in enumerate(pixel_lists, start=single.size):  # all among its own
        where = np.minimum(np.searchsorted(index, pixels), index.size - 1)
        labels[where[index[where] == pixels]] = rank[at] + 1
    return _cleaned(found[order], labels, index, smooth_values, subtracted, threshold,
                    minarea)


def _cleaned(found: np.ndarray, labels: np.ndarray, index: np.ndarray,
             smooth_values: np.ndarray, subtracted: np.ndarray, threshold: float,
             minarea: int) -> tuple[np.ndarray, SegmentMap]:
    """``found`` and its segmentation map (``labels`` at the pixels ``index``; 0: in no
    object) less the objects sep's cleaning drops (their pixels to the sky, the rest
    renumbered)."""
    alive = object_cleaning.survivors(found, labels, smooth_values,
                                      subtracted.ravel()[index], threshold, minarea)
    if not alive.all():
        number = np.zeros(len(found) + 1, np.int32)
        number[1:][alive] = np.arange(1, int(alive.sum()) + 1)
        labels = number[labels]
        found = found[alive]
    inside = labels > 0
    return found, SegmentMap(subtracted.shape, index[inside], labels[inside])


def _unfiltered_fields(described: np.ndarray, owner: np.ndarray, count: int,
                       rows: np.ndarray, columns: np.ndarray, values: np.ndarray,
                       detected: np.ndarray, threshold: float,
                       groups: tuple[np.ndarray, np.ndarray]) -> None:
    """sep's fields of the frame's own pixel ``values`` (flux, peak and its position, pixels
    above the threshold) beside those of the filtered ones (``cflux``, ``cpeak``);
    ``groups``: :func:`~streamer.imaging.pixel_objects.grouped` of ``owner``."""
    # The ellipse's equation (sep's cxx x² + cyy y² + cxy xy), from the filtered moments.
    determinant = described["x2"] * described["y2"] - described["xy"] ** 2
    described["cxx"] = described["y2"] / determinant
    described["cyy"] = described["x2"] / determinant
    described["cxy"] = -2.0 * described["xy"] / determinant
    described["cflux"], described["cpeak"] = described["flux"], described["peak"]
    described["xcpeak"], described["ycpeak"] = described["xpeak"], described["ypeak"]
    described["flux"] = np.bincount(owner, weights=values, minlength=count)
    described["tnpix"] = np.bincount(owner, weights=values > threshold, minlength=count)
    peak, first = group_peaks(values, *groups)
    described["peak"] = peak
    described["xpeak"], described["ypeak"] = columns[first], rows[first]


def _deblended(subtracted: np.ndarray, pixels: np.ndarray, record, threshold: float,
               minarea: int, deblend_cont: float, deblend_nthresh: int
               ) -> tuple[np.ndarray, list[np.ndarray]]:
    """sep on the frame's window about one object (its box, ``WINDOW_MARGIN`` wider): the
    objects made of that object's pixels and each one's pixels (frame positions)."""
    height, width = subtracted.shape
    top = max(int(record["ymin"]) - WINDOW_MARGIN, 0)
    left = max(int(record["xmin"]) - WINDOW_MARGIN, 0)
    bottom = min(int(record["ymax"]) + WINDOW_MARGIN + 1, height)
    right = min(int(record["xmax"]) + WINDOW_MARGIN + 1, width)
    window = np.ascontiguousarray(subtracted[top:bottom, left:right])
    found, window_segments = sep_calls.extract(
        window, threshold, pixstack=max(1024, window.size), err=None, minarea=minarea,
        deblend_cont=deblend_cont, deblend_nthresh=deblend_nthresh, segmentation_map=True)
    ours = np.zeros(window.shape, bool)
    ours.ravel()[(pixels // width - top) * window.shape[1] + pixels % width - left] = True
    labels = window_segments.ravel()
    inside = np.flatnonzero(labels)
    inside = inside[np.argsort(labels[inside], kind="stable")]  # by piece, then position
    bounds = np.searchsorted(labels[inside], np.arange(1, len(found) + 2))
    kept, pixel_lists = [], []
    for number in range(1, len(found) + 1):
        where = inside[bounds[number - 1]: bounds[number]]
        if where.size and ours.ravel()[where[0]]:  # one of this object's pieces, not a
            kept.append(number - 1)                # neighbour's reaching into the window
            pixel_lists.append((where // window.shape[1] + top) * width
                               + where % window.shape[1] + left)
    return placed(found[kept], top, left, subtracted.shape), pixel_lists
