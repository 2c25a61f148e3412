"""Request bodies read as Ollama's Go handlers read them, with the Go decoder's error messages.

gin's ``ShouldBindJSON`` runs Go's ``json.Decoder``: an empty body is ``io.EOF`` (Ollama answers
"missing request body"), a syntax error names the offending character, a value of the wrong type
names the struct field, keys match fields case-insensitively, and whatever follows the first
JSON value is ignored. The service checks meaning; this only reproduces the decoder.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request

from ollamad.http.status import HTTPProblem


class MissingBody(HTTPProblem):
    def __init__(self) -> None:
        super().__init__(400, "missing request body")


@dataclass(frozen=True)
class Kind:
    """A Go field type: its name in messages and the JSON values it takes (null always fits)."""

    go: str
    accepts: tuple[type, ...]
    element: Kind | None = None  # for slices: the element's kind


STRING = Kind("string", (str,))
BOOL = Kind("bool", (bool,))
INT = Kind("int", (int, float))  # a fraction is refused below, with its value
FLOAT = Kind("float64", (int, float))
FLOAT32 = Kind("float32", (int, float))
OBJECT = Kind("map[string]interface {}", (dict,))
STRING_MAP = Kind("map[string]string", (dict,))
STRINGS = Kind("[]string", (list,), STRING)
INTS = Kind("[]int", (list,), INT)
MESSAGES = Kind("[]api.Message", (list,), Kind("api.Message", (dict,)))
TOOLS = Kind("api.Tools", (list,), Kind("api.Tool", (dict,)))


@dataclass(frozen=True)
class Struct:
    """A Go request struct: ``api.GenerateRequest`` and its typed fields (others pass as is)."""

    name: str
    fields: dict[str, Kind] = field(default_factory=dict)

    @property
    def short(self) -> str:
        return self.name.rpartition(".")[2]


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refused with 413 beyond ``limit`` bytes (before reading, if it says so)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise HTTPProblem(413, f"request body larger than {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPProblem(413, f"request body larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def body_stream(request: Request) -> AsyncIterator[bytes]:
    async for chunk in request.stream():
        if chunk:
            yield chunk


async def read_json(request: Request, struct: Struct, limit: int) -> dict[str, Any]:
    return decode(await read_body(request, limit), struct)


def decode(data: bytes, struct: Struct) -> dict[str, Any]:
    """The request object; HTTPProblem(400) with Go's wording when it is not one."""
    # Go's decoder replaces invalid UTF-8 rather than failing.
    text = data.decode("utf-8", errors="replace")
    start = len(text) - len(text.lstrip(" \t\r\n"))
    if start == len(text):
        raise MissingBody()
    try:
        value, _ = _DECODER.raw_decode(text, start)
    except json.JSONDecodeError as exc:
        raise HTTPProblem(400, syntax_message(exc)) from None
    except RecursionError:
        # Go's decoder has a depth limit too (10000); ours is Python's recursion limit.
        raise HTTPProblem(400, "exceeded max depth") from None
    except _BadConstant as exc:
        raise HTTPProblem(400, f"invalid character {quote_char(exc.first)} looking for "
                               "beginning of value") from None
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise HTTPProblem(400, f"json: cannot unmarshal {_json_kind(value)} into Go value of "
                               f"type {struct.name}")
    return _check_fields(value, struct)


class _BadConstant(ValueError):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.first = name.lstrip("-")[:1]


def _reject_constant(name: str) -> Any:
    raise _BadConstant(name)  # NaN and Infinity are not JSON to Go


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def _check_fields(value: dict[str, Any], struct: Struct) -> dict[str, Any]:
    by_lower = {name.lower(): name for name in struct.fields}
    out: dict[str, Any] = {}
    first_error: str | None = None
    for key, item in value.items():
        name = key if key in struct.fields else by_lower.get(key.lower(), key)
        kind = struct.fields.get(name)
        if kind is not None and (problem := _type_problem(item, kind)) is not None:
            # Go decodes on after a type error and reports the first one.
            first_error = first_error or (f"json: cannot unmarshal {problem[0]} into Go struct "
                                          f"field {struct.short}.{name} of type {problem[1]}")
            continue
        out[name] = item
    if first_error is not None:
        raise HTTPProblem(400, first_error)
    return out


def _type_problem(item: Any, kind: Kind) -> tuple[str, str] | None:
    """(what arrived, what Go wanted) when ``item`` does not fit ``kind``."""
    if item is None:
        return None
    if isinstance(item, bool) and bool not in kind.accepts:
        return "bool", kind.go
    if not isinstance(item, kind.accepts):
        return _json_kind(item), kind.go
    if kind.go == "int" and isinstance(item, float):
        return f"number {item!r}", kind.go
    if kind.element is not None:
        for element in item:
            if (problem := _type_problem(element, kind.element)) is not None:
                return problem
    return None


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def quote_char(char: str) -> str:
    """Go's ``quoteChar``: the byte that broke the syntax, quoted as Go's error shows it."""
    if not char:
        return "''"
    byte = char.encode("utf-8")[0]
    c = chr(byte)  # Go formats the single byte, Latin-1 style
    if c == "'":
        return "'\\''"
    if c == '"':
        return "'\"'"
    escapes = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t",
               "\v": "\\v", "\\": "\\\\"}
    if c in escapes:
        return f"'{escapes[c]}'"
    if c.isprintable():
        return f"'{c}'"
    if byte < 0x20 or byte == 0x7F:
        return f"'\\x{byte:02x}'"
    return f"'\\u{byte:04x}'"


def syntax_message(exc: json.JSONDecodeError) -> str:
    """Python's decoder error in the Go decoder's words."""
    text, pos = exc.doc, exc.pos
    if pos >= len(text) or exc.msg.startswith("Unterminated string"):
        return "unexpected EOF"
    char = quote_char(text[pos])
    msg = exc.msg
    if msg == "Expecting value":
        literal = {"t": "true", "f": "false", "n": "null"}.get(text[pos])
        if literal is not None:
            # A misspelt literal: Go names the first wrong character and the one it expected.
            for offset, expected in enumerate(literal):
                if pos + offset >= len(text):
                    return "unexpected EOF"
                if text[pos + offset] != expected:
                    return (f"invalid character {quote_char(text[pos + offset])} in literal "
                            f"{literal} (expecting {quote_char(expected)})")
        return f"invalid character {char} looking for beginning of value"
    if msg.startswith("Expecting property name"):
        return f"invalid character {char} looking for beginning of object key string"
    if msg == "Expecting ':' delimiter":
        return f"invalid character {char} after object key"
    if msg == "Expecting ',' delimiter":
        where = "object key:value pair" if _innermost(text, pos) == "{" else "array element"
        return f"invalid character {char} after {where}"
    if msg.startswith("Invalid control character"):
        return f"invalid character {char} in string literal"
    if msg.startswith("Invalid \\"):
        # Python points at the backslash (or at the u of a \u escape), Go at the character
        # after it (or at the first bad hex digit).
        bad = pos if text[pos] == "u" else pos + 1
        if text[bad:bad + 1] == "u":
            bad += 1
            while bad < len(text) and text[bad] in "0123456789abcdefABCDEF":
                bad += 1
        if bad >= len(text):
            return "unexpected EOF"
        return f"invalid character {quote_char(text[bad])} in string escape code"
    return msg


def _innermost(text: str, pos: int) -> str:
    """The bracket of the innermost object or array open at ``pos``."""
    stack: list[str] = []
    in_string = escaped = False
    for char in text[:pos]:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            stack.append(char)
        elif char in "]}" and stack:
            stack.pop()
    return stack[-1] if stack else ""
