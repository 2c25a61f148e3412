"""Ollama's own API, ``/api/*``: each route decodes its body and calls one service operation."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from ollamad.http import aggregate, responses
from ollamad.http.exchange import body, bridge, caller, route, source, streams, what
from ollamad.http.jsonbody import (
    BOOL,
    INT,
    INTS,
    MESSAGES,
    OBJECT,
    STRING,
    STRING_MAP,
    TOOLS,
    Kind,
    Struct,
    body_stream,
)
from ollamad.http.metrics import CONTENT_TYPE as METRICS_TYPE
from ollamad.http.metrics import METRICS
from ollamad.http.status import status_of
from ollamad.http.streaming import (
    NDJSON,
    EventSource,
    Guarded,
    last,
    last_progress,
    single,
    stream,
)

log = logging.getLogger(__name__)

IMAGES = Kind("[]api.ImageData", (list,), Kind("api.ImageData", (str,)))
_COMMON = {"model": STRING, "options": OBJECT, "stream": BOOL}
GENERATE = Struct("api.GenerateRequest", _COMMON | {
    "prompt": STRING, "suffix": STRING, "system": STRING, "template": STRING, "context": INTS,
    "raw": BOOL, "images": IMAGES, "truncate": BOOL, "shift": BOOL, "logprobs": BOOL,
    "top_logprobs": INT, "_debug_render_only": BOOL})
CHAT = Struct("api.ChatRequest", _COMMON | {
    "messages": MESSAGES, "tools": TOOLS, "truncate": BOOL, "shift": BOOL, "logprobs": BOOL,
    "top_logprobs": INT, "_debug_render_only": BOOL})
EMBED = Struct("api.EmbedRequest", {"model": STRING, "options": OBJECT, "truncate": BOOL,
                                    "dimensions": INT})
EMBEDDINGS = Struct("api.EmbeddingRequest", {"model": STRING, "options": OBJECT,
                                             "prompt": STRING})
SHOW = Struct("api.ShowRequest", {"model": STRING, "name": STRING, "system": STRING,
                                  "template": STRING, "verbose": BOOL, "options": OBJECT})
DELETE = Struct("api.DeleteRequest", {"model": STRING, "name": STRING})
COPY = Struct("api.CopyRequest", {"source": STRING, "destination": STRING})
CREATE = Struct("api.CreateRequest", {
    "model": STRING, "name": STRING, "stream": BOOL, "quantize": STRING, "quantization": STRING,
    "from": STRING, "files": STRING_MAP, "adapters": STRING_MAP, "template": STRING,
    "system": STRING, "parameters": OBJECT, "messages": MESSAGES, "modelfile": STRING})
_TRANSFER = {"model": STRING, "name": STRING, "insecure": BOOL, "username": STRING,
             "password": STRING, "stream": BOOL}
PULL = Struct("api.PullRequest", _TRANSFER)
PUSH = Struct("api.PushRequest", _TRANSFER)


def _answer(request: Request, compute: Callable[[], Awaitable[Response]],
            error_type: str = responses.JSON) -> Guarded:
    """Run ``compute`` under the disconnect guard; a failure becomes Ollama's error object."""
    return single(compute, what(request),
                  lambda status, message: responses.ollama_error(status, message, error_type))


def _one(request: Request, op: str, args: dict[str, Any], empty: bool = False) -> Guarded:
    """A one-shot operation answered with its event (or, for copy and delete, an empty 200)."""
    events = source(request, op, args)

    async def compute() -> Response:
        event = await last(events)
        return responses.empty() if empty else responses.json(event)

    return _answer(request, compute)


def _text_stream(request: Request, op: str, args: dict[str, Any],
                 fold: Callable[[EventSource], Awaitable[dict[str, Any]]]) -> Guarded:
    """generate and chat: NDJSON, or with ``stream: false`` one folded object."""
    events = source(request, op, args)
    if streams(args):
        return stream(events, NDJSON(), what(request))

    async def compute() -> Response:
        return responses.json(await fold(events))

    return _answer(request, compute)


def _progress(request: Request, op: str, args: dict[str, Any]) -> Guarded:
    """pull, push and create: NDJSON progress, or with ``stream: false`` the last object."""
    events = source(request, op, args)
    if streams(args):
        return stream(events, NDJSON(responses.BARE_JSON), what(request))

    async def compute() -> Response:
        return responses.json(await last_progress(events, what(request)),
                              content_type=responses.BARE_JSON)

    return _answer(request, compute, responses.BARE_JSON)


async def root(request: Request) -> Response:
    return responses.raw("Ollama is running", content_type=responses.TEXT)


async def version(request: Request) -> Guarded:
    return _one(request, "version", {})


async def cloud_status(request: Request) -> Response:
    # No ollama.com models are proxied by this daemon: the cloud is off, by no setting.
    return responses.json({"cloud": {"disabled": True, "source": "none"}})


async def tags(request: Request) -> Guarded:
    return _one(request, "list", {})


async def ps(request: Request) -> Guarded:
    return _one(request, "ps", {})


async def show(request: Request) -> Guarded:
    return _one(request, "show", await body(request, SHOW))


async def delete(request: Request) -> Guarded:
    return _one(request, "delete", await body(request, DELETE), empty=True)


async def copy(request: Request) -> Guarded:
    return _one(request, "copy", await body(request, COPY), empty=True)


async def embed(request: Request) -> Guarded:
    return _one(request, "embed", await body(request, EMBED))


async def embeddings(request: Request) -> Guarded:
    return _one(request, "embeddings", await body(request, EMBEDDINGS))


async def generate(request: Request) -> Guarded:
    return _text_stream(request, "generate", await body(request, GENERATE), aggregate.generate)


async def chat(request: Request) -> Guarded:
    return _text_stream(request, "chat", await body(request, CHAT), aggregate.chat)


async def create(request: Request) -> Guarded:
    return _progress(request, "create", await body(request, CREATE))


async def pull(request: Request) -> Guarded:
    return _progress(request, "pull", await body(request, PULL))


async def push(request: Request) -> Guarded:
    return _progress(request, "push", await body(request, PUSH))


async def blob(request: Request) -> Guarded | Response:
    return await (post_blob(request) if request.method == "POST" else head_blob(request))


async def head_blob(request: Request) -> Guarded:
    """200 if the blob is in the store, else 404 (a look-up: no content is sent)."""
    events = source(request, "blob", {"digest": request.path_params["digest"]})

    async def compute() -> Response:
        await last(events)
        return responses.empty()

    return _answer(request, compute)


async def post_blob(request: Request) -> Response:
    """The body streams into the store and is kept only if its sha256 is the digest named: 201
    when stored, 200 when the blob was there already (its body is then not read)."""
    events = source(request, "blob", {"digest": request.path_params["digest"]},
                    content=body_stream(request))
    # Not under the disconnect guard: the upload itself reads ``receive``, and a client that
    # goes away ends it with ClientDisconnect.
    try:
        event = await last(events)
    except ClientDisconnect:
        log.info("client disconnected during a blob upload: %s", what(request))
        return responses.empty(499)
    except Exception as exc:
        status, message = status_of(exc, what(request))
        return responses.ollama_error(status, message)
    return responses.empty(201 if event.get("created") else 200)


async def metrics(request: Request) -> Response:
    loaded: list[str] = []
    with contextlib.suppress(Exception):
        service = bridge(request).service
        event = await last(lambda: service.run("ps", {}, caller(request)))
        loaded = [m.get("name", "") for m in event.get("models", [])]
    return responses.raw(METRICS.render(loaded), content_type=METRICS_TYPE)


def routes() -> list[Route]:
    return [
        route("/", root, ["GET", "HEAD"]),
        route("/api/version", version, ["GET", "HEAD"]),
        route("/api/status", cloud_status, ["GET"]),
        route("/api/pull", pull, ["POST"]),
        route("/api/push", push, ["POST"]),
        route("/api/tags", tags, ["GET", "HEAD"]),
        route("/api/show", show, ["POST"]),
        route("/api/delete", delete, ["DELETE"]),
        route("/api/create", create, ["POST"]),
        route("/api/blobs/{digest}", blob, ["HEAD", "POST"]),
        route("/api/copy", copy, ["POST"]),
        route("/api/ps", ps, ["GET"]),
        route("/api/generate", generate, ["POST"]),
        route("/api/chat", chat, ["POST"]),
        route("/api/embed", embed, ["POST"]),
        route("/api/embeddings", embeddings, ["POST"]),
        route("/metrics", metrics, ["GET"]),
    ]
