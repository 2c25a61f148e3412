"""The daemon's handle on the bridge: the listening socket at start-up, the web stack later.

Light on purpose (no Hypercorn, no Starlette): the daemon binds before it reports READY, and
imports and starts the bridge after, so that start-up (and ``--http none``) does not pay for it.
"""

from __future__ import annotations

import importlib
import logging
import os
import socket
from collections.abc import Callable

import trio

from ollamad.activity import Activity
from ollamad.http import address
from ollamad.http.settings import HTTPSettings
from ollamad.service import Service

log = logging.getLogger(__name__)


class LaunchError(Exception):
    """The bridge cannot start as configured; the message says why."""


def open_socket(passed: socket.socket | None, wanted: str | None) -> socket.socket | None:
    """The bridge's listening socket: systemd's, else bound here; None for no bridge.

    ``wanted`` is ``--http``: an address, ``"none"``, or None for ``$OLLAMA_HOST`` or the
    default. A port in use is fatal when the address was asked for; for the default address it
    only turns the bridge off, so that a daemon started beside a running Ollama still serves
    its Unix socket.
    """
    if passed is not None:
        if wanted == "none":
            log.info("--http none: not serving the http socket systemd passed")
            passed.close()
            return None
        return passed
    if wanted == "none":
        return None
    if wanted is not None:
        where, explicit = address.parse_host(wanted), True
    else:
        where, explicit = address.address_from_env(os.environ)
    try:
        return address.bind(where)
    except OSError as exc:
        if explicit:
            raise LaunchError(f"cannot listen for HTTP on {where}: {exc.strerror or exc}"
                              ) from None
        log.warning("HTTP API off: cannot listen on %s: %s", where, exc.strerror or exc)
        return None


class Launcher:
    def __init__(self, sock: socket.socket | None, settings: HTTPSettings | None) -> None:
        self.sock = sock
        self.settings = settings
        self.where = address.describe(sock) if sock is not None else None
        self._stopping = trio.Event()
        self._stop_bridge: Callable[[], None] | None = None

    @classmethod
    def open(cls, passed: socket.socket | None, wanted: str | None,
             shutdown_timeout: float) -> Launcher:
        sock = open_socket(passed, wanted)
        if sock is None:
            return cls(None, None)
        try:
            settings = HTTPSettings.from_env(os.environ, shutdown_timeout)
        except ValueError as exc:
            sock.close()
            raise LaunchError(str(exc)) from None
        return cls(sock, settings)

    async def run(self, service: Service, activity: Activity) -> None:
        """Serve until :meth:`stop` (at once if there is no socket)."""
        if self.sock is None or self.settings is None:
            return
        # Imported in a worker thread, so the event loop goes on answering the Unix socket.
        server = await trio.to_thread.run_sync(importlib.import_module, "ollamad.http.server")
        if self._stopping.is_set():
            return
        bridge = server.HTTPBridge(service, self.settings, self.sock, activity)
        self.sock = None  # the bridge owns the descriptor now
        self._stop_bridge = bridge.stop
        await bridge.serve()

    def stop(self) -> None:
        """Stop accepting; in-flight requests get the shutdown timeout."""
        self._stopping.set()
        if self._stop_bridge is not None:
            self._stop_bridge()

    def close(self) -> None:
        """Release a socket the bridge never took over."""
        if self.sock is not None:
            self.sock.close()
            self.sock = None
