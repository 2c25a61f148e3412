"""Crash-safe file writes: a reader sees the old file or the new one, never a part of either."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

TEMP_PREFIX = ".tmp-"


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink inside ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def temp_file(folder: Path) -> Iterator[tuple[Path, BinaryIO]]:
    """A new file in ``folder``, removed on any failure; the caller renames it into place."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{TEMP_PREFIX}{secrets.token_hex(8)}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield path, handle
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        raise


def commit(temp: Path, handle: BinaryIO, target: Path, mode: int) -> None:
    """Flush ``temp`` to disk and rename it over ``target``, durably."""
    handle.flush()
    os.fchmod(handle.fileno(), mode)
    os.fsync(handle.fileno())
    os.replace(temp, target)
    fsync_dir(target.parent)


def atomic_write(target: Path, data: bytes, mode: int = 0o644) -> None:
    with temp_file(target.parent) as (temp, handle):
        handle.write(data)
        commit(temp, handle, target, mode)
