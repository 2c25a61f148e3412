"""create: a new model from an existing one or from GGUF blobs, as Ollama's /api/create does.

The request is Ollama's current JSON form (from, files, adapters, template, system, license,
parameters, messages); the classic form with a Modelfile text is translated into it first. Files
are referred to by the digests of blobs already in the store (uploaded with the ``blob``
operation), never by paths: the daemon opens no file a client names.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import trio

from ollamad import gojson, prompting
from ollamad.errors import BadRequest, InvalidDigest, InvalidName, NotFound
from ollamad.model import file_type, read_config
from ollamad.store import Digest, Layer, Manifest, MediaType, ModelName, ModelStore, modelfile
from ollamad.store.gguf import InvalidGGUF, read_gguf

Args = dict[str, Any]
MEDIA_DRAFT = "application/vnd.ollama.image.draft"
WEIGHTS = (MediaType.MODEL, MediaType.PROJECTOR, MediaType.ADAPTER, MEDIA_DRAFT)


@dataclass
class Plan:
    """The layers and config of the model being made, built step by step."""

    layers: list[Layer] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=lambda: {
        "model_format": "", "model_family": "", "model_families": None, "model_type": "",
        "file_type": ""})
    statuses: list[str] = field(default_factory=list)

    def replace_kind(self, media_type: str, layer: Layer | None) -> None:
        self.layers = [existing for existing in self.layers if existing.media_type != media_type]
        if layer is not None:
            self.layers.append(layer)


def valid_file_name(name: str) -> bool:
    """Go's fs.ValidPath: relative, slash-separated, no empty, '.' or '..' element."""
    if name == ".":
        return True
    return bool(name) and not name.startswith("/") and all(
        part not in ("", ".", "..") for part in name.split("/"))


def _digest_map(value: Any, what: str) -> dict[str, Digest]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadRequest(f"{what} must map file names to digests")
    out = {}
    for name, digest in value.items():
        if not isinstance(name, str) or not valid_file_name(name):
            raise BadRequest("file path must be relative")
        try:
            out[name] = Digest.parse(digest)
        except InvalidDigest:
            raise BadRequest("invalid digest format") from None
    return out


def _licenses(value: Any) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return value
    raise BadRequest("license must be a string or a list of strings")


def human_number(count: int) -> str:
    """Ollama's parameter-size notation: 135M, 134.52M, 7B, 7.2B, 500K."""
    if count >= 1_000_000_000:
        value = count / 1e9
        return f"{value:.0f}B" if value == int(value) else f"{value:.1f}B"
    if count >= 1_000_000:
        value = count / 1e6
        return f"{value:.0f}M" if value == int(value) else f"{value:.2f}M"
    if count >= 1_000:
        return f"{count / 1e3:.0f}K"
    return str(count)


class Creator:
    """One create: each step is synchronous store work, run in a thread by :func:`run`."""

    def __init__(self, store: ModelStore, name: ModelName, args: Args) -> None:
        self.store = store
        self.name = name
        self.args = args
        self.plan = Plan()
        # Every blob this create uses stays pinned until its manifest is written.
        self.pins = contextlib.ExitStack()

    def _pin(self, digest: Digest) -> None:
        self.pins.enter_context(self.store.pinned([digest]))

    def steps(self) -> Iterator[Callable[[], list[str]]]:
        args = self.args
        files = _digest_map(args.get("files"), "files")
        adapters = _digest_map(args.get("adapters"), "adapters")
        if args.get("quantize") or args.get("quantization"):
            raise BadRequest("quantization is not supported by ollamad")
        base = args.get("from")
        if base:
            yield lambda: self.inherit(base)
        elif files:
            yield lambda: self.add_files(files, adapter=False)
        else:
            raise BadRequest("neither 'from' or 'files' was specified")
        if adapters:
            yield lambda: self.add_files(adapters, adapter=True)
        yield self.add_text_layers

    def inherit(self, base_text: Any) -> list[str]:
        if not isinstance(base_text, str):
            raise BadRequest("from must be a model name")
        try:
            base = ModelName.parse(base_text)
        except InvalidName:
            raise BadRequest("invalid model name") from None
        try:
            stored = self.store.get(base)
        except NotFound:
            raise NotFound(f"model '{base_text}' not found") from None
        source = stored.name.display_shortest()
        for digest in stored.manifest.digests:
            self._pin(digest)
        self.plan.layers = [replace(layer, from_=source) for layer in stored.manifest.layers]
        base_config = read_config(self.store, stored)
        for key in ("renderer", "parser", "requires", "model_format"):
            if getattr(base_config, key):
                self.plan.config[key] = getattr(base_config, key)
        if base_config.capabilities:
            self.plan.config["capabilities"] = base_config.capabilities
        statuses = []
        for layer in self.plan.layers:
            if layer.media_type == MediaType.MODEL:
                statuses += self._describe_weights(layer)
        return statuses + [f"using existing layer {layer.digest}" for layer in self.plan.layers]

    def add_files(self, files: dict[str, Digest], adapter: bool) -> list[str]:
        statuses = []
        for digest in files.values():
            self._pin(digest)
            statuses.append("parsing GGUF")
            path = self.store.blobs.path(digest)
            try:
                with open(path, "rb") as handle:
                    magic = handle.read(4)
                size = path.stat().st_size
            except FileNotFoundError:
                raise BadRequest(f"blob {digest} not found: upload it first") from None
            if magic != b"GGUF":
                raise BadRequest("supplied file was not in GGUF format")
            kind = MediaType.ADAPTER if adapter else self._kind(digest)
            layer = Layer(kind, digest, size)
            self.plan.layers.append(layer)
            if kind == MediaType.MODEL:
                statuses += self._describe_weights(layer)
            statuses.append(f"using existing layer {digest}")
        return statuses

    def _kind(self, digest: Digest) -> str:
        header = self._header(digest)
        if header.kv.get("general.type") == "adapter":
            return MediaType.ADAPTER
        if header.architecture == "clip" or "clip.projector_type" in header.kv:
            return MediaType.PROJECTOR
        return MediaType.MODEL

    def _header(self, digest: Digest) -> Any:
        try:
            return read_gguf(self.store.blobs.path(digest), array_limit=0)
        except InvalidGGUF as exc:
            raise BadRequest(f"supplied file is not a usable GGUF: {exc}") from None

    def _describe_weights(self, layer: Layer) -> list[str]:
        """Fill the config from the weights' header, as Ollama does for each model layer."""
        header = self._header(layer.digest)
        config = self.plan.config
        architecture = header.architecture
        config["model_format"] = config["model_format"] or "gguf"
        config["model_family"] = config["model_family"] or architecture
        config["model_type"] = config["model_type"] or human_number(header.parameter_count)
        config["file_type"] = config["file_type"] or file_type(header)
        config["model_families"] = [*(config["model_families"] or []), architecture]
        return []

    def add_text_layers(self) -> list[str]:
        args, plan, statuses = self.args, self.plan, []
        template = args.get("template") or ""
        if not isinstance(template, str):
            raise BadRequest("template must be a string")
        if template:
            prompting.check_template(template)
            plan.replace_kind(MediaType.TEMPLATE, self._text(template, MediaType.TEMPLATE,
                                                             statuses))
        system = args.get("system") or ""
        if not isinstance(system, str):
            raise BadRequest("system must be a string")
        if system:
            plan.replace_kind(MediaType.SYSTEM, self._text(system, MediaType.SYSTEM, statuses))
        for text in _licenses(args.get("license")):
            plan.layers.append(self._text(text, MediaType.LICENSE, statuses))
        parameters = args.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise BadRequest("parameters must be an object")
        merged = {**self._inherited_parameters(), **parameters}
        if merged:
            # Go encodes a map with its keys sorted.
            data = gojson.dumps(dict(sorted(merged.items()))) + "\n"
            plan.replace_kind(MediaType.PARAMS, self._text(data, MediaType.PARAMS, statuses))
        messages = args.get("messages") or []
        if not isinstance(messages, list):
            raise BadRequest("messages must be a list")
        if messages:
            data = gojson.dumps([_message(m) for m in messages]) + "\n"
            plan.replace_kind(MediaType.MESSAGES, self._text(data, MediaType.MESSAGES, statuses))
        return statuses

    def _inherited_parameters(self) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for layer in self.plan.layers:
            if layer.media_type == MediaType.PARAMS:
                try:
                    merged.update(json.loads(self.store.blobs.read_bytes(layer.digest, 1 << 20)))
                except (ValueError, TypeError):
                    raise BadRequest(f"the base model's parameters ({layer.digest}) are "
                                     "unreadable") from None
        return merged

    def _text(self, text: str, media_type: str, statuses: list[str]) -> Layer:
        data = text.encode()
        digest = Digest.of(data)
        self._pin(digest)
        existed = self.store.blobs.has(digest)
        self.store.blobs.write_bytes(data, digest)
        statuses.append(f"{'using existing' if existed else 'creating new'} layer {digest}")
        return Layer(media_type, digest, len(data))

    def finish(self) -> ModelName:
        config = {key: value for key, value in self.plan.config.items()
                  if value or key in ("model_format", "model_family", "model_families",
                                      "model_type", "file_type")}
        config |= {"architecture": "amd64", "os": "linux"}
        ordered = {key: config[key] for key in CONFIG_ORDER if key in config}
        raw_config = (gojson.dumps(ordered) + "\n").encode()
        config_layer = Layer(MediaType.CONFIG, self.store.blobs.write_bytes(raw_config),
                             len(raw_config))
        manifest = Manifest(config_layer, tuple(self.plan.layers))
        return self.store.write_manifest(self.name, manifest.to_json())


CONFIG_ORDER = ("model_format", "model_family", "model_families", "model_type", "file_type",
                "renderer", "parser", "requires", "remote_host", "remote_model", "capabilities",
                "context_length", "embedding_length", "base_name", "architecture", "os")
_MESSAGE_FIELDS = ("role", "content", "thinking", "images", "tool_calls", "tool_name",
                   "tool_call_id")


def _message(message: Any) -> dict[str, Any]:
    if not isinstance(message, dict) or not isinstance(message.get("role"), str) or \
            not isinstance(message.get("content", ""), str):
        raise BadRequest("each message needs a role and string content")
    out = {"role": message["role"].lower(), "content": message.get("content", "")}
    out |= {key: message[key] for key in _MESSAGE_FIELDS[2:] if message.get(key)}
    return out


async def run(store: ModelStore, args: Args) -> AsyncIterator[dict[str, Any]]:
    """The create operation's progress events, ending with ``success``."""
    raw_name = args.get("model") or args.get("name")
    if not isinstance(raw_name, str) or not raw_name:
        raise BadRequest("model is required")
    try:
        name = ModelName.parse(raw_name)
    except InvalidName:
        raise BadRequest("invalid model name") from None
    if args.get("modelfile") is not None:
        args = {**args, **classic_request(args["modelfile"])}
    creator = Creator(store, name, args)
    with creator.pins:
        for step in creator.steps():
            for status in await trio.to_thread.run_sync(step):
                yield {"status": status}
        yield {"status": "writing manifest"}
        await trio.to_thread.run_sync(creator.finish)
    yield {"status": "success"}


def classic_request(text: Any) -> dict[str, Any]:
    """The JSON create request for Ollama's classic form, a Modelfile's text.

    Local files cannot be named here (the daemon opens no client path): a FROM or ADAPTER that
    is a file must be a blob already uploaded, written ``@sha256:<hex>`` as Ollama's CLI did.
    """
    if not isinstance(text, str):
        raise BadRequest("modelfile must be a string")

    def blob_reference(value: str) -> str | None:
        if not value.startswith("@"):
            return None
        try:
            return str(Digest.parse(value[1:]))
        except InvalidDigest:
            raise BadRequest(f"invalid blob reference {value!r}") from None

    return modelfile.to_create_request(modelfile.parse(text), resolve_file=blob_reference)
