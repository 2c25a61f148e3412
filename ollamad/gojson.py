"""JSON and timestamps byte-for-byte as Ollama's Go code writes them."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

# Go's encoder escapes these inside strings (HTML safety and JavaScript line terminators).
_GO_ESCAPES = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026",
                             "\u2028": "\\u2028", "\u2029": "\\u2029"})


def dumps(obj: Any) -> str:
    """Compact JSON with Go's escaping and key order as given (Go struct field order)."""
    # The escaped characters can only occur inside strings, so a translation of the whole text is
    # the same as escaping each string.
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).translate(_GO_ESCAPES)


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
