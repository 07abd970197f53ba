"""The streaming subcommands: ``kafka`` (registered from :mod:`kafka_command`), ``topics``,
``camera``, ``worker``, ``sink``, ``demo``, ``bench-pipeline``, ``soak``, ``view`` and
``schemas``. Each builds one :class:`StreamerSettings` from the environment (``STREAMER_*``)
and then the flags given.

Nothing here imports OpenCL or the development broker (:mod:`streamer.local_broker`) at
module level: ``streamer camera`` and ``streamer sink`` run on machines without OpenCL, and
only ``kafka``, ``demo``, ``soak`` and ``bench-pipeline`` start a local broker.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Awaitable, Callable

from streamer.errors import ClusterConnectionError, MissingTopicError
from streamer.metrics import StreamerMetrics
from streamer.operations import kafka_command
from streamer.operations.cli_options import (WORKER_FLAGS, add_flags, kafka_flags,
                                             restoration_flags, settings_from)
from streamer.settings import StreamerSettings

log = logging.getLogger(__name__)

DEFAULT_METRICS_PORTS = {"camera": 9471, "worker": 9472, "sink": 9473}
EXIT_NO_CLUSTER = 2


def register(commands: argparse._SubParsersAction) -> None:
    """Add the streaming subcommands to the main parser."""
    kafka_command.register(commands)
    _register_topics(commands)
    _register_camera(commands)
    _register_worker_and_sink(commands)
    _register_demo(commands)
    _register_pipeline_bench(commands)
    _register_soak(commands)
    _register_view(commands)
    schemas = commands.add_parser("schemas", help="write or check schemas/*.schema.json")
    schemas.add_argument("action", choices=["write", "check"])
    schemas.set_defaults(run=run_schemas)


def _register_topics(commands: argparse._SubParsersAction) -> None:
    topics = commands.add_parser("topics", help="create the topics with their configs",
                                 description="Create (or update) the raw, restored, metrics and "
                                             "dead-letter topics; safe to run again.")
    topics.add_argument("action", choices=["create"])
    kafka_flags(topics)
    topics.set_defaults(run=run_topics)


def _register_camera(commands: argparse._SubParsersAction) -> None:
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
    camera.add_argument("--size", type=int, default=1024,
                        help="simulated frame side (default 1024)")
    camera.add_argument("--cadence", type=float, default=2.0,
                        help="seconds between frames (default 2)")
    camera.add_argument("--blur", default="gaussian:fwhm=3",
                        help="PSF of the simulation: seeing (gaussian/moffat) or streak")
    camera.add_argument("--settle", type=float, default=1.0,
                        help="seconds a file must stay unchanged before it is published")
    kafka_flags(camera)
    camera.set_defaults(run=run_camera)


def _register_worker_and_sink(commands: argparse._SubParsersAction) -> None:
    worker = commands.add_parser("worker", help="restore frames from Kafka (exactly once)",
                                 description="Join the worker group, restore raw frames, publish "
                                             "restored frames and metrics transactionally.")
    add_flags(worker, WORKER_FLAGS)
    worker.add_argument("--max-frames", type=int, help="exit after this many frames")
    kafka_flags(worker)
    restoration_flags(worker)
    worker.set_defaults(run=run_worker)

    sink = commands.add_parser("sink", help="archive input and restored frames to a folder",
                               description="Write input/, output/ and manifest/ under --out.")
    sink.add_argument("--out", type=Path, required=True, metavar="DIR")
    sink.add_argument("--expect", type=int, help="exit once this many restored frames are in")
    sink.add_argument("--group-id", default="streamer-sink",
                      help="consumer group (default streamer-sink); a second archive needs its "
                           "own group to receive every frame, from the earliest kept")
    kafka_flags(sink)
    sink.set_defaults(run=run_sink)


def _register_demo(commands: argparse._SubParsersAction) -> None:
    demo = commands.add_parser("demo", help="the whole system for N frames, then a summary",
                               description="Starts the local broker (unless bootstrap servers "
                                           "are set), a simulated camera, a worker and the "
                                           "sink; prints frames/s, latency percentiles, the "
                                           "time per stage and whether this device keeps up "
                                           "with the cadence.")
    demo.add_argument("--frames", type=int, default=20)
    demo.add_argument("--size", type=int, default=1024)
    demo.add_argument("--cadence", type=float, default=1.0)
    demo.add_argument("--out", type=Path, default=Path("demo-output"))
    demo.add_argument("--broker-dir", type=Path, default=Path(".kafka-demo"))
    demo.add_argument("--blur", default="gaussian:fwhm=3", help="PSF of the simulated frames")
    demo.add_argument("--view", action="store_true",
                      help="serve the quick-look page over the demo's archive (until Ctrl-C)")
    demo.add_argument("--view-bind", default="127.0.0.1:8470", metavar="HOST:PORT")
    kafka_flags(demo)
    restoration_flags(demo)
    demo.set_defaults(run=run_demo)


def _register_pipeline_bench(commands: argparse._SubParsersAction) -> None:
    pipeline = commands.add_parser(
        "bench-pipeline", help="time the pipeline through Kafka beside offline restoration",
        description="Restores the same synthetic frames offline and through Kafka with 1 and "
                    "2 worker processes; prints the overhead Kafka, encoding and transactions add.")
    pipeline.add_argument("--frames", type=int, default=8)
    pipeline.add_argument("--size", type=int, default=2048)
    pipeline.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    pipeline.add_argument("--json", action="store_true")
    kafka_flags(pipeline)
    restoration_flags(pipeline)
    pipeline.set_defaults(run=run_pipeline_bench)


def _register_soak(commands: argparse._SubParsersAction) -> None:
    soak = commands.add_parser(
        "soak", help="run the system for a long time and watch its memory",
        description="A worker and a sink as processes, this process as a camera publishing "
                    "frames of several sizes (and a dead letter every 50th); RSS sampled; "
                    "prints growth after the warm-up and writes OUT/soak.json.")
    soak.add_argument("--minutes", type=float, default=30.0)
    soak.add_argument("--warmup", type=float, default=5.0, help="minutes not counted (default 5)")
    soak.add_argument("--cadence", type=float, default=1.0, help="seconds between frames")
    soak.add_argument("--sizes", default="384,448,512,576,640,704",
                      help="frame sides, published in turn (more than the worker's plan cache)")
    soak.add_argument("--out", type=Path, default=Path("soak-output"))
    soak.add_argument("--max-growth", type=float, default=0.05,
                      help="exit 1 if a process's RSS grew more than this fraction (0.05)")
    kafka_flags(soak)
    restoration_flags(soak)
    soak.set_defaults(run=run_soak)


def run_soak(args: argparse.Namespace) -> int:
    """``streamer soak``."""
    from streamer.operations.soak import run_soak as soak

    settings = settings_from(args)
    sizes = tuple(int(side) for side in args.sizes.split(","))
    report = asyncio.run(explain_connection_errors(settings, soak(
        settings, args.out, minutes=args.minutes, warmup_minutes=args.warmup,
        cadence=args.cadence, sizes=sizes)))
    print(report.text())
    return 0 if max(report.growth.values()) <= args.max_growth else 1


def _register_view(commands: argparse._SubParsersAction) -> None:
    view = commands.add_parser(
        "view", help="the quick-look web page over the sink's archive",
        description="Serves a page with the latest frame (input beside restored, its PSF), a "
                    "table of frames that updates by itself, downloads of frames and nights, "
                    "and FITS uploads published to the raw topic when a broker is configured. "
                    "Needs the view extra: pip install 'streamer[view]'.")
    view.add_argument("--archive", type=Path, required=True, metavar="DIR",
                      help="the sink's --out folder")
    view.add_argument("--bind", default="127.0.0.1:8470", metavar="HOST:PORT",
                      help="where to listen (default 127.0.0.1:8470, this machine only)")
    view.add_argument("--max-upload-mb", type=float, default=512.0,
                      help="largest FITS file an upload may be (default 512 MB)")
    kafka_flags(view)
    view.set_defaults(run=run_view)


def run_view(args: argparse.Namespace) -> int:
    """``streamer view``."""
    try:
        from streamer.operations.quicklook.server import serve
    except ImportError as error:
        print(f"streamer: error: the quick-look page needs the view extra ({error.name} is "
              "missing): pip install 'streamer[view]'", file=sys.stderr)
        return EXIT_NO_CLUSTER
    settings = settings_from(args)
    serve(args.archive, args.bind, settings, int(args.max_upload_mb * (1 << 20)))
    return 0


def serve_metrics(settings: StreamerSettings, metrics: StreamerMetrics) -> None:
    """Serve a process's metrics where the settings say (127.0.0.1:<role port> by default)."""
    address = settings.metrics_address
    if address is None:
        address = f"127.0.0.1:{DEFAULT_METRICS_PORTS[metrics.role]}"
    port = metrics.serve(address)
    if port is not None:
        host = address.rpartition(":")[0]
        print(f"{metrics.role}: Prometheus metrics on http://{host}:{port}/metrics",
              file=sys.stderr, flush=True)


def run_until_signal(settings: StreamerSettings,
                     main: Callable[[asyncio.Event], Awaitable[int]]) -> int:
    """Run ``main(stop)``; SIGTERM/SIGINT set ``stop`` for a graceful shutdown."""
    async def runner() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def told(signum: signal.Signals) -> None:
            if not stop.is_set():
                log.warning("%s received: stopping (frames in flight get %g s to land, then "
                            "are left for the next start)", signum.name,
                            settings.shutdown_grace_seconds)
            stop.set()

        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, told, signum)
        return await main(stop)

    return asyncio.run(explain_connection_errors(settings, runner()))


async def explain_connection_errors(settings: StreamerSettings, work: Awaitable[int]) -> int:
    """Await ``work``; a client that cannot reach the cluster becomes one clear error (wrong
    password, untrusted certificate, wrong protocol, nothing listening), and so does a topic
    that is not there."""
    from aiokafka.errors import KafkaConnectionError, UnknownTopicOrPartitionError

    from streamer.streaming.cluster_check import diagnose

    try:
        return await work
    except UnknownTopicOrPartitionError:
        topics = settings.topics
        raise MissingTopicError(
            f"a topic this command uses is not on the cluster at "
            f"{settings.kafka.bootstrap_servers} (it uses {topics.raw}, {topics.restored}, "
            f"{topics.metrics}, {topics.sources}, {topics.dead_letter}): create them with "
            f"`streamer topics create` and start again") from None
    except KafkaConnectionError as error:
        problem = await diagnose(settings.kafka)
        raise problem or ClusterConnectionError(f"lost the Kafka cluster: {error}") from None


def _cluster_settings(args: argparse.Namespace) -> StreamerSettings | None:
    """The settings, or None (after saying why) when no cluster is configured."""
    settings = settings_from(args)
    if settings.kafka.bootstrap_servers:
        return settings
    print("streamer: error: no Kafka: set --bootstrap-servers or "
          "STREAMER_KAFKA__BOOTSTRAP_SERVERS (`streamer kafka start` runs a local one)",
          file=sys.stderr)
    return None


def run_schemas(args: argparse.Namespace) -> int:
    """``streamer schemas write|check``."""
    from streamer.streaming.schemas import stale_schemas, write_schemas

    if args.action == "write":
        for path in write_schemas():
            print(path)
        return 0
    stale = stale_schemas()
    for name in stale:
        print(f"schemas/{name} is out of date: run `streamer schemas write`", file=sys.stderr)
    return 1 if stale else 0


def run_topics(args: argparse.Namespace) -> int:
    """``streamer topics create``."""
    from streamer.streaming.topics import create_topics

    settings = _cluster_settings(args)
    if settings is None:
        return EXIT_NO_CLUSTER
    changes = asyncio.run(explain_connection_errors(settings, create_topics(settings)))
    for name, action in changes.items():
        print(f"{name}: {action}")
    return 0


def run_camera(args: argparse.Namespace) -> int:
    """``streamer camera --watch DIR | --simulate``."""
    from streamer.imaging.psf import parse_psf_spec
    from streamer.streaming.camera import CameraPublisher, simulate
    from streamer.streaming.watched_folder import watch_directory

    settings = _cluster_settings(args)
    if settings is None:
        return EXIT_NO_CLUSTER

    async def camera_main(stop: asyncio.Event) -> int:
        metrics = StreamerMetrics("camera")
        serve_metrics(settings, metrics)
        async with CameraPublisher(settings, args.camera_id, metrics, stop=stop) as camera:
            if args.simulate:
                frames = await simulate(camera, count=args.count, size=args.size,
                                        cadence=args.cadence, psf=parse_psf_spec(args.blur),
                                        stop=stop)
                print(f"published {len(frames)} frames")
            else:
                await watch_directory(camera, args.watch, stop, settle_seconds=args.settle)
        return 0

    return run_until_signal(settings, camera_main)


def run_worker(args: argparse.Namespace) -> int:
    """``streamer worker``: restore frames until stopped."""
    from streamer.worker.worker import Worker

    settings = _cluster_settings(args)
    if settings is None:
        return EXIT_NO_CLUSTER

    state: dict[str, Worker] = {}

    async def worker_main(stop: asyncio.Event) -> int:
        worker = state["worker"] = Worker(settings)
        serve_metrics(settings, worker.metrics)
        await worker.run(stop, args.max_frames)
        print(f"worker {worker.worker_id}: restored {worker.restored}, "
              f"dead letters {worker.failed}", flush=True)
        return 0

    code = run_until_signal(settings, worker_main)
    worker = state.get("worker")
    if worker is not None and worker.device_running:
        # A kernel outlived the grace period; its thread cannot be interrupted, and waiting
        # for it is what the grace period is there to avoid. Its frame was not committed.
        print("worker: exiting with a frame still on the device (left uncommitted)",
              file=sys.stderr, flush=True)
        os._exit(code)
    return code


def run_sink(args: argparse.Namespace) -> int:
    """``streamer sink --out DIR``: archive until stopped."""
    from streamer.streaming.sink import Sink

    settings = _cluster_settings(args)
    if settings is None:
        return EXIT_NO_CLUSTER

    async def sink_main(stop: asyncio.Event) -> int:
        sink = Sink(settings, args.out, group_id=args.group_id)
        serve_metrics(settings, sink.metrics)
        await sink.run(stop, args.expect)
        print(f"archived {len(sink.restored_frames)} restored frames in {args.out}")
        return 0

    return run_until_signal(settings, sink_main)


def run_demo(args: argparse.Namespace) -> int:
    """``streamer demo``: the whole system for a number of frames."""
    from streamer.imaging.psf import parse_psf_spec
    from streamer.operations.demo import run_demo as demo

    settings = settings_from(args)

    async def demo_main(stop: asyncio.Event) -> int:
        view = None
        if args.view:
            from streamer.operations.quicklook.server import BackgroundView

            view = BackgroundView(args.out, args.view_bind)
            print(f"quick look: {view.start()}", flush=True)
        try:
            summary = await demo(settings, frames=args.frames, size=args.size,
                                 cadence=args.cadence, out_dir=args.out,
                                 broker_dir=args.broker_dir,
                                 simulated_psf=parse_psf_spec(args.blur))
            summary.view_url = view.url if view is not None else None
            print(summary.text(), flush=True)
            if view is not None:
                await stop.wait()  # the page stays up until Ctrl-C
        finally:
            if view is not None:
                await asyncio.to_thread(view.stop)
        return 0 if summary.restored + summary.dead_letters == args.frames else 1

    return run_until_signal(settings, demo_main)


def run_pipeline_bench(args: argparse.Namespace) -> int:
    """``streamer bench-pipeline``."""
    from streamer.operations.pipeline_bench import run_pipeline_bench as bench

    return bench(settings_from(args), args.frames, args.size, args.workers, args.json)
