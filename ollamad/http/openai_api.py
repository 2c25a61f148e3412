"""The OpenAI-compatible API, ``/v1/*``: requests mapped onto chat, generate, embed, list and
show (:mod:`ollamad.http.openai_requests`), answers and errors in OpenAI's shapes
(:mod:`ollamad.http.openai_shapes`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ollamad.http import aggregate, responses
from ollamad.http import openai_requests as mapping
from ollamad.http import openai_shapes as shapes
from ollamad.http.exchange import body, route, source, what
from ollamad.http.jsonbody import MissingBody, Struct
from ollamad.http.status import HTTPProblem
from ollamad.http.streaming import (
    Event,
    EventSource,
    Guarded,
    StreamFormat,
    last,
    single,
    stream,
)


async def _body(request: Request, struct: Struct) -> dict[str, Any]:
    try:
        return await body(request, struct)
    except MissingBody:
        raise HTTPProblem(400, "EOF") from None  # Ollama passes the decoder's io.EOF on as is


def _answer(request: Request, compute: Callable[[], Awaitable[dict[str, Any]]]) -> Guarded:
    async def respond() -> Response:
        return responses.json(await compute(), content_type=responses.BARE_JSON, newline=True)

    return single(respond, what(request), responses.openai_error)


def _include_usage(payload: dict[str, Any]) -> bool:
    options = payload.get("stream_options")
    return isinstance(options, dict) and bool(options.get("include_usage"))


@dataclass(frozen=True)
class Generation:
    """What differs between chat completions and text completions."""

    struct: Struct
    to_args: Callable[[dict[str, Any]], dict[str, Any]]
    op: str
    id_prefix: str
    chunks: Callable[[str, bool], StreamFormat]
    fold: Callable[[EventSource], Awaitable[Event]]
    to_object: Callable[[str, Event], dict[str, Any]]


CHAT = Generation(mapping.CHAT_REQUEST, mapping.chat_args, "chat", "chatcmpl",
                  shapes.ChatChunks, aggregate.chat, shapes.chat_completion)
COMPLETION = Generation(mapping.COMPLETION_REQUEST, mapping.completion_args, "generate", "cmpl",
                        shapes.CompletionChunks, aggregate.generate, shapes.completion)


async def _generate(request: Request, kind: Generation) -> Guarded:
    payload = await _body(request, kind.struct)
    args = kind.to_args(payload)
    completion_id, events = mapping.new_id(kind.id_prefix), source(request, kind.op, args)
    if args["stream"]:
        return stream(events, kind.chunks(completion_id, _include_usage(payload)),
                      what(request))

    async def compute() -> dict[str, Any]:
        return kind.to_object(completion_id, await kind.fold(events))

    return _answer(request, compute)


async def chat_completions(request: Request) -> Guarded:
    return await _generate(request, CHAT)


async def completions(request: Request) -> Guarded:
    return await _generate(request, COMPLETION)


async def embeddings(request: Request) -> Guarded:
    payload = await _body(request, mapping.EMBED_REQUEST)
    args = mapping.embed_args(payload)
    events = source(request, "embed", args)

    async def compute() -> dict[str, Any]:
        return shapes.embedding_list(args["model"], await last(events),
                                     payload.get("encoding_format") or "")

    return _answer(request, compute)


async def models(request: Request) -> Guarded:
    events = source(request, "list", {})

    async def compute() -> dict[str, Any]:
        return shapes.model_list(await last(events))

    return _answer(request, compute)


async def model(request: Request) -> Guarded:
    name = request.path_params["model"]
    events = source(request, "show", {"name": name})

    async def compute() -> dict[str, Any]:
        return shapes.model_object(name, (await last(events)).get("modified_at", ""))

    return _answer(request, compute)


def routes() -> list[Route]:
    return [
        route("/v1/chat/completions", chat_completions, ["POST"]),
        route("/v1/completions", completions, ["POST"]),
        route("/v1/embeddings", embeddings, ["POST"]),
        route("/v1/models", models, ["GET"]),
        route("/v1/models/{model}", model, ["GET"]),
    ]
