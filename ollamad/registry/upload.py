"""One blob's upload: HEAD, then POST (trying a cross-repository mount), PATCH parts, PUT.

As Ollama does: a part answered with 307 goes by PUT to the storage URL it names (no
credentials: another host), every other part by PATCH with ``Content-Range: <start>-<end>``
(no ``bytes`` prefix); the commit is ``PUT <last location>?digest=<digest>&etag=<md5>-<parts>``.
Parts go one after another: a registry without redirects takes the data in order only.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable

import httpx
import trio

from ollamad.errors import InvalidName
from ollamad.registry import parts as partlib
from ollamad.registry import protocol
from ollamad.registry.client import RegistryClient
from ollamad.registry.errors import RegistryError, TransferFailed, Unauthorized
from ollamad.registry.parts import Part
from ollamad.registry.settings import TransferSettings
from ollamad.registry.transfer import Transfer, follow
from ollamad.store import BlobStore, Layer, ModelName

log = logging.getLogger(__name__)

READ_BLOCK = 1 << 20
OCTET = "application/octet-stream"

_ACTIVE: dict[Hashable, Upload] = {}


class Upload(Transfer):
    def __init__(self, blobs: BlobStore, layer: Layer, name: ModelName,
                 connect: Callable[[], RegistryClient], settings: TransferSettings) -> None:
        super().__init__(layer.size)
        self.blobs, self.layer, self.name = blobs, layer, name
        self.connect = connect
        self.settings = settings
        self._sent = 0
        self._fd = -1

    def __str__(self) -> str:
        return f"upload of {self.layer.digest}"

    @property
    def completed(self) -> int:
        return self._sent

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    async def _run(self) -> None:
        self._fd = os.open(self.blobs.path(self.layer.digest), os.O_RDONLY | os.O_CLOEXEC)
        async with self.connect() as client:
            location = await self._start(client)
            if location is None:
                self._sent = self.size
                return
            sums = []
            for part in partlib.plan(self.size, self.settings):
                location, digest = await self._part(client, location, part)
                sums.append(digest)
            etag = f"{hashlib.md5(b''.join(sums)).hexdigest()}-{len(sums)}"
            commit = protocol.with_query(location, [("digest", str(self.layer.digest)),
                                                    ("etag", etag)])
            await self._retrying("commit", lambda: self._commit(client, commit))

    async def _start(self, client: RegistryClient) -> str | None:
        """The upload URL, or None when the registry mounted the blob from ``from``."""
        source = None
        if self.layer.from_:
            try:
                source = ModelName.parse(self.layer.from_)
            except InvalidName:
                source = None
        url = protocol.upload_url(client.base, self.name, self.layer.digest if source else None,
                                  source)
        async with client.stream("POST", url) as reply:
            if reply.status_code == 201:
                return None
            if reply.status_code != 202:
                raise await client.fail(reply)
            return _next_location(url, reply)

    async def _part(self, client: RegistryClient, location: str,
                    part: Part) -> tuple[str, bytes]:
        """Send one part; the location for the next request, and the part's md5."""
        result: list[tuple[str, bytes]] = []

        async def attempt() -> None:
            result.clear()
            result.append(await self._send_part(client, location, part))

        await self._retrying(f"part {part.n}", attempt)
        return result[0]

    async def _send_part(self, client: RegistryClient, location: str,
                         part: Part) -> tuple[str, bytes]:
        md5: list[hashlib._Hash] = []
        headers = {"Content-Type": OCTET, "Content-Length": str(part.size),
                   "X-Redirect-Uploads": "1", "Content-Range": f"{part.offset}-{part.end - 1}"}
        sent_before = self._sent
        try:
            async with client.stream("PATCH", location, headers=headers,
                                     content=lambda: self._body(part, md5),
                                     redirects="none") as reply:
                if reply.status_code == 307:
                    # The registry offers a storage URL: the data goes there instead.
                    self._sent = sent_before
                    target = protocol.resolve_location(location, reply.headers.get("location"))
                    async with client.stream("PUT", target, headers={
                            "Content-Type": OCTET, "Content-Length": str(part.size)},
                            content=lambda: self._body(part, md5), redirects="none") as put:
                        if put.status_code >= 300:
                            raise await client.fail(put)
                elif reply.status_code >= 300:
                    raise await client.fail(reply)
                return _next_location(location, reply), md5[-1].digest()
        except BaseException:
            self._sent = sent_before
            raise

    async def _body(self, part: Part, md5: list[hashlib._Hash]) -> AsyncIterator[bytes]:
        # Each send (a replay after a 401, a redirect) hashes afresh; the last one counts.
        hasher = hashlib.md5()
        md5.append(hasher)
        offset = part.offset
        while offset < part.end:
            block = await trio.to_thread.run_sync(os.pread, self._fd,
                                                  min(READ_BLOCK, part.end - offset), offset)
            if not block:
                raise RegistryError(f"blob {self.layer.digest} is shorter than its manifest says")
            hasher.update(block)
            offset += len(block)
            self._sent += len(block)
            yield block

    async def _commit(self, client: RegistryClient, url: str) -> None:
        async with client.stream("PUT", url, headers={"Content-Type": OCTET,
                                                      "Content-Length": "0"}) as reply:
            if reply.status_code >= 300:
                raise await client.fail(reply)

    async def _retrying(self, what: str, attempt: Callable[[], Awaitable[None]]) -> None:
        failures = 0
        while True:
            try:
                await attempt()
                return
            except Unauthorized:
                raise
            except (RegistryError, httpx.HTTPError) as exc:
                failures += 1
                message = getattr(exc, "message", None) or str(exc)
                if failures >= self.settings.retries:
                    raise TransferFailed(f"max retries exceeded: {message}") from None
                log.info("%s %s attempt %d failed: %s", self.layer.digest.short, what, failures,
                         message)
                await trio.sleep(self.settings.delay(failures))


def _next_location(url: str, reply: httpx.Response) -> str:
    location = reply.headers.get("docker-upload-location") or reply.headers.get("location")
    return protocol.resolve_location(url, location)


def send(blobs: BlobStore, layer: Layer, name: ModelName, connect: Callable[[], RegistryClient],
         settings: TransferSettings, base: str) -> AsyncIterator[Upload]:
    """Upload ``layer`` to ``name``'s repository, yielding the upload every tick for its
    progress; joins an upload of the same blob to the same repository already under way."""
    key = (base, name.repository, layer.digest)
    return follow(_ACTIVE, key, lambda: Upload(blobs, layer, name, connect, settings))
