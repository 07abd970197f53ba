"""Shared fixtures: synthetic star fields with a known truth, astropy's test images, the
session's Kafka broker, and the `slow` marker (runs only with --run-slow).

Nothing here imports pyopencl: the streaming tests run where OpenCL is missing. The OpenCL
fixtures live beside the tests that use them (tests/restoration/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from streamer.imaging.psf import gaussian_psf
from streamer.imaging.synthetic import star_field

ASTROPY_FITS_DATA = Path(__import__("astropy").__file__).parent / "io" / "fits"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", help="also run tests marked slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="slow: pass --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def gaussian_field():
    """256x256 field, Gaussian PSF FWHM 3 px, Poisson noise, sky 200 rising by 100."""
    return star_field((256, 256), gaussian_psf(3.0), stars=60, seed=1)


@pytest.fixture(scope="session")
def astropy_m13() -> dict[str, Path]:
    """astropy's M13 test images: uncompressed and tile-compressed four ways."""
    folder = ASTROPY_FITS_DATA / "hdu" / "compressed" / "tests" / "data"
    files = {
        "plain": folder / "m13.fits",
        "RICE": folder / "m13_rice.fits",
        "GZIP": folder / "m13_gzip.fits",
        "HCOMPRESS": folder / "m13_hcomp.fits",
        "PLIO": folder / "m13_plio.fits",
    }
    missing = [str(p) for p in files.values() if not p.exists()]
    if missing:
        pytest.fail(f"astropy test data missing: {missing}")
    return files


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory) -> str:
    """A real Kafka broker (KRaft, Maven Central jars) for the whole session."""
    from streamer.local_broker.broker import LocalKafka

    broker = LocalKafka(tmp_path_factory.mktemp("kafka"))
    bootstrap = broker.start()
    yield bootstrap
    broker.stop()
