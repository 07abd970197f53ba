"""The restoration core on an OpenCL device: median background removal (eq. 1-2) and
Richardson-Lucy deconvolution (eq. 3). Knows nothing of Kafka."""
