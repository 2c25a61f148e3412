"""The HTTP shell around the protocol: httpx on trio, auth retries, redirect policy.

The transport is injectable (``transport=``) so tests can put anything between us and the
registry; by default httpx dials out itself and honours ``HTTPS_PROXY``/``NO_PROXY`` of the daemon,
as Ollama honours them.
"""

from __future__ import annotations

import contextlib
import logging
import platform
import sys
from collections.abc import AsyncIterable, AsyncIterator, Callable
from typing import TYPE_CHECKING, Literal

import httpcore
import httpx

from ollamad import __version__
from ollamad.registry import protocol
from ollamad.registry.errors import RegistryError, Unauthorized
from ollamad.registry.settings import TransferSettings

if TYPE_CHECKING:
    from ollamad.registry.auth import Authenticator

# httpx logs every request at INFO: sixteen lines a blob would drown the daemon's own log.
logging.getLogger("httpx").setLevel(logging.WARNING)
# httpcore receives 64 KiB at a time, and on a fast link each receive costs more Python than
# its bytes take to arrive: a gigabyte is 16,000 trips through the event loop. Up to 1 MiB per
# receive makes blob downloads several times cheaper; nothing else in the daemon uses httpcore.
httpcore.AsyncHTTP11Connection.READ_NUM_BYTES = 1 << 20

USER_AGENT = (f"ollamad/{__version__} ({platform.machine()} {sys.platform}) "
              f"Python/{platform.python_version()}")
MAX_ERROR_BODY = 64 * 1024
CONNECT_TIMEOUT = 30.0

Content = bytes | Callable[[], AsyncIterable[bytes]] | None
Redirects = Literal["all", "same-host", "none"]


class RegistryClient:
    """Requests to one registry on behalf of one operation (or one shared download)."""

    def __init__(self, base: str, auth: Authenticator, settings: TransferSettings,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.base = base
        self.auth = auth
        self.settings = settings
        self._transport = transport
        self._http: httpx.AsyncClient | None = None

    async def __aenter__(self) -> RegistryClient:
        timeout = httpx.Timeout(self.settings.stall, connect=min(CONNECT_TIMEOUT,
                                                                  self.settings.stall * 2))
        self._http = httpx.AsyncClient(transport=self._transport, timeout=timeout,
                                       follow_redirects=False,
                                       headers={"User-Agent": USER_AGENT})
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._http is not None
        await self._http.aclose()

    @property
    def http(self) -> httpx.AsyncClient:
        assert self._http is not None, "use RegistryClient in an async with block"
        return self._http

    @contextlib.asynccontextmanager
    async def stream(self, method: str, url: str, headers: dict[str, str] | None = None,
                     content: Content = None, redirects: Redirects = "all",
                     ) -> AsyncIterator[httpx.Response]:
        """Send a request and yield the response, its body unread.

        A 401 is answered once through the authenticator (a second one is Unauthorized).
        ``redirects``: "all" follows up to ten (credentials only ever go to the registry's
        host); "same-host" stops at the first redirect to another host and yields that 3xx, as
        Ollama finds a blob's CDN URL; "none" yields any 3xx as it is.
        """
        challenged = False
        hops = 0
        while True:
            request = self.http.build_request(
                method, url, headers={**(headers or {}), **self.auth.headers_for(url)},
                content=content() if callable(content) else content)
            try:
                response = await self.http.send(request, stream=True)
            except httpx.HTTPError as exc:
                raise TransportFailed(exc) from None
            try:
                if response.status_code == 401:
                    if challenged:
                        raise Unauthorized()
                    challenged = True
                    await self.auth.answer(self.http, response)
                    continue
                if response.is_redirect and redirects != "none":
                    target = protocol.resolve_location(url, response.headers.get("location"))
                    if redirects == "same-host" and not protocol.same_host(target, url):
                        yield response
                        return
                    hops += 1
                    if hops > protocol.MAX_REDIRECTS:
                        raise RegistryError(
                            f"maximum redirects exceeded ({protocol.MAX_REDIRECTS})")
                    if response.status_code == 303 and method != "HEAD":
                        method, content = "GET", None
                    url = target
                    continue
                yield response
                return
            finally:
                await response.aclose()

    async def fail(self, response: httpx.Response) -> RegistryError:
        """The error for a failed response: Ollama's ``<status>: <body>``."""
        try:
            body = await read_limited(response, MAX_ERROR_BODY)
        except (RegistryError, httpx.HTTPError):
            body = b""
        return RegistryError(f"{response.status_code}: {body.decode(errors='replace').strip()}")


class TransportFailed(RegistryError):
    """The connection failed or stalled before a response arrived."""

    def __init__(self, exc: httpx.HTTPError) -> None:
        super().__init__(describe(exc))
        self.cause = exc


async def read_limited(response: httpx.Response, limit: int) -> bytes:
    """A response body of at most ``limit`` bytes (a hostile server may send without end)."""
    chunks, size = [], 0
    try:
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > limit:
                raise RegistryError(f"registry sent more than {limit} bytes where a small answer "
                                    "was expected")
            chunks.append(chunk)
    except httpx.HTTPError as exc:
        raise TransportFailed(exc) from None
    return b"".join(chunks)


def describe(exc: BaseException) -> str:
    """A transport error in words: httpx's messages are sometimes empty."""
    text = str(exc).strip()
    label = ("registry stalled" if isinstance(exc, httpx.ReadTimeout | httpx.WriteTimeout)
             else "connection timed out" if isinstance(exc, httpx.TimeoutException)
             else "connection broken" if isinstance(exc, httpx.RemoteProtocolError)
             else "")
    if label:
        return f"{label}: {text}" if text else label
    return text or type(exc).__name__
