"""The model store, byte-compatible with Ollama's: pure, synchronous, atomic."""

from ollamad.store.blobs import BlobStore
from ollamad.store.digest import Digest
from ollamad.store.manifests import (
    InvalidManifest,
    Layer,
    Manifest,
    ManifestStore,
    MediaType,
    StoredManifest,
)
from ollamad.store.model_store import ModelStore
from ollamad.store.names import ModelName

__all__ = [
    "BlobStore",
    "Digest",
    "InvalidManifest",
    "Layer",
    "Manifest",
    "ManifestStore",
    "MediaType",
    "ModelName",
    "ModelStore",
    "StoredManifest",
]
