"""Serving the quick-look page: ``streamer view`` in the foreground, ``streamer demo --view``
in a thread beside the demo."""

from __future__ import annotations

import ipaddress
import logging
import signal
import threading
import time
from pathlib import Path

import uvicorn

from streamer.errors import ParameterError
from streamer.operations.quicklook.app import create_app
from streamer.settings import StreamerSettings

log = logging.getLogger(__name__)
DEFAULT_BIND = "127.0.0.1:8470"


def parse_bind(bind: str) -> tuple[str, int]:
    """``HOST:PORT`` (IPv6 in brackets) → host and port."""
    host, _, port = bind.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or not 0 <= int(port) < 65536:
        raise ParameterError(f"--bind {bind!r}: expected HOST:PORT, e.g. {DEFAULT_BIND}")
    return host, int(port)


def loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _config(archive: Path, bind: str, settings: StreamerSettings | None,
            max_upload_bytes: int) -> uvicorn.Config:
    host, port = parse_bind(bind)
    if not loopback(host):
        log.warning("the quick-look page listens on %s: anyone who reaches it can read the "
                    "archive%s; it has no login", host,
                    " and publish uploads to the raw topic" if settings and
                    settings.kafka.bootstrap_servers else "")
    Path(archive).mkdir(parents=True, exist_ok=True)
    app = create_app(Path(archive), settings, max_upload_bytes)
    return uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)


def serve(archive: Path, bind: str = DEFAULT_BIND, settings: StreamerSettings | None = None,
          max_upload_bytes: int = 512 << 20) -> None:
    """Serve the page until interrupted."""
    config = _config(archive, bind, settings, max_upload_bytes)
    host = f"[{config.host}]" if ":" in config.host else config.host
    print(f"quick look on http://{host}:{config.port}/ (archive {archive})", flush=True)
    # uvicorn stops on SIGTERM/SIGINT and then raises the signal again for the handler it
    # found: with Python's defaults that is a death by SIGTERM (exit 143). Ours only notes it,
    # so a stop asked for is a clean exit 0.
    received: list[int] = []
    handled = (signal.SIGINT, signal.SIGTERM)
    previous = {number: signal.signal(number, lambda n, _: received.append(n))
                for number in handled}
    try:
        uvicorn.Server(config).run()
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    if received:
        print(f"quick look stopped ({signal.Signals(received[0]).name})", flush=True)


class BackgroundView:
    """The page served from a thread (for the demo); ``url`` once it listens."""

    def __init__(self, archive: Path, bind: str = DEFAULT_BIND,
                 settings: StreamerSettings | None = None) -> None:
        self.server = uvicorn.Server(_config(archive, bind, settings, 512 << 20))
        self.thread = threading.Thread(target=self.server.run, name="quick-look", daemon=True)
        self.url: str | None = None

    def start(self, timeout: float = 20.0) -> str:
        """Start serving; returns the page's address."""
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started and time.monotonic() < deadline:
            if not self.thread.is_alive():
                raise ParameterError("the quick-look page could not start (is the port in use?)")
            time.sleep(0.05)
        config = self.server.config
        port = config.port
        if self.server.servers:  # port 0: the one the system gave
            port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://{config.host}:{port}/"
        return self.url

    def stop(self) -> None:
        """Stop serving."""
        self.server.should_exit = True
        self.thread.join(10)
