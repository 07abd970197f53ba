"""Where and when: sky positions from the frame's WCS (astropy.wcs, SIP distortion included)
and the mid-exposure time from ``DATE-OBS`` and ``EXPTIME``."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
from astropy.io import fits

from streamer.quiet import filtered_warnings

ARCSEC_PER_DEGREE = 3600.0


@dataclass(frozen=True)
class SkyPositions:
    """RA/Dec (degrees, ICRS as the WCS gives them) and their errors (arcseconds)."""

    ra: np.ndarray
    dec: np.ndarray
    ra_error: np.ndarray
    dec_error: np.ndarray


def celestial_wcs(header: fits.Header | None):
    """The header's celestial WCS, or None when it has none (or one astropy cannot read)."""
    if header is None:
        return None
    from astropy.wcs import WCS, FITSFixedWarning

    try:
        with filtered_warnings("ignore", FITSFixedWarning):
            wcs = WCS(header, naxis=2)
    except Exception:  # a malformed WCS is "no WCS", never a lost frame
        return None
    return wcs if wcs.has_celestial else None


def sky_positions(wcs, x: np.ndarray, y: np.ndarray, x_error: np.ndarray,
                  y_error: np.ndarray) -> SkyPositions:
    """Positions of 0-based pixel coordinates, with errors from the pixel errors and the local
    pixel scale (the WCS's Jacobian at each source)."""
    ra, dec = wcs.all_pix2world(x, y, 0)
    step = 0.5
    ra_x, dec_x = wcs.all_pix2world(x + step, y, 0)
    ra_y, dec_y = wcs.all_pix2world(x, y + step, 0)
    cos_dec = np.cos(np.radians(dec))
    # d(RA cos Dec, Dec)/d(x, y), degrees per pixel
    dra_dx = _wrapped(ra_x - ra) * cos_dec / step
    dra_dy = _wrapped(ra_y - ra) * cos_dec / step
    ddec_dx, ddec_dy = (dec_x - dec) / step, (dec_y - dec) / step
    ra_error = np.hypot(dra_dx * x_error, dra_dy * y_error) * ARCSEC_PER_DEGREE
    dec_error = np.hypot(ddec_dx * x_error, ddec_dy * y_error) * ARCSEC_PER_DEGREE
    return SkyPositions(np.mod(ra, 360.0), dec, ra_error, dec_error)


def _wrapped(degrees: np.ndarray) -> np.ndarray:
    return (degrees + 180.0) % 360.0 - 180.0


def mid_exposure(start: dt.datetime, exposure_seconds: float) -> tuple[dt.datetime, float]:
    """The middle of the exposure, UTC, and as a Modified Julian Date (UTC scale)."""
    from astropy.time import Time

    if start.tzinfo is None:
        start = start.replace(tzinfo=dt.timezone.utc)
    middle = start + dt.timedelta(seconds=exposure_seconds / 2.0)
    return middle, float(Time(middle.astimezone(dt.timezone.utc).replace(tzinfo=None),
                              scale="utc").mjd)
