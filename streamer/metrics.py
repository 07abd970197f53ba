"""Prometheus metrics of the camera, worker and sink processes.

Each process owns a registry and serves it over HTTP (``--metrics-address``, 127.0.0.1 by
default so nothing is exposed unless asked). Names follow Prometheus conventions: a
``streamer_`` prefix, base units (seconds, bytes), ``_total`` for counters.
"""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, start_http_server

from streamer.errors import StreamerError

log = logging.getLogger(__name__)

STAGES = ("decode", "prepare", "psf", "median", "richardson_lucy", "encode", "publish", "commit")
_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 30, 60, 120)
_STAGE_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30)
_FWHM_BUCKETS = (0.5, 1, 1.5, 2, 2.5, 3, 3.5, 4, 5, 6, 8, 10, 15)


class StreamerMetrics:
    """Every metric a streamer process may export, on its own registry."""

    def __init__(self, role: str) -> None:
        self.role = role
        self.registry = CollectorRegistry()
        self._flow_metrics(self.registry)
        self._device_metrics(self.registry)
        self._frame_metrics(self.registry)
        self._psf_metrics(self.registry)

    def _flow_metrics(self, r: CollectorRegistry) -> None:
        """Frames and bytes through Kafka, stage times, latency, lag."""
        self.frames_consumed = Counter("streamer_frames_consumed_total",
                                       "Frames read from Kafka (whole, reassembled)", ["topic"], registry=r)
        self.frames_published = Counter("streamer_frames_published_total",
                                        "Frames written to Kafka", ["topic"], registry=r)
        self.frames_restored = Counter("streamer_frames_restored_total",
                                       "Frames restored and committed", registry=r)
        self.frames_failed = Counter("streamer_frames_failed_total",
                                     "Frames sent to the dead-letter topic, by reason", ["reason"], registry=r)
        self.frames_archived = Counter("streamer_frames_archived_total",
                                       "Frames written to the archive", ["kind"], registry=r)
        self.consumed_bytes = Counter("streamer_consumed_bytes_total",
                                      "Payload bytes read from Kafka", ["topic"], registry=r)
        self.published_bytes = Counter("streamer_published_bytes_total",
                                       "Payload bytes written to Kafka", ["topic"], registry=r)
        self.stage_seconds = Histogram("streamer_stage_duration_seconds",
                                       "Time per frame in each stage", ["stage"],
                                       buckets=_STAGE_BUCKETS, registry=r)
        self.exposure_to_restored = Histogram(
            "streamer_exposure_to_restored_seconds",
            "From the end of the exposure to the restored frame's commit",
            buckets=_LATENCY_BUCKETS, registry=r)
        self.consumer_lag = Gauge("streamer_consumer_lag_records",
                                  "Records between the group's committed offset and the end of "
                                  "the partition (a stuck partition keeps its lag)",
                                  ["topic", "partition"], registry=r)
        self.committed_offset = Gauge("streamer_committed_offset",
                                      "The group's committed offset of each partition this "
                                      "process owns", ["topic", "partition"], registry=r)
        self.in_flight = Gauge("streamer_frames_in_flight",
                               "Frames fetched and not yet committed", registry=r)
        self.archive_writable = Gauge("streamer_archive_writable",
                                      "1 while the sink writes its archive; 0 while it waits "
                                      "out a storage fault (disk full, read-only), consuming "
                                      "nothing", registry=r)
        self.archive_write_errors = Counter("streamer_archive_write_errors_total",
                                            "Failed archive writes, by error (ENOSPC, EROFS...)",
                                            ["error"], registry=r)

    def _device_metrics(self, r: CollectorRegistry) -> None:
        """The OpenCL device: what it is, how busy, what it moved, what it holds."""
        self.device = Info("streamer_device", "The OpenCL device restoring frames", registry=r)
        self.device_busy = Counter("streamer_device_busy_seconds",
                                   "Seconds the device thread spent restoring", registry=r)
        self.device_busy_ratio = Gauge("streamer_device_busy_ratio",
                                       "Fraction of the last interval the device was busy",
                                       registry=r)
        self.device_stage_seconds = Histogram("streamer_device_stage_seconds",
                                              "Device time per frame by stage (OpenCL profiling "
                                              "events)", ["stage"], buckets=_STAGE_BUCKETS,
                                              registry=r)
        self.transfer_bytes = Counter("streamer_device_transfer_bytes",
                                      "Bytes moved between host and device", ["direction"],
                                      registry=r)
        self.kernel_build_seconds = Gauge("streamer_kernel_build_seconds",
                                          "Total OpenCL compile time of this process", registry=r)
        self.plans_cached = Gauge("streamer_plans_cached",
                                  "Device plans (frame shapes, PSF sizes) held; bounded",
                                  registry=r)

    def _frame_metrics(self, r: CollectorRegistry) -> None:
        """What frames look like before and after: sky, noise, sources, stars, flux."""
        self.background = Histogram("streamer_frame_background_level",
                                    "Sigma-clipped sky level of input frames (ADU)",
                                    buckets=(10, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 30000),
                                    registry=r)
        self.noise = Histogram("streamer_frame_noise_level",
                               "Sigma-clipped sky noise of input frames (ADU)",
                               buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500), registry=r)
        self.sources = Histogram("streamer_frame_sources", "Sources found per input frame",
                                 buckets=(0, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 5000), registry=r)
        self.fwhm = Histogram("streamer_star_fwhm_pixels", "Median star FWHM per frame",
                              ["state"], buckets=_FWHM_BUCKETS, registry=r)
        self.ellipticity = Histogram("streamer_star_ellipticity_ratio",
                                     "Median star ellipticity (1 - b/a) per frame", ["state"],
                                     buckets=(0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.7, 0.9),
                                     registry=r)
        self.flux_ratio = Histogram("streamer_flux_ratio", "Restored flux over input flux",
                                    buckets=(0.9, 0.95, 0.98, 0.99, 0.995, 1.0, 1.005, 1.01, 1.02, 1.05, 1.1),
                                    registry=r)

    def _psf_metrics(self, r: CollectorRegistry) -> None:
        """The PSF each camera's frames were restored with, and how RL ran."""
        self.psf_fwhm = Gauge("streamer_psf_fwhm_pixels",
                              "FWHM of the PSF the camera's latest frame was restored with",
                              ["camera"], registry=r)
        self.psf_ellipticity = Gauge("streamer_psf_ellipticity_ratio",
                                     "Ellipticity (1 - b/a) of the latest frame's PSF",
                                     ["camera"], registry=r)
        self.psf_stars = Gauge("streamer_psf_stars", "Stars the latest frame's PSF was measured on",
                               ["camera"], registry=r)
        self.psf_frames = Counter("streamer_psf_frames_total",
                                  "Frames by how their PSF was obtained", ["camera", "method"],
                                  registry=r)
        self.psf_fallbacks = Counter("streamer_psf_fallbacks_total",
                                     "Frames with no measurable PSF (restored with the camera's "
                                     "last good PSF or the configured one)", ["camera"],
                                     registry=r)
        self.catalogue_sources = Histogram(
            "streamer_catalogue_sources", "Sources in each frame's catalogue",
            buckets=(0, 10, 30, 100, 300, 1000, 3000, 10000, 30000), registry=r)
        self.limiting_mag = Gauge("streamer_limiting_magnitude",
                                  "5-sigma point-source magnitude of the camera's latest frame "
                                  "(instrumental without a zero point)", ["camera"], registry=r)
        self.trails = Counter("streamer_trails_total", "Trails (moving objects) found",
                              ["camera"], registry=r)
        self.moat_depth = Histogram("streamer_moat_depth_sigma",
                                    "Depth of the restored profile below the local sky around "
                                    "bright stars, local-noise sigmas",
                                    buckets=(-2, -1, -0.5, 0, 0.5, 1, 1.5, 2, 3, 5), registry=r)
        self.rl_iterations = Histogram("streamer_rl_iterations",
                                       "Richardson-Lucy iterations run per frame",
                                       buckets=(1, 2, 5, 10, 15, 20, 30, 50, 100, 200),
                                       registry=r)
        self.convergence = Histogram("streamer_rl_relative_change_ratio",
                                     "Relative change of the last Richardson-Lucy iteration",
                                     buckets=(1e-5, 1e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1),
                                     registry=r)

    def serve(self, address: str | None) -> int | None:
        """Serve ``/metrics`` on ``HOST:PORT`` (port 0: any free one); returns the port."""
        if not address:
            return None
        host, _, port = address.rpartition(":")
        try:
            server, _ = start_http_server(int(port), addr=host or "127.0.0.1", registry=self.registry)
        except (OSError, ValueError) as error:
            raise StreamerError(
                f"cannot serve {self.role} metrics on {address!r} ({error}); choose another "
                "--metrics-address HOST:PORT (port 0: any free port, '' : off)"
            ) from error
        bound = server.server_address[1]
        log.info("%s metrics on http://%s:%d/metrics", self.role, host or "127.0.0.1", bound)
        return bound

    def observe_frame(self, metrics) -> None:
        """Record a restored frame's :class:`~streamer.streaming.messages.FrameMetrics`."""
        for stage, seconds in metrics.stage_seconds.items():
            self.stage_seconds.labels(stage).observe(seconds)
        self.exposure_to_restored.observe(max(metrics.exposure_to_restored_seconds, 0.0))
        if metrics.flux_in > 0:
            self.flux_ratio.observe(metrics.flux_out / metrics.flux_in)
        if metrics.relative_change is not None:
            self.convergence.observe(metrics.relative_change)
        self.rl_iterations.observe(metrics.iterations)
        for stage, seconds in metrics.device_seconds.items():
            self.device_stage_seconds.labels(stage).observe(seconds)
        if metrics.transfer_bytes is not None:
            self.transfer_bytes.labels("up").inc(metrics.transfer_bytes.get("uploaded", 0))
            self.transfer_bytes.labels("down").inc(metrics.transfer_bytes.get("downloaded", 0))
        if metrics.psf is not None:
            self._observe_psf(metrics.camera_id, metrics.psf)
        if metrics.catalogue is not None:
            self.catalogue_sources.observe(metrics.catalogue.sources)
            self.limiting_mag.labels(metrics.camera_id).set(metrics.catalogue.limiting_mag)
            self.trails.labels(metrics.camera_id).inc(metrics.catalogue.trails)
        if metrics.quality is not None:
            quality = metrics.quality
            self.background.observe(quality.background)
            self.noise.observe(quality.noise)
            self.sources.observe(quality.sources)
            for state, fwhm, ellipticity in (("before", quality.fwhm_before, quality.ellipticity_before),
                                             ("after", quality.fwhm_after, quality.ellipticity_after)):
                if fwhm is not None:
                    self.fwhm.labels(state).observe(fwhm)
                if ellipticity is not None:
                    self.ellipticity.labels(state).observe(ellipticity)
            if quality.moat_depth is not None:
                self.moat_depth.observe(quality.moat_depth)

    def _observe_psf(self, camera: str, psf) -> None:
        self.psf_fwhm.labels(camera).set(psf.fwhm)
        self.psf_ellipticity.labels(camera).set(psf.ellipticity)
        self.psf_stars.labels(camera).set(psf.stars_used)
        self.psf_frames.labels(camera, psf.method).inc()
        if psf.fallback:
            self.psf_fallbacks.labels(camera).inc()
