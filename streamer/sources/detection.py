"""Finding sources: the PSF-matched filter on the linear frame, blends split on the restored.

The matched filter is the optimal detector of an isolated point source in white noise: the
background-subtracted frame correlated with the PSF, divided by the noise of that sum
(``σ · √ΣP²`` for a PSF normalised to unit sum), is the S/N a PSF fit at that pixel would
have. Thresholding it at ``k`` finds every star of PSF-fit S/N ≳ ``k``. It merges stars closer
than about its own width, which the restored frame resolves (Cohen 1988; Linde & Spännare
1993: detect on the restored frame, measure on the data) — so a matched-filter source that
holds two or more restored-frame peaks is replaced by them, marked blended.

Real frames break the white-noise premise: a plate's grain, a resampled or drizzled frame's
correlated pixels, a galaxy's halo or a cluster's unresolved stars the 64 px background
leaves behind. Each S/N map is therefore measured against itself, as SExtractor measures a
frame (and Rubin's detection its smoothed image): a sep mesh background and rms of the
filtered frame, measured away from its sources and at least the white-noise figure, are its
zero and its unit. On nine real frames this cut the detections of the negated frame (every
one false) from up to 750 per Mpx to at most 45 while keeping or adding real stars; on a
crowded synthetic field with white noise the unit stays the theory's.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy.signal import fftconvolve

from streamer.imaging.mesh_background import (SAMPLED_FROM, MeshBackground, MeshLevel,
                                              levelled, levelled_at)
from streamer.imaging.psf import matched_filter_weights
from streamer.imaging.pixel_objects import SEP_OBJ_MERGED, MapPixels, objects
from streamer.sources.objects import unfragmented
from streamer.sources.peaks import PeakCandidates, local_peaks
from streamer.sources.windowed import windowed_positions

NEW_PEAK_FWHM = 0.75  # a restored peak this far from every source is a source of its own
FILTERED_MESH = 64  # pixels per cell of the S/N map's own background and rms
MAP_STRIDE_4_FWHM = 2.8  # px: a map is sampled every fourth pixel from this PSF FWHM up
_log = logging.getLogger(__name__)
Peaks = tuple[np.ndarray, np.ndarray, np.ndarray]  # x, y and height of a map's local peaks
BACKGROUND_SLACK = 0.1  # S/N: room between the device's floor and the map's background


@dataclass(frozen=True)
class MapCandidates:
    """The device's candidates for the frame's S/N map pixels above the detection threshold
    (:mod:`streamer.restoration.map_candidates`): every pixel (excluded ones aside) where
    the map less the frame's background through the filter (:func:`map_offset`) exceeds
    ``floor``, and the map's sample its own background is measured on."""

    shape: tuple[int, int]
    index: np.ndarray   # row-major positions, each once, in the device's order
    values: np.ndarray  # the map there, as made (float32)
    floor: float
    sample: np.ndarray  # the map at every ``stride``-th pixel of each axis
    stride: int
    offset: MeshLevel   # the frame's background through the filter, as the device took it off


@dataclass
class SNRMaps:
    """The matched-filter S/N of the frame (its PSF) and of the restored frame (the target
    PSF, or the pixels themselves when restored fully), float32, frame-shaped — made on the
    device (:mod:`streamer.restoration.detection_maps`). Both maps stay there where they
    can: the frame's pixels near and above the threshold come instead (``data_candidates``)
    and the restored frame's peak candidates (``restored_peaks``); the maps themselves only
    when asked for (tests, diagnostics) or when the frame's map cannot be read that way."""

    data: np.ndarray | None = None
    restored: np.ndarray | None = None
    restored_peaks: PeakCandidates | None = None
    data_candidates: MapCandidates | None = None


@dataclass(frozen=True)
class Detections:
    """Positions (0-based pixel centres) and detection figures of a frame's sources."""

    x: np.ndarray
    y: np.ndarray
    detection_snr: np.ndarray   # matched-filter S/N at the peak
    a: np.ndarray               # second-moment axes (pixels) and angle (radians from +x)
    b: np.ndarray
    theta: np.ndarray
    blended: np.ndarray         # bool: split from a merged matched-filter source
    noise_ratio: np.ndarray     # the filtered frame's measured noise over white noise's, here
    frame_noise_ratio: float = 1.0  # the same, the frame's median
    deblended: np.ndarray | None = None  # bool: cut by sep's deblending from a larger object

    def __len__(self) -> int:
        return int(self.x.size)

    @property
    def pieces(self) -> np.ndarray:
        """Which sources sep's deblending cut from a larger object (their shapes are the
        deblending's share of its pixels, not their own)."""
        return self.deblended if self.deblended is not None else np.zeros(len(self), bool)

    def strongest(self, count: int) -> Detections:
        """The ``count`` detections of highest detection S/N."""
        keep = np.sort(np.argsort(-self.detection_snr)[:count])
        return Detections(self.x[keep], self.y[keep], self.detection_snr[keep], self.a[keep],
                          self.b[keep], self.theta[keep], self.blended[keep],
                          self.noise_ratio[keep], self.frame_noise_ratio, self.pieces[keep])


@dataclass(frozen=True)
class NoiseRatio:
    """An S/N map's measured noise over white noise's (at least 1), pixel by pixel: as a
    frame-shaped array (``pixels``: sep's own evaluation) or as its spline's nodes
    (``level``), read where it is needed."""

    pixels: np.ndarray | None = None
    level: MeshLevel | None = None

    def at(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """The ratio at the pixels nearest to ``(x, y)``."""
        shape = self.pixels.shape if self.pixels is not None else self.level.shape
        rows = np.clip(np.rint(y).astype(int), 0, shape[0] - 1)
        columns = np.clip(np.rint(x).astype(int), 0, shape[1] - 1)
        if self.pixels is not None:
            return np.asarray(self.pixels[rows, columns], dtype=float)
        return np.maximum(self.level.at(rows, columns), 1.0)

    def median(self) -> float:
        """The frame's median ratio, over every fourth pixel of each axis (a smooth map: 16 M
        pixels add nothing)."""
        if self.pixels is not None:
            return float(np.median(self.pixels[::4, ::4]))
        return float(np.median(np.maximum(self.level.evaluate(4), np.float32(1.0))))


def finite_or_zero(data: np.ndarray) -> np.ndarray:
    """``data`` as float32 with its excluded (NaN, infinite) pixels 0, copied only when it has
    some: ``np.nan_to_num`` copies a 4096² frame and makes three whole-frame passes (0.25 s)
    whether or not there is anything to replace."""
    values = np.asarray(data, dtype=np.float32)
    bad = ~np.isfinite(values)
    if not bad.any():
        return values
    values = values.copy()
    values[bad] = 0.0
    return values


def matched_filter_snr(data: np.ndarray, sigma: float, psf: np.ndarray) -> np.ndarray:
    """The S/N map of the PSF-matched filter on a background-subtracted frame with white
    noise ``sigma`` (NaN pixels count as sky)."""
    weights = matched_filter_weights(psf, sigma)
    # float32 halves the FFTs' time; a detection threshold needs no more digits
    return fftconvolve(finite_or_zero(data), weights[::-1, ::-1].astype(np.float32),
                       mode="same")


def measured_snr(data: np.ndarray, sigma: float, psf: np.ndarray, fwhm: float, threshold: float,
                 mask: np.ndarray | None = None, snr: np.ndarray | None = None,
                 offset: MeshLevel | None = None) -> tuple[np.ndarray, NoiseRatio]:
    """The matched-filter S/N map levelled and scaled by its own sep mesh background and rms
    (the rms at least white noise's; the two applied a few rows at a time,
    :func:`~streamer.imaging.mesh_background.levelled`), and that rms: how much noisier than
    white noise the frame is at the PSF's scale, pixel by pixel (:func:`_map_level`).
    ``snr``: the matched filter's map, when the device made it
    (:mod:`streamer.restoration.detection_maps`); ``offset``: a smooth level on the map's
    mesh to take off it first (the frame's background through the filter,
    :func:`map_offset`) — taken off the sample, and added to the map's own background's
    nodes, so that it costs no whole-map pass of its own."""
    snr = np.ascontiguousarray(matched_filter_snr(data, sigma, psf) if snr is None else snr,
                               dtype=np.float32)
    mesh, stride = map_mesh(snr.shape, fwhm)
    if offset is not None and (stride == 1 or offset.shape != snr.shape
                               or offset.mesh != mesh):
        snr = snr - offset.evaluate()  # not on this mesh: off the whole map
        offset = None
    level = _map_level(snr[::stride, ::stride], snr.shape, stride, mesh, fwhm, threshold,
                       mask, offset)
    nodes = level.level()
    if nodes is None:  # sep's own evaluation, every pixel
        background = level.back()
        np.subtract(snr, background, out=background)
        ratio = level.rms()
        np.maximum(ratio, np.float32(1.0), out=ratio)
        background /= ratio
        return background, NoiseRatio(ratio)
    scale = level.rms_level()
    return (levelled(snr, nodes if offset is None else nodes.combined(offset), scale),
            NoiseRatio(level=scale))


def candidate_snr(candidates: MapCandidates, fwhm: float, threshold: float,
                  mask: np.ndarray | None) -> tuple[MapPixels, NoiseRatio] | None:
    """:func:`measured_snr` read at the device's candidates only (the pixels of the map less
    its offset above ``candidates.floor``, :mod:`streamer.restoration.map_candidates`): the
    map's pixels above ``threshold``, the same as on the whole levelled map to float32
    rounding, and its noise ratio. None when the map's own background dips so far below
    zero that a pixel above the threshold could have been missed (a whole map is needed).
    ``fwhm``: the PSF's; ``mask``: the frame's excluded pixels (None: none)."""
    mesh, stride = map_mesh(candidates.shape, fwhm)
    offset = candidates.offset
    if stride != candidates.stride or offset.mesh != mesh or offset.shape != candidates.shape:
        raise ValueError(f"candidates sampled every {candidates.stride} px with a "
                         f"{offset.mesh} px offset, where the map wants {stride} and {mesh}")
    level = _map_level(candidates.sample, candidates.shape, stride, mesh, fwhm, threshold,
                       mask, offset)
    nodes = level.level()
    if nodes is None:
        return None
    scale = level.rms_level()
    # Above the threshold on the levelled map means above threshold × max(rms, 1) + its own
    # background on the map less the offset: the device's floor reaches every such pixel
    # where that stays above it (checked every 16 px and on the last row and column, where
    # the end cells' cubics go on: the spline is smooth over a 64 px cell).
    grid = [np.unique(np.append(np.arange(0, side, 16), side - 1))
            for side in candidates.shape]
    reach = (threshold * np.maximum(scale.on_grid(*grid), np.float32(1.0))
             + nodes.on_grid(*grid))
    if float(reach.min()) < candidates.floor + BACKGROUND_SLACK:
        return None
    order = np.argsort(candidates.index)
    index = candidates.index[order].astype(np.int64)
    rows, columns = np.divmod(index, candidates.shape[1])
    values = levelled_at(candidates.values[order], rows, columns, nodes.combined(offset),
                         scale)
    return (MapPixels.of_known(candidates.shape, threshold, index, values),
            NoiseRatio(level=scale))


def _map_level(sample: np.ndarray, shape: tuple[int, int], stride: int, mesh: int,
               fwhm: float, threshold: float, mask: np.ndarray | None,
               offset: MeshLevel | None) -> MeshBackground:
    """A map's own mesh background and rms, measured on its every ``stride``-th pixel
    (``sample``, less ``offset``), twice: the second time with the first pass's detections
    (grown by a FWHM) left out, so that a crowded field's star wings do not pass for noise.
    The first pass only finds those sources, so it stays on the sample."""
    from scipy.ndimage import binary_dilation

    sample = np.array(sample, dtype=np.float32)
    if offset is not None:
        sample -= offset.evaluate(stride)
    first = MeshBackground(sample, mesh, mask, stride=stride, shape=shape)
    above = (sample - first.back(sampled=True)) / np.maximum(first.rms(sampled=True), 1.0)
    grow = max(1, int(round(max(2, int(round(fwhm))) / first.stride)))
    sources = binary_dilation(above > threshold, iterations=grow)
    return MeshBackground(sample, mesh,
                          sources if mask is None else sources | first.sampled(mask),
                          stride=stride, shape=shape)


def map_mesh(shape: tuple[int, ...], fwhm: float) -> tuple[int, int]:
    """The cell of an S/N map's own mesh (``FILTERED_MESH``, less on small maps) and every
    how many pixels it is measured (:func:`map_stride`)."""
    mesh = int(min(FILTERED_MESH, max(8, min(shape) // 4)))
    return mesh, map_stride(shape, mesh, fwhm)


def map_offset(background: MeshLevel, sky: float, psf: np.ndarray, sigma: float) -> MeshLevel:
    """The frame's mesh background (less its sky level ``sky``) through the matched filter:
    for a background smooth on the PSF's scale, that background times the filter's sum."""
    return background.scaled(float(matched_filter_weights(psf, sigma).sum()), -sky)


def map_stride(shape: tuple[int, ...], mesh: int, fwhm: float) -> int:
    """Every how many pixels a matched-filter map's mesh is measured. The map's pixels are
    correlated over the filter (about 1.4 PSF FWHM): where that spans 4 pixels, every fourth
    is nearly as independent a sample as every second, at a quarter of the cost (0.2 s less
    at 4096², one core). The sources profile (FWHM 3.6 px) gave the same figures to the
    third digit with either."""
    stride = 4 if fwhm >= MAP_STRIDE_4_FWHM else 2
    if min(shape) < SAMPLED_FROM or mesh % stride:
        return 2 if min(shape) >= SAMPLED_FROM and mesh % 2 == 0 else 1
    return stride


def detect(data: np.ndarray, sigma: float, psf: np.ndarray, fwhm: float, *,
           restored: np.ndarray | None = None, restored_psf: np.ndarray | None = None,
           threshold: float = 5.0, mask: np.ndarray | None = None,
           data_snr: np.ndarray | None = None, restored_snr: np.ndarray | None = None,
           data_offset: MeshLevel | None = None,
           restored_peaks: Peaks | None = None,
           data_candidates: MapCandidates | None = None) -> Detections:
    """The sources of a background-subtracted linear frame ``data`` at matched-filter S/N
    ``threshold``, merged ones split where the (background-subtracted) ``restored`` frame
    shows two or more peaks within one input FWHM. ``mask``: the pixels of ``data`` that are
    excluded (not finite; None: every pixel is finite). ``data_snr`` and ``restored_snr``: the
    two frames' matched-filter maps of their background-subtracted frames, when made
    elsewhere (the device's, levelled by the catalogue; ``restored`` is then not needed);
    ``data_offset``: a smooth level to take off ``data_snr`` (see :func:`measured_snr`);
    ``restored_peaks``: the restored map's :func:`~streamer.sources.peaks.local_peaks` at
    ``threshold``, when found elsewhere (the device's candidates; no map is then needed);
    ``data_candidates``: the frame's map read by the device near and above the threshold
    instead of ``data_snr`` (:func:`candidate_snr`). The map's objects are sep's
    (:mod:`streamer.imaging.pixel_objects`)."""
    pixels = None
    if data_candidates is not None:
        read = candidate_snr(data_candidates, fwhm, threshold, mask)
        if read is None:
            _log.warning("the S/N map's own background dips so far below zero that its "
                         "candidates (%.1f below the threshold) could miss pixels: the frame's "
                         "map is made on the host", threshold - data_candidates.floor)
            data_snr, data_offset = None, None  # the host's filter of ``data``
        else:
            pixels, ratio = read
    if pixels is None:
        snr, ratio = measured_snr(data, sigma, psf, fwhm, threshold, mask, data_snr,
                                  data_offset)
        pixels = MapPixels.of_map(snr, threshold, mask)
    frame_ratio = ratio.median()
    children, parents = objects(pixels)
    listed = unfragmented(pixels, children, parents)
    if len(listed) == 0:
        empty = np.empty(0)
        return Detections(empty, empty, empty, empty, empty, empty, np.empty(0, bool), empty,
                          frame_ratio)
    # The windowed centroids read each source's box of the frame as it is (float32): a float64
    # copy of the frame would only cost 128 MB.
    clean = data if mask is None else finite_or_zero(data)
    width = max(fwhm, 1.0) / 2.3548
    x, y = windowed_positions(clean, listed["x"], listed["y"], width)  # sep's winpos
    bad = (~np.isfinite(x) | ~np.isfinite(y)
           | (np.hypot(x - listed["x"], y - listed["y"]) > fwhm))
    x, y = np.where(bad, listed["x"], x), np.where(bad, listed["y"], y)
    found = Detections(x, y, listed["peak"].astype(float), listed["a"].astype(float),
                       listed["b"].astype(float), listed["theta"].astype(float),
                       np.zeros(len(listed), bool), ratio.at(x, y), frame_ratio,
                       (listed["flag"] & SEP_OBJ_MERGED) != 0)
    if restored_peaks is None:
        if restored_snr is None:
            if restored is None:
                return found
            restored_snr = matched_filter_snr(restored, sigma, restored_psf if restored_psf
                                              is not None else np.ones((1, 1)))
        restored_peaks = local_peaks(restored_snr, threshold, mask)
    return _split_blends(found, restored_peaks, fwhm, ratio)


def _split_blends(found: Detections, peaks: Peaks, fwhm: float, ratio: NoiseRatio
                  ) -> Detections:
    """Blends from the restored frame: a matched-filter source holding two or more restored
    peaks within one input FWHM is replaced by them, and a restored peak farther than
    ``NEW_PEAK_FWHM`` input FWHM from every source (a faint star in a bright one's wing, which
    the matched filter merges) is added; both are marked blended, and their PSF-fit S/N on
    the data decides whether they stay (:mod:`streamer.sources.catalog`)."""
    # The restored map's peaks (x, y, height) are candidates only, at the white-noise unit:
    # each must stand on the data by its own PSF-fit S/N (against the measured noise) to
    # stay, so a generous list costs no false sources.
    px, py, height = peaks
    if px.size == 0:
        return found
    from scipy.spatial import cKDTree

    keep = np.ones(len(found), bool)
    claimed = np.zeros(px.size, bool)
    if len(found):
        peak_tree = cKDTree(np.column_stack([px, py]))
        nearby = peak_tree.query_ball_point(np.column_stack([found.x, found.y]), fwhm)
        for index in np.argsort(-found.detection_snr):
            near = [peak for peak in nearby[index] if not claimed[peak]]
            if len(near) >= 2:
                keep[index] = False
                claimed[near] = True
    kept_x, kept_y = found.x[keep], found.y[keep]
    added = claimed.copy()
    if kept_x.size:
        distance, _ = cKDTree(np.column_stack([kept_x, kept_y])).query(
            np.column_stack([px, py]))
        added |= ~claimed & (distance > NEW_PEAK_FWHM * fwhm)
    else:
        added[:] = True
    if not added.any():
        return found
    ex, ey, es = px[added], py[added], height[added]
    count = ex.size
    psf_axis = np.full(count, np.sqrt(2.0) * max(fwhm, 1.0) / 2.3548)  # as on the S/N map
    return Detections(
        np.concatenate([kept_x, ex]), np.concatenate([kept_y, ey]),
        np.concatenate([found.detection_snr[keep], es]),
        np.concatenate([found.a[keep], psf_axis]), np.concatenate([found.b[keep], psf_axis]),
        np.concatenate([found.theta[keep], np.zeros(count)]),
        np.concatenate([found.blended[keep], np.ones(count, bool)]),
        np.concatenate([found.noise_ratio[keep], ratio.at(ex, ey)]), found.frame_noise_ratio,
        np.concatenate([found.pieces[keep], np.zeros(count, bool)]))
