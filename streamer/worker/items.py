"""What travels between the worker's stages: small typed records, never bare tuples."""

from __future__ import annotations

from dataclasses import dataclass

from streamer.errors import StreamerError
from streamer.imaging.fits_io import FitsImage
from streamer.imaging.preparation import PreparedFrame
from streamer.restoration.restorer import Restoration
from streamer.streaming.framing import AssembledFrame
from streamer.streaming.messages import FrameMetrics, RawFrame
from streamer.streaming.publisher import OutgoingRecord
from streamer.worker.partitions import PartitionState


@dataclass
class DecodedFrame:
    """A fetched frame after decoding (or the reason it could not be), queued for the device.
    ``state`` is the partition it was fetched under: revoked since, the frame is dropped."""

    state: PartitionState
    item: AssembledFrame
    raw: RawFrame | None
    image: FitsImage | None
    error: StreamerError | None
    decode_seconds: float
    prepared: PreparedFrame | None = None


@dataclass
class DeviceResult:
    """A frame after the device stage: its restoration, or the error that stopped it."""

    decoded: DecodedFrame
    restoration: Restoration | None
    error: StreamerError | None


@dataclass
class FrameOutcome:
    """What the worker made of a frame, queued for its transaction: the records to publish,
    and either the restored frame's metrics or the error that dead-lettered it."""

    decoded: DecodedFrame
    records: list[OutgoingRecord]
    error: StreamerError | None
    metrics: FrameMetrics | None
