"""Response bodies and content types byte-for-byte as Ollama's server writes them."""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from ollamad import gojson

# gin's c.JSON; a stream's error before its first line and waitForStream use the bare type.
JSON = "application/json; charset=utf-8"
BARE_JSON = "application/json"
NDJSON = "application/x-ndjson"
SSE = "text/event-stream"
TEXT = "text/plain; charset=utf-8"
GIN_TEXT = "text/plain"  # gin's own 404/405 bodies carry no charset


def raw(body: bytes | str, status: int = 200, content_type: str | None = None,
        headers: dict[str, str] | None = None) -> Response:
    """A response whose Content-Type is exactly ``content_type`` (Starlette would add a charset
    to text types)."""
    all_headers = dict(headers or {})
    if content_type is not None:
        all_headers["content-type"] = content_type
    return Response(body, status_code=status, headers=all_headers)


def json(obj: Any, status: int = 200, content_type: str = JSON, newline: bool = False) -> Response:
    """Go's json.Marshal (no newline, as gin writes it) or json.Encoder (newline)."""
    text = gojson.dumps(obj) + ("\n" if newline else "")
    return raw(text, status, content_type)


def ollama_error(status: int, message: str, content_type: str = JSON) -> Response:
    return json({"error": message}, status, content_type)


def openai_error_body(status: int, message: str) -> dict[str, Any]:
    kind = {400: "invalid_request_error", 404: "not_found_error"}.get(status, "api_error")
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


def openai_error(status: int, message: str, newline: bool = True) -> Response:
    """The OpenAI envelope. Ollama's response writers encode it with a newline and the bare
    type; its request middlewares (bad JSON) go through gin's c.JSON: no newline, charset."""
    return json(openai_error_body(status, message), status,
                BARE_JSON if newline else JSON, newline)


def empty(status: int = 200) -> Response:
    return Response(b"", status_code=status)
