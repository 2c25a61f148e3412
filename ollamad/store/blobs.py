"""Content-addressed blobs: ``blobs/sha256-<hex>``, each verified before it becomes visible."""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from ollamad.errors import DigestMismatch, NotFound
from ollamad.store.digest import Digest
from ollamad.store.files import commit, temp_file

BLOB_MODE = 0o644


class BlobStore:
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def path(self, digest: Digest) -> Path:
        return self.folder / digest.filename

    def has(self, digest: Digest) -> bool:
        return self.path(digest).is_file()

    def size(self, digest: Digest) -> int:
        try:
            return self.path(digest).stat().st_size
        except FileNotFoundError:
            raise NotFound(f'blob "{digest}" not found') from None

    def read_bytes(self, digest: Digest, limit: int) -> bytes:
        """A small blob's content (template, params, config); refuses one over ``limit`` bytes."""
        try:
            with open(self.path(digest), "rb") as handle:
                data = handle.read(limit + 1)
        except FileNotFoundError:
            raise NotFound(f'blob "{digest}" not found') from None
        if len(data) > limit:
            raise DigestMismatch(f"blob {digest} is larger than {limit} bytes")
        return data

    def write(self, chunks: Iterable[bytes], expected: Digest | None = None) -> tuple[Digest, int]:
        """Store a stream of bytes; with ``expected``, only if its sha256 matches.

        Returns the digest and size. On a mismatch nothing is left behind and DigestMismatch says
        what was expected and what arrived.
        """
        hasher = hashlib.sha256()
        size = 0
        with temp_file(self.folder) as (temp, handle):
            for chunk in chunks:
                hasher.update(chunk)
                handle.write(chunk)
                size += len(chunk)
            actual = Digest(hasher.hexdigest())
            if expected is not None and actual != expected:
                raise DigestMismatch(f'digest mismatch, expected "{expected}", got "{actual}"')
            commit(temp, handle, self.path(actual), BLOB_MODE)
        return actual, size

    def write_bytes(self, data: bytes, expected: Digest | None = None) -> Digest:
        return self.write([data], expected)[0]

    def verify(self, digest: Digest) -> bool:
        hasher = hashlib.sha256()
        try:
            with open(self.path(digest), "rb") as handle:
                while chunk := handle.read(1 << 20):
                    hasher.update(chunk)
        except FileNotFoundError:
            return False
        return hasher.hexdigest() == digest.hex

    def digests(self) -> Iterator[Digest]:
        """Every complete blob; temp files and partial downloads are not blobs."""
        with contextlib.suppress(FileNotFoundError), os.scandir(self.folder) as entries:
            for entry in entries:
                digest = Digest.from_filename(entry.name)
                if digest is not None and entry.is_file(follow_symlinks=False):
                    yield digest

    def remove(self, digest: Digest) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(digest).unlink()
