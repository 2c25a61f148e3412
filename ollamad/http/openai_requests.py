"""OpenAI requests mapped to the arguments of Ollama's chat, generate and embed operations,
as Ollama's compatibility layer maps them (openai/openai.go), with its defaults (temperature and
top_p 1.0) and its error messages.

Beyond Ollama: a request may carry ``options`` (any Ollama option, e.g. ``num_ctx``), a
top-level ``num_ctx`` and ``keep_alive``; with the ``openai`` client that is
``extra_body={"options": {"num_ctx": 8192}}`` or ``extra_body={"num_ctx": 8192}``. The OpenAI
fields win over ``options`` (``max_tokens`` over ``options.num_predict``).
"""

from __future__ import annotations

import base64
import binascii
import json
import random
from typing import Any

from ollamad.http.jsonbody import (
    BOOL,
    FLOAT,
    FLOAT32,
    INT,
    OBJECT,
    STRING,
    TOOLS,
    Kind,
    Struct,
)
from ollamad.http.status import HTTPProblem

_EXTENSIONS = {"options": OBJECT, "num_ctx": INT}
CHAT_REQUEST = Struct("openai.ChatCompletionRequest", _EXTENSIONS | {
    "model": STRING, "messages": Kind("[]openai.Message", (list,),
                                      Kind("openai.Message", (dict,))),
    "stream": BOOL, "stream_options": OBJECT, "max_tokens": INT, "seed": INT,
    "temperature": FLOAT, "frequency_penalty": FLOAT, "presence_penalty": FLOAT, "top_p": FLOAT,
    "response_format": OBJECT, "tools": TOOLS, "reasoning": OBJECT, "reasoning_effort": STRING,
    "logprobs": BOOL, "top_logprobs": INT, "_debug_render_only": BOOL})
COMPLETION_REQUEST = Struct("openai.CompletionRequest", _EXTENSIONS | {
    "model": STRING, "prompt": STRING, "frequency_penalty": FLOAT32, "max_tokens": INT,
    "presence_penalty": FLOAT32, "seed": INT, "stream": BOOL, "stream_options": OBJECT,
    "temperature": FLOAT32, "top_p": FLOAT32, "suffix": STRING, "logprobs": INT,
    "_debug_render_only": BOOL})
EMBED_REQUEST = Struct("openai.EmbedRequest", _EXTENSIONS | {
    "model": STRING, "dimensions": INT, "encoding_format": STRING})
_IMAGE_PREFIXES = tuple(f"data:image/{kind};base64," for kind in ("jpeg", "jpg", "png", "webp"))
_REASONING = {"none": False, "minimal": "low", "low": "low", "medium": "medium", "high": "high",
              "max": "max", "xhigh": "max", "ultra": "max"}


def bad(message: str) -> HTTPProblem:
    return HTTPProblem(400, message)


def new_id(prefix: str) -> str:
    # Ollama's ids are this short random number; clients treat them as opaque.
    return f"{prefix}-{random.randrange(999)}"


def _options(body: dict[str, Any], mapped: dict[str, Any]) -> dict[str, Any]:
    """Ollama's defaults for OpenAI requests, then the ``options`` extension, then the fields."""
    options: dict[str, Any] = {"temperature": 1.0, "top_p": 1.0}
    options |= body.get("options") or {}
    if body.get("num_ctx") is not None:
        options["num_ctx"] = body["num_ctx"]
    return options | mapped


def _passthrough(body: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
    if "keep_alive" in body:
        args["keep_alive"] = body["keep_alive"]
    return args


def _stop(value: Any, strict: bool) -> list[str] | None:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        stops = []
        for item in value:
            if isinstance(item, str):
                stops.append(item)
            elif strict:
                raise bad(f"invalid type for 'stop' field: {_go_type(item)}")
        return stops
    return None


def _go_type(value: Any) -> str:
    return {bool: "bool", int: "float64", float: "float64", str: "string", list: "[]interface {}",
            dict: "map[string]interface {}"}.get(type(value), "<nil>")


def _image(url: str) -> str:
    """A data URI's base64 payload, checked as Ollama checks it."""
    if url.startswith(("http://", "https://")):
        raise bad("image URLs are not currently supported, please use base64 encoded data "
                  "instead")
    if url.startswith("data:;base64,"):
        payload = url.removeprefix("data:;base64,")
    elif url.startswith(_IMAGE_PREFIXES):
        payload = url.split(",", 1)[1]
    else:
        raise bad("invalid image input")
    try:
        base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise bad("invalid image input") from None
    return payload


def _tool_calls(calls: Any) -> list[dict[str, Any]]:
    out = []
    for call in calls or []:
        function = (call or {}).get("function") or {}
        try:
            arguments = json.loads(function.get("arguments") or "")
        except (TypeError, ValueError):
            arguments = None
        if not isinstance(arguments, dict):
            raise bad("invalid tool call arguments")
        out.append({"id": call.get("id", ""), "function": {"name": function.get("name", ""),
                                                           "arguments": arguments}})
    return out


def _tool_name(messages: list[dict[str, Any]], call_id: str) -> str:
    for message in reversed(messages):
        for call in message.get("tool_calls") or []:
            if call.get("id") == call_id:
                return (call.get("function") or {}).get("name", "")
    return ""


def _message_fields(message: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """An Ollama message with Go's omitempty: empty fields left out."""
    out: dict[str, Any] = {"role": message.get("role", ""), **fields}
    return {k: v for k, v in out.items() if k in ("role", "content") or v}


def _messages(raw: list[dict[str, Any]]) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    for message in raw:
        if not isinstance(message, dict):
            raise bad("json: cannot unmarshal a message that is not an object")
        role = message.get("role", "")
        tool_name = ""
        if isinstance(role, str) and role.lower() == "tool":
            tool_name = message.get("name") or (
                _tool_name(raw, message["tool_call_id"]) if message.get("tool_call_id") else "")
        content = message.get("content")
        reasoning, call_id = message.get("reasoning", ""), message.get("tool_call_id", "")
        if isinstance(content, str):
            messages.append(_message_fields(
                message, content=content, thinking=reasoning,
                tool_calls=_tool_calls(message.get("tool_calls")), tool_name=tool_name,
                tool_call_id=call_id))
        elif isinstance(content, list):
            added = len(messages)
            for part in content:
                messages.append(_part(message, part))
            if len(messages) > added and message.get("tool_calls"):
                messages[-1] |= {k: v for k, v in {
                    "tool_calls": _tool_calls(message["tool_calls"]), "tool_name": tool_name,
                    "tool_call_id": call_id, "thinking": reasoning}.items() if v}
        elif message.get("tool_calls") is None:
            raise bad(f"invalid message content type: {_content_type(content)}")
        else:
            messages.append(_message_fields(
                message, content="", thinking=reasoning,
                tool_calls=_tool_calls(message["tool_calls"]), tool_call_id=call_id))
    return messages


def _content_type(content: Any) -> str:
    return "<nil>" if content is None else _go_type(content)


def _part(message: dict[str, Any], part: Any) -> dict[str, Any]:
    if not isinstance(part, dict):
        raise bad("invalid message format")
    kind = part.get("type")
    if kind == "text":
        if not isinstance(part.get("text"), str):
            raise bad("invalid message format")
        return _message_fields(message, content=part["text"])
    if kind == "image_url":
        url = part.get("image_url")
        if isinstance(url, dict):
            url = url.get("url")
        if not isinstance(url, str):
            raise bad("invalid message format")
        return _message_fields(message, content="", images=[_image(url)])
    if kind == "input_audio":
        audio = part.get("input_audio")
        if not isinstance(audio, dict):
            raise bad("invalid input_audio format")
        if not isinstance(audio.get("data"), str):
            raise bad("invalid input_audio format: missing data")
        try:
            base64.b64decode(audio["data"], validate=True)
        except (binascii.Error, ValueError) as exc:
            raise bad(f"invalid input_audio base64 data: {exc}") from None
        return _message_fields(message, content="", images=[audio["data"]])
    raise bad("invalid message format")


def _think(body: dict[str, Any]) -> bool | str | None:
    effort = (body.get("reasoning") or {}).get("effort") or body.get("reasoning_effort") or ""
    if not effort:
        return None
    if effort not in _REASONING:
        raise bad(f'invalid reasoning value: "{effort}" (must be "minimal", "low", "medium", '
                  f'"high", "xhigh", "ultra", "max", or "none")')
    return _REASONING[effort]


def _format(response_format: Any) -> Any:
    if not isinstance(response_format, dict):
        return None
    kind = str(response_format.get("type", "")).strip().lower()
    if kind == "json_object":
        return "json"
    if kind == "json_schema":
        return (response_format.get("json_schema") or {}).get("schema")
    return None


def chat_args(body: dict[str, Any]) -> dict[str, Any]:
    if not body.get("messages"):
        raise bad("[] is too short - 'messages'")
    mapped: dict[str, Any] = {}
    if (stops := _stop(body.get("stop"), strict=False)) is not None:
        mapped["stop"] = stops
    for field, option in (("max_tokens", "num_predict"), ("temperature", "temperature"),
                          ("seed", "seed"), ("frequency_penalty", "frequency_penalty"),
                          ("presence_penalty", "presence_penalty"), ("top_p", "top_p")):
        if body.get(field) is not None:
            mapped[option] = body[field]
    args: dict[str, Any] = {"model": body.get("model", ""),
                            "messages": _messages(body["messages"]),
                            "options": _options(body, mapped),
                            "stream": bool(body.get("stream"))}
    if (fmt := _format(body.get("response_format"))) is not None:
        args["format"] = fmt
    if body.get("tools"):
        args["tools"] = body["tools"]
    if (think := _think(body)) is not None:
        args["think"] = think
    if body.get("logprobs"):
        args["logprobs"] = True
        args["top_logprobs"] = body.get("top_logprobs") or 0
    if body.get("_debug_render_only"):
        args["_debug_render_only"] = True
    return _passthrough(body, args)


def completion_args(body: dict[str, Any]) -> dict[str, Any]:
    mapped: dict[str, Any] = {}
    if (stops := _stop(body.get("stop"), strict=True)) is not None:
        mapped["stop"] = stops
    for field, option in (("max_tokens", "num_predict"), ("temperature", "temperature"),
                          ("seed", "seed")):
        if body.get(field) is not None:
            mapped[option] = body[field]
    # Plain float32 fields in Ollama's struct: absent is 0, and a top_p of 0 means "unset".
    mapped["frequency_penalty"] = body.get("frequency_penalty") or 0
    mapped["presence_penalty"] = body.get("presence_penalty") or 0
    if body.get("top_p"):
        mapped["top_p"] = body["top_p"]
    args: dict[str, Any] = {"model": body.get("model", ""), "prompt": body.get("prompt") or "",
                            "options": _options(body, mapped),
                            "stream": bool(body.get("stream"))}
    if body.get("suffix"):
        args["suffix"] = body["suffix"]
    if isinstance(body.get("logprobs"), int) and body["logprobs"] > 0:
        args["logprobs"] = True
        args["top_logprobs"] = body["logprobs"]
    if body.get("_debug_render_only"):
        args["_debug_render_only"] = True
    return _passthrough(body, args)


def embed_args(body: dict[str, Any]) -> dict[str, Any]:
    encoding = body.get("encoding_format") or ""
    if encoding and encoding.lower() not in ("float", "base64"):
        raise bad(f"Invalid value for 'encoding_format' = {encoding}. Supported values: "
                  "['float', 'base64'].")
    value = body.get("input")
    if value == "":
        value = [""]
    if value is None or value == []:
        raise bad("invalid input")
    args: dict[str, Any] = {"model": body.get("model", ""), "input": value}
    if body.get("dimensions"):
        args["dimensions"] = body["dimensions"]
    if body.get("options") or body.get("num_ctx") is not None:
        args["options"] = dict(body.get("options") or {})
        if body.get("num_ctx") is not None:
            args["options"]["num_ctx"] = body["num_ctx"]
    return _passthrough(body, args)
