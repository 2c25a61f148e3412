"""Content digests: the strict grammar every digest passes before it is used as a file name."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from ollamad.errors import InvalidDigest

_DIGEST = re.compile(r"sha256[:-]([0-9a-fA-F]{64})")
_FILENAME = re.compile(r"sha256-([0-9a-f]{64})")


@dataclass(frozen=True, order=True)
class Digest:
    """A sha256 digest. ``str()`` gives the wire form ``sha256:<hex>``; ``filename`` the store's."""

    hex: str

    @classmethod
    def parse(cls, text: object) -> Digest:
        """Accept ``sha256:<hex>`` or ``sha256-<hex>`` (64 hex digits, any case), nothing else."""
        if not isinstance(text, str):
            raise InvalidDigest()
        match = _DIGEST.fullmatch(text)
        if match is None:
            raise InvalidDigest()
        return cls(match.group(1).lower())

    @classmethod
    def from_filename(cls, name: str) -> Digest | None:
        """The digest a blob file is named for, or None for anything else in the folder."""
        match = _FILENAME.fullmatch(name)
        return cls(match.group(1)) if match else None

    @classmethod
    def of(cls, data: bytes) -> Digest:
        return cls(hashlib.sha256(data).hexdigest())

    @property
    def filename(self) -> str:
        return f"sha256-{self.hex}"

    @property
    def short(self) -> str:
        """The 12 hex digits Ollama shows as a model or layer ID."""
        return self.hex[:12]

    def __str__(self) -> str:
        return f"sha256:{self.hex}"
