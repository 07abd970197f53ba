"""Sources for the trackers: each frame's catalogue — detected with the PSF-matched filter on
the linear frame and split into blends on the restored one, measured on the linear data with
the frame's PSF — with sky positions and the mid-exposure time. NumPy, SciPy, sep and astropy
only, like :mod:`streamer.imaging`."""
