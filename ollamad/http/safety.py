"""Who may talk to the bridge: CORS origins, the DNS-rebinding Host check, optional API keys.

The first two follow Ollama's gin middlewares in their order (gin-contrib/cors, then
``allowedHostsMiddleware``), including their quirks, because browser extensions and web UIs are
written against exactly that behaviour. API keys are this daemon's own addition.
"""

from __future__ import annotations

import contextlib
import fcntl
import hmac
import ipaddress
import logging
import socket
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ollamad.http import responses
from ollamad.http.address import split_host_port
from ollamad.http.exchange import Layer

log = logging.getLogger(__name__)

ALLOWED_HEADERS = ("Authorization", "Content-Type", "User-Agent", "Accept", "X-Requested-With",
                   "OpenAI-Beta", "x-stainless-arch", "x-stainless-async",
                   "x-stainless-custom-poll-interval", "x-stainless-helper-method",
                   "x-stainless-lang", "x-stainless-os", "x-stainless-package-version",
                   "x-stainless-poll-helper", "x-stainless-retry-count", "x-stainless-runtime",
                   "x-stainless-runtime-version", "x-stainless-timeout")
ALLOWED_METHODS = "GET,POST,PUT,PATCH,DELETE,HEAD,OPTIONS"
PREFLIGHT_MAX_AGE = str(12 * 3600)
# Origins without a wildcard must use one of these schemes (gin-contrib/cors with browser
# extensions allowed); Ollama refuses to start otherwise, this daemon skips the entry.
ORIGIN_SCHEMES = ("http://", "https://", "chrome-extension://", "safari-extension://",
                  "moz-extension://", "ms-browser-extension://")


def _canonical(header: str) -> str:
    """Go's CanonicalHeaderKey: ``openai-beta`` → ``Openai-Beta``."""
    return "-".join(part[:1].upper() + part[1:].lower() for part in header.split("-"))


@dataclass
class CORS:
    allow_all: bool = False
    exact: set[str] = field(default_factory=set)
    wildcards: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def from_origins(cls, origins: Sequence[str]) -> CORS:
        cors = cls(allow_all="*" in origins)
        for origin in origins:
            stars = origin.count("*")
            if stars > 1:
                log.warning("ignoring CORS origin %r: only one * is allowed", origin)
            elif stars == 1:
                prefix, _, suffix = origin.partition("*")
                cors.wildcards.append((prefix, suffix))
            elif origin.startswith(ORIGIN_SCHEMES):
                cors.exact.add(origin.strip().lower())
            else:
                log.warning("ignoring CORS origin %r: it needs a * or one of %s", origin,
                            ", ".join(ORIGIN_SCHEMES))
        return cors

    def allows(self, origin: str) -> bool:
        if self.allow_all or origin in self.exact:
            return True
        return any(origin.startswith(prefix) and origin.endswith(suffix)
                   for prefix, suffix in self.wildcards)

    def preflight_headers(self, origin: str) -> list[tuple[str, str]]:
        headers = [("Access-Control-Allow-Methods", ALLOWED_METHODS),
                   ("Access-Control-Allow-Headers",
                    ",".join(_canonical(h) for h in ALLOWED_HEADERS)),
                   ("Access-Control-Max-Age", PREFLIGHT_MAX_AGE)]
        if self.allow_all:
            return [*headers, ("Access-Control-Allow-Origin", "*")]
        return [*headers, ("Vary", "Origin"), ("Vary", "Access-Control-Request-Method"),
                ("Vary", "Access-Control-Request-Headers"),
                ("Access-Control-Allow-Origin", origin)]

    def normal_headers(self, origin: str) -> list[tuple[str, str]]:
        if self.allow_all:
            return [("Access-Control-Allow-Origin", "*")]
        return [("Vary", "Origin"), ("Access-Control-Allow-Origin", origin)]


# -- the Host check ------------------------------------------------------------------------------

_PRIVATE = [ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",
                                              "fc00::/7")]
_SIOCGIFADDR = 0x8915


def _go_like(ip: ipaddress.IPv4Address | ipaddress.IPv6Address
             ) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def local_addresses() -> set[str]:
    """The addresses of this machine's interfaces (Go's ``isLocalIP`` asks the same)."""
    found: set[str] = set()
    with contextlib.suppress(OSError), open("/proc/net/if_inet6") as table:
        for line in table:
            raw = line.split()[0]
            found.add(str(ipaddress.IPv6Address(int(raw, 16))))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        for _, name in socket.if_nameindex():
            request = struct.pack("256s", name.encode()[:15])
            with contextlib.suppress(OSError):
                answer = fcntl.ioctl(probe.fileno(), _SIOCGIFADDR, request)
                found.add(socket.inet_ntoa(answer[20:24]))
    return found


def host_allowed(host_header: str) -> tuple[bool, bool]:
    """(allowed, by name): Ollama answers an allowed OPTIONS with 204 only in the by-name case."""
    try:
        host, _ = split_host_port(host_header)
    except ValueError:
        host = host_header
    try:
        ip = _go_like(ipaddress.ip_address(host))
    except ValueError:
        ip = None
    if ip is not None and (ip.is_loopback or ip.is_unspecified
                           or any(ip in net for net in _PRIVATE)
                           or str(ip) in local_addresses()):
        return True, False
    name = host.lower()
    if name in ("", "localhost") or name == socket.gethostname().lower():
        return True, True
    return name.endswith((".localhost", ".local", ".internal")), True


# -- the middleware ------------------------------------------------------------------------------

class Safety(Layer):
    """CORS, then the Host check (only when listening on loopback), then the API key."""

    def __init__(self, app: ASGIApp, *, origins: Sequence[str], loopback: bool,
                 api_keys: frozenset[str] | None, max_header: int) -> None:
        super().__init__(app)
        self.cors = CORS.from_origins(origins)
        self.loopback = loopback
        self.api_keys = api_keys
        self.max_header = max_header

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Hypercorn's own limit depends on how the bytes arrived; this one is exact. Go's
        # server answers the same status and text past its limit.
        if sum(len(k) + len(v) + 4 for k, v in scope["headers"]) > self.max_header:
            await responses.raw("431 Request Header Fields Too Large", 431,
                                responses.GIN_TEXT)(scope, receive, send)
            return
        headers = Headers(scope=scope)
        method, host = scope["method"], headers.get("host", "")
        extra: list[tuple[str, str]] = []
        origin = headers.get("origin")
        # An Origin naming this very host is a same-origin fetch, not a CORS request.
        if origin and origin not in (f"http://{host}", f"https://{host}"):
            if not self.cors.allows(origin):
                await responses.empty(403)(scope, receive, send)
                return
            if method == "OPTIONS":
                await responses.empty(204)(scope, receive, _with_headers(
                    send, self.cors.preflight_headers(origin)))
                return
            extra = self.cors.normal_headers(origin)
        send = _with_headers(send, extra) if extra else send
        if self.loopback:
            allowed, by_name = host_allowed(host)
            if not allowed:
                log.info("refused Host %r (DNS rebinding guard)", host)
                await responses.empty(403)(scope, receive, send)
                return
            if by_name and method == "OPTIONS":
                await responses.empty(204)(scope, receive, send)
                return
        if self.api_keys is not None and scope["path"] != "/" \
                and not self._key_ok(headers.get("authorization", "")):
            await self._unauthorized(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _key_ok(self, authorization: str) -> bool:
        scheme, _, key = authorization.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            return False
        given = key.strip().encode()
        assert self.api_keys is not None
        # Compare against every key, so the time taken does not tell which one nearly matched.
        return sum(hmac.compare_digest(given, k.encode()) for k in self.api_keys) > 0

    async def _unauthorized(self, scope: Scope, receive: Receive, send: Send) -> None:
        challenge = [("WWW-Authenticate", "Bearer")]
        if scope["path"].startswith("/v1/"):
            response = responses.openai_error(401, "unauthorized: a valid API key is required")
        else:
            response = responses.ollama_error(401, "unauthorized")
        await response(scope, receive, _with_headers(send, challenge))


def _with_headers(send: Send, extra: list[tuple[str, str]]) -> Send:
    encoded = [(k.lower().encode(), v.encode()) for k, v in extra]

    async def sender(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), *encoded]}
        await send(message)

    return sender
