"""What every route needs from a request: the service, the caller, the decoded body."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from ollamad.http.jsonbody import Struct, read_json
from ollamad.http.settings import HTTPSettings
from ollamad.http.streaming import EventSource
from ollamad.service import Caller, Service


@dataclass(frozen=True)
class Bridge:
    service: Service
    settings: HTTPSettings


def bridge(request: Request) -> Bridge:
    found: Bridge = request.app.state.bridge
    return found


def caller(request: Request) -> Caller:
    client = request.client
    address = f"{client.host}:{client.port}" if client else "unknown"
    return Caller("http", address=address)


def what(request: Request) -> str:
    return f"{request.method} {request.url.path} from {caller(request).address}"


async def body(request: Request, struct: Struct) -> dict[str, Any]:
    return await read_json(request, struct, bridge(request).settings.max_body)


def source(request: Request, op: str, args: dict[str, Any],
           content: AsyncIterator[bytes] | None = None) -> EventSource:
    """The events of ``op``, started only when the response runs (so that every failure,
    even an unknown operation, is answered in the same place)."""
    service, who = bridge(request).service, caller(request)
    return lambda: service.run(op, args, who, body=content)


def streams(args: dict[str, Any]) -> bool:
    """Ollama's ``stream`` is a *bool: absent or null means true."""
    return args.get("stream") is not False


def route(path: str, endpoint: Callable[..., Any], methods: list[str]) -> Route:
    """A route answering exactly ``methods``: Starlette adds HEAD wherever GET is allowed, gin
    only where a HEAD route is declared (elsewhere HEAD is a 405)."""
    found = Route(path, endpoint, methods=methods)
    if "HEAD" not in methods and found.methods is not None:
        found.methods.discard("HEAD")
    return found


class Layer:
    """A middleware for HTTP requests; anything else (Hypercorn's lifespan) passes through."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self.handle(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        raise NotImplementedError
