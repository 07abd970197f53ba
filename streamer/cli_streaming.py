"""The streaming subcommands: ``kafka``, ``topics``, ``camera``, ``worker``, ``sink``,
``demo`` and ``schemas``. Each builds one :class:`StreamerSettings` from the environment
(``STREAMER_*``) and then the flags given."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from streamer.observability import StreamerMetrics
from streamer.settings import StreamerSettings

log = logging.getLogger(__name__)


def _kafka_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("kafka (also STREAMER_KAFKA__<NAME>)")
    group.add_argument("--bootstrap-servers", metavar="HOST:PORT,...",
                       help="cluster to use (STREAMER_KAFKA__BOOTSTRAP_SERVERS)")
    group.add_argument("--security-protocol", choices=["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"])
    group.add_argument("--sasl-mechanism", choices=["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
    group.add_argument("--sasl-username")
    group.add_argument("--sasl-password", help="prefer STREAMER_KAFKA__SASL_PASSWORD")
    group.add_argument("--ssl-cafile", metavar="PEM")
    group.add_argument("--ssl-certfile", metavar="PEM")
    group.add_argument("--ssl-keyfile", metavar="PEM")
    group.add_argument("--chunk-bytes", type=int, metavar="N",
                       help="payload bytes per record (default 1 MiB)")
    group.add_argument("--max-frame-bytes", type=int, metavar="N",
                       help="largest frame accepted (default 512 MiB)")
    group.add_argument("--compression", choices=["none", "gzip", "lz4", "zstd"],
                       help="producer compression (default none)")
    group.add_argument("--partitions", type=int, metavar="N", help="topic partitions (default 6)")
    group.add_argument("--metrics-address", metavar="HOST:PORT",
                       help="serve Prometheus /metrics here (default 127.0.0.1 and the role's "
                            "port: camera 9471, worker 9472, sink 9473; '' turns it off)")


def _restoration_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("restoration (also STREAMER_RESTORATION__<NAME>)")
    group.add_argument("--window", type=int, metavar="N", help="median window (default 31)")
    group.add_argument("--psf", metavar="SPEC", help="PSF spec (default gaussian:fwhm=3)")
    group.add_argument("--iterations", type=int, metavar="N", help="RL iterations (default 30)")
    group.add_argument("--tolerance", type=float, metavar="X", help="RL stopping tolerance")
    group.add_argument("--method", choices=["auto", "dense", "sparse", "separable", "fft"])
    group.add_argument("--device", metavar="SPEC", help="OpenCL device (STREAMER_DEVICE)")


def settings_from(args: argparse.Namespace) -> StreamerSettings:
    """Environment first, then the flags that were given."""
    from streamer.psf import parse_psf_spec

    settings = StreamerSettings()
    kafka = {name: getattr(args, name) for name in (
        "bootstrap_servers", "security_protocol", "sasl_mechanism", "sasl_username",
        "sasl_password", "ssl_cafile", "ssl_certfile", "ssl_keyfile") if getattr(args, name, None)}
    top = {name: getattr(args, name) for name in (
        "chunk_bytes", "max_frame_bytes", "compression", "group_id", "worker_id", "device",
        "metrics_address")
        if getattr(args, name, None) is not None}
    restoration = {name: getattr(args, name) for name in (
        "window", "iterations", "tolerance", "method") if getattr(args, name, None) is not None}
    if getattr(args, "psf", None):
        restoration["psf"] = parse_psf_spec(args.psf)
    topics = {"partitions": args.partitions} if getattr(args, "partitions", None) else {}
    data = settings.model_dump()
    data["kafka"].update(kafka)
    data["topics"].update(topics)
    data["restoration"].update(restoration)
    data.update(top)
    return StreamerSettings.model_validate(data)


def add_streaming_commands(commands: argparse._SubParsersAction) -> None:
    """Register the streaming subcommands on the main parser."""
    kafka = commands.add_parser("kafka", help="fetch, start or stop the local Kafka broker",
                                description="A real single-node Kafka (KRaft) on 127.0.0.1 "
                                            "for development and tests; jars from Maven Central.")
    kafka.add_argument("action", choices=["fetch", "start", "stop", "status"])
    kafka.add_argument("--dir", type=Path, default=Path(".kafka"), help="broker folder (default .kafka)")

    topics = commands.add_parser("topics", help="create the topics with their configs",
                                 description="Create (or update) the raw, restored, metrics and "
                                             "dead-letter topics; safe to run again.")
    topics.add_argument("action", choices=["create"])
    _kafka_flags(topics)

    camera = commands.add_parser(
        "camera", help="publish frames from a watched folder or a simulation",
        description="Publish camera frames to the raw topic, one Kafka transaction per frame. "
                    "With --watch DIR: each FITS file once, when finished (also across "
                    "restarts). With --simulate: synthetic star fields.")
    source = camera.add_mutually_exclusive_group(required=True)
    source.add_argument("--watch", type=Path, metavar="DIR")
    source.add_argument("--simulate", action="store_true")
    camera.add_argument("--camera-id", default="cam1")
    camera.add_argument("--count", type=int, default=10, help="simulated frames (default 10)")
    camera.add_argument("--size", type=int, default=1024, help="simulated frame side (default 1024)")
    camera.add_argument("--cadence", type=float, default=2.0, help="seconds between frames (default 2)")
    camera.add_argument("--blur", default="gaussian:fwhm=3",
                        help="PSF of the simulation: seeing (gaussian/moffat) or streak")
    camera.add_argument("--settle", type=float, default=1.0,
                        help="seconds a file must stay unchanged before it is published")
    _kafka_flags(camera)

    worker = commands.add_parser("worker", help="restore frames from Kafka (exactly once)",
                                 description="Join the worker group, restore raw frames, publish "
                                             "restored frames and metrics transactionally.")
    worker.add_argument("--group-id", help="consumer group (default streamer-workers)")
    worker.add_argument("--worker-id", help="stable worker name (default host-pid)")
    worker.add_argument("--max-frames", type=int, help="exit after this many frames")
    _kafka_flags(worker)
    _restoration_flags(worker)

    sink = commands.add_parser("sink", help="archive input and restored frames to a folder",
                               description="Write input/, output/ and manifest/ under --out.")
    sink.add_argument("--out", type=Path, required=True, metavar="DIR")
    sink.add_argument("--expect", type=int, help="exit once this many restored frames are in")
    _kafka_flags(sink)

    demo = commands.add_parser("demo", help="the whole system for N frames, then a summary",
                               description="Starts the local broker (unless bootstrap servers "
                                           "are set), a simulated camera, a worker and the "
                                           "sink; prints frames/s and latency percentiles.")
    demo.add_argument("--frames", type=int, default=20)
    demo.add_argument("--size", type=int, default=1024)
    demo.add_argument("--cadence", type=float, default=1.0)
    demo.add_argument("--out", type=Path, default=Path("demo-output"))
    demo.add_argument("--broker-dir", type=Path, default=Path(".kafka-demo"))
    demo.add_argument("--blur", default="gaussian:fwhm=3", help="PSF of the simulated frames")
    _kafka_flags(demo)
    _restoration_flags(demo)

    pipeline = commands.add_parser(
        "bench-pipeline", help="time the pipeline through Kafka beside offline restoration",
        description="Restores the same synthetic frames offline and through Kafka with 1 and "
                    "2 worker processes; prints the overhead Kafka, encoding and transactions add.")
    pipeline.add_argument("--frames", type=int, default=8)
    pipeline.add_argument("--size", type=int, default=2048)
    pipeline.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    pipeline.add_argument("--json", action="store_true")
    _kafka_flags(pipeline)
    _restoration_flags(pipeline)

    schemas = commands.add_parser("schemas", help="write or check schemas/*.schema.json")
    schemas.add_argument("action", choices=["write", "check"])


DEFAULT_METRICS_PORTS = {"camera": 9471, "worker": 9472, "sink": 9473}


def serve_metrics(settings: StreamerSettings, metrics) -> None:
    """Serve a process's metrics where the settings say (127.0.0.1:<role port> by default)."""
    address = settings.metrics_address
    if address is None:
        address = f"127.0.0.1:{DEFAULT_METRICS_PORTS[metrics.role]}"
    port = metrics.serve(address)
    if port is not None:
        print(f"{metrics.role}: Prometheus metrics on http://{address.rpartition(':')[0]}:{port}/metrics",
              file=sys.stderr, flush=True)


def _run_until_signal(main, *args) -> int:
    """Run ``main(stop, *args)``; SIGTERM/SIGINT set ``stop`` for a graceful shutdown."""
    async def runner() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        return await main(stop, *args)

    return asyncio.run(runner())


def run_streaming_command(args: argparse.Namespace) -> int | None:
    """Run a streaming subcommand; None when ``args.command`` is not one."""
    from streamer.psf import parse_psf_spec

    if args.command == "kafka":
        from streamer.local_kafka import LocalKafka, fetch_broker

        broker = LocalKafka(args.dir)
        if args.action == "fetch":
            print(fetch_broker())
        elif args.action == "start":
            print(broker.start())
        elif args.action == "stop":
            broker.stop()
        else:
            print(broker.bootstrap_servers if broker.running() else "stopped")
        return 0
    if args.command == "schemas":
        from streamer.schemas import stale_schemas, write_schemas

        if args.action == "write":
            for path in write_schemas():
                print(path)
            return 0
        stale = stale_schemas()
        for name in stale:
            print(f"schemas/{name} is out of date: run `streamer schemas write`", file=sys.stderr)
        return 1 if stale else 0
    if args.command not in ("topics", "camera", "worker", "sink", "demo", "bench-pipeline"):
        return None
    settings = settings_from(args)
    if args.command == "bench-pipeline":
        from streamer.pipeline_bench import run_pipeline_bench

        return run_pipeline_bench(settings, args.frames, args.size, args.workers, args.json)
    if args.command != "demo" and not settings.kafka.bootstrap_servers:
        print("streamer: error: no Kafka: set --bootstrap-servers or "
              "STREAMER_KAFKA__BOOTSTRAP_SERVERS (`streamer kafka start` runs a local one)",
              file=sys.stderr)
        return 2
    if args.command == "topics":
        from streamer.topics import create_topics

        for name, action in asyncio.run(create_topics(settings)).items():
            print(f"{name}: {action}")
        return 0
    if args.command == "camera":
        from streamer.camera import CameraPublisher, simulate, watch_directory

        async def camera_main(stop: asyncio.Event) -> int:
            camera_metrics = StreamerMetrics("camera")
            serve_metrics(settings, camera_metrics)
            async with CameraPublisher(settings, args.camera_id, camera_metrics) as camera:
                if args.simulate:
                    frames = await simulate(camera, count=args.count, size=args.size,
                                            cadence=args.cadence, psf=parse_psf_spec(args.blur),
                                            stop=stop)
                    print(f"published {len(frames)} frames")
                else:
                    await watch_directory(camera, args.watch, stop, settle_seconds=args.settle)
            return 0

        return _run_until_signal(camera_main)
    if args.command == "worker":
        from streamer.worker import Worker

        async def worker_main(stop: asyncio.Event) -> int:
            worker = Worker(settings)
            serve_metrics(settings, worker.metrics)
            await worker.run(stop, args.max_frames)
            print(f"worker {worker.worker_id}: restored {worker.restored}, "
                  f"dead letters {worker.failed}")
            return 0

        return _run_until_signal(worker_main)
    if args.command == "sink":
        from streamer.sink import Sink

        async def sink_main(stop: asyncio.Event) -> int:
            sink = Sink(settings, args.out)
            serve_metrics(settings, sink.metrics)
            await sink.run(stop, args.expect)
            print(f"archived {len(sink.restored_frames)} restored frames in {args.out}")
            return 0

        return _run_until_signal(sink_main)
    from streamer.demo import run_demo

    async def demo_main(stop: asyncio.Event) -> int:
        summary = await run_demo(settings, frames=args.frames, size=args.size,
                                 cadence=args.cadence, out_dir=args.out,
                                 broker_dir=args.broker_dir,
                                 simulated_psf=parse_psf_spec(args.blur))
        print(summary.text())
        return 0 if summary.restored == args.frames else 1

    return _run_until_signal(demo_main)
