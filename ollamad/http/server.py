"""The bridge served by Hypercorn's trio worker inside the daemon's nursery."""

from __future__ import annotations

import logging
import socket

import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from ollamad.activity import Activity
from ollamad.http import app as application
from ollamad.http.address import describe, is_loopback
from ollamad.http.settings import HTTPSettings
from ollamad.service import Service

log = logging.getLogger(__name__)


def hypercorn_config(fd: int, settings: HTTPSettings) -> Config:
    config = Config()
    # Hypercorn adopts an already-listening descriptor through an fd:// bind: the daemon binds
    # (or systemd does) so that a port in use is a start-up error, not a late one.
    config.bind = [f"fd://{fd}"]
    # A backstop only (it counts buffered bytes, however they arrived); the safety layer
    # enforces the exact limit on the parsed headers.
    config.h11_max_incomplete_size = 2 * settings.max_header
    config.h2_max_header_list_size = 2 * settings.max_header
    config.graceful_timeout = settings.shutdown_timeout
    config.include_server_header = False  # Ollama sends none
    config.accesslog = None  # the access layer logs, with the route and the latency
    config.errorlog = logging.getLogger("hypercorn.error")
    return config


class HTTPBridge:
    def __init__(self, service: Service, settings: HTTPSettings, sock: socket.socket,
                 activity: Activity | None = None) -> None:
        self.where = describe(sock)
        self.app = application.build(service, settings, loopback=is_loopback(sock),
                                     activity=activity)
        # Hypercorn owns the descriptor from here on (and closes it).
        self.config = hypercorn_config(sock.detach(), settings)
        self._stop = trio.Event()

    async def serve(self) -> None:
        """Serve until :meth:`stop`; then in-flight requests get the graceful timeout."""
        log.info("HTTP API on %s", self.where)
        await serve(self.app, self.config, shutdown_trigger=self._stop.wait)

    def stop(self) -> None:
        self._stop.set()
