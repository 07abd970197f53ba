"""One typed settings object for the streaming processes, from environment and CLI flags.

Every field can be set by an environment variable ``STREAMER_<NAME>`` (nested with ``__``,
e.g. ``STREAMER_KAFKA__BOOTSTRAP_SERVERS``) and by the CLI flag printed in ``--help``; flags
win over the environment. Kafka security options pass straight through to aiokafka.
"""

from __future__ import annotations

import ssl
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from streamer.imaging.psf import PSFSpec
from streamer.imaging.psf_measure import PSFMeasureSettings

MIB = 1 << 20


class RestorationSettings(BaseModel):
    """How to restore a frame."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    window: int = Field(default=31, description="median window side, odd, 3-255 pixels")
    median_method: Literal["auto", "histogram", "tiled"] = Field(
        default="auto", description="median algorithm: auto (tiled on GPUs whose local memory "
                                    "holds the tile, else histogram), histogram or tiled")
    psf: PSFSpec = Field(default=PSFSpec(kind="auto"),
                         description="auto: measured from each frame's stars; or a model/file")
    psf_fallback: PSFSpec = Field(
        default=PSFSpec(kind="gaussian", fwhm=3.0),
        description="PSF for a camera that has never shown a measurable star")
    psf_measure: PSFMeasureSettings = Field(default_factory=PSFMeasureSettings)
    psf_smoothing: float = Field(default=0.3, gt=0, le=1,
                                 description="weight of a frame's PSF in its camera's running "
                                             "mean (1: no smoothing)")
    iterations: int = Field(default=30, ge=1, description="Richardson-Lucy iterations, at most")
    tolerance: float | None = Field(
        default=None, gt=0, lt=1, description="stop early when the relative change is below"
    )
    damping: float = Field(default=1.0, ge=0,
                           description="damped RL threshold in noise sigmas (0: undamped)")
    pedestal: float = Field(default=1.0, ge=0,
                            description="sky pedestal the estimate keeps, noise sigmas: bounds "
                                        "dark moats, keeps the flux")
    stop_at_noise: bool = Field(default=True,
                                description="stop once the signal pixels fit to their noise "
                                            "(reduced chi2 <= 1)")
    method: str = Field(default="auto",
                        description="convolution: auto|dense|sparse|separable|fft|host_fft")

    @model_validator(mode="after")
    def _fallback_is_fixed(self) -> RestorationSettings:
        if self.psf_fallback.measured:
            raise ValueError("psf_fallback must be a model or a file, not auto")
        return self


class KafkaSettings(BaseModel):
    """How to reach the cluster."""

    model_config = ConfigDict(extra="forbid")

    bootstrap_servers: str = Field(
        default="", description="host:port[,host:port]; empty: start the local broker (demo only)"
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    client_id: str = "streamer"

    def client_options(self) -> dict[str, object]:
        """Keyword arguments common to aiokafka producers, consumers and admin clients."""
        options: dict[str, object] = {
            "bootstrap_servers": self.bootstrap_servers,
            "security_protocol": self.security_protocol,
            "client_id": self.client_id,
        }
        if self.sasl_mechanism:
            options["sasl_mechanism"] = self.sasl_mechanism
            options["sasl_plain_username"] = self.sasl_username
            options["sasl_plain_password"] = (
                self.sasl_password.get_secret_value() if self.sasl_password else None
            )
        if self.security_protocol in ("SSL", "SASL_SSL"):
            context = ssl.create_default_context(cafile=self.ssl_cafile)
            if self.ssl_certfile:
                context.load_cert_chain(self.ssl_certfile, self.ssl_keyfile)
            options["ssl_context"] = context
        return options


class TopicSettings(BaseModel):
    """Topic names and the layout ``streamer topics create`` gives them."""

    model_config = ConfigDict(extra="forbid")

    raw: str = "frames.raw"
    restored: str = "frames.restored"
    metrics: str = "frames.metrics"
    dead_letter: str = "frames.deadletter"
    partitions: int = Field(default=6, ge=1)
    replication_factor: int = Field(default=1, ge=1)
    retention_hours: float = Field(default=72.0, gt=0)


class StreamerSettings(BaseSettings):
    """Everything the camera, worker, sink and demo need."""

    model_config = SettingsConfigDict(
        env_prefix="STREAMER_", env_nested_delimiter="__", extra="forbid"
    )

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    topics: TopicSettings = Field(default_factory=TopicSettings)
    restoration: RestorationSettings = Field(default_factory=RestorationSettings)
    device: str | None = Field(default=None, description="OpenCL device spec")
    group_id: str = Field(default="streamer-workers", description="worker consumer group")
    worker_id: str = Field(default="", description="stable worker name; default host-pid")
    chunk_bytes: int = Field(default=1 * MIB, ge=64 * 1024, le=64 * MIB,
                             description="payload bytes per Kafka record")
    max_frame_bytes: int = Field(default=512 * MIB, ge=1,
                                 description="largest frame accepted, as sent and as decoded")
    max_frame_pixels: int = Field(default=100_000_000, ge=1,
                                  description="most pixels a frame may have (checked from its "
                                              "header, before decompressing)")
    frame_deadline_seconds: float = Field(
        default=600.0, gt=0, description="a frame still on the device after this goes to dead "
                                         "letters (checked between median batches and RL "
                                         "iterations)")
    retry_budget: int = Field(default=2, ge=1,
                              description="attempts a frame gets before it goes to dead letters "
                                          "(worker crashes and device faults included)")
    publish_timeout_seconds: float = Field(
        default=900.0, gt=0, description="the camera retries a frame through a broker outage "
                                         "for this long before giving up")
    shutdown_grace_seconds: float = Field(
        default=20.0, gt=0, description="on SIGTERM, finish in-flight frames for this long, "
                                        "then abandon them uncommitted and exit")
    chunk_timeout_seconds: float = Field(
        default=120.0, gt=0, description="a frame whose chunks have not all arrived after this "
                                         "goes to dead letters")
    chunk_span_records: int = Field(
        default=10_000, ge=1, description="... or once this many later records have arrived")
    # Off by default: restored float32 frames barely compress, and on a small machine the
    # codec's CPU time is taken from the device. Turn it on where the network is the limit.
    compression: Literal["none", "gzip", "lz4", "zstd"] = "none"
    transaction_timeout_seconds: float = Field(default=600.0, gt=0)
    prefetch_frames: int = Field(default=2, ge=1, description="decoded frames queued ahead")
    metrics_address: str | None = Field(
        default=None,
        description="HOST:PORT serving Prometheus /metrics; default 127.0.0.1 and the role's "
                    "port (camera 9471, worker 9472, sink 9473); empty string: off")
    max_poll_interval_seconds: float = Field(
        default=300.0, gt=0,
        description="Kafka's limit between polls; the worker keeps polling during device work")

    def with_bootstrap_servers(self, bootstrap_servers: str) -> StreamerSettings:
        """These settings on another cluster (the local broker a demo started, say)."""
        return self.model_copy(update={"kafka": self.kafka.model_copy(
            update={"bootstrap_servers": bootstrap_servers})})

    def to_environment(self) -> dict[str, str]:
        """``STREAMER_*`` variables that give a child process these settings (connection and
        its security options, topics, group, sizes and restoration). The SASL password is not
        copied: a child reads it from ``STREAMER_KAFKA__SASL_PASSWORD`` like any process."""
        topics = self.topics
        environment = {
            "STREAMER_KAFKA__BOOTSTRAP_SERVERS": self.kafka.bootstrap_servers,
            "STREAMER_TOPICS__RAW": topics.raw,
            "STREAMER_TOPICS__RESTORED": topics.restored,
            "STREAMER_TOPICS__METRICS": topics.metrics,
            "STREAMER_TOPICS__DEAD_LETTER": topics.dead_letter,
            "STREAMER_TOPICS__PARTITIONS": str(topics.partitions),
            "STREAMER_GROUP_ID": self.group_id,
            "STREAMER_CHUNK_BYTES": str(self.chunk_bytes),
            "STREAMER_COMPRESSION": self.compression,
            "STREAMER_RESTORATION": self.restoration.model_dump_json(),
        }
        kafka = self.kafka
        for name in ("security_protocol", "sasl_mechanism", "sasl_username", "ssl_cafile",
                     "ssl_certfile", "ssl_keyfile"):
            if getattr(kafka, name) is not None:
                environment[f"STREAMER_KAFKA__{name.upper()}"] = str(getattr(kafka, name))
        if self.metrics_address is not None:
            environment["STREAMER_METRICS_ADDRESS"] = self.metrics_address
        return environment
