"""Counters for ``/metrics``, rendered in Prometheus' text format.

Pure Python and process-wide, so that code outside the bridge (the registry client counting
downloaded bytes) can report without importing the web stack: see :func:`add_pulled_bytes`.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    def __init__(self) -> None:
        # Blob downloads may count from worker threads.
        self._lock = threading.Lock()
        self.requests: Counter[tuple[str, str, str]] = Counter()
        self.prompt_tokens: Counter[str] = Counter()
        self.completion_tokens: Counter[str] = Counter()
        self.pulled_bytes = 0

    def request(self, route: str, method: str, status: int) -> None:
        with self._lock:
            self.requests[(route, method, str(status))] += 1

    def tokens(self, event: Mapping[str, Any]) -> None:
        """Count a final event's prompt and generated tokens (other events carry neither)."""
        prompt, generated = event.get("prompt_eval_count"), event.get("eval_count")
        if not prompt and not generated:
            return
        model = str(event.get("model", ""))
        with self._lock:
            self.prompt_tokens[model] += prompt if isinstance(prompt, int) else 0
            self.completion_tokens[model] += generated if isinstance(generated, int) else 0

    def pulled(self, count: int) -> None:
        with self._lock:
            self.pulled_bytes += count

    def render(self, loaded_models: Iterable[str]) -> str:
        with self._lock:
            requests = sorted(self.requests.items())
            prompt, completion = sorted(self.prompt_tokens.items()), \
                sorted(self.completion_tokens.items())
            pulled = self.pulled_bytes
        loaded = sorted(loaded_models)
        out: list[str] = []
        _family(out, "ollamad_http_requests_total", "counter",
                "HTTP requests answered, by route, method and status.",
                [({"route": r, "method": m, "status": s}, n) for (r, m, s), n in requests])
        _family(out, "ollamad_prompt_tokens_total", "counter",
                "Prompt tokens evaluated for HTTP requests, by model.",
                [({"model": model}, n) for model, n in prompt])
        _family(out, "ollamad_completion_tokens_total", "counter",
                "Tokens generated for HTTP requests, by model.",
                [({"model": model}, n) for model, n in completion])
        _family(out, "ollamad_loaded_models", "gauge", "Models loaded in a runner now.",
                [({}, len(loaded))])
        _family(out, "ollamad_loaded_model", "gauge", "1 for each model loaded now.",
                [({"model": model}, 1) for model in loaded])
        _family(out, "ollamad_pulled_bytes_total", "counter",
                "Bytes downloaded from registries.", [({}, pulled)])
        return "".join(out)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _family(out: list[str], name: str, kind: str, help_text: str,
            samples: list[tuple[dict[str, str], int]]) -> None:
    out.append(f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n")
    for labels, value in samples:
        text = ",".join(f'{key}="{_escape(val)}"' for key, val in labels.items())
        out.append(f"{name}{{{text}}} {value}\n" if text else f"{name} {value}\n")


METRICS = Metrics()


def add_pulled_bytes(count: int) -> None:
    """For the registry client: ``count`` more bytes were downloaded."""
    METRICS.pulled(count)
