"""Ollama's per-request options (``options`` of a completion), checked, with Ollama's defaults.

The daemon merges a model's parameters and the request's options before it calls the runner, but
the runner still fills in what is missing so that a bare request behaves as Ollama's would. Names,
types and defaults come from the daemon's one option table, :mod:`ollamad.options`; keys the
runner does not use (load-time options such as ``num_ctx``) are ignored here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from ollamad.options import defaults, from_map

FILL_CONTEXT = -2


@dataclass(frozen=True)
class PredictOptions:
    num_keep: int = 4
    seed: int = -1
    num_predict: int = -1
    top_k: int = 40
    top_p: float = 0.9
    min_p: float = 0.0
    typical_p: float = 1.0
    repeat_last_n: int = 64
    temperature: float = 0.8
    repeat_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    mirostat: int = 0
    mirostat_tau: float = 5.0
    mirostat_eta: float = 0.1
    stop: tuple[str, ...] = ()

    @classmethod
    def from_mapping(cls, options: Mapping[str, Any] | None) -> PredictOptions:
        """Ollama's defaults under the request's options, typed by the daemon's option table.

        Raises :class:`ollamad.errors.BadRequest`, in Ollama's words, for a wrongly typed value.
        """
        merged = defaults() | from_map(options)
        values = {f.name: merged[f.name] for f in fields(cls) if f.name in merged}
        # An empty stop string would match everywhere and end every answer before it starts.
        values["stop"] = tuple(s for s in values.get("stop", ()) if s)
        return cls(**values)
