"""A stored model as the daemon uses it: config, layers, capabilities, the weights' header.

Read from the store the way Ollama's GetModel reads a manifest: later layers of a kind win;
licenses, adapters and projectors accumulate. Synchronous; called from worker threads.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from ollamad.errors import CorruptStore, DigestMismatch, NotFound
from ollamad.prompt import ChatTemplate, TemplateError
from ollamad.prompt.jinja import jinja_capabilities
from ollamad.store import Digest, Layer, MediaType, ModelStore, StoredManifest
from ollamad.store.gguf import GGUFInfo, InvalidGGUF, file_type_name, read_gguf

T = TypeVar("T")

MEDIA_DRAFT = "application/vnd.ollama.image.draft"
DEFAULT_TEMPLATE = "{{ .Prompt }}"  # what Ollama uses for a model without a TEMPLATE layer
# The config blob is a few hundred bytes; the text layers are prompts and licenses.
MAX_CONFIG_BYTES = 1 << 20
MAX_TEXT_BYTES = 16 << 20


# -- the config blob ------------------------------------------------------------------------------

@dataclass(frozen=True)
class ModelConfig:
    """The fields of the config blob (Ollama's ConfigV2) that list and show report."""

    model_format: str = ""
    model_family: str = ""
    model_families: list[str] | None = None
    model_type: str = ""
    file_type: str = ""
    renderer: str = ""
    parser: str = ""
    requires: str = ""
    remote_host: str = ""
    remote_model: str = ""
    capabilities: list[str] = field(default_factory=list)
    context_length: int = 0
    embedding_length: int = 0
    base_name: str = ""

    @classmethod
    def parse(cls, raw: bytes) -> ModelConfig:
        """Decode as Go decodes into the struct: unknown keys ignored, a wrong type an error."""
        obj = json.loads(raw)
        if obj is None:
            return cls()
        if not isinstance(obj, dict):
            raise ValueError("config is not a JSON object")
        strings = {key: _typed(obj, key, str, "") for key in (
            "model_format", "model_family", "model_type", "file_type", "renderer", "parser",
            "requires", "remote_host", "remote_model", "base_name")}
        return cls(**strings,
                   model_families=_string_list(obj, "model_families"),
                   capabilities=_string_list(obj, "capabilities") or [],
                   context_length=_typed(obj, "context_length", int, 0),
                   embedding_length=_typed(obj, "embedding_length", int, 0))

    @property
    def is_safetensors(self) -> bool:
        return self.model_format == "safetensors"

    @property
    def is_gguf(self) -> bool:
        return self.model_format in ("", "gguf")


def _typed(obj: dict[str, Any], key: str, kind: type, default: Any) -> Any:
    value = obj.get(key)
    if value is None:
        return default
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ValueError(f"{key} must be a {kind.__name__}")
    return value


def _string_list(obj: dict[str, Any], key: str) -> list[str] | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError(f"{key} must be a list of strings")
    return value


@dataclass
class Layers:
    """The manifest's layers read as Ollama's GetModel reads them: later layers of a kind win,
    licenses, adapters and projectors accumulate."""

    model: Layer | None = None
    draft: Layer | None = None
    adapters: list[Layer] = field(default_factory=list)
    projectors: list[Layer] = field(default_factory=list)
    template: str | None = None
    system: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    messages: list[tuple[str, str]] = field(default_factory=list)
    licenses: list[str] = field(default_factory=list)


def read_layers(store: ModelStore, stored: StoredManifest) -> Layers:
    layers = Layers()
    for layer in stored.manifest.layers:
        kind = layer.media_type
        if kind == MediaType.MODEL:
            layers.model = layer
        elif kind == MEDIA_DRAFT:
            layers.draft = layer
        elif kind == MediaType.ADAPTER:
            layers.adapters.append(layer)
        elif kind == MediaType.PROJECTOR:
            layers.projectors.append(layer)
        elif kind in (MediaType.TEMPLATE, MediaType.PROMPT):
            layers.template = _text(store, stored, layer, "template")
        elif kind == MediaType.SYSTEM:
            layers.system = _text(store, stored, layer, "system")
        elif kind == MediaType.LICENSE:
            layers.licenses.append(_text(store, stored, layer, "license"))
        elif kind == MediaType.PARAMS:
            # Go decodes each params layer into the same map, so a later one adds to it.
            layers.options.update(_json_layer(store, stored, layer, "params", _params))
        elif kind == MediaType.MESSAGES:
            layers.messages = _json_layer(store, stored, layer, "messages", _messages)
    return layers


def _params(obj: Any) -> dict[str, Any]:
    if obj is None:
        return {}
    if not isinstance(obj, dict):
        raise ValueError("parameters are not a JSON object")
    return obj


def _messages(obj: Any) -> list[tuple[str, str]]:
    if obj is None:
        return []
    if not isinstance(obj, list) or not all(isinstance(item, dict) for item in obj):
        raise ValueError("messages are not a JSON list of objects")
    out = []
    for item in obj:
        role, content = item.get("role") or "", item.get("content") or ""
        if not isinstance(role, str) or not isinstance(content, str):
            raise ValueError("a message's role and content must be strings")
        out.append((role.lower(), content))  # Ollama lower-cases roles when it decodes them
    return out


def file_type(info: GGUFInfo) -> str:
    value = info.kv.get("general.file_type")
    # Ollama reads 0 (all F32) as "not set", as it reads a missing key.
    return file_type_name(value) if isinstance(value, int) and value > 0 else "unknown"


# -- capabilities ---------------------------------------------------------------------------------

def capabilities(config: ModelConfig, layers: Layers, info: GGUFInfo | None,
                  projectors: list[GGUFInfo], chat_template: str) -> list[str]:
    """Ollama's capability list, in its order: config, weights, projector, template, family."""
    found = list(config.capabilities)
    if info is not None:
        if chat_template:
            found += jinja_capabilities(chat_template)
        found.append("embedding" if info.arch_value("pooling_type") is not None
                     else "completion")
        if info.arch_value("vision.block_count") is not None:
            found.append("vision")
        if info.arch_value("audio.block_count") is not None:
            found.append("audio")
    if projectors:
        found.append("vision")
        found += ["audio" for projector in projectors if _projector_has_audio(projector)]
    if layers.template is not None:
        found += _go_template_capabilities(layers.template)
    if is_gpt_oss(config):
        found.append("thinking")
    architecture = info.architecture if info is not None else ""
    if "nemotron_h_omni" in (architecture, config.model_family, *(config.model_families or ())):
        # Ollama hides audio for this family until its runner can serve it.
        found = [cap for cap in found if cap != "audio"]
    return _unique(found)


def _projector_has_audio(info: GGUFInfo) -> bool:
    if info.arch_value("vision.projector_type") == "gemma3nv":
        return False
    return info.arch_value("has_audio_encoder") is True or any(
        key.endswith(".has_audio_encoder") and value is True for key, value in info.kv.items())


def _go_template_capabilities(text: str) -> list[str]:
    try:
        return ChatTemplate.parse(text).capabilities
    except TemplateError:
        return []  # Ollama logs a broken template and grants it nothing


def is_gpt_oss(config: ModelConfig) -> bool:
    return config.model_family in ("gptoss", "gpt-oss")


# -- reading the store ----------------------------------------------------------------------------

def read_config(store: ModelStore, stored: StoredManifest) -> ModelConfig:
    raw = _blob(store, stored, stored.manifest.config.digest, MAX_CONFIG_BYTES, "config")
    try:
        return ModelConfig.parse(raw)
    except (ValueError, RecursionError) as exc:
        raise _damaged(stored, f"its config blob is unreadable: {exc}") from None


def _text(store: ModelStore, stored: StoredManifest, layer: Layer, what: str) -> str:
    # Go keeps any bytes in a string; its JSON encoder then writes U+FFFD for invalid UTF-8.
    return _blob(store, stored, layer.digest, MAX_TEXT_BYTES, what).decode("utf-8", "replace")


def _json_layer(store: ModelStore, stored: StoredManifest, layer: Layer, what: str,
                shape: Callable[[Any], T]) -> T:
    raw = _blob(store, stored, layer.digest, MAX_TEXT_BYTES, what)
    try:
        return shape(json.loads(raw))
    except (ValueError, RecursionError) as exc:
        raise _damaged(stored, f"its {what} blob {layer.digest} is unreadable: {exc}") from None


def _blob(store: ModelStore, stored: StoredManifest, digest: Digest, limit: int,
          what: str) -> bytes:
    try:
        return store.blobs.read_bytes(digest, limit)
    except NotFound:
        raise _damaged(stored, f"its {what} blob {digest} is missing") from None
    except DigestMismatch:
        raise _damaged(stored, f"its {what} blob {digest} is over {limit} bytes") from None
    except OSError as exc:
        raise _damaged(stored, f"its {what} blob {digest} is unreadable: {exc}") from None


def read_weights_header(store: ModelStore, stored: StoredManifest, layer: Layer,
                        verbose: bool) -> GGUFInfo:
    path = store.blobs.path(layer.digest)
    if not path.is_file():
        raise _damaged(stored, f"its weights blob {layer.digest} is missing")
    try:
        # Ollama decodes no array values unless verbose; each then shows as null ([] if empty).
        return read_gguf(path, array_limit=None if verbose else 0)
    except InvalidGGUF as exc:
        raise _damaged(stored, str(exc)) from None


def _damaged(stored: StoredManifest, why: str) -> CorruptStore:
    return CorruptStore(f"model {stored.name.display_shortest()} is damaged: {why}")


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


# -- the model as the daemon runs it ------------------------------------------------------------

@dataclass(frozen=True)
class Model:
    """Everything generation needs to know about a stored model, read once and cached."""

    stored: StoredManifest
    config: ModelConfig
    layers: Layers
    header: GGUFInfo | None
    weights: Path | None

    @classmethod
    def load(cls, store: ModelStore, stored: StoredManifest) -> Model:
        config = read_config(store, stored)
        layers = read_layers(store, stored)
        if layers.model is None or not config.is_gguf:
            return cls(stored, config, layers, None, None)
        header = read_weights_header(store, stored, layers.model, verbose=False)
        return cls(stored, config, layers, header, store.blobs.path(layers.model.digest))

    @property
    def chat_template(self) -> str:
        """The GGUF's own Jinja chat template, if it has one."""
        value = self.header.kv.get("tokenizer.chat_template") if self.header else None
        return value if isinstance(value, str) else ""

    @property
    def native(self) -> bool:
        """Whether prompts are rendered with the GGUF's Jinja template (no Go TEMPLATE layer)."""
        return (self.layers.template is None and bool(self.chat_template)
                and not self.config.renderer and not self.config.parser)

    @property
    def capabilities(self) -> list[str]:
        return capabilities(self.config, self.layers, self.header, [],
                            self.chat_template if self.native else "")

    @functools.cached_property
    def special_tokens(self) -> tuple[str, str]:
        """The BOS and EOS token texts, which Jinja chat templates print."""
        if self.weights is None or self.header is None:
            return "", ""
        try:
            full = read_gguf(self.weights)
        except InvalidGGUF:
            return "", ""
        tokens = full.kv.get("tokenizer.ggml.tokens") or []

        def token(key: str) -> str:
            index = full.kv.get(key)
            return tokens[index] if isinstance(index, int) and 0 <= index < len(tokens) else ""

        return token("tokenizer.ggml.bos_token_id"), token("tokenizer.ggml.eos_token_id")

    @property
    def context_length(self) -> int:
        """The context the model was trained with (0 if the header does not say)."""
        value = self.header.arch_value("context_length") if self.header else None
        return value if isinstance(value, int) else 0

    def memory_estimate(self, num_ctx: int) -> int:
        """Bytes a runner needs: the weights plus an f16 KV cache of ``num_ctx`` tokens."""
        weights = self.layers.model.size if self.layers.model else 0
        if self.header is None:
            return weights
        layers = self.header.arch_value("block_count") or 0
        embedding = self.header.arch_value("embedding_length") or 0
        heads = self.header.arch_value("attention.head_count") or 1
        kv_heads = self.header.arch_value("attention.head_count_kv") or heads
        per_token = 2 * layers * (embedding // max(heads, 1)) * kv_heads * 2  # K and V, f16
        return weights + per_token * num_ctx
