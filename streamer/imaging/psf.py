"""Point spread function models and their validation.

Every PSF leaving this module is a 2-D float64 array with odd sides, finite, non-negative,
summing to 1, with its centroid on the central pixel (within half a pixel). Analytic models
are sampled at pixel centres. Moffat and streak values below ``1e-6`` of the peak are set to
exactly zero, so a sparse convolution can skip them (the truncated part carries < 1e-5 of the
flux); the Gaussian is kept whole so it stays exactly separable.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from streamer.errors import PSFError

TRUNCATION = 1e-6
_FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))


def _odd_at_least(value: float) -> int:
    size = max(3, int(math.ceil(value)))
    return size if size % 2 else size + 1


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    half = size // 2
    coordinates = np.arange(-half, half + 1, dtype=np.float64)
    return np.meshgrid(coordinates, coordinates, indexing="xy")


def _truncate_and_normalise(psf: np.ndarray) -> np.ndarray:
    psf = np.where(psf >= TRUNCATION * psf.max(), psf, 0.0)
    return psf / psf.sum()


def _axes(x: np.ndarray, y: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates along and across the direction ``angle`` (degrees from +x, counter-clockwise)."""
    theta = math.radians(angle)
    along = x * math.cos(theta) + y * math.sin(theta)
    across = -x * math.sin(theta) + y * math.cos(theta)
    return along, across


def _check_shape(fwhm: float, ellipticity: float, angle: float, name: str) -> None:
    if not fwhm > 0:
        raise PSFError(f"{name} FWHM must be > 0 pixels, got {fwhm}")
    if not 0 <= ellipticity < 1:
        raise PSFError(f"{name} ellipticity (1 - b/a) must be in [0, 1), got {ellipticity}")
    if not math.isfinite(angle):
        raise PSFError(f"{name} angle must be a finite number of degrees, got {angle}")


def gaussian_profile(x: np.ndarray, y: np.ndarray, fwhm: float, ellipticity: float = 0.0,
                     angle: float = 0.0) -> np.ndarray:
    """Unnormalised (elliptical) Gaussian at offsets ``x, y`` from its centre. ``fwhm`` is the
    geometric mean of the major and minor axes' FWHM; the major axis lies at ``angle``."""
    along, across = _axes(x, y, angle)
    sigma = fwhm * _FWHM_TO_SIGMA
    stretch = math.sqrt(1.0 - ellipticity)
    return np.exp(-((along * stretch) ** 2 + (across / stretch) ** 2) / (2.0 * sigma**2))


def moffat_profile(x: np.ndarray, y: np.ndarray, fwhm: float, beta: float,
                   ellipticity: float = 0.0, angle: float = 0.0) -> np.ndarray:
    """Unnormalised (elliptical) Moffat ``(1 + r²/α²)^-β`` at offsets ``x, y`` (Moffat 1969),
    ``α = FWHM / (2 sqrt(2^(1/β) - 1))``; ``fwhm`` and ``angle`` as in
    :func:`gaussian_profile`."""
    along, across = _axes(x, y, angle)
    alpha = fwhm / (2.0 * math.sqrt(2.0 ** (1.0 / beta) - 1.0))
    stretch = math.sqrt(1.0 - ellipticity)
    r2 = ((along * stretch) ** 2 + (across / stretch) ** 2) / alpha**2
    return (1.0 + r2) ** (-beta)


def streak_profile(x: np.ndarray, y: np.ndarray, length: float, angle: float,
                   core_fwhm: float) -> np.ndarray:
    """Unnormalised motion streak at offsets ``x, y``: a uniform segment spanning
    ``±(length - 1) / 2`` along ``angle``, convolved with a Gaussian core (closed form: a
    Gaussian across the track times a difference of error functions along it)."""
    from scipy.special import erf

    along, across = _axes(x, y, angle)
    sigma = core_fwhm * _FWHM_TO_SIGMA
    half = (length - 1.0) / 2.0
    scale = math.sqrt(2.0) * sigma
    along_profile = (erf((along + half) / scale) - erf((along - half) / scale)) / 2.0
    if half == 0:
        along_profile = np.exp(-(along**2) / (2.0 * sigma**2))
    return np.exp(-(across**2) / (2.0 * sigma**2)) * along_profile


def gaussian_psf(fwhm: float, size: int | None = None, ellipticity: float = 0.0,
                 angle: float = 0.0) -> np.ndarray:
    """Gaussian PSF, circular unless ``ellipticity`` (1 - b/a) is given.

    Parameters
    ----------
    fwhm : float
        Full width at half maximum, pixels (> 0): the geometric mean of the axes' FWHM.
    size : int, optional
        Odd side of the array; default covers ±2.5 FWHM of the major axis.
    ellipticity, angle : float
        ``1 - b/a`` and the major axis's direction, degrees from +x.
    """
    _check_shape(fwhm, ellipticity, angle, "Gaussian")
    major = fwhm / math.sqrt(1.0 - ellipticity)
    size = validate_size(size or _odd_at_least(5.0 * major + 1))
    x, y = _grid(size)
    # Not truncated: a circular one stays exactly separable (rank 1), the cheapest convolution.
    psf = gaussian_profile(x, y, fwhm, ellipticity, angle)
    return psf / psf.sum()


def moffat_psf(fwhm: float, beta: float, size: int | None = None, ellipticity: float = 0.0,
               angle: float = 0.0) -> np.ndarray:
    """Moffat PSF (see :func:`moffat_profile`), circular unless ``ellipticity`` is given.

    Parameters
    ----------
    fwhm : float
        Full width at half maximum, pixels (> 0): the geometric mean of the axes' FWHM.
    beta : float
        Power index (> 1 for finite flux; 2.5–4.765 describe seeing well).
    size : int, optional
        Odd side of the array; default covers ±3 FWHM of the major axis (Moffat wings are
        broad).
    ellipticity, angle : float
        ``1 - b/a`` and the major axis's direction, degrees from +x.
    """
    _check_shape(fwhm, ellipticity, angle, "Moffat")
    if not beta > 1:
        raise PSFError(f"Moffat beta must be > 1 (finite flux), got {beta}")
    major = fwhm / math.sqrt(1.0 - ellipticity)
    size = validate_size(size or _odd_at_least(6.0 * major + 1))
    x, y = _grid(size)
    return _truncate_and_normalise(moffat_profile(x, y, fwhm, beta, ellipticity, angle))


def streak_psf(
    length: float, angle: float, core_fwhm: float = 1.5, size: int | None = None
) -> np.ndarray:
    """Motion-blur streak: a line segment of ``length`` pixels at ``angle`` degrees
    (counter-clockwise from +x), convolved with a Gaussian core of ``core_fwhm`` pixels
    (see :func:`streak_profile`); symmetric about the centre, so centred by construction.
    """
    if not length >= 1:
        raise PSFError(f"streak length must be >= 1 pixel, got {length}")
    _check_shape(core_fwhm, 0.0, angle, "streak core")
    size = validate_size(size or _odd_at_least(length + 5.0 * core_fwhm + 1))
    x, y = _grid(size)
    return _truncate_and_normalise(streak_profile(x, y, length, angle, core_fwhm))


def load_psf_fits(path: str | Path) -> np.ndarray:
    """Read a PSF image from the primary HDU or the first image extension of a FITS file."""
    from streamer.imaging.fits_io import read_image  # FITS handling lives in one module

    try:
        image = read_image(path).data
    except Exception as error:  # any failure to read is a PSF problem for the caller
        raise PSFError(f"cannot read PSF from {path}: {error}") from error
    return validate_psf(image, source=str(path))


def validate_size(size: int) -> int:
    """Return ``size`` if it is an odd integer >= 1, else raise PSFError."""
    if isinstance(size, bool) or int(size) != size or size < 1 or size % 2 == 0:
        raise PSFError(f"PSF size must be an odd number of pixels, got {size}")
    return int(size)


def validate_psf(psf: np.ndarray, source: str = "PSF") -> np.ndarray:
    """Check a PSF array and return it normalised to sum 1, as float64.

    Raises
    ------
    PSFError
        Not 2-D, an even side, non-finite or negative values, zero sum, or a centroid more
        than half a pixel from the central pixel.
    """
    psf = np.asarray(psf, dtype=np.float64)
    if psf.ndim != 2:
        raise PSFError(f"{source}: a PSF must be a 2-D image, got {psf.ndim} dimensions")
    if psf.shape[0] % 2 == 0 or psf.shape[1] % 2 == 0:
        raise PSFError(
            f"{source}: PSF sides must be odd so it has a central pixel, got {psf.shape}; "
            "pad or crop it by one row/column"
        )
    if not np.all(np.isfinite(psf)):
        raise PSFError(f"{source}: PSF has {np.count_nonzero(~np.isfinite(psf))} NaN/inf values")
    if np.any(psf < 0):
        raise PSFError(
            f"{source}: PSF has negative values (min {psf.min():.3g}); clip the noise "
            "to 0 before using it"
        )
    total = psf.sum()
    if not total > 0:
        raise PSFError(f"{source}: PSF sums to {total}; it must hold positive flux")
    psf = psf / total
    rows, columns = np.indices(psf.shape)
    centroid = (float((rows * psf).sum()), float((columns * psf).sum()))
    centre = (psf.shape[0] // 2, psf.shape[1] // 2)
    if abs(centroid[0] - centre[0]) > 0.5 or abs(centroid[1] - centre[1]) > 0.5:
        raise PSFError(
            f"{source}: PSF centroid is at (row {centroid[0]:.2f}, column {centroid[1]:.2f}) "
            f"but must be within half a pixel of the centre {centre}; recentre it"
        )
    return psf


class PSFSpec(BaseModel):
    """A PSF as a user names it: measured from each frame, a model and its parameters, or a
    FITS file.

    The text form (CLI ``--psf``) is ``KIND[:key=value,...]``, for example ``auto`` (measured
    from the frame's stars), ``gaussian:fwhm=3``, ``moffat:fwhm=3,beta=2.5,ellipticity=0.1,
    angle=30``, ``streak:length=41,angle=30,core=1.5``, ``file:psf.fits``; ``size=N`` sets the
    array side of a model.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["auto", "gaussian", "moffat", "streak", "file"]
    fwhm: float | None = Field(default=None, gt=0, description="FWHM in pixels")
    beta: float | None = Field(default=None, gt=1, description="Moffat power index")
    ellipticity: float = Field(default=0.0, ge=0, lt=1, description="1 - b/a of a model")
    length: float | None = Field(default=None, ge=1, description="streak length, pixels")
    angle: float = Field(default=0.0, description="major axis or streak angle, degrees from +x")
    core: float = Field(default=1.5, gt=0, description="streak core FWHM, pixels")
    size: int | None = Field(default=None, ge=1, description="odd array side, pixels")
    path: str | None = None

    @model_validator(mode="after")
    def _required_parameters(self) -> PSFSpec:
        needed = {
            "auto": [],
            "gaussian": ["fwhm"],
            "moffat": ["fwhm", "beta"],
            "streak": ["length"],
            "file": ["path"],
        }[self.kind]
        missing = [name for name in needed if getattr(self, name) is None]
        if missing:
            raise ValueError(f"PSF kind {self.kind!r} needs {', '.join(missing)}")
        return self

    @property
    def measured(self) -> bool:
        """Whether the PSF is measured from each frame (``auto``) rather than given."""
        return self.kind == "auto"

    def build(self) -> np.ndarray:
        """The validated, normalised PSF array (not for ``auto``: that one is measured)."""
        if self.kind == "auto":
            raise PSFError("the auto PSF is measured from each frame; it has no fixed array")
        if self.kind == "gaussian":
            return validate_psf(gaussian_psf(self.fwhm, self.size, self.ellipticity, self.angle),
                                str(self))
        if self.kind == "moffat":
            return validate_psf(moffat_psf(self.fwhm, self.beta, self.size, self.ellipticity,
                                           self.angle), str(self))
        if self.kind == "streak":
            return validate_psf(
                streak_psf(self.length, self.angle, self.core, self.size), str(self)
            )
        return load_psf_fits(self.path)

    def __str__(self) -> str:
        if self.kind == "auto":
            return "auto"
        if self.kind == "file":
            return f"file:{self.path}"
        fields = {
            "gaussian": ["fwhm", "ellipticity", "angle", "size"],
            "moffat": ["fwhm", "beta", "ellipticity", "angle", "size"],
            "streak": ["length", "angle", "core", "size"],
        }[self.kind]
        defaults = {"ellipticity": 0.0, "angle": 0.0} if self.kind != "streak" else {}
        values = [f"{name}={getattr(self, name):g}" for name in fields
                  if getattr(self, name) is not None and getattr(self, name) != defaults.get(name)]
        return f"{self.kind}:{','.join(values)}"


_SPEC = re.compile(r"^\s*(?P<kind>[a-z]+)\s*(?::(?P<rest>.*))?$", re.IGNORECASE)


def parse_psf_spec(text: str) -> PSFSpec:
    """Parse ``KIND:key=value,...`` (see :class:`PSFSpec`).

    Raises
    ------
    PSFError
        Unknown kind, malformed pair, or missing/out-of-range parameters.
    """
    match = _SPEC.match(text or "")
    if not match:
        raise PSFError(f"cannot parse PSF {text!r}; expected e.g. gaussian:fwhm=3")
    kind = match.group("kind").lower()
    rest = (match.group("rest") or "").strip()
    values: dict[str, object] = {"kind": kind}
    if kind == "file":
        values["path"] = rest
    elif rest:
        for pair in rest.split(","):
            name, sep, value = pair.partition("=")
            if not sep:
                raise PSFError(f"PSF parameter {pair!r} in {text!r} is not NAME=VALUE")
            values[name.strip().lower()] = value.strip()
    try:
        return PSFSpec.model_validate(values)
    except ValueError as error:
        raise PSFError(f"invalid PSF {text!r}: {error}") from error


def matched_filter_weights(psf: np.ndarray, sigma: float) -> np.ndarray:
    """The weights that correlate a background-subtracted frame of white noise ``sigma`` into
    the S/N a PSF fit would have at each pixel: the PSF at unit sum over ``σ·√ΣP²`` (the
    noise of that weighted sum)."""
    kernel = np.asarray(psf, dtype=np.float64)
    kernel = kernel / kernel.sum()
    return kernel / (max(sigma, 1e-30) * np.sqrt(np.sum(kernel**2)))
