"""Where the HTTP bridge listens: ``OLLAMA_HOST`` read as Ollama reads it, and the socket bound."""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass

from ollamad.config import env_value

log = logging.getLogger(__name__)

DEFAULT_PORT = 11434
_GO_INT = re.compile(r"[+-]?[0-9]+")


@dataclass(frozen=True)
class Address:
    host: str  # "" binds every interface, as Go's ":port" does
    port: int

    def __str__(self) -> str:
        return join_host_port(self.host, self.port)


def join_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def split_host_port(text: str) -> tuple[str, str]:
    """Go's ``net.SplitHostPort``; ValueError where Go returns an error."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or text[end + 1:end + 2] != ":":
            raise ValueError(f"bad host:port {text!r}")
        host, port = text[1:end], text[end + 2:]
        if "[" in port or "]" in port:
            raise ValueError(f"bad host:port {text!r}")
        return host, port
    host, colon, port = text.rpartition(":")
    if not colon or ":" in host or "[" in host or "]" in host:
        raise ValueError(f"bad host:port {text!r}")
    return host, port


def _go_ip(text: str) -> str | None:
    """Go's ``net.ParseIP(...).String()``, or None for text that is not an IP address."""
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)  # Go prints a v4-in-v6 address as plain IPv4
    return str(ip)


def parse_host(value: str) -> Address:
    """An ``OLLAMA_HOST``-style value as Ollama's ``envconfig.Host`` reads it.

    ``scheme://`` is optional; ``http`` defaults the port to 80, ``https`` to 443, none to
    11434; a bad port falls back to the default (with a warning, as Ollama does).
    """
    text = value.strip()
    default_port = str(DEFAULT_PORT)
    scheme, sep, hostport = text.partition("://")
    if not sep:
        hostport = text
        if text == "ollama.com":
            hostport = "ollama.com:443"
    elif scheme == "http":
        default_port = "80"
    elif scheme == "https":
        default_port = "443"
    hostport = hostport.partition("/")[0]
    try:
        host, port = split_host_port(hostport)
    except ValueError:
        host, port = "127.0.0.1", default_port
        if (ip := _go_ip(hostport.strip("[]"))) is not None:
            host = ip
        elif hostport:
            host = hostport
    # Go's ParseInt accepts a sign; a negative port is refused by the range check below.
    if not _GO_INT.fullmatch(port) or not 0 <= int(port) <= 65535:
        log.warning("invalid port %r, using default %s", port, default_port)
        port = default_port
    return Address(host, int(port))


def address_from_env(env: Mapping[str, str]) -> tuple[Address, bool]:
    """The address ``OLLAMA_HOST`` names, and whether it was set at all."""
    value = env_value(env, "OLLAMA_HOST")
    return parse_host(value), bool(value)


def bind(address: Address, backlog: int = 128) -> socket.socket:
    """A listening, non-blocking TCP socket on ``address``; OSError if it cannot be had."""
    if not address.host:
        if socket.has_dualstack_ipv6():
            sock = socket.create_server(("", address.port), family=socket.AF_INET6,
                                        dualstack_ipv6=True, backlog=backlog)
        else:
            sock = socket.create_server(("", address.port), backlog=backlog)
    else:
        family, kind, proto, _, where = socket.getaddrinfo(
            address.host, address.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(where)
            sock.listen(backlog)
        except OSError:
            sock.close()
            raise
    sock.setblocking(False)
    return sock


def is_loopback(sock: socket.socket) -> bool:
    """Whether the listener accepts loopback connections only (the DNS-rebinding guard's case)."""
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return True  # not reachable from another host either: treat as local
    try:
        return ipaddress.ip_address(sock.getsockname()[0].split("%")[0]).is_loopback
    except ValueError:
        return False


def describe(sock: socket.socket) -> str:
    name = sock.getsockname()
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        return "http://" + join_host_port(name[0], name[1])
    return str(name)
