"""``stream: false`` for generate and chat: the stream folded into one object as Ollama folds it.

The last event supplies everything (done, done_reason, context, the metrics); the text and the
thinking are the concatenation of every event's, and a chat collects every tool call.
"""

from __future__ import annotations

import contextlib
from typing import Any

from ollamad.http.streaming import Event, EventSource, tapped


async def generate(source: EventSource) -> Event:
    final: Event = {}
    text, thinking, logprobs = [], [], []
    async with contextlib.aclosing(tapped(source())) as events:
        async for event in events:
            text.append(event.get("response", ""))
            thinking.append(event.get("thinking", ""))
            logprobs += event.get("logprobs") or []
            final = event
    return _rebuilt(final, "response", "".join(text), "".join(thinking), logprobs)


async def chat(source: EventSource) -> Event:
    final: Event = {}
    text, thinking, logprobs = [], [], []
    calls: list[dict[str, Any]] = []
    async with contextlib.aclosing(tapped(source())) as events:
        async for event in events:
            message = event.get("message") or {}
            text.append(message.get("content", ""))
            thinking.append(message.get("thinking", ""))
            calls += message.get("tool_calls") or []
            logprobs += event.get("logprobs") or []
            final = event
    message = {"role": (final.get("message") or {}).get("role", "assistant"),
               "content": "".join(text)}
    if joined := "".join(thinking):
        message["thinking"] = joined
    if calls:
        message["tool_calls"] = calls
    return _rebuilt(final, "message", message, "", logprobs)


def _rebuilt(final: Event, key: str, value: Any, thinking: str,
             logprobs: list[Any]) -> Event:
    """``final`` with ``key`` replaced in place (Go's field order), then the optional fields."""
    out: Event = {}
    for name, item in final.items():
        if name in ("thinking", "logprobs"):
            continue
        out[name] = value if name == key else item
        if name == key and thinking:
            out["thinking"] = thinking
    if logprobs:
        out["logprobs"] = logprobs
    return out
