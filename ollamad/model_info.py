"""What ``list`` and ``show`` report about a stored model, in Ollama's JSON shapes."""

from __future__ import annotations

from typing import Any

from ollamad import gojson
from ollamad.store import ModelStore, StoredManifest


def list_entry(store: ModelStore, stored: StoredManifest) -> dict[str, Any]:
    """One element of ``/api/tags``' ``models``."""
    short = stored.name.display_shortest()
    return {
        "name": short,
        "model": short,
        "modified_at": gojson.format_time(stored.mtime_ns),
        "size": stored.manifest.total_size,
        "digest": stored.digest.hex,
        "details": {},
    }


def show(store: ModelStore, stored: StoredManifest, *, verbose: bool, system: str,
         options: dict[str, Any]) -> dict[str, Any]:
    """The ``/api/show`` response."""
    raise NotImplementedError
