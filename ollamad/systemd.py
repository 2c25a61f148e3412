"""The daemon's side of systemd: sockets passed by socket activation, and sd_notify messages."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import MutableMapping

import sdnotify

log = logging.getLogger(__name__)

LISTEN_FDS_START = 3
CTL, HTTP = "ctl", "http"


def _infer_name(sock: socket.socket) -> str:
    return CTL if sock.family == socket.AF_UNIX else HTTP


def listen_sockets(env: MutableMapping[str, str] = os.environ) -> dict[str, socket.socket]:
    """Adopt the sockets systemd passed (``LISTEN_FDS``), keyed by ``FileDescriptorName``.

    Unnamed sockets are told apart by family: Unix is ``ctl``, TCP is ``http``. The variables are
    removed so that child processes do not believe the sockets are theirs.
    """
    pid, count = env.pop("LISTEN_PID", ""), env.pop("LISTEN_FDS", "")
    names = env.pop("LISTEN_FDNAMES", "").split(":")
    if not count or pid != str(os.getpid()):
        return {}
    adopted: dict[str, socket.socket] = {}
    for index in range(int(count)):
        fd = LISTEN_FDS_START + index
        os.set_inheritable(fd, False)
        sock = socket.socket(fileno=fd)
        name = names[index] if index < len(names) and names[index] not in ("", "unknown") \
            else _infer_name(sock)
        if sock.type != socket.SOCK_STREAM or name not in (CTL, HTTP) or name in adopted:
            log.warning("ignoring passed socket %d (%s, named %r)", fd, sock.family.name, name)
            sock.close()
            continue
        sock.setblocking(False)
        adopted[name] = sock
    return adopted


class Notifier:
    """sd_notify, a no-op when not started by systemd (or a test standing in for it)."""

    def __init__(self, env: MutableMapping[str, str] = os.environ) -> None:
        self.enabled = bool(env.get("NOTIFY_SOCKET"))
        self._notifier = sdnotify.SystemdNotifier() if self.enabled else None
        # Runner children must not talk to systemd on our behalf.
        env.pop("NOTIFY_SOCKET", None)
        self.watchdog_interval = _watchdog_interval(env)

    def notify(self, *lines: str) -> None:
        if self._notifier is not None:
            self._notifier.notify("\n".join(lines))


def _watchdog_interval(env: MutableMapping[str, str]) -> float | None:
    """How often to send WATCHDOG=1: half of ``WATCHDOG_USEC``, as systemd recommends."""
    usec, pid = env.pop("WATCHDOG_USEC", ""), env.pop("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0 or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2_000_000
