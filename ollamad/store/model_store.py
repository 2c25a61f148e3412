"""The model store: blobs and manifests together, and the rules that keep them consistent.

Synchronous and thread-safe: the daemon calls it from worker threads. A manifest change and the
pruning that follows it happen under one lock, and blobs that an operation is still writing (or
has written but not yet referenced from a manifest) are pinned so that no prune removes them.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import re
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from ollamad.errors import CorruptStore, NotFound
from ollamad.store.blobs import BlobStore
from ollamad.store.digest import Digest
from ollamad.store.files import TEMP_PREFIX
from ollamad.store.manifests import Manifest, ManifestStore, StoredManifest
from ollamad.store.names import ModelName

log = logging.getLogger(__name__)

# Start-up prune leaves young files alone: another process (an Ollama sharing the store, or an
# operation of ours before the restart) may be about to reference them.
PRUNE_GRACE_SECONDS = 3600
_LEGACY_BLOB = re.compile(r"sha256:([0-9a-f]{64})")


class ModelStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = BlobStore(root / "blobs")
        self.manifests = ManifestStore(root / "manifests")
        self._lock = threading.RLock()
        self._pins: collections.Counter[Digest] = collections.Counter()

    def create_folders(self) -> None:
        for folder in (self.root, self.blobs.folder, self.manifests.folder):
            folder.mkdir(mode=0o755, parents=True, exist_ok=True)

    # -- reading --------------------------------------------------------------------------------

    def resolve(self, name: ModelName) -> ModelName:
        """The stored spelling of ``name``; NotFound names it as the user wrote it."""
        stored = self.manifests.resolve(name)
        if stored is None:
            raise NotFound(f"model '{name.original}' not found")
        return stored

    def get(self, name: ModelName) -> StoredManifest:
        return self.manifests.read(self.resolve(name))

    def models(self) -> list[StoredManifest]:
        """Every readable model; a broken manifest is logged and skipped, not fatal to the list."""
        found = []
        for name in self.manifests.names():
            try:
                found.append(self.manifests.read(name))
            except (CorruptStore, NotFound, OSError) as exc:
                log.warning("skipping model %s: %s", name, getattr(exc, "message", exc))
        return found

    # -- changing -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def pinned(self, digests: Iterable[Digest]) -> Iterator[None]:
        """Keep ``digests`` from being pruned while the block runs."""
        digests = list(digests)
        with self._lock:
            self._pins.update(digests)
        try:
            yield
        finally:
            with self._lock:
                self._pins.subtract(digests)
                self._pins += collections.Counter()  # drop zero counts

    def write_manifest(self, name: ModelName, raw: bytes) -> ModelName:
        """Write ``raw`` under ``name`` (an existing spelling wins); prune what the old one held."""
        with self._lock:
            missing = [d for d in Manifest.parse(raw).digests if not self.blobs.has(d)]
            if missing:
                raise CorruptStore(f"not writing {name}: blob {missing[0]} is missing")
            target = self.manifests.resolve(name) or name
            old = self._read_quietly(target)
            self.manifests.write(target, raw)
            if old is not None:
                self._remove_unreferenced(old.manifest.digests)
            return target

    def copy(self, source: ModelName, destination: ModelName) -> ModelName:
        """Copy a manifest byte for byte; the blobs are shared."""
        with self._lock:
            return self.write_manifest(destination, self.get(source).raw)

    def delete(self, name: ModelName) -> StoredManifest:
        """Remove a model and every blob of it that no other model references."""
        with self._lock:
            stored = self.get(name)
            self.manifests.remove(stored.name)
            self._remove_unreferenced(stored.manifest.digests)
            return stored

    def prune(self, grace_seconds: float = PRUNE_GRACE_SECONDS) -> int:
        """Remove unreferenced blobs and stale temp files (of blobs and manifests) older than
        ``grace_seconds``.

        Partial downloads are never touched: a pull resumes from them. If any manifest is
        unreadable, nothing is removed, since its blobs cannot be told apart from garbage.
        """
        with self._lock:
            try:
                referenced = self._referenced()
            except (CorruptStore, OSError) as exc:
                log.warning("not pruning: %s", getattr(exc, "message", exc))
                return 0
            cutoff = time.time() - grace_seconds
            removed = 0
            for digest in list(self.blobs.digests()):
                if digest in referenced or self._pins[digest]:
                    continue
                if _mtime(self.blobs.path(digest)) < cutoff:
                    self.blobs.remove(digest)
                    removed += 1
            # A crash mid-write leaves its temp file beside the target: blobs/ holds blob temps,
            # and manifests/ one per manifest folder.
            temps = [*self.blobs.folder.glob(f"{TEMP_PREFIX}*"),
                     *self.manifests.folder.rglob(f"{TEMP_PREFIX}*")]
            for temp in temps:
                if temp.is_file() and not temp.is_symlink() and _mtime(temp) < cutoff:
                    temp.unlink(missing_ok=True)
            return removed

    def fix_legacy_blob_names(self) -> None:
        """Rename ``sha256:<hex>`` blobs (old Ollama versions) to ``sha256-<hex>``."""
        with contextlib.suppress(FileNotFoundError), os.scandir(self.blobs.folder) as entries:
            for entry in entries:
                match = _LEGACY_BLOB.fullmatch(entry.name)
                if match and entry.is_file(follow_symlinks=False):
                    os.replace(entry.path, self.blobs.path(Digest(match.group(1))))

    # -- internals ------------------------------------------------------------------------------

    def _read_quietly(self, name: ModelName) -> StoredManifest | None:
        try:
            return self.manifests.read(name)
        except (NotFound, CorruptStore):
            return None

    def _referenced(self) -> set[Digest]:
        """Every digest any manifest names; raises CorruptStore if one cannot be read."""
        referenced: set[Digest] = set()
        for name in self.manifests.names():
            referenced |= self.manifests.read(name).manifest.digests
        return referenced

    def _remove_unreferenced(self, candidates: set[Digest]) -> None:
        try:
            referenced = self._referenced()
        except CorruptStore as exc:
            log.warning("keeping blobs of a removed model: %s", exc.message)
            return
        for digest in candidates - referenced:
            if not self._pins[digest]:
                self.blobs.remove(digest)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return float("inf")
