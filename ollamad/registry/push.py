"""push: every blob the registry lacks, then the manifest.

Events are Ollama's: ``retrieving manifest``, ``pushing <hex12>`` with digest, total and
completed, ``pushing manifest``, ``success``. The manifest goes up as the bytes stored here, so
that a pull of it gets the same bytes (and the same model digest) back.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import trio

from ollamad.errors import NotFound
from ollamad.registry import protocol, upload
from ollamad.registry.client import RegistryClient
from ollamad.registry.pull import Registry, blobs_of
from ollamad.store import Layer, ModelName, ModelStore

Event = dict[str, Any]


async def push(store: ModelStore, registry: Registry, name: ModelName,
               insecure: bool) -> AsyncIterator[Event]:
    yield {"status": "retrieving manifest"}
    protocol.base_url(name, insecure)
    try:
        stored = await trio.to_thread.run_sync(store.get, name)
    except NotFound:
        yield {"status": "couldn't retrieve manifest"}
        raise
    with store.pinned(stored.manifest.digests):
        async with registry.client(name, insecure) as client:
            for layer in blobs_of(stored.manifest):
                async for event in _blob(store, registry, client, name, layer):
                    yield event
            yield {"status": "pushing manifest"}
            url = protocol.manifest_url(client.base, name)
            async with client.stream("PUT", url, content=stored.raw, headers={
                    "Content-Type": stored.manifest.media_type}) as reply:
                if reply.status_code >= 300:
                    raise await client.fail(reply)
    yield {"status": "success"}


async def _blob(store: ModelStore, registry: Registry, client: RegistryClient, name: ModelName,
                layer: Layer) -> AsyncIterator[Event]:
    status = {"status": f"pushing {layer.digest.short}", "digest": str(layer.digest),
              "total": layer.size}
    async with client.stream("HEAD", protocol.blob_url(client.base, name, layer.digest)) as reply:
        if reply.status_code == 200:
            yield status | {"completed": layer.size}
            return
        if reply.status_code != 404:
            raise await client.fail(reply)
    progress = upload.send(store.blobs, layer, name, registry.sibling(client), registry.settings,
                           client.base)
    async with contextlib.aclosing(progress):
        async for transfer in progress:
            yield status | {"completed": transfer.completed}
