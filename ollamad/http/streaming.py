"""Answering from a service event stream: one object, NDJSON or SSE, cancelled if the client goes.

Hypercorn does not fail a ``send`` once the client has gone (it drops the bytes), and a request
that is still queued or evaluating its prompt sends nothing at all, so the client's departure is
watched for on ``receive`` instead: the ``http.disconnect`` message cancels the work, which closes
the service's event generator and so frees the runner slot (the same path as a cancelled request
on the Unix socket).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

import trio
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from ollamad import gojson
from ollamad.http import responses
from ollamad.http.metrics import METRICS
from ollamad.http.status import HTTPProblem, status_of

log = logging.getLogger(__name__)

Event = dict[str, Any]
Events = AsyncIterator[Event]
EventSource = Callable[[], Events]


async def tapped(events: Events) -> Events:
    """The events, with their token counts added to the metrics on the way through."""
    async with contextlib.aclosing(events):
        async for event in events:
            METRICS.tokens(event)
            yield event


Produce = Callable[[Send, Callable[[], None]], Awaitable[None]]


class Guarded:
    """An ASGI response that runs ``produce(send, done)`` and cancels it if the client
    disconnects; ``produce`` calls ``done()`` once the service has nothing more to give, so
    that a client leaving during the last bytes is not reported as a cancellation.

    Only for requests whose body has been read already: the watcher consumes ``receive``.
    """

    def __init__(self, produce: Produce, what: str) -> None:
        self.produce = produce
        self.what = what

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        complete = False

        def done() -> None:
            nonlocal complete
            complete = True

        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                # Hypercorn also reports the end of a completed exchange as a disconnect.
                while (await receive())["type"] != "http.disconnect":
                    pass
                nursery.cancel_scope.cancel()

            nursery.start_soon(watch)
            await self.produce(send, done)
            nursery.cancel_scope.cancel()
        if not complete:
            log.info("client disconnected: cancelled %s", self.what)


def single(compute: Callable[[], Awaitable[Response]], what: str,
           failure: Callable[[int, str], Response]) -> Guarded:
    """One response computed from the service while the client waits (and may give up); a
    failure is answered with ``failure(status, message)``."""

    async def produce(send: Send, done: Callable[[], None]) -> None:
        try:
            response = await compute()
        except Exception as exc:
            response = failure(*status_of(exc, what))
        done()
        await response({"type": "http"}, _no_receive, send)

    return Guarded(produce, what)


async def _no_receive() -> dict[str, Any]:
    raise RuntimeError("a finished response does not read the request")


class StreamFormat(Protocol):
    """How a stream of service events is written: Ollama's NDJSON, OpenAI's SSE."""

    content_type: str

    def event(self, event: Event) -> list[bytes]: ...

    def error(self, message: str) -> bytes: ...

    def end(self) -> bytes: ...

    def failure(self, status: int, message: str) -> Response: ...


class NDJSON:
    """Ollama's ``streamResponse``: a line per event; a failure after the first line is a last
    ``{"error": …}`` line, before it a status and an error object."""

    content_type = responses.NDJSON

    def __init__(self, failure_type: str = responses.JSON) -> None:
        # generate and chat fail early through gin's c.JSON (with a charset); pull, push and
        # create fail through the stream's own writer (without).
        self.failure_type = failure_type

    def event(self, event: Event) -> list[bytes]:
        return [(gojson.dumps(event) + "\n").encode()]

    def error(self, message: str) -> bytes:
        return (gojson.dumps({"error": message}) + "\n").encode()

    def end(self) -> bytes:
        return b""

    def failure(self, status: int, message: str) -> Response:
        return responses.ollama_error(status, message, self.failure_type)


def stream(source: EventSource, fmt: StreamFormat, what: str) -> Guarded:
    """Stream the events; the status is chosen only once the first event (or failure) is known,
    so that "model not found" is a 404 and not a 200 with an error line."""

    async def produce(send: Send, done: Callable[[], None]) -> None:
        async with contextlib.aclosing(tapped(source())) as events:
            try:
                first = await anext(events, None)
            except Exception as exc:
                done()
                status, message = status_of(exc, what)
                await fmt.failure(status, message)({"type": "http"}, _no_receive, send)
                return
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", fmt.content_type.encode())]})
            try:
                if first is not None:
                    await _send_event(send, fmt, first, done)
                    async for event in events:
                        await _send_event(send, fmt, event, done)
            except Exception as exc:
                done()
                _, message = status_of(exc, what)
                await _send_chunks(send, [fmt.error(message)])
            else:
                done()
                await _send_chunks(send, [fmt.end()])
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    return Guarded(produce, what)


async def _send_event(send: Send, fmt: StreamFormat, event: Event,
                      done: Callable[[], None]) -> None:
    if event.get("done"):
        done()  # the final answer: a client that leaves now has had everything
    await _send_chunks(send, fmt.event(event))


async def _send_chunks(send: Send, chunks: list[bytes]) -> None:
    # One body message per chunk: Hypercorn writes each to the socket at once, which is the
    # flush after every line that streaming clients wait for.
    for chunk in chunks:
        if chunk:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})


async def last(source: EventSource) -> Event:
    """The final event: the one of a one-shot operation, or the last progress object of pull,
    push and create with ``stream: false`` (Ollama's ``waitForStream``)."""
    final: Event = {}
    async with contextlib.aclosing(tapped(source())) as events:
        async for event in events:
            final = event
    return final


async def last_progress(source: EventSource, what: str) -> Event:
    """pull, push and create with ``stream: false`` (Ollama's ``waitForStream``): the last
    progress object. Ollama's workers report failures without a status once they have begun, so
    a failure after the first progress object is a 500 whatever its kind."""
    final: Event | None = None
    try:
        async with contextlib.aclosing(tapped(source())) as events:
            async for event in events:
                final = event
    except Exception as exc:
        if final is None:
            raise
        raise HTTPProblem(500, status_of(exc, what)[1]) from exc
    return final or {}
