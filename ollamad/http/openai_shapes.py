"""Ollama's events shaped as OpenAI's answers: chat.completion and text_completion objects,
their SSE chunks, embedding lists and model objects, as Ollama's response writers shape them
(middleware/openai.go). Pure functions and small stream writers, no I/O.
"""

from __future__ import annotations

import base64
import re
import struct
import time
from datetime import datetime
from typing import Any

from starlette.responses import Response

from ollamad import gojson
from ollamad.errors import InvalidName
from ollamad.http import responses
from ollamad.store import ModelName

Event = dict[str, Any]
FINGERPRINT = "fp_ollama"

def _usage(event: Event) -> dict[str, int]:
    prompt, generated = event.get("prompt_eval_count", 0), event.get("eval_count", 0)
    return {"prompt_tokens": prompt, "completion_tokens": generated,
            "total_tokens": prompt + generated}


def _reason(event: Event) -> str | None:
    return event.get("done_reason") or None


def openai_tool_calls(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"id": call.get("id", ""), "index": (call.get("function") or {}).get("index", 0),
             "type": "function",
             "function": {"name": (call.get("function") or {}).get("name", ""),
                          "arguments": gojson.dumps((call.get("function") or {})
                                                    .get("arguments", {}))}}
            for call in calls]


def _logprobs(event: Event) -> dict[str, Any]:
    return {"logprobs": {"content": event["logprobs"]}} if event.get("logprobs") else {}


def chat_completion(completion_id: str, final: Event) -> dict[str, Any]:
    message = final.get("message") or {}
    calls = openai_tool_calls(message.get("tool_calls") or [])
    reply: dict[str, Any] = {"role": message.get("role", "assistant"),
                             "content": message.get("content", "")}
    if message.get("thinking"):
        reply["reasoning"] = message["thinking"]
    if calls:
        reply["tool_calls"] = calls
    reason = _reason(final)
    if reason == "stop" and calls:
        reason = "tool_calls"
    out = {"id": completion_id, "object": "chat.completion", "created": int(time.time()),
           "model": final.get("model", ""), "system_fingerprint": FINGERPRINT,
           "choices": [{"index": 0, "message": reply, "finish_reason": reason,
                        **_logprobs(final)}],
           "usage": _usage(final)}
    if final.get("_debug_info"):
        out["_debug_info"] = final["_debug_info"]
    return out


def completion(completion_id: str, final: Event) -> dict[str, Any]:
    return {"id": completion_id, "object": "text_completion", "created": int(time.time()),
            "model": final.get("model", ""), "system_fingerprint": FINGERPRINT,
            "choices": [{"text": final.get("response", ""), "index": 0,
                         "finish_reason": _reason(final), **_logprobs(final)}],
            "usage": _usage(final)}


def _sse(obj: Any) -> bytes:
    return f"data: {gojson.dumps(obj)}\n\n".encode()


DONE = b"data: [DONE]\n\n"


class _SSE:
    content_type = responses.SSE

    def error(self, message: str) -> bytes:
        # Ollama has no way to report a failure inside an SSE stream; OpenAI sends the envelope.
        return _sse(responses.openai_error_body(500, message))

    def end(self) -> bytes:
        return b""

    def failure(self, status: int, message: str) -> Response:
        return responses.openai_error(status, message)


class ChatChunks(_SSE):
    """chat.completion.chunk events: a role on the first, a separate finish chunk with an empty
    delta, an optional usage chunk, then ``[DONE]``; one ``created`` for the whole stream."""

    def __init__(self, completion_id: str, include_usage: bool) -> None:
        self.id = completion_id
        self.include_usage = include_usage
        self.created: int | None = None
        self.first_sent = False
        self.tool_call_sent = False

    def _chunk(self, event: Event, delta: dict[str, Any], reason: str | None = None,
               logprobs: bool = True) -> dict[str, Any]:
        assert self.created is not None
        choice = {"index": 0, "delta": delta, "finish_reason": reason}
        if logprobs:
            choice |= _logprobs(event)
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                "model": event.get("model", ""), "system_fingerprint": FINGERPRINT,
                "choices": [choice]}

    def event(self, event: Event) -> list[bytes]:
        if self.created is None:
            self.created = int(time.time())
        message = event.get("message") or {}
        content, thinking = message.get("content", ""), message.get("thinking", "")
        calls = openai_tool_calls(message.get("tool_calls") or [])
        out: list[bytes] = []
        trailer = event.get("done") and self.first_sent and not (
            content or thinking or calls or event.get("logprobs"))
        if not trailer:
            role = {"role": "assistant"} if not self.first_sent else {}
            if thinking and (content or calls):
                # Reasoning and content in one event become two chunks, reasoning first.
                out.append(_sse(self._chunk(event, role | {"reasoning": thinking})))
                out.append(_sse(self._chunk(event, _delta({}, content, "", calls),
                                            logprobs=False)))
            else:
                out.append(_sse(self._chunk(event, _delta(role, content, thinking, calls))))
            self.tool_call_sent = self.tool_call_sent or bool(calls)
            self.first_sent = True
        if event.get("done"):
            reason = event.get("done_reason") or "stop"
            if reason == "stop" and self.tool_call_sent:
                reason = "tool_calls"
            finish = self._chunk(event, {}, reason, logprobs=False)
            out.append(_sse(finish))
            if self.include_usage:
                out.append(_sse(finish | {"choices": [], "usage": _usage(event)}))
            out.append(DONE)
        return out


def _delta(base: dict[str, Any], content: str, thinking: str,
           calls: list[dict[str, Any]]) -> dict[str, Any]:
    delta = base | {"content": content}
    if thinking:
        delta["reasoning"] = thinking
    if calls:
        delta["tool_calls"] = calls
    return delta


class CompletionChunks(_SSE):
    """text_completion chunks, one per generate event (the last carries the finish reason)."""

    def __init__(self, completion_id: str, include_usage: bool) -> None:
        self.id = completion_id
        self.include_usage = include_usage

    def event(self, event: Event) -> list[bytes]:
        chunk: dict[str, Any] = {
            "id": self.id, "object": "text_completion", "created": int(time.time()),
            "choices": [{"text": event.get("response", ""), "index": 0,
                         "finish_reason": _reason(event), **_logprobs(event)}],
            "model": event.get("model", ""), "system_fingerprint": FINGERPRINT}
        if self.include_usage:
            # Ollama marks every chunk with an empty usage when usage is asked for.
            chunk["usage"] = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        out = [_sse(chunk)]
        if event.get("done"):
            if self.include_usage:
                out.append(_sse(chunk | {"choices": [], "usage": _usage(event)}))
            out.append(DONE)
        return out


def embedding_list(model: str, event: Event, encoding: str) -> dict[str, Any]:
    vectors = event.get("embeddings")
    if vectors is None:
        return {"object": "", "data": None, "model": "",
                "usage": {"prompt_tokens": 0, "total_tokens": 0}}
    data = [{"object": "embedding",
             "embedding": _base64(vector) if encoding.lower() == "base64" else vector,
             "index": index} for index, vector in enumerate(vectors)]
    tokens = event.get("prompt_eval_count", 0)
    return {"object": "list", "data": data or None, "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


def _base64(vector: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def _unix(stamp: str) -> int:
    """Seconds of an RFC 3339 time as Go writes it (up to nine fraction digits)."""
    try:
        return int(datetime.fromisoformat(re.sub(r"\.\d+", "", stamp)).timestamp())
    except ValueError:
        return 0


def _owner(name: str) -> str:
    try:
        return ModelName.parse(name).namespace
    except InvalidName:
        return ""


def model_object(name: str, modified_at: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": _unix(modified_at),
            "owned_by": _owner(name)}


def model_list(event: Event) -> dict[str, Any]:
    data = [model_object(m.get("model") or m.get("name", ""), m.get("modified_at", ""))
            for m in event.get("models") or []]
    return {"object": "list", "data": data or None}
