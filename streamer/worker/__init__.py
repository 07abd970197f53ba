"""The restoration worker: the one place where the stream meets the device."""
