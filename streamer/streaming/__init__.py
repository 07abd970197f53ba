"""The streaming side: message contracts, chunked frames on Kafka, the camera publisher, the
archiving sink, topics and the local broker. Never imports OpenCL: the camera and the sink
run on machines without an OpenCL stack."""
