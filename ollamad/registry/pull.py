"""pull: manifest first, then every missing blob (shared, resumable, verified), manifest last.

Events and messages are Ollama's: ``pulling manifest``, ``pulling <hex12>`` with digest, total
and completed, ``verifying sha256 digest``, ``writing manifest``, ``removing unused layers`` when
a tag moved, ``success``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import trio

from ollamad.errors import CorruptStore, NoSpace, NotFound
from ollamad.identity import Identity
from ollamad.registry import download, protocol
from ollamad.registry.auth import Authenticator, load_credentials
from ollamad.registry.client import RegistryClient, read_limited
from ollamad.registry.errors import ManifestNotFound, RegistryError, RegistryRefused
from ollamad.registry.parts import PARTIAL
from ollamad.registry.settings import TransferSettings
from ollamad.store import Digest, InvalidManifest, Layer, Manifest, ModelName, ModelStore
from ollamad.store.manifests import MAX_MANIFEST_BYTES

Event = dict[str, Any]


@dataclass
class Registry:
    """What an operation needs to reach registries: settings, identity, credentials."""

    settings: TransferSettings
    identity: Callable[[], Identity]
    credential_files: list[Path] = field(default_factory=list)
    transport: httpx.AsyncBaseTransport | None = None

    def client(self, name: ModelName, insecure: bool) -> RegistryClient:
        base = protocol.base_url(name, insecure)
        credentials = load_credentials(self.credential_files, name.host)
        return RegistryClient(base, Authenticator(base, self.identity, credentials),
                              self.settings, self.transport)

    def sibling(self, client: RegistryClient) -> Callable[[], RegistryClient]:
        """New clients sharing ``client``'s token (a download outlives the request)."""
        return lambda: RegistryClient(client.base, client.auth, self.settings, self.transport)


def blobs_of(manifest: Manifest) -> list[Layer]:
    """The layers then the config, each digest once; refuses a digest listed with two sizes."""
    seen: dict[Digest, Layer] = {}
    for layer in (*manifest.layers, manifest.config):
        first = seen.setdefault(layer.digest, layer)
        if first.size != layer.size:
            raise RegistryRefused(f"pull model manifest: blob {layer.digest} is listed twice, "
                                  f"as {first.size} and as {layer.size} bytes")
    return list(seen.values())


def parse_manifest(raw: bytes) -> Manifest:
    try:
        return Manifest.parse(raw)
    except InvalidManifest as exc:
        raise RegistryRefused(f"pull model manifest: {exc}") from None


def check_space(store: ModelStore, blobs: list[Layer]) -> None:
    """Refuse a model that cannot fit, before a byte is written (a hostile size ends here);
    what partial downloads already hold counts as written."""
    needed = 0
    for layer in blobs:
        if store.blobs.has(layer.digest):
            continue
        needed += layer.size
        with contextlib.suppress(OSError):
            partial = os.stat(f"{store.blobs.path(layer.digest)}{PARTIAL}")
            needed -= min(layer.size, partial.st_blocks * 512)
    stats = os.statvfs(store.blobs.folder)
    free = stats.f_bavail * stats.f_frsize
    if needed > free:
        raise NoSpace(f"not enough space in the model store: the model needs {needed} more "
                      f"bytes, {free} are free")


async def fetch_manifest(client: RegistryClient, name: ModelName) -> bytes:
    """The manifest's bytes as the registry sent them (stored as they are)."""
    url = protocol.manifest_url(client.base, name)
    try:
        async with client.stream("GET", url, headers={"Accept": protocol.MANIFEST_ACCEPT}) as reply:
            if reply.status_code == 404:
                raise ManifestNotFound("file does not exist")
            if reply.status_code >= 300:
                raise await client.fail(reply)
            raw = await read_limited(reply, MAX_MANIFEST_BYTES)
            claimed = reply.headers.get("docker-content-digest", "")
    except RegistryError as exc:
        exc.message = f"pull model manifest: {exc.message}"
        exc.args = (exc.message,)
        raise
    if claimed.startswith("sha256:") and claimed != str(Digest.of(raw)):
        raise RegistryRefused(f"pull model manifest: the registry says {claimed} but sent "
                              f"{Digest.of(raw)}")
    return raw


async def pull(store: ModelStore, registry: Registry, name: ModelName, insecure: bool,
               prune: bool = True) -> AsyncIterator[Event]:
    protocol.base_url(name, insecure)  # an http:// name without insecure fails before anything
    yield {"status": "pulling manifest"}
    async with registry.client(name, insecure) as client:
        raw = await fetch_manifest(client, name)
    manifest = parse_manifest(raw)
    blobs = blobs_of(manifest)
    # Pinned from here: a blob found present must still be there when the manifest is written.
    with store.pinned(manifest.digests):
        await trio.to_thread.run_sync(check_space, store, blobs)
        for layer in blobs:
            async for event in _blob(store, registry, client, name, layer):
                yield event
        yield {"status": "verifying sha256 digest"}
        yield {"status": "writing manifest"}
        old = await trio.to_thread.run_sync(_old_digests, store, name)
        await trio.to_thread.run_sync(store.write_manifest, name, raw)
    if prune and old - manifest.digests:
        yield {"status": "removing unused layers"}
    yield {"status": "success"}


async def _blob(store: ModelStore, registry: Registry, client: RegistryClient, name: ModelName,
                layer: Layer) -> AsyncIterator[Event]:
    status = {"status": f"pulling {layer.digest.short}", "digest": str(layer.digest),
              "total": layer.size}
    if store.blobs.has(layer.digest):
        # A cache hit reports the file's size, as Ollama does.
        size = store.blobs.size(layer.digest)
        yield status | {"total": size, "completed": size}
        return
    url = protocol.blob_url(client.base, name, layer.digest)
    progress = download.fetch(store.blobs, layer.digest, layer.size, url,
                              registry.sibling(client), registry.settings)
    async with contextlib.aclosing(progress):
        async for transfer in progress:
            yield status | {"completed": transfer.completed}


def _old_digests(store: ModelStore, name: ModelName) -> set[Digest]:
    with contextlib.suppress(NotFound, CorruptStore):
        return store.get(name).manifest.digests
    return set()
