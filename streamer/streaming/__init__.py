"""The streaming side: message contracts, chunked frames on Kafka, the camera publisher, the
archiving sink and topics. Never imports OpenCL: the camera and the sink run on machines
without an OpenCL stack. The development broker lives apart, in :mod:`streamer.local_broker`."""
