"""The outermost layer: one log line and one metrics count per request, and the daemon kept busy
(for ``--idle-exit``) while a request is in flight."""

from __future__ import annotations

import contextlib
import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ollamad.activity import Activity
from ollamad.http.exchange import Layer
from ollamad.http.metrics import METRICS

log = logging.getLogger("ollamad.http.access")

# nginx's "client closed request", which Ollama also uses: the client left before any status.
CLIENT_GONE = 499


class AccessLog(Layer):
    def __init__(self, app: ASGIApp, activity: Activity | None) -> None:
        super().__init__(app)
        self.activity = activity

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        status = CLIENT_GONE
        body_left = _has_body(scope)

        async def receiver() -> Message:
            nonlocal body_left
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body"):
                body_left = False
            return message

        async def sender(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if body_left:
                    # Answered without reading the body (an error, a blob already stored):
                    # the rest of it would be taken for the next request on this connection.
                    message = {**message, "headers": [*message.get("headers", []),
                                                      (b"connection", b"close")]}
            await send(message)

        busy = self.activity.busy() if self.activity else contextlib.nullcontext()
        try:
            with busy:
                await self.app(scope, receiver, sender)
        finally:
            # The route's template, not the path, so that digests and names do not each
            # become a metrics series.
            route = scope.get("route")
            METRICS.request(getattr(route, "path", "unmatched"), scope["method"], status)
            client = scope.get("client") or ("-", 0)
            log.info('%d | %8.1fms | %s | %s "%s"', status,
                     (time.perf_counter() - started) * 1000, client[0], scope["method"],
                     scope["path"])


def _has_body(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"content-length":
            return value.strip() not in (b"", b"0")
        if name == b"transfer-encoding":
            return True
    return False
