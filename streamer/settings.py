"""One typed settings object for the streaming processes, from environment and CLI flags.

The models here are the one place a setting is written: its type, bounds, default and the
description that ``--help`` prints (:mod:`streamer.operations.cli_options` builds the flags
from them) and the variables a child process receives (:meth:`StreamerSettings.to_environment`).

Every field can be set by an environment variable ``STREAMER_<NAME>`` (nested with ``__``,
e.g. ``STREAMER_KAFKA__BOOTSTRAP_SERVERS``; a nested model also as JSON,
``STREAMER_RESTORATION='{"window": 41}'``; ``null`` is None); many also by a CLI flag, and
flags win over the environment. Kafka security options pass straight through to aiokafka.
"""

from __future__ import annotations

import json
import ssl
from typing import Annotated, Iterator, Literal, Mapping, get_args

from pydantic import (
    BaseModel, ConfigDict, Field, SecretBytes, SecretStr, StringConstraints, model_validator,
)
from pydantic_core import to_jsonable_python
from pydantic_settings import BaseSettings, SettingsConfigDict

from streamer.imaging.psf import PSFSpec
from streamer.imaging.psf_measure import PSFMeasureSettings

MIB = 1 << 20
# A warm-up frame (streamer.worker.warm_up): HEIGHTxWIDTH, optionally :dtype.
WARM_FRAME_PATTERN = r"^\s*(\d+)\s*x\s*(\d+)\s*(?::\s*(\w+))?\s*$"
# How the environment names a field (STREAMER_KAFKA__BOOTSTRAP_SERVERS) and writes None.
ENV_PREFIX, ENV_NESTED, ENV_NONE = "STREAMER_", "__", "null"


ConvolutionMethod = Literal["auto", "dense", "sparse", "separable", "fft", "host_fft"]


class RestorationSettings(BaseModel):
    """How to restore a frame."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    window: int = Field(default=31, description="median window side in pixels, odd, 3-255; "
                                                "larger than a star")
    median_method: Literal["auto", "histogram", "tiled"] = Field(
        default="auto", description="median algorithm: histogram (CPUs) or tiled (GPUs: the "
                                    "tile in local memory); auto takes tiled where the "
                                    "device's local memory holds the tile")
    psf: PSFSpec = Field(
        default=PSFSpec(kind="auto"),
        description="auto (measured from each frame's stars) | gaussian:fwhm=F | "
                    "moffat:fwhm=F,beta=B[,ellipticity=E,angle=DEG] | "
                    "streak:length=L,angle=DEG,core=F | file:PATH.fits; add size=N for the "
                    "array side")
    psf_fallback: PSFSpec = Field(
        default=PSFSpec(kind="gaussian", fwhm=3.0),
        description="PSF for a camera that has not shown a measurable star yet: a model or a "
                    "file, not auto")
    psf_measure: PSFMeasureSettings = Field(default_factory=PSFMeasureSettings,
                                            description="how the PSF is measured from a frame")
    psf_smoothing: float = Field(default=0.3, gt=0, le=1,
                                 description="weight of a frame's PSF in its camera's running "
                                             "mean (1: no smoothing)")
    target_fwhm: float | None = Field(
        default=None, ge=0,
        description="FWHM in pixels of the restored frame's PSF, a round Gaussian: only the "
                    "part of the PSF wider than it is deconvolved, so stars stay sampled; "
                    "unset (null, the default): 0.55 of the PSF's minor axis, at least 2 and "
                    "at most 0.8 of it; 0: deconvolve fully (classic RL)")
    restored_as: Literal["estimate", "residual"] = Field(
        default="residual",
        description="what is written: the data plus the sources RL found less their model "
                    "(residual, the default: each star keeps its flux, the sky keeps the data's "
                    "noise), or the RL estimate levelled to the data's flux (estimate: classic "
                    "RL)")
    iterations: int = Field(default=30, ge=1, description="Richardson-Lucy iterations, at most; "
                                                          "fewer once the stars fit to the noise")
    tolerance: float | None = Field(
        default=None, gt=0, lt=1,
        description="stop early once the relative change of an iteration is below this")
    damping: float = Field(default=1.0, ge=0,
                           description="damped RL threshold in noise sigmas, 0 undamped")
    pedestal: float = Field(default=1.0, ge=0,
                            description="sky pedestal the estimate keeps, noise sigmas; bounds "
                                        "dark moats around bright stars, keeps the flux")
    stop_at_noise: bool = Field(default=True,
                                description="stop once the signal pixels fit to their noise "
                                            "(reduced chi2 <= 1) or their fit levels off "
                                            "(see plateau)")
    plateau: float = Field(default=0.01, ge=0, lt=1,
                           description="with stop_at_noise: stop once 3 iterations in a row "
                                       "each lowered the reduced chi2 by less than this share "
                                       "(it levels off above 1 when the PSF cannot describe "
                                       "every star); 0: off")
    accelerate: bool = Field(default=True,
                             description="extrapolate each Richardson-Lucy step along the last "
                                         "two (Biggs & Andrews 1997): bright stars converge in "
                                         "a third of the iterations")
    noise_map: bool = Field(default=True,
                            description="write the data's per-pixel sigma with every restored "
                                        "frame (the ERR extension)")
    sources: bool = Field(default=True,
                          description="measure each frame's source catalogue and publish it "
                                      "with the restored frame (the sources topic)")
    source_threshold: float = Field(default=5.0, gt=0,
                                    description="source detection threshold, PSF-matched-"
                                                "filter S/N")
    max_sources: int = Field(default=20_000, ge=1,
                             description="most sources a frame's catalogue holds (the "
                                         "strongest; the catalogue says capped)")
    method: ConvolutionMethod = Field(
        default="auto", description="convolution method; auto times the candidates on the "
                                    "device")

    @model_validator(mode="after")
    def _fallback_is_fixed(self) -> RestorationSettings:
        if self.psf_fallback.measured:
            raise ValueError("psf_fallback must be a model or a file, not auto")
        return self


class KafkaSettings(BaseModel):
    """How to reach the cluster."""

    model_config = ConfigDict(extra="forbid")

    bootstrap_servers: str = Field(
        default="", description="cluster to use, HOST:PORT[,HOST:PORT]; empty: the demo, the "
                                "soak and bench-pipeline start the local broker")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT", description="how the clients talk to the brokers")
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        default=None, description="SASL mechanism, with SASL_PLAINTEXT or SASL_SSL")
    sasl_username: str | None = Field(default=None, description="SASL user")
    sasl_password: SecretStr | None = Field(
        default=None, description="SASL password; prefer the environment variable, which a "
                                  "child process reads for itself (settings never pass it on)")
    ssl_cafile: str | None = Field(
        default=None, description="CA certificate the brokers' certificates are checked "
                                  "against; unset: the system's")
    ssl_certfile: str | None = Field(
        default=None, description="client certificate, for brokers that ask for one")
    ssl_keyfile: str | None = Field(default=None,
                                    description="private key of the client certificate")
    client_id: str = Field(default="streamer", description="client name the brokers log")

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

    raw: str = Field(default="frames.raw", description="the camera's frames")
    restored: str = Field(default="frames.restored", description="the workers' frames")
    metrics: str = Field(default="frames.metrics", description="one record per restored frame")
    dead_letter: str = Field(default="frames.deadletter",
                             description="frames that could not be restored, and why")
    sources: str = Field(default="frames.sources",
                         description="each restored frame's source catalogue")
    partitions: int = Field(default=6, ge=1, description="topic partitions: at most this many "
                                                         "workers share the stream")
    replication_factor: int = Field(default=1, ge=1, description="copies of each partition")
    retention_hours: float = Field(default=72.0, gt=0, description="how long records are kept")


class StreamerSettings(BaseSettings):
    """Everything the camera, worker, sink and demo need."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter=ENV_NESTED, env_parse_none_str=ENV_NONE,
        extra="forbid")

    kafka: KafkaSettings = Field(default_factory=KafkaSettings,
                                 description="how to reach the cluster")
    topics: TopicSettings = Field(default_factory=TopicSettings,
                                  description="topic names and layout")
    restoration: RestorationSettings = Field(default_factory=RestorationSettings,
                                             description="how to restore a frame")
    device: str | None = Field(
        default=None, description="OpenCL device: auto, gpu, cpu, an index from `streamer "
                                  "devices`, or PLATFORM:DEVICE name parts; unset: auto")
    group_id: str = Field(default="streamer-workers", description="consumer group of the workers")
    worker_id: str = Field(default="", description="stable worker name; empty: host-pid")
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
    incomplete_file_seconds: float = Field(
        default=10.0, gt=0, description="a watched file that does not read as a FITS image "
                                        "is waited for this long after its last change (a "
                                        "slow copy) before the camera dead-letters it")
    camera_dead_letter_bytes: int = Field(
        default=16 * MIB, ge=0, description="a file the camera dead-letters travels with its "
                                            "bytes up to this size; a bigger one, with its path")
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
    compression: Literal["none", "gzip", "lz4", "zstd"] = Field(
        default="none", description="producer compression")
    transaction_timeout_seconds: float = Field(
        default=600.0, gt=0, description="Kafka transaction timeout, and the workers' "
                                         "rebalance timeout")
    prefetch_frames: int = Field(default=2, ge=1, description="decoded frames queued ahead")
    host_threads: int = Field(
        default=0, ge=0, description="threads for the host stages of consecutive frames "
                                     "(decode and measure, encode and catalogue); 0: one per "
                                     "core")
    warm_up: list[Annotated[str, StringConstraints(pattern=WARM_FRAME_PATTERN)]] = Field(
        default_factory=list, description="frames (HEIGHTxWIDTH[:dtype]) a worker restores "
                                          "once before it joins the group, so kernel builds "
                                          "and plans do not stall its partitions")
    warm_up_from_stream: bool = Field(
        default=True, description="before joining, restore the newest frame on the input "
                                  "topic once (its shape, type and PSF), so the first frame "
                                  "given is warm")
    catalogue_processes: int = Field(
        default=0, ge=0, description="processes that measure the source catalogues (whose sep "
                                     "calls hold the GIL) beside the host threads; 0: on the "
                                     "host threads")
    metrics_address: str | None = Field(
        default=None,
        description="serve Prometheus /metrics at HOST:PORT; unset: 127.0.0.1 and the role's "
                    "port (camera 9471, worker 9472, sink 9473); empty: off")
    max_poll_interval_seconds: float = Field(
        default=300.0, gt=0,
        description="Kafka's limit between polls; the worker keeps polling during device work")

    def with_bootstrap_servers(self, bootstrap_servers: str) -> StreamerSettings:
        """These settings on another cluster (the local broker a demo started, say)."""
        return self.model_copy(update={"kafka": self.kafka.model_copy(
            update={"bootstrap_servers": bootstrap_servers})})

    def to_environment(self) -> dict[str, str]:
        """``STREAMER_*`` variables that give a child process these settings.

        Generated from the model: one variable per field at its full path
        (``STREAMER_GROUP_ID``, ``STREAMER_KAFKA__BOOTSTRAP_SERVERS``,
        ``STREAMER_RESTORATION__PSF__FWHM``...), so a field added to any of the models
        travels without a change here. A None is left out where the field's default is None
        (the child reads the absent variable as None), else written ``null``. Secrets are not
        copied: a child reads the SASL password from its own environment,
        ``STREAMER_KAFKA__SASL_PASSWORD``, like any process.
        """
        return dict(_environment(self, ENV_PREFIX))

    def child_environment(self, inherited: Mapping[str, str]) -> dict[str, str]:
        """The whole environment of a child process with these settings: ``inherited`` (the
        parent's ``os.environ``) without the settings variables it holds, which these
        settings replace (:meth:`to_environment`), but with its secrets.

        Example
        -------
        >>> env = settings.child_environment(os.environ)  # doctest: +SKIP
        >>> subprocess.Popen([sys.executable, "-m", "streamer", "worker"], env=env)  # doctest: +SKIP
        """
        fields = [ENV_PREFIX + name.upper() for name in type(self).model_fields]
        secrets = set(_secret_variables(type(self), ENV_PREFIX))
        kept = {name: value for name, value in inherited.items()
                if name.upper() in secrets or not any(
                    name.upper() == field or name.upper().startswith(field + ENV_NESTED)
                    for field in fields)}
        return {**kept, **self.to_environment()}


def _environment(model: BaseModel, prefix: str) -> Iterator[tuple[str, str]]:
    """``(name, text)`` of the fields of ``model`` below ``prefix``, nested models walked."""
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        variable = f"{prefix}{name.upper()}"
        if isinstance(value, BaseModel):
            yield from _environment(value, variable + ENV_NESTED)
        elif _is_secret(field.annotation):
            continue
        elif value is not None or field.get_default(call_default_factory=True) is not None:
            yield variable, _environment_text(variable, value)


def _secret_variables(model: type[BaseModel], prefix: str) -> Iterator[str]:
    """The variables of the secret fields of ``model`` and the models it nests."""
    for name, field in model.model_fields.items():
        variable = f"{prefix}{name.upper()}"
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            yield from _secret_variables(field.annotation, variable + ENV_NESTED)
        elif _is_secret(field.annotation):
            yield variable


def _is_secret(annotation: object) -> bool:
    """Whether a field's type is, or may be, a secret (``SecretStr | None`` included)."""
    return annotation in (SecretStr, SecretBytes) or any(
        _is_secret(argument) for argument in get_args(annotation))


def _environment_text(variable: str, value: object) -> str:
    """A field's value as pydantic-settings reads it back: text as it is, None as ``null``,
    numbers, booleans and containers as JSON."""
    if value is None:
        return ENV_NONE
    plain = to_jsonable_python(value)
    if not isinstance(plain, str):
        return json.dumps(plain)
    if plain == ENV_NONE:
        raise ValueError(f"{variable} cannot be the text {ENV_NONE!r}: the environment "
                         "reads it as None")
    return plain
