"""Durations as Ollama reads them: Go duration strings (``1h30m``), seconds, and keep_alive."""

from __future__ import annotations

import math
import re

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0,
          "h": 3600.0}
_TERM = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_NUMBER = re.compile(r"\d+(?:\.\d*)?|\.\d+")
FOREVER = math.inf


def parse_go_duration(text: str) -> float:
    """Seconds from a Go duration string (``300ms``, ``-1m``, ``0``). Raises ValueError."""
    body = text.strip()
    sign = -1.0 if body.startswith("-") else 1.0
    body = body[1:] if body[:1] in "+-" else body
    if body == "0":
        return 0.0
    pos, total = 0, 0.0
    while pos < len(body):
        match = _TERM.match(body, pos)
        if match is None:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if not body or pos != len(body):
        # Go's wording, which Ollama passes on to the client.
        rest = _NUMBER.match(body, pos)
        if rest and rest.end() == len(body):
            raise ValueError(f'time: missing unit in duration "{text}"')
        if rest and rest.end() > pos:
            unit = re.match(r"[^0-9.]*", body[rest.end():])
            raise ValueError(f'time: unknown unit "{unit.group() if unit else ""}" in '
                             f'duration "{text}"')
        raise ValueError(f'time: invalid duration "{text}"')
    return sign * total


def parse_duration(value: object) -> float:
    """Seconds from a number, a numeric string (seconds) or a Go duration (for CLI and env)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"invalid duration {value!r}")
    try:
        return float(value.strip())
    except ValueError:
        return parse_go_duration(value)


def parse_keep_alive(value: object) -> float:
    """A request's keep_alive: number = seconds, string = Go duration, negative = forever.

    Raises ValueError, as Ollama answers 400 for unit-less strings like ``"300"``.
    """
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        seconds = parse_go_duration(value)
    else:
        raise ValueError(f"invalid keep_alive {value!r}")
    return FOREVER if seconds < 0 else seconds
