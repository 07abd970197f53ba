"""Images as NumPy arrays, no OpenCL and no Kafka: FITS files, PSF models and measurement,
quality figures, synthetic star fields and previews. Loads anywhere (a camera computer too)."""
