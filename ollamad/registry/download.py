"""One blob's download: parallel ranged parts, on-disk resume state, in-order hashing.

A download is a shared :class:`~ollamad.registry.transfer.Transfer`: a second pull of the same
blob joins it, and when the last puller leaves it stops with its parts' state on disk for the
next pull to resume from (see :mod:`ollamad.registry.parts`). The blob is hashed in order as the
prefix of finished bytes grows, and is renamed into the store only when its sha256 matches.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import AsyncIterator, Callable, Hashable, Iterator
from pathlib import Path

import httpx
import trio

from ollamad.http.metrics import add_pulled_bytes
from ollamad.registry import parts as partlib
from ollamad.registry import protocol
from ollamad.registry.client import Redirects, RegistryClient, TransportFailed
from ollamad.registry.errors import (
    CorruptBlob,
    RegistryError,
    RegistryRefused,
    TransferFailed,
    Unauthorized,
)
from ollamad.registry.parts import Part
from ollamad.registry.settings import TransferSettings
from ollamad.registry.transfer import Transfer, first_error, follow
from ollamad.store import BlobStore, Digest
from ollamad.store.files import TEMP_PREFIX, fsync_dir

log = logging.getLogger(__name__)

# Bytes gathered before a write: large enough that the thread hop costs nothing.
WRITE_BATCH = 1 << 20
# Batches a part may have received but not yet written.
WRITE_QUEUE = 4
HASH_BLOCK = 4 << 20
# At most this much is hashed per worker-thread call, so cancellation is never long delayed.
HASH_SLICE = 64 << 20
RANGE_HEADERS = {"Accept-Encoding": "identity"}


class Stalled(RegistryError):
    def __init__(self) -> None:
        super().__init__("part stalled")


class Download(Transfer):
    """The download of ``digest`` (``size`` bytes) into ``blobs`` from ``url``."""

    def __init__(self, blobs: BlobStore, digest: Digest, size: int, url: str,
                 connect: Callable[[], RegistryClient], settings: TransferSettings) -> None:
        super().__init__(size)
        self.blobs, self.digest, self.url = blobs, digest, url
        self.connect = connect
        self.settings = settings
        self.final = blobs.path(digest)
        self.data_path = self.final.with_name(self.final.name + partlib.PARTIAL)
        self.parts: list[Part] = []
        self._fd = -1
        self._dirty: set[int] = set()
        self._progress = trio.Event()
        self._short = digest.short

    def __str__(self) -> str:
        return f"download of {self.digest}"

    @property
    def completed(self) -> int:
        return sum(part.arrived for part in self.parts)

    # -- the download ---------------------------------------------------------------------------

    async def _run(self) -> None:
        self.parts = await trio.to_thread.run_sync(self._prepare)
        hashed: list[Digest] = []
        try:
            with first_error():
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._hash, hashed)
                    if any(part.remaining for part in self.parts):
                        async with self.connect() as client:
                            await self._fetch_parts(client, nursery)
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(self._checkpoint, self._take_dirty())
        await trio.to_thread.run_sync(self._finish, hashed[0])

    async def _fetch_parts(self, client: RegistryClient, nursery: trio.Nursery) -> None:
        requests = list(partlib.ranges(self.parts, self.settings.request))
        if len(requests) == 1:
            # One request, following any redirect itself: no probe for where parts should go.
            url, redirects = self.url, "all"
        else:
            url, redirects = await self._direct_url(client), "none"
        checkpoints = trio.CancelScope()
        nursery.start_soon(self._checkpoints, checkpoints)
        queue = iter(requests)
        async with trio.open_nursery() as workers:
            for _ in range(min(self.settings.parts, len(requests))):
                workers.start_soon(self._connection, queue, client, url, redirects)
        checkpoints.cancel()
        # Synced while the hash catches up, rather than after it.
        await trio.to_thread.run_sync(self._checkpoint, self._take_dirty())

    def _prepare(self) -> list[Part]:
        """Resume from the state files if they describe this blob; else start afresh."""
        states = self._state_files()
        found = []
        for path in states.values():
            with contextlib.suppress(OSError), open(path, "rb") as handle:
                part = Part.from_json(handle.read(partlib.MAX_STATE_BYTES + 1))
                if part is not None:
                    found.append(part)
        resumed = partlib.restore(found, self.size)
        try:
            on_disk = self.data_path.stat().st_size
        except FileNotFoundError:
            on_disk = -1
        if resumed is None or on_disk != self.size:
            for path in states.values():
                path.unlink(missing_ok=True)
            self.data_path.unlink(missing_ok=True)
            resumed = partlib.plan(self.size, self.settings)
            fresh = True
        else:
            fresh = False
        self._fd = os.open(self.data_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        if fresh:
            os.ftruncate(self._fd, self.size)
            self._write_states(resumed)
            log.info("downloading %s in %d part(s) of %d bytes", self._short, len(resumed),
                     resumed[0].size if resumed else 0)
        else:
            log.info("resuming %s: %d of %d bytes already here", self._short,
                     sum(p.completed for p in resumed), self.size)
        return resumed

    def _state_files(self) -> dict[int, Path]:
        found = {}
        with os.scandir(self.final.parent) as entries:
            for entry in entries:
                number = partlib.state_number(entry.name, self.final.name)
                if number is not None:
                    found[number] = Path(entry.path)
        return found

    def _state_path(self, n: int) -> Path:
        return self.final.with_name(f"{self.final.name}{partlib.PARTIAL}-{n}")

    def _write_states(self, snapshot: list[Part]) -> None:
        # Replaced, not rewritten in place: a crash leaves the old state or the new, and the
        # data they count was synced before. No fsync of their own: an old state is safe.
        for part in snapshot:
            temp = self.final.parent / f"{TEMP_PREFIX}{self.final.name}-{part.n}"
            temp.write_bytes(part.to_json())
            os.replace(temp, self._state_path(part.n))

    async def _direct_url(self, client: RegistryClient) -> str:
        """The URL the parts fetch: the first redirect to another host (a CDN), as Ollama
        does, or the blob URL itself; retried with backoff like a part."""
        failures = 0
        while True:
            try:
                async with client.stream("GET", self.url, headers={"Range": "bytes=0-0",
                                                                   **RANGE_HEADERS},
                                         redirects="same-host") as response:
                    if response.is_redirect:
                        return protocol.resolve_location(str(response.url),
                                                         response.headers.get("location"))
                    if response.status_code == 404:
                        raise RegistryRefused(f"blob {self.digest}: file does not exist")
                    if response.status_code not in (200, 206):
                        raise await client.fail(response)
                    return str(response.url)
            except (RegistryRefused, Unauthorized):
                raise
            except RegistryError as exc:
                failures += 1
                if failures >= self.settings.retries:
                    raise TransferFailed(f"max retries exceeded: {exc.message}") from None
                await trio.sleep(self.settings.delay(failures))

    async def _connection(self, requests: Iterator[tuple[Part, int, int]],
                          client: RegistryClient, url: str, redirects: Redirects) -> None:
        """One of the connections: the next range in blob order, until none is left."""
        for part, start, end in requests:
            failures = 0
            while start < end:
                received, error = await self._fetch(part, start, end, client, url, redirects)
                start += received
                if isinstance(error, (RegistryRefused, Unauthorized)):
                    raise error
                if error is None:
                    if received:
                        continue
                    error = RegistryError("registry sent no data")
                failures = 0 if received else failures + 1
                if failures >= self.settings.retries:
                    raise TransferFailed(f"max retries exceeded: {error.message}")
                log.info("%s part %d attempt %d failed: %s", self._short, part.n, failures,
                         error.message)
                if failures and not isinstance(error, Stalled):
                    await trio.sleep(self.settings.delay(failures))

    async def _fetch(self, part: Part, start: int, end: int, client: RegistryClient, url: str,
                     redirects: Redirects) -> tuple[int, RegistryError | None]:
        """Bytes [start, end) of ``part``: how many arrived in order (and were written), and
        the error that ended the request early, if one did."""
        written = [0]
        failure: RegistryError | None = None
        try:
            async with client.stream("GET", url, headers={"Range": f"bytes={start}-{end - 1}",
                                                          **RANGE_HEADERS},
                                     redirects=redirects) as response:
                if response.status_code >= 300:
                    raise await client.fail(response)
                protocol.check_range_response(response.status_code,
                                              response.headers.get("content-range"), start,
                                              end - 1, self.size)
                # Receiving and writing overlap: the socket is read while the last batch is
                # being written in a thread.
                send, receive = trio.open_memory_channel[bytes](WRITE_QUEUE)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._writer, part, start, receive, written)
                    async with send:
                        try:
                            await self._receive(end - start, response, send)
                        except RegistryError as exc:
                            failure = exc  # what arrived before it is still written
        except RegistryError as exc:
            failure = exc
        return written[0], failure

    async def _receive(self, expected: int, response: httpx.Response,
                       batches: trio.MemorySendChannel[bytes]) -> None:
        pending: list[bytes] = []
        pending_size = received = 0
        chunks = response.aiter_raw()
        try:
            while True:
                with trio.move_on_after(self.settings.stall) as timer:
                    chunk = await anext(chunks, None)
                if timer.cancelled_caught:
                    raise Stalled()
                if chunk is None:
                    return
                if received + len(chunk) > expected:
                    pending.append(chunk[:expected - received])
                    raise RegistryRefused("registry sent more bytes than the range asked for")
                received += len(chunk)
                pending.append(chunk)
                pending_size += len(chunk)
                if pending_size >= WRITE_BATCH:
                    await batches.send(_joined(pending))
                    pending, pending_size = [], 0
        except httpx.HTTPError as exc:
            raise TransportFailed(exc) from None
        finally:
            if pending:
                with trio.CancelScope(shield=True):
                    await batches.send(_joined(pending))

    async def _writer(self, part: Part, start: int, batches: trio.MemoryReceiveChannel[bytes],
                      written: list[int]) -> None:
        """Write the batches from ``start`` on, counting the bytes in ``written[0]``."""
        async with batches:
            async for data in batches:
                offset = start + written[0]
                await trio.to_thread.run_sync(_pwrite_all, self._fd, data, offset)
                written[0] += len(data)
                part.record(offset, len(data))
                self._dirty.add(part.n)
                add_pulled_bytes(len(data))
                self._wake()

    def _wake(self) -> None:
        self._progress.set()
        self._progress = trio.Event()

    async def _hash(self, result: list[Digest]) -> None:
        """Hash the finished prefix as it grows (in a thread, reading back what the writes
        left in the page cache); the digest once every byte is in."""
        hasher = hashlib.sha256()
        done = 0
        while done < self.size:
            ready = partlib.contiguous(self.parts)
            if ready > done:
                end = min(ready, done + HASH_SLICE)
                await trio.to_thread.run_sync(_hash_range, hasher, self._fd, done, end)
                done = end
            else:
                await self._progress.wait()
        result.append(Digest(hasher.hexdigest()))

    async def _checkpoints(self, scope: trio.CancelScope) -> None:
        """Make progress durable every few moments; a kill -9 then loses little."""
        with scope:
            while True:
                await trio.sleep(self.settings.checkpoint)
                await trio.to_thread.run_sync(self._checkpoint, self._take_dirty())

    def _take_dirty(self) -> list[Part]:
        # Taken in the event loop, before the sync, so the state never counts unsynced bytes.
        snapshot = [Part(p.n, p.offset, p.size, p.completed) for p in self.parts
                    if p.n in self._dirty]
        self._dirty.clear()
        return snapshot

    def _checkpoint(self, snapshot: list[Part]) -> None:
        if snapshot and self._fd >= 0:
            os.fdatasync(self._fd)
            self._write_states(snapshot)

    def _finish(self, actual: Digest) -> None:
        """Verify, then rename into place; a mismatch deletes everything of the download."""
        fd, self._fd = self._fd, -1
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        states = self._state_files()
        if actual != self.digest:
            for path in states.values():
                path.unlink(missing_ok=True)
            self.data_path.unlink(missing_ok=True)
            raise CorruptBlob(f"digest mismatch, file must be downloaded again: want "
                              f"{self.digest}, got {actual}")
        for path in states.values():
            path.unlink(missing_ok=True)
        os.chmod(self.data_path, 0o644)
        os.replace(self.data_path, self.final)
        fsync_dir(self.final.parent)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _joined(chunks: list[bytes]) -> bytes:
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def _hash_range(hasher: hashlib._Hash, fd: int, start: int, end: int) -> None:
    while start < end:
        block = os.pread(fd, min(HASH_BLOCK, end - start), start)
        if not block:
            raise OSError(f"partial download ends at byte {start} of {end}")
        hasher.update(block)
        start += len(block)


_ACTIVE: dict[Hashable, Download] = {}


def fetch(blobs: BlobStore, digest: Digest, size: int, url: str,
          connect: Callable[[], RegistryClient],
          settings: TransferSettings) -> AsyncIterator[Download]:
    """Bring blob ``digest`` into ``blobs``, yielding the download every tick for its progress;
    joins the download of the same blob already under way, if any."""
    return follow(_ACTIVE, blobs.path(digest),
                  lambda: Download(blobs, digest, size, url, connect, settings))
