"""Manifests: ``manifests/<host>/<namespace>/<model>/<tag>``, the JSON Ollama and registries use."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ollamad import gojson
from ollamad.errors import CorruptStore, InvalidDigest, InvalidName, NotFound
from ollamad.store.digest import Digest
from ollamad.store.files import atomic_write, fsync_dir
from ollamad.store.names import ModelName


class MediaType:
    DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
    OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
    CONFIG = "application/vnd.docker.container.image.v1+json"
    MODEL = "application/vnd.ollama.image.model"
    PROJECTOR = "application/vnd.ollama.image.projector"
    ADAPTER = "application/vnd.ollama.image.adapter"
    TEMPLATE = "application/vnd.ollama.image.template"
    PROMPT = "application/vnd.ollama.image.prompt"
    SYSTEM = "application/vnd.ollama.image.system"
    PARAMS = "application/vnd.ollama.image.params"
    MESSAGES = "application/vnd.ollama.image.messages"
    LICENSE = "application/vnd.ollama.image.license"


MANIFEST_MODE = 0o644
# A manifest lists layers, not data: a few KiB in practice, even for per-tensor layers.
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
MAX_LAYERS = 20_000
MAX_LAYER_SIZE = 2**50


class InvalidManifest(ValueError):
    """Manifest bytes that do not describe a well-formed manifest."""


@dataclass(frozen=True)
class Layer:
    media_type: str
    digest: Digest
    size: int
    from_: str | None = None
    name: str | None = None

    @classmethod
    def from_json(cls, obj: Any) -> Layer:
        if not isinstance(obj, dict):
            raise InvalidManifest("a layer must be an object")
        media_type, size = obj.get("mediaType"), obj.get("size")
        if not isinstance(media_type, str) or not media_type:
            raise InvalidManifest("a layer needs a mediaType")
        if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_LAYER_SIZE:
            raise InvalidManifest(f"layer size {size!r} is not a plausible byte count")
        try:
            digest = Digest.parse(obj.get("digest"))
        except InvalidDigest:
            raise InvalidManifest(f"layer digest {obj.get('digest')!r} is malformed") from None
        from_, name = obj.get("from"), obj.get("name")
        return cls(media_type, digest, size,
                   from_ if isinstance(from_, str) and from_ else None,
                   name if isinstance(name, str) and name else None)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": str(self.digest),
                               "size": self.size}
        if self.from_:
            out["from"] = self.from_
        if self.name:
            out["name"] = self.name
        return out


@dataclass(frozen=True)
class Manifest:
    config: Layer
    layers: tuple[Layer, ...]
    media_type: str = MediaType.DOCKER_MANIFEST
    schema_version: int = 2

    @classmethod
    def parse(cls, raw: bytes) -> Manifest:
        """Strictly parse manifest bytes. Raises :class:`InvalidManifest`."""
        if len(raw) > MAX_MANIFEST_BYTES:
            raise InvalidManifest(f"manifest of {len(raw)} bytes is too large")
        try:
            obj = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            raise InvalidManifest(f"manifest is not JSON: {exc}") from None
        if not isinstance(obj, dict):
            raise InvalidManifest("manifest must be a JSON object")
        if obj.get("schemaVersion") != 2:
            raise InvalidManifest(f"schemaVersion {obj.get('schemaVersion')!r} is not 2")
        media_type = obj.get("mediaType", MediaType.DOCKER_MANIFEST)
        if media_type not in (MediaType.DOCKER_MANIFEST, MediaType.OCI_MANIFEST):
            raise InvalidManifest(f"manifest mediaType {media_type!r} is not supported")
        layers = obj.get("layers")
        if not isinstance(layers, list) or len(layers) > MAX_LAYERS:
            raise InvalidManifest("manifest layers must be a list of at most "
                                  f"{MAX_LAYERS} entries")
        return cls(Layer.from_json(obj.get("config")),
                   tuple(Layer.from_json(layer) for layer in layers), media_type)

    def to_json(self) -> bytes:
        """Bytes as Ollama's create writes them (Go's json.Encoder: compact, trailing newline)."""
        return gojson.dumps({
            "schemaVersion": self.schema_version,
            "mediaType": self.media_type,
            "config": self.config.to_json(),
            "layers": [layer.to_json() for layer in self.layers],
        }).encode() + b"\n"

    @property
    def digests(self) -> set[Digest]:
        return {self.config.digest, *(layer.digest for layer in self.layers)}

    @property
    def total_size(self) -> int:
        return self.config.size + sum(layer.size for layer in self.layers)

    def layers_of(self, *media_types: str) -> list[Layer]:
        return [layer for layer in self.layers if layer.media_type in media_types]


@dataclass(frozen=True)
class StoredManifest:
    """A manifest as it sits in the store: its name's stored spelling, its bytes, its mtime."""

    name: ModelName
    raw: bytes
    manifest: Manifest
    mtime_ns: int

    @property
    def digest(self) -> Digest:
        """What Ollama calls the model's digest: the sha256 of the manifest file's bytes."""
        return Digest.of(self.raw)


class ManifestStore:
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def path(self, name: ModelName) -> Path:
        # Every part passed the name grammar, so this cannot leave the folder.
        return self.folder.joinpath(*name.parts)

    def names(self) -> Iterator[ModelName]:
        """Every stored name, four levels deep; a file whose path is no valid name is skipped."""
        for path in self.folder.glob("*/*/*/*"):
            if not path.is_file() or path.name.startswith("."):
                continue
            with contextlib.suppress(InvalidName):
                yield ModelName.from_parts(*path.relative_to(self.folder).parts)

    def resolve(self, name: ModelName) -> ModelName | None:
        """The stored spelling of ``name`` (matched case-insensitively), or None."""
        if self.path(name).is_file():
            return name
        return next((stored for stored in self.names() if stored.key == name.key), None)

    def read(self, name: ModelName) -> StoredManifest:
        path = self.path(name)
        try:
            with open(path, "rb") as handle:
                raw = handle.read(MAX_MANIFEST_BYTES + 1)
                mtime_ns = os.fstat(handle.fileno()).st_mtime_ns
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(f"model '{name.original}' not found") from None
        try:
            manifest = Manifest.parse(raw)
        except InvalidManifest as exc:
            raise CorruptStore(f"manifest {path} is unreadable: {exc}") from None
        return StoredManifest(name, raw, manifest, mtime_ns)

    def write(self, name: ModelName, raw: bytes) -> None:
        path = self.path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, raw, MANIFEST_MODE)

    def remove(self, name: ModelName) -> None:
        """Remove the manifest, then the folders it leaves empty (never the manifests folder)."""
        path = self.path(name)
        path.unlink()
        fsync_dir(path.parent)
        parent = path.parent
        while parent != self.folder:
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent
