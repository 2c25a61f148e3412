"""Model options: Ollama's names, types and defaults; parsing from requests and Modelfiles.

Options come in two kinds. Load-time options shape the llama.cpp context, so a request that
changes one reloads the model; the rest apply per request. The effective options of a request are
the defaults, then the model's params layer, then the request's ``options``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

from ollamad.errors import BadRequest

log = logging.getLogger(__name__)

INT, FLOAT, BOOL, STRINGS = "integer", "float32", "boolean", "array"

# name -> (type, default); None as default means "decided elsewhere" (num_thread: the CPUs the
# runner may use; use_mmap: llama.cpp's choice).
OPTIONS: dict[str, tuple[str, Any]] = {
    # load time
    "num_ctx": (INT, 4096),
    "num_batch": (INT, 512),
    "num_gpu": (INT, -1),
    "main_gpu": (INT, 0),
    "use_mmap": (BOOL, None),
    "num_thread": (INT, 0),
    # per request
    "num_keep": (INT, 4),
    "seed": (INT, -1),
    "num_predict": (INT, -1),
    "top_k": (INT, 40),
    "top_p": (FLOAT, 0.9),
    "min_p": (FLOAT, 0.0),
    "typical_p": (FLOAT, 1.0),
    "repeat_last_n": (INT, 64),
    "temperature": (FLOAT, 0.8),
    "repeat_penalty": (FLOAT, 1.0),  # current Ollama; 1.1 before 2025
    "presence_penalty": (FLOAT, 0.0),
    "frequency_penalty": (FLOAT, 0.0),
    "mirostat": (INT, 0),
    "mirostat_tau": (FLOAT, 5.0),
    "mirostat_eta": (FLOAT, 0.1),
    "stop": (STRINGS, []),
}
LOAD_OPTIONS = frozenset({"num_ctx", "num_batch", "num_gpu", "main_gpu", "use_mmap", "num_thread"})
# Accepted in old Modelfiles, ignored with a warning (as Ollama does).
DEPRECATED = frozenset({"penalize_newline", "low_vram", "f16_kv", "logits_all", "vocab_only",
                        "use_mlock", "tfs_z", "numa", "num_gqa", "rope_frequency_base",
                        "rope_frequency_scale"})


def coerce(name: str, value: Any) -> Any:
    """A request's option value, typed as Ollama's JSON decoding types it. Raises BadRequest."""
    kind = OPTIONS[name][0]
    if kind == INT:
        if isinstance(value, bool) or not isinstance(value, int | float) or \
                not math.isfinite(value):
            raise BadRequest(f'option "{name}" must be of type integer')
        return int(value)
    if kind == FLOAT:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise BadRequest(f'option "{name}" must be of type float32')
        return float(value)
    if kind == BOOL:
        if not isinstance(value, bool):
            raise BadRequest(f'option "{name}" must be of type boolean')
        return value
    if not isinstance(value, list):
        raise BadRequest(f'option "{name}" must be of type array')
    if not all(isinstance(item, str) for item in value):
        raise BadRequest(f'option "{name}" must be of an array of strings')
    return list(value)


def from_map(values: Mapping[str, Any] | None) -> dict[str, Any]:
    """Validated options from a request or a params layer; unknown names are logged and dropped."""
    if values is None:
        return {}
    if not isinstance(values, Mapping):
        raise BadRequest("options must be an object")
    out = {}
    for name, value in values.items():
        if name not in OPTIONS:
            log.warning("invalid option provided: %s", name)
        elif value is not None:
            out[name] = coerce(name, value)
    return out


_TRUE = ("1", "t", "T", "TRUE", "true", "True")
_FALSE = ("0", "f", "F", "FALSE", "false", "False")


def parse_parameter(name: str, values: list[str]) -> Any:
    """A Modelfile ``PARAMETER`` (or ``/set parameter``) value from its text, typed by option."""
    if name not in OPTIONS:
        raise BadRequest(f"unknown parameter '{name}'")
    kind, text = OPTIONS[name][0], values[0]
    shown = "[" + " ".join(values) + "]"
    try:
        if kind == INT:
            return int(text, 10)
        if kind == FLOAT:
            return float(text)
    except ValueError:
        raise BadRequest(f"invalid {'int' if kind == INT else 'float'} value {shown}") from None
    if kind == BOOL:
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise BadRequest(f"invalid bool value {shown}")
    return list(values)


def defaults(context_length: int | None = None) -> dict[str, Any]:
    """Ollama's DefaultOptions, with num_ctx from ``OLLAMA_CONTEXT_LENGTH`` when set."""
    out = {name: (list(default) if isinstance(default, list) else default)
           for name, (_, default) in OPTIONS.items() if default is not None}
    if context_length:
        out["num_ctx"] = context_length
    return out

