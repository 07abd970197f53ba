"""A trail's fragments put back together: sep's deblending cuts a streak into pieces, which
the detection (:mod:`streamer.sources.detection`) makes one source again."""

from __future__ import annotations

import numpy as np

from streamer.imaging.pixel_objects import MapPixels

TRAIL_PARENT_ELONGATION = 2.0  # a/b of an undeblended object that may be a trail
SADDLE = 0.8  # a dip below this share of the fainter peak: two stars, not a trail


def unfragmented(pixels: MapPixels, children, parents):
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
        if inside.size < 2 or not _flat_between(pixels, children[inside]):
            continue
        keep[inside] = False
        extra.append(parent)
    if not extra:
        return children
    return np.concatenate([children[keep], np.array(extra, dtype=children.dtype)])


def _flat_between(pixels: MapPixels, pieces) -> bool:
    """Whether the S/N map stays above ``SADDLE`` of the fainter peak all along the line
    between each pair of neighbouring pieces (ordered along their spread). Where only the
    pixels near the threshold are known, one not listed dips (it lies below them)."""
    height, width = pixels.shape
    order = np.argsort(pieces["x"] if np.ptp(pieces["x"]) >= np.ptp(pieces["y"])
                       else pieces["y"])
    for first, second in zip(pieces[order][:-1], pieces[order][1:]):
        steps = np.linspace(0.0, 1.0, 25)
        xs = np.clip(np.rint(first["x"] + steps * (second["x"] - first["x"])).astype(int),
                     0, width - 1)
        ys = np.clip(np.rint(first["y"] + steps * (second["y"] - first["y"])).astype(int),
                     0, height - 1)
        if pixels.at(ys, xs).min() < SADDLE * min(first["peak"], second["peak"]):
            return False
    return True
