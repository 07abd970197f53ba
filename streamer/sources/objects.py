"""sep's objects of a matched-filter S/N map: extracted and deblended, the undeblended parents
of the pieces the deblending cut (sep's own definitions, from a labelling around those pieces),
and a trail's fragments put back together (:mod:`streamer.sources.detection` uses them)."""

from __future__ import annotations

import numpy as np

MINAREA = 3  # pixels above the threshold a detection needs (one noise spike is not a star)
DEBLEND_CONTRAST = 0.005
# sep's default is 32 levels. 16 kept every figure of the sources profile (completeness,
# false detections, pairs split, centroids) and costs 0.08 s less at 4096²; 8 doubled the
# false detections.
DEBLEND_THRESHOLDS = 16
TRAIL_PARENT_ELONGATION = 2.0  # a/b of an undeblended object that may be a trail
SADDLE = 0.8  # a dip below this share of the fainter peak: two stars, not a trail
SEP_OBJ_MERGED = 1  # sep's object flag: split from its parent by the deblending
GROUP_MARGIN = 8  # pixels: deblended children this close are labelled together


def extract(snr: np.ndarray, threshold: float, mask: np.ndarray | None):
    """sep's objects of the S/N map ``snr`` above ``threshold`` (``mask``: pixels left out),
    deblended."""
    import sep

    snr32 = np.ascontiguousarray(snr, dtype=np.float32)
    sep.set_extract_pixstack(max(300_000, snr32.size // 4))
    sep.set_sub_object_limit(4096)
    return sep.extract(snr32, threshold, err=None, mask=mask, minarea=MINAREA,
                       filter_kernel=None, deblend_cont=DEBLEND_CONTRAST,
                       deblend_nthresh=DEBLEND_THRESHOLDS)


def parents(snr: np.ndarray, threshold: float, mask: np.ndarray | None, children):
    """The objects sep's deblending split into two or more of ``children``, as an extraction
    without deblending would list them (8-connected pixels above ``threshold``; position,
    second moments, peak and box from those pixels, weighted by their values), in the order
    such an extraction finds them (by first pixel, row by row). Only sep's deblended children
    (flag ``OBJ_MERGED``) can share a parent, so each group of deblended children whose boxes
    come within ``GROUP_MARGIN`` of one another is labelled in a window around it: a second
    sep pass over a 4096² map analysed every object again (0.4 s), and a labelling of the
    whole thresholded map took 0.1 s, to give these few."""
    parents = np.zeros(0, dtype=children.dtype)
    merged = np.flatnonzero(children["flag"] & SEP_OBJ_MERGED)
    if merged.size < 2:
        return parents
    found: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
    for group in _touching(children[merged], GROUP_MARGIN):
        found.update(_group_parents(snr, threshold, mask, children[merged[group]],
                                    children[merged]))
    if not found:
        return parents
    found = sorted((first, *pixels) for first, pixels in found.items())
    parents = np.zeros(len(found), dtype=children.dtype)
    for record, (_, rows, columns) in zip(parents, found):
        _describe(record, snr[rows, columns].astype(np.float64), rows, columns, threshold)
    return parents


def _touching(boxes, margin: int) -> list[np.ndarray]:
    """Groups (index arrays) of objects whose boxes, grown by ``margin`` pixels, chain into
    one another: sort and sweep along x, joined by union-find."""
    count = len(boxes)
    root = np.arange(count)

    def find(i: int) -> int:
        while root[i] != i:
            root[i] = root[root[i]]
            i = root[i]
        return i

    left, right = boxes["xmin"].astype(int) - margin, boxes["xmax"].astype(int) + margin
    top, bottom = boxes["ymin"].astype(int) - margin, boxes["ymax"].astype(int) + margin
    order = np.argsort(left, kind="stable")
    active: list[int] = []
    for i in order:
        active = [j for j in active if right[j] >= left[i]]
        for j in active:
            if top[j] <= bottom[i] and top[i] <= bottom[j]:
                root[find(i)] = find(j)
        active.append(int(i))
    owners = np.array([find(i) for i in range(count)])
    return [np.flatnonzero(owners == owner) for owner in np.unique(owners)]


def _group_parents(snr: np.ndarray, threshold: float, mask: np.ndarray | None, members,
                   merged) -> dict[tuple[int, int], tuple[np.ndarray, np.ndarray]]:
    """The connected components (8-connected pixels above ``threshold``) that hold one of
    ``members``' peaks and two or more of ``merged``'s (every deblended child: sep leaves
    gaps between a parent's children, so a parent's may fall into two groups): each as its
    first pixel (row, column) and its pixels' rows and columns. Labelled in a window around
    the members' boxes, grown wherever such a component reaches a side of it that is not
    the frame's edge."""
    from scipy.ndimage import find_objects, label

    height, width = snr.shape
    top, bottom = int(members["ymin"].min()) - 1, int(members["ymax"].max()) + 2
    left, right = int(members["xmin"].min()) - 1, int(members["xmax"].max()) + 2
    while True:
        top, left = max(top, 0), max(left, 0)
        bottom, right = min(bottom, height), min(right, width)
        window = (slice(top, bottom), slice(left, right))
        above = snr[window] > threshold
        if mask is not None:
            above &= ~mask[window]
        labels, _ = label(above, structure=np.ones((3, 3), bool))
        held = labels[members["ypeak"] - top, members["xpeak"] - left]
        held = np.unique(held[held > 0])
        reached = [np.isin(edge, held).any() for edge in
                   (labels[0], labels[-1], labels[:, 0], labels[:, -1])]
        grow = [reached[0] and top > 0, reached[1] and bottom < height,
                reached[2] and left > 0, reached[3] and right < width]
        if not any(grow):
            break
        top, bottom = top - 8 * grow[0], bottom + 8 * grow[1]
        left, right = left - 8 * grow[2], right + 8 * grow[3]
    inside = ((merged["ypeak"] >= top) & (merged["ypeak"] < bottom)
              & (merged["xpeak"] >= left) & (merged["xpeak"] < right))
    owner = labels[merged["ypeak"][inside] - top, merged["xpeak"][inside] - left]
    counts = np.bincount(owner, minlength=labels.max() + 1)
    boxes = find_objects(labels)
    found = {}
    for component in held[counts[held] >= 2]:
        box = boxes[component - 1]
        rows, columns = np.nonzero(labels[box] == component)  # row-major: first pixel first
        rows, columns = rows + box[0].start + top, columns + box[1].start + left
        found[(int(rows[0]), int(columns[0]))] = (rows, columns)
    return found


def _describe(record, values: np.ndarray, rows: np.ndarray, columns: np.ndarray,
              threshold: float) -> None:
    """Fill sep's object ``record`` from an object's pixels, by sep's definitions (intensity
    weighted centroid and second moments, a single-pixel-wide object's moments widened by
    1/12, the ellipse's axes and angle from them)."""
    total = values.sum()
    x, y = (values @ columns) / total, (values @ rows) / total
    x2 = (values @ columns.astype(np.float64) ** 2) / total - x * x
    y2 = (values @ rows.astype(np.float64) ** 2) / total - y * y
    xy = (values @ (columns * rows).astype(np.float64)) / total - x * y
    if x2 * y2 - xy * xy < 1.0 / 144.0:
        x2, y2 = x2 + 1.0 / 12.0, y2 + 1.0 / 12.0
    half_sum, half_difference = (x2 + y2) / 2.0, (x2 - y2) / 2.0
    root = np.sqrt(half_difference**2 + xy**2)
    brightest = int(np.argmax(values))
    record["thresh"] = threshold
    record["npix"] = record["tnpix"] = values.size
    record["xmin"], record["xmax"] = columns.min(), columns.max()
    record["ymin"], record["ymax"] = rows.min(), rows.max()
    record["x"], record["y"], record["x2"], record["y2"], record["xy"] = x, y, x2, y2, xy
    record["a"] = np.sqrt(half_sum + root)
    record["b"] = np.sqrt(max(half_sum - root, 0.0))
    record["theta"] = 0.5 * np.arctan2(2.0 * xy, x2 - y2)
    record["flux"] = record["cflux"] = total
    record["peak"] = record["cpeak"] = values[brightest]
    record["xpeak"] = record["xcpeak"] = columns[brightest]
    record["ypeak"] = record["ycpeak"] = rows[brightest]


def unfragmented(snr: np.ndarray, children, parents):
    """Deblended objects, with a trail's fragments put back together: an elongated parent
    whose pieces have no dip between them (a streak is flat along its length; two stars show
    a saddle) is one source."""
    if len(parents) == 0 or len(children) < 2:
        return children
    keep = np.ones(len(children), bool)
    extra = []
    for parent in parents:
        if parent["a"] < TRAIL_PARENT_ELONGATION * max(parent["b"], 1e-6):
            continue
        inside = np.flatnonzero(keep & (children["xmin"] >= parent["xmin"])
                                & (children["xmax"] <= parent["xmax"])
                                & (children["ymin"] >= parent["ymin"])
                                & (children["ymax"] <= parent["ymax"]))
        if inside.size < 2 or not _flat_between(snr, children[inside]):
            continue
        keep[inside] = False
        extra.append(parent)
    if not extra:
        return children
    return np.concatenate([children[keep], np.array(extra, dtype=children.dtype)])


def _flat_between(snr: np.ndarray, pieces) -> bool:
    """Whether the S/N map stays above ``SADDLE`` of the fainter peak all along the line
    between each pair of neighbouring pieces (ordered along their spread)."""
    order = np.argsort(pieces["x"] if np.ptp(pieces["x"]) >= np.ptp(pieces["y"])
                       else pieces["y"])
    for first, second in zip(pieces[order][:-1], pieces[order][1:]):
        steps = np.linspace(0.0, 1.0, 25)
        xs = np.clip(np.rint(first["x"] + steps * (second["x"] - first["x"])).astype(int),
                     0, snr.shape[1] - 1)
        ys = np.clip(np.rint(first["y"] + steps * (second["y"] - first["y"])).astype(int),
                     0, snr.shape[0] - 1)
        if snr[ys, xs].min() < SADDLE * min(first["peak"], second["peak"]):
            return False
    return True
