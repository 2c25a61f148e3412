"""What ``list`` and ``show`` report about a stored model, in Ollama's JSON shapes.

Dicts are built in Go's struct field order with Go's ``omitempty`` rules, so that encoding them
with :func:`ollamad.gojson.dumps` gives Ollama's bytes. Called from worker threads: everything
here is synchronous and reads the store only.
"""

from __future__ import annotations

from typing import Any

from ollamad import gojson
from ollamad.model import (
    DEFAULT_TEMPLATE,
    Model,
    ModelConfig,
    capabilities,
    file_type,
    is_gpt_oss,
    read_config,
    read_layers,
    read_weights_header,
)
from ollamad.store import Layer, MediaType, ModelStore, StoredManifest
from ollamad.store.gguf import GGUFInfo
from ollamad.store.modelfile import Modelfile, parameters_text, show_text

# Keys Ollama deletes from show's model_info (a native chat template is shown as `template`).
HIDDEN_KEYS = ("general.name", "tokenizer.chat_template")


# -- list -----------------------------------------------------------------------------------------

def list_entry(store: ModelStore, stored: StoredManifest) -> dict[str, Any]:
    """One element of ``/api/tags``' ``models``. Reads the config blob only, never the weights.

    Raises CorruptStore if the config blob is missing or unreadable (Ollama leaves such a model
    out of the list).
    """
    config = read_config(store, stored)
    short = stored.name.display_shortest()
    entry: dict[str, Any] = {"name": short, "model": short}
    _put(entry, "remote_model", config.remote_model)
    _put(entry, "remote_host", config.remote_host)
    entry["modified_at"] = gojson.format_time(stored.mtime_ns)
    entry["size"] = stored.manifest.total_size
    entry["digest"] = stored.digest.hex
    # Ollama copies the families into a fresh slice here, which turns an empty list into null.
    entry["details"] = _details(config, _parent_model(stored), config.model_families or None,
                                config.file_type, lengths=True)
    # The capabilities Ollama derives from the weights and template need the GGUF opened, which
    # list must not do; the config's own list (set for remote models) costs nothing.
    _put(entry, "capabilities", _unique(config.capabilities))
    return entry


def running_details(model: Model) -> dict[str, Any]:
    """The ``details`` that ``ps`` reports for a loaded model (as show's, from the config)."""
    return _details(model.config, _parent_model(model.stored), model.config.model_families,
                    model.config.file_type)


def _details(config: ModelConfig, parent: str, families: list[str] | None, quantization: str,
             *, lengths: bool = False) -> dict[str, Any]:
    details: dict[str, Any] = {
        "parent_model": parent,
        "format": config.model_format,
        "family": config.model_family,
        "families": families,
        "parameter_size": config.model_type,
        "quantization_level": quantization,
    }
    if lengths:
        _put(details, "context_length", config.context_length)
        _put(details, "embedding_length", config.embedding_length)
    return details


# -- show -----------------------------------------------------------------------------------------

def show(store: ModelStore, stored: StoredManifest, *, verbose: bool, system: str,
         options: dict[str, Any]) -> dict[str, Any]:
    """The ``/api/show`` response.

    ``system`` (when not empty) replaces the model's SYSTEM; ``options`` are merged into the
    Modelfile's PARAMETER lines (not into ``parameters``, which lists the stored ones, as in
    Ollama). Raises CorruptStore if a layer's blob is missing or unreadable.
    """
    config = read_config(store, stored)
    layers = read_layers(store, stored)
    short = stored.name.display_shortest()
    remote = bool(config.remote_host and config.remote_model)

    info = None
    if layers.model is not None and config.is_gguf and not remote:
        info = read_weights_header(store, stored, layers.model, verbose)
    projector_infos = [read_weights_header(store, stored, layer, verbose)
                       for layer in layers.projectors]

    chat_template = ""
    if info is not None and isinstance(info.kv.get("tokenizer.chat_template"), str):
        chat_template = info.kv["tokenizer.chat_template"]
    # Without a Go template (and no renderer/parser of its own) Ollama runs the model with the
    # GGUF's own chat template, and shows that one.
    native = (layers.template is None and not config.renderer and not config.parser
              and not is_gpt_oss(config))
    go_template = layers.template if layers.template is not None else DEFAULT_TEMPLATE

    quantization = config.file_type
    if info is not None and quantization in ("", "unknown"):
        from_file = file_type(info)
        quantization = from_file if from_file != "unknown" else quantization

    shown_system = system or layers.system
    merged = {**layers.options, **options}
    modelfile = Modelfile.of_model(
        model=_blob_path(store, layers.model), template=go_template, system=shown_system,
        adapters=[_blob_path(store, layer) for layer in layers.adapters],
        draft=_blob_path(store, layers.draft) if layers.draft else "",
        projectors=[_blob_path(store, layer) for layer in layers.projectors],
        renderer=config.renderer, parser=config.parser, options=merged,
        licenses=layers.licenses, messages=layers.messages)

    response: dict[str, Any] = {}
    _put(response, "license", "\n".join(layers.licenses))
    _put(response, "modelfile", show_text(short, modelfile, safetensors=config.is_safetensors))
    _put(response, "parameters", parameters_text(layers.options))
    _put(response, "template", chat_template if native and chat_template else go_template)
    _put(response, "system", shown_system)
    _put(response, "renderer", config.renderer)
    _put(response, "parser", config.parser)
    response["details"] = _details(config, _parent_model(stored), config.model_families,
                                   quantization)
    _put(response, "messages", [{"role": role, "content": content}
                                for role, content in layers.messages])
    if config.remote_host:
        _put(response, "remote_model", config.remote_model)
        _put(response, "remote_host", config.remote_host)
    response["model_info"] = (_model_info(info) if info is not None
                              else _remote_model_info(config) if config.remote_host else {})
    if projector_infos:
        _put(response, "projector_info", _kv_with_count(projector_infos[0]))
    if verbose and info is not None:
        _put(response, "tensors", [{"name": t.name, "type": t.type, "shape": list(t.shape)}
                                   for t in info.tensors])
    _put(response, "capabilities", capabilities(config, layers, info, projector_infos,
                                                 chat_template if native else ""))
    response["modified_at"] = gojson.format_time(stored.mtime_ns)
    _put(response, "requires", config.requires)
    return response


def _model_info(info: GGUFInfo) -> dict[str, Any]:
    kv = _kv_with_count(info)
    for key in HIDDEN_KEYS:
        kv.pop(key, None)
    return kv


def _kv_with_count(info: GGUFInfo) -> dict[str, Any]:
    """The KV map as Ollama's decoder leaves it: with the parameter count it adds, and in sorted
    key order because Go encodes a map that way."""
    kv = dict(info.kv)
    kv["general.parameter_count"] = info.parameter_count
    return dict(sorted(kv.items()))


def _remote_model_info(config: ModelConfig) -> dict[str, Any]:
    """What Ollama shows for a model that lives on a remote host: the config's few facts."""
    if not config.model_family:
        return {}
    info: dict[str, Any] = {"general.architecture": config.model_family}
    _put(info, "general.basename", config.base_name)
    _put(info, f"{config.model_family}.context_length", config.context_length)
    _put(info, f"{config.model_family}.embedding_length", config.embedding_length)
    return dict(sorted(info.items()))


def _blob_path(store: ModelStore, layer: Layer | None) -> str:
    return str(store.blobs.path(layer.digest)) if layer is not None else ""


def _parent_model(stored: StoredManifest) -> str:
    models = stored.manifest.layers_of(MediaType.MODEL)
    return (models[-1].from_ or "") if models else ""


# -- small helpers --------------------------------------------------------------------------------

def _put(target: dict[str, Any], key: str, value: Any) -> None:
    """Set ``key`` unless ``value`` is empty: Go's ``omitempty``."""
    if value:
        target[key] = value


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))
