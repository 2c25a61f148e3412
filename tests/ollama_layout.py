"""Build a model store exactly as Ollama writes one (from the reference), without our code.

Independent of ``ollamad.store`` on purpose: an interop test that used our own writer would only
prove that we agree with ourselves.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

# Ollama's built-in ChatML template (what `ollama create` autodetects for SmolLM2).
TEMPLATE = (
    "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}"
    "<|im_start|>assistant\n"
)
PARAMS = {"stop": ["<|im_start|>", "<|im_end|>"], "temperature": 0.2}
SYSTEM = "You are a helpful assistant."
LICENSE = "Apache License 2.0"


def _go_json(obj: object) -> bytes:
    """Go's json.Encoder output: compact, HTML-escaped, newline-terminated."""
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    for char, escape in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(char, escape)
    return text.encode() + b"\n"


def _add_blob(blobs: Path, data: bytes | None = None,
              source: Path | None = None) -> tuple[str, int]:
    if source is not None:
        digest = hashlib.sha256()
        with open(source, "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
        hexdigest, size = digest.hexdigest(), source.stat().st_size
        target = blobs / f"sha256-{hexdigest}"
        if not target.exists():
            try:
                os.link(source, target)
            except OSError:
                shutil.copyfile(source, target)
    else:
        assert data is not None
        hexdigest, size = hashlib.sha256(data).hexdigest(), len(data)
        (blobs / f"sha256-{hexdigest}").write_bytes(data)
    return f"sha256:{hexdigest}", size


def write_ollama_model(root: Path, gguf: Path, host: str = "registry.ollama.ai",
                       namespace: str = "library", model: str = "smollm2",
                       tag: str = "135m") -> Path:
    """A model with GGUF, template, system, params and license layers; returns the manifest path."""
    blobs = root / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    layers = []
    for media_type, data, source in (
        ("application/vnd.ollama.image.model", None, gguf),
        ("application/vnd.ollama.image.template", TEMPLATE.encode(), None),
        ("application/vnd.ollama.image.system", SYSTEM.encode(), None),
        ("application/vnd.ollama.image.params", _go_json(PARAMS), None),
        ("application/vnd.ollama.image.license", LICENSE.encode(), None),
    ):
        digest, size = _add_blob(blobs, data, source)
        layers.append({"mediaType": media_type, "digest": digest, "size": size})
    config = {
        "model_format": "gguf", "model_family": "llama", "model_families": ["llama"],
        "model_type": "134.52M", "file_type": "Q4_1",
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [layer["digest"] for layer in layers]},
    }
    config_digest, config_size = _add_blob(blobs, _go_json(config))
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                   "digest": config_digest, "size": config_size},
        "layers": layers,
    }
    path = root / "manifests" / host / namespace / model / tag
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_go_json(manifest))
    return path
