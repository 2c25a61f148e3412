"""export and import: a model as an OCI image-layout tar, for machines without a registry.

The archive holds ``oci-layout``, ``index.json`` (one manifest, named by the
``io.containerd.image.name`` and ``org.opencontainers.image.ref.name`` annotations) and
``blobs/sha256/<hex>`` for the manifest, the config and every layer. Both directions stream, so
the file may be a pipe; the daemon reads and writes only the descriptor the client passed.

Import is strict, and writes nothing visible until every check has passed: an entry that is not
one of those names (a path that leaves the archive included), a repeated entry, a link or device,
a blob whose content is not its name's digest, or a manifest naming a blob that is neither in the
archive nor in the store refuses the whole archive. Blobs are staged as temp files in the store
and renamed into place only at the end.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import secrets
import tarfile
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import trio

from ollamad import gojson
from ollamad.errors import InvalidDigest, InvalidName
from ollamad.passed_files import PassedFile
from ollamad.registry.errors import ArchiveRefused
from ollamad.registry.transfer import Transfer, follow
from ollamad.store import Digest, InvalidManifest, Manifest, ModelName, ModelStore
from ollamad.store.blobs import BLOB_MODE
from ollamad.store.files import TEMP_PREFIX, fsync_dir
from ollamad.store.manifests import MAX_MANIFEST_BYTES

Event = dict[str, Any]
OCI_LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'
INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"
NAME_ANNOTATION = "io.containerd.image.name"
REF_ANNOTATION = "org.opencontainers.image.ref.name"
COPY_BLOCK = 1 << 20
# oci-layout and index.json are a few hundred bytes; more is not an archive of ours.
MAX_METADATA = 1 << 20
_BLOB_ENTRY = re.compile(r"blobs/sha256/([0-9a-f]{64})")
_DIRECTORIES = {"blobs", "blobs/sha256"}


class Stopped(Exception):
    """The request went away; the worker thread stops at the next block."""


# -- pure checks --------------------------------------------------------------------------------


def entry_name(member: tarfile.TarInfo) -> str:
    """The layout path of a member, or ArchiveRefused for anything an OCI layout does not hold."""
    raw = member.name
    name = raw[2:] if raw.startswith("./") else raw
    name = name.rstrip("/") if member.isdir() else name
    if name.startswith("/") or ".." in name.split("/") or "\\" in name or "\0" in name:
        raise ArchiveRefused(f'archive entry "{raw}" points outside the archive')
    if member.issym() or member.islnk():
        raise ArchiveRefused(f'archive entry "{raw}" is a link')
    if member.isdir():
        if name in _DIRECTORIES or name in ("", "."):
            return name
    elif member.type not in (tarfile.REGTYPE, tarfile.AREGTYPE):
        raise ArchiveRefused(f'archive entry "{raw}" is not a regular file')
    elif name in ("oci-layout", "index.json") or _BLOB_ENTRY.fullmatch(name):
        return name
    raise ArchiveRefused(f'archive entry "{raw}" is not part of an OCI image layout')


def index_json(stored_name: ModelName, manifest_raw: bytes, media_type: str) -> bytes:
    return gojson.dumps({
        "schemaVersion": 2,
        "mediaType": INDEX_MEDIA_TYPE,
        "manifests": [{
            "mediaType": media_type,
            "digest": str(Digest.of(manifest_raw)),
            "size": len(manifest_raw),
            "annotations": {NAME_ANNOTATION: str(stored_name),
                            REF_ANNOTATION: str(stored_name)},
        }],
    }).encode() + b"\n"


@dataclass(frozen=True)
class Choice:
    digest: Digest
    size: int
    name: ModelName | None


def choose_manifest(index_raw: bytes, wanted: ModelName | None) -> Choice:
    """The manifest of ``index.json`` to import: the only one, or the one named ``wanted``."""
    try:
        index = json.loads(index_raw)
        entries = index["manifests"]
        assert isinstance(entries, list) and entries
    except (ValueError, KeyError, TypeError, AssertionError):
        raise ArchiveRefused("index.json does not list any manifest") from None
    choices = []
    for entry in entries:
        if not isinstance(entry, dict):
            raise ArchiveRefused("index.json has an entry that is not an object")
        try:
            digest = Digest.parse(entry.get("digest"))
        except InvalidDigest:
            raise ArchiveRefused(f"index.json names a malformed digest {entry.get('digest')!r}") \
                from None
        size = entry.get("size")
        if not isinstance(size, int) or isinstance(size, bool) \
                or not 0 < size <= MAX_MANIFEST_BYTES:
            raise ArchiveRefused(f"index.json gives manifest {digest} an impossible size")
        annotations = entry.get("annotations") if isinstance(entry.get("annotations"), dict) \
            else {}
        name = None
        for key in (NAME_ANNOTATION, REF_ANNOTATION):
            with contextlib.suppress(InvalidName):
                name = ModelName.parse(annotations.get(key))
                break
        choices.append(Choice(digest, size, name))
    if len(choices) == 1:
        return choices[0]
    matching = [c for c in choices if wanted is not None and c.name is not None
                and c.name.key == wanted.key]
    if len(matching) != 1:
        raise ArchiveRefused(f"the archive holds {len(choices)} models; name the one to import")
    return matching[0]


# -- export -------------------------------------------------------------------------------------


class _Worker(Transfer):
    """Archive work in a thread, with progress per blob; stops when its request does."""

    def __init__(self, job: Callable[[_Worker], None]) -> None:
        super().__init__(0)
        self.job = job
        self.items: dict[Digest, list[int]] = {}  # digest -> [total, completed]
        self.stages: list[str] = []
        self._stop = threading.Event()

    @property
    def completed(self) -> int:
        return sum(done for _, done in self.items.values())

    def check(self) -> None:
        if self._stop.is_set():
            raise Stopped()

    async def _run(self) -> None:
        try:
            await trio.to_thread.run_sync(self.job, self)
        finally:
            self._stop.set()

    def cancel(self) -> None:
        # The thread cannot be cancelled: it is told to stop, and the task waits for it.
        self._stop.set()
        super().cancel()


async def _events(worker: _Worker, verb: str) -> AsyncIterator[Event]:
    shown: dict[Digest, int] = {}
    stages = 0
    active: dict[object, _Worker] = {}
    async with contextlib.aclosing(follow(active, object(), lambda: worker)) as ticks:
        async for _ in ticks:
            for digest, (total, done) in list(worker.items.items()):
                if shown.get(digest) != done:
                    shown[digest] = done
                    yield {"status": f"{verb} {digest.short}", "digest": str(digest),
                           "total": total, "completed": done}
            for stage in worker.stages[stages:]:
                stages += 1
                yield {"status": stage}


async def export(store: ModelStore, name: ModelName, fd: int) -> AsyncIterator[Event]:
    """Write ``name`` as an OCI image-layout tar to ``fd`` (left open for its owner)."""
    stored = await trio.to_thread.run_sync(store.get, name)

    def job(worker: _Worker) -> None:
        manifest = stored.manifest
        with store.pinned(manifest.digests), \
                io.BufferedWriter(PassedFile(fd, worker.check), COPY_BLOCK) as out, \
                tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            mtime = stored.mtime_ns // 10**9
            for folder in ("blobs", "blobs/sha256"):
                info = tarfile.TarInfo(folder)
                info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, mtime
                tar.addfile(info)
            _add_bytes(tar, "oci-layout", OCI_LAYOUT, mtime)
            _add_bytes(tar, "index.json", index_json(stored.name, stored.raw,
                                                     manifest.media_type), mtime)
            _add_bytes(tar, f"blobs/sha256/{stored.digest.hex}", stored.raw, mtime)
            layers = {layer.digest: layer for layer in (*manifest.layers, manifest.config)}
            for digest in layers:
                worker.items[digest] = [store.blobs.size(digest), 0]
            for digest in layers:
                _add_blob(tar, store, digest, mtime, worker)

    async for event in _events(_Worker(job), "exporting"):
        yield event
    yield {"status": "success"}


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mtime: int) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, mtime
    tar.addfile(info, _Reader(iter([data])))


def _add_blob(tar: tarfile.TarFile, store: ModelStore, digest: Digest, mtime: int,
              worker: _Worker) -> None:
    progress = worker.items[digest]
    with open(store.blobs.path(digest), "rb") as source:
        info = tarfile.TarInfo(f"blobs/sha256/{digest.hex}")
        info.size, info.mode, info.mtime = os.fstat(source.fileno()).st_size, 0o644, mtime

        def blocks() -> Iterator[bytes]:
            while block := source.read(COPY_BLOCK):
                worker.check()
                progress[1] += len(block)
                yield block

        tar.addfile(info, _Reader(blocks()))


class _Reader:
    """A file-like view of an iterator of blocks, for tarfile.addfile."""

    def __init__(self, blocks: Iterator[bytes]) -> None:
        self._blocks = blocks
        self._buffer = b""

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buffer) < size:
            block = next(self._blocks, None)
            if block is None:
                break
            self._buffer += block
        if size < 0:
            size = len(self._buffer)
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data


# -- import -------------------------------------------------------------------------------------


@dataclass
class _Staged:
    """What has been read: small files kept, blobs in verified temp files of the store."""

    folder: Path
    metadata: dict[str, bytes] = field(default_factory=dict)
    temps: dict[Digest, Path] = field(default_factory=dict)
    sizes: dict[Digest, int] = field(default_factory=dict)
    small: dict[Digest, bytes] = field(default_factory=dict)

    def discard(self) -> None:
        for path in self.temps.values():
            path.unlink(missing_ok=True)
        self.temps.clear()


async def import_archive(store: ModelStore, fd: int,
                         wanted: ModelName | None) -> AsyncIterator[Event]:
    """Read an OCI image-layout tar from ``fd`` and add its model (as ``wanted``, if given)."""
    result: list[ModelName] = []

    def job(worker: _Worker) -> None:
        staged = _Staged(store.blobs.folder)
        try:
            with io.BufferedReader(PassedFile(fd, worker.check), COPY_BLOCK) as source:
                _read(source, staged, worker)
            worker.stages.append("verifying sha256 digest")
            name, raw = _check(store, staged, wanted)
            worker.stages.append("writing manifest")
            manifest = Manifest.parse(raw)
            with store.pinned(manifest.digests):
                _commit(store, staged, manifest)
                result.append(store.write_manifest(name, raw))
        finally:
            staged.discard()

    async for event in _events(_Worker(job), "importing"):
        yield event
    yield {"status": "success", "model": result[0].display_shortest()}


def _read(source: IO[bytes], staged: _Staged, worker: _Worker) -> None:
    seen: set[str] = set()
    try:
        with tarfile.open(fileobj=source, mode="r|") as tar:
            for member in tar:
                worker.check()
                name = entry_name(member)
                if name in seen:
                    raise ArchiveRefused(f'archive entry "{member.name}" appears twice')
                seen.add(name)
                if member.isdir():
                    continue
                data = tar.extractfile(member)
                assert data is not None
                match = _BLOB_ENTRY.fullmatch(name)
                if match is None:
                    if member.size > MAX_METADATA:
                        raise ArchiveRefused(f"{name} is too large")
                    staged.metadata[name] = data.read()
                else:
                    _stage_blob(Digest(match.group(1)), member.size, data, staged, worker)
    except tarfile.TarError as exc:
        raise ArchiveRefused(f"not a readable tar archive: {exc}") from None


def _stage_blob(digest: Digest, size: int, data: IO[bytes], staged: _Staged,
                worker: _Worker) -> None:
    progress = worker.items[digest] = [size, 0]
    hasher = hashlib.sha256()
    temp = staged.folder / f"{TEMP_PREFIX}import-{secrets.token_hex(8)}"
    staged.temps[digest] = temp
    keep = size <= MAX_MANIFEST_BYTES
    kept = []
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as out:
        while block := data.read(COPY_BLOCK):
            worker.check()
            hasher.update(block)
            out.write(block)
            if keep:
                kept.append(block)
            progress[1] += len(block)
        out.flush()
        os.fsync(out.fileno())
    if progress[1] != size:
        raise ArchiveRefused(f"archive entry blobs/sha256/{digest.hex} is truncated")
    if hasher.hexdigest() != digest.hex:
        raise ArchiveRefused(f"blob {digest} in the archive has digest sha256:"
                             f"{hasher.hexdigest()}")
    staged.sizes[digest] = size
    if keep:
        staged.small[digest] = b"".join(kept)


def _check(store: ModelStore, staged: _Staged,
           wanted: ModelName | None) -> tuple[ModelName, bytes]:
    layout = staged.metadata.get("oci-layout")
    try:
        version = json.loads(layout or b"null")["imageLayoutVersion"]
    except (ValueError, KeyError, TypeError):
        version = None
    if not isinstance(version, str) or not version.startswith("1."):
        raise ArchiveRefused("the archive has no oci-layout of version 1.x: not an OCI image "
                             "layout")
    if "index.json" not in staged.metadata:
        raise ArchiveRefused("the archive has no index.json")
    choice = choose_manifest(staged.metadata["index.json"], wanted)
    raw = staged.small.get(choice.digest)
    if raw is None or len(raw) != choice.size:
        raise ArchiveRefused(f"manifest {choice.digest} is not in the archive, or not of the "
                             "size index.json gives")
    try:
        manifest = Manifest.parse(raw)
    except InvalidManifest as exc:
        raise ArchiveRefused(f"manifest {choice.digest}: {exc}") from None
    for layer in (*manifest.layers, manifest.config):
        if layer.digest in staged.sizes:
            if staged.sizes[layer.digest] != layer.size:
                raise ArchiveRefused(f"blob {layer.digest} is {staged.sizes[layer.digest]} "
                                     f"bytes, the manifest says {layer.size}")
        elif not store.blobs.has(layer.digest):
            raise ArchiveRefused(f"blob {layer.digest} is neither in the archive nor in the "
                                 "store")
    name = wanted or choice.name
    if name is None:
        raise ArchiveRefused("the archive does not name its model; give a name to import it as")
    return name, raw


def _commit(store: ModelStore, staged: _Staged, manifest: Manifest) -> None:
    for digest in manifest.digests:
        temp = staged.temps.pop(digest, None)
        if temp is None:
            continue
        if store.blobs.has(digest):
            temp.unlink(missing_ok=True)
            continue
        os.chmod(temp, BLOB_MODE)
        os.replace(temp, store.blobs.path(digest))
    fsync_dir(store.blobs.folder)
