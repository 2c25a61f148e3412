"""Text output as the ollama CLI prints it: sizes, relative times, tables, ``show``'s summary."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

_UNITS = (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("KB", 10**3))


def human_bytes(size: int) -> str:
    """Decimal units: ``4.7 GB``, ``934 MB``, ``12 B``."""
    for unit, scale in _UNITS:
        if size >= scale:
            value = size / scale
            if value >= 10 or value == math.trunc(value):
                return f"{int(value)} {unit}"
            return f"{value:.1f} {unit}"
    return f"{size} B"


def _human_duration(seconds: float) -> str:
    whole = int(seconds)
    if whole < 1:
        return "Less than a second"
    if whole == 1:
        return "1 second"
    if whole < 60:
        return f"{whole} seconds"
    minutes = whole // 60
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    # Go's math.Round rounds halves away from zero; Python's round() would go to even.
    hours = math.floor(seconds / 3600 + 0.5)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(seconds // 3600) // 24 // 365} years"


_GO_ZERO_TIME = datetime(1, 1, 1, tzinfo=UTC)
_FRACTION = re.compile(r"(\.\d{1,6})\d*")


def parse_time(text: str) -> datetime:
    """RFC3339 with up to nanoseconds (Python keeps microseconds)."""
    text = _FRACTION.sub(r"\1", text.replace("Z", "+00:00"), count=1)
    return datetime.fromisoformat(text)


def human_time(stamp: str, now: datetime | None = None, zero: str = "Never") -> str:
    """``2 hours ago``, ``4 minutes from now``, ``Forever`` (far future), ``zero`` for Go's zero."""
    when = parse_time(stamp)
    if when == _GO_ZERO_TIME:
        return zero
    delta = ((now or datetime.now(UTC)) - when).total_seconds()
    if int(delta / 3600) // 24 // 365 < -20:
        return "Forever"
    if delta < 0:
        return _human_duration(-delta) + " from now"
    return _human_duration(delta) + " ago"


def table(rows: Iterable[Sequence[str]], padding: str = "    ") -> str:
    """Left-aligned columns separated by ``padding``, the last followed by one space."""
    rows = [list(row) for row in rows]
    if not rows:
        return ""
    columns = max(len(row) for row in rows)
    widths = [max((len(row[i]) for row in rows if i < len(row)), default=0)
              for i in range(columns)]
    lines = []
    for row in rows:
        cells = [(row[i] if i < len(row) else "").ljust(widths[i]) for i in range(columns)]
        lines.append(padding.join(cells) + " ")
    return "\n".join(lines) + "\n"


def model_list(models: list[dict[str, Any]], prefix: str = "") -> str:
    rows = [["NAME", "ID", "SIZE", "MODIFIED"]]
    for model in models:
        if model["name"].lower().startswith(prefix.lower()):
            rows.append([model["name"], model["digest"][:12], human_bytes(model["size"]),
                         human_time(model["modified_at"])])
    return table(rows)


def _section(header: str, rows: list[list[str]]) -> str:
    return f"  {header}\n" + table(rows) + "\n"


def _head(text: str, count: int) -> list[list[str]]:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    rows = [["", line] for line in lines[:count]]
    if len(lines) > count:
        rows.append(["", "..."])
    return rows


def _number(value: Any) -> str:
    # Like Go's FormatFloat(v, 'f', -1, 64): no exponent, no trailing ".0".
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def show_summary(info: dict[str, Any]) -> str:
    """``ollama show MODEL`` without flags: model, capabilities, parameters, system, license."""
    details = info.get("details") or {}
    model_info = info.get("model_info") or {}
    rows: list[list[str]] = []
    arch = model_info.get("general.architecture", "")
    if arch:
        rows.append(["", "architecture", arch])
    if details.get("parameter_size"):
        rows.append(["", "parameters", details["parameter_size"]])
    for key, label in (("context_length", "context length"),
                       ("embedding_length", "embedding length")):
        if f"{arch}.{key}" in model_info:
            rows.append(["", label, _number(model_info[f"{arch}.{key}"])])
    rows.append(["", "quantization", details.get("quantization_level", "")])
    out = _section("Model", rows)
    if info.get("capabilities"):
        out += _section("Capabilities", [["", cap] for cap in info["capabilities"]])
    if info.get("parameters"):
        out += _section("Parameters", [["", *line.split()]
                                       for line in info["parameters"].splitlines() if line])
    if info.get("system"):
        out += _section("System", _head(info["system"], 2))
    if info.get("license"):
        out += _section("License", _head(info["license"], 2))
    return out


def processor(size: int, size_vram: int) -> str:
    """Where a loaded model lives, as ``ollama ps`` puts it."""
    if size_vram == 0:
        return "100% CPU"
    if size_vram == size:
        return "100% GPU"
    if size_vram > size or size == 0:
        return "Unknown"
    # Go's math.Round: halves away from zero.
    cpu = math.floor((size - size_vram) / size * 100 + 0.5)
    return f"{cpu}%/{100 - cpu}% CPU/GPU"


def running_models(models: list[dict[str, Any]], prefix: str = "",
                   now: datetime | None = None) -> str:
    """``ollama ps``: NAME ID SIZE PROCESSOR CONTEXT UNTIL."""
    now = now or datetime.now(UTC)
    rows = [["NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT", "UNTIL"]]
    for model in models:
        if not model["name"].startswith(prefix):
            continue
        expires = model.get("expires_at", "")
        if expires and parse_time(expires) < now:
            until = "Stopping..."
        else:
            until = human_time(expires, now) if expires else "Never"
        size = model.get("size", 0)
        rows.append([model["name"], model.get("digest", "")[:12], human_bytes(size),
                     processor(size, model.get("size_vram", 0)),
                     str(model.get("context_length", 0)), until])
    return table(rows)


def _fraction(value: int, scale: int) -> str:
    whole, rest = divmod(value, scale)
    digits = str(rest).rjust(len(str(scale)) - 1, "0").rstrip("0")
    return f"{whole}.{digits}" if digits else str(whole)


def go_duration(nanoseconds: int) -> str:
    """Go's ``time.Duration.String``: ``1.5s``, ``2m3.004s``, ``450.2ms``, ``0s``."""
    if nanoseconds == 0:
        return "0s"
    sign, value = ("-" if nanoseconds < 0 else ""), abs(nanoseconds)
    if value < 1_000:
        return f"{sign}{value}ns"
    if value < 1_000_000:
        return f"{sign}{_fraction(value, 1_000)}µs"
    if value < 1_000_000_000:
        return f"{sign}{_fraction(value, 1_000_000)}ms"
    hours, rest = divmod(value, 3600 * 10**9)
    minutes, rest = divmod(rest, 60 * 10**9)
    seconds = _fraction(rest, 10**9) + "s"
    if hours:
        return f"{sign}{hours}h{minutes}m{seconds}"
    if minutes:
        return f"{sign}{minutes}m{seconds}"
    return sign + seconds


def metrics_summary(final: dict[str, Any]) -> str:
    """The ``--verbose`` timings of a generate or chat reply (Ollama's ``Metrics.Summary``)."""
    lines = []
    total, load = final.get("total_duration", 0), final.get("load_duration", 0)
    prompt_count, prompt_time = final.get("prompt_eval_count", 0), \
        final.get("prompt_eval_duration", 0)
    count, eval_time = final.get("eval_count", 0), final.get("eval_duration", 0)
    if total > 0:
        lines.append(f"total duration:       {go_duration(total)}")
    if load > 0:
        lines.append(f"load duration:        {go_duration(load)}")
    if prompt_count > 0:
        lines.append(f"prompt eval count:    {prompt_count} token(s)")
    if prompt_time > 0:
        lines.append(f"prompt eval duration: {go_duration(prompt_time)}")
        lines.append(f"prompt eval rate:     {prompt_count / (prompt_time / 1e9):.2f} tokens/s")
    if count > 0:
        lines.append(f"eval count:           {count} token(s)")
    if eval_time > 0:
        lines.append(f"eval duration:        {go_duration(eval_time)}")
        lines.append(f"eval rate:            {count / (eval_time / 1e9):.2f} tokens/s")
    return "".join(line + "\n" for line in lines)
