"""``streamer restore``: a batch of FITS files through one :class:`Restorer`."""

from __future__ import annotations

import sys
from pathlib import Path

from streamer.errors import FrameError, PSFError
from streamer.imaging.fits_io import output_header, read_image, write_restored
from streamer.imaging.preview import write_before_after
from streamer.operations.progress import ProgressBar
from streamer.restoration.provenance import output_extensions, provenance
from streamer.restoration.restorer import Restorer
from streamer.settings import RestorationSettings


def output_name(path: Path) -> str:
    """``frame.fits.fz`` / ``frame.fit`` / ``frame.fits.gz`` → ``frame.fits``."""
    name = path.name
    for suffix in (".fz", ".gz", ".fits", ".fit", ".fts"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    return f"{name}.fits"


def restore_files(files: list[Path], out_dir: Path, settings: RestorationSettings,
                  device: str | None, preview: bool) -> int:
    """Restore every file into ``out_dir``; report each bad one on stderr and go on.

    Returns the number of files that failed."""
    restorer = Restorer(settings, device)  # device/PSF errors stop the batch before it starts
    out_dir.mkdir(parents=True, exist_ok=True)
    failures = 0
    progress = ProgressBar(len(files))
    for path in files:
        try:
            image = read_image(path)
            # Files of one batch come from one camera: its recent PSF helps a starless frame.
            result = restorer.restore(image.data, header=image.header)
            keywords, history = provenance(settings, restorer.device_name, result, path.name,
                                           image.hdu_index)
            target = out_dir / output_name(path)
            write_restored(target, result.data, output_header(image.header, keywords, history),
                           output_extensions(result, settings.restored_as))
            if preview:
                write_before_after(target.with_suffix(".png"), image.data, result.data)
        except (FrameError, PSFError, OSError) as error:
            failures += 1
            print(f"streamer: error: {path}: {error}", file=sys.stderr)
        progress.advance(path.name)
    if len(files) > 1:
        print(f"restored {len(files) - failures} of {len(files)} files into {out_dir}",
              file=sys.stderr)
    return failures
