"""JSON and timestamps byte-for-byte as Ollama's Go code writes them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from ollamad.prompt.gofmt import json_float

# Go's encoder escapes these inside strings (HTML safety and JavaScript line terminators).
_GO_ESCAPES = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026",
                             "\u2028": "\\u2028", "\u2029": "\\u2029"})


def dumps(obj: Any) -> str:
    """Compact JSON with Go's escaping, Go's number format, and key order as given (Go struct
    field order; callers sort a Go map's keys themselves)."""
    if not _has_float(obj):
        # The escaped characters can only occur inside strings, so translating the whole text
        # is the same as escaping each string; and without floats Python's numbers are Go's.
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).translate(_GO_ESCAPES)
    return "".join(_encode(obj))


def _has_float(obj: Any) -> bool:
    if isinstance(obj, float):
        return True
    if isinstance(obj, dict):
        return any(_has_float(value) for value in obj.values())
    if isinstance(obj, list | tuple):
        return any(_has_float(value) for value in obj)
    return False


def _encode(obj: Any) -> Iterator[str]:
    if isinstance(obj, float):
        # Go writes 1 for 1.0 and 1e-7 for 1e-07: ES6 number formatting.
        yield json_float(obj)
    elif isinstance(obj, dict):
        yield "{"
        for index, (key, value) in enumerate(obj.items()):
            yield ("," if index else "") + _string(str(key)) + ":"
            yield from _encode(value)
        yield "}"
    elif isinstance(obj, list | tuple):
        yield "["
        for index, value in enumerate(obj):
            if index:
                yield ","
            yield from _encode(value)
        yield "]"
    elif isinstance(obj, str):
        yield _string(obj)
    else:
        yield json.dumps(obj)


def _string(text: str) -> str:
    return json.dumps(text, ensure_ascii=False).translate(_GO_ESCAPES)


def format_time(ns: int, utc: bool = False) -> str:
    """``ns`` since the epoch in Go's RFC3339Nano: local zone (or UTC), trailing zeros dropped."""
    seconds, frac = divmod(ns, 1_000_000_000)
    tz = UTC if utc else datetime.fromtimestamp(seconds).astimezone().tzinfo
    stamp = datetime.fromtimestamp(seconds, tz)
    text = stamp.strftime("%Y-%m-%dT%H:%M:%S")
    if frac:
        text += "." + f"{frac:09d}".rstrip("0")
    offset = stamp.utcoffset() or timedelta(0)
    if offset == timedelta(0):
        return text + "Z"  # Go's "Z07:00" layout writes Z for any zero offset
    minutes = int(offset.total_seconds()) // 60
    sign = "+" if minutes >= 0 else "-"
    return f"{text}{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
