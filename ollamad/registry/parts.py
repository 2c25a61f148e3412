"""How a blob is cut into ranged parts, and the on-disk resume state of each part (pure).

A download keeps, beside the final blob path ``blobs/sha256-<hex>``:

- ``sha256-<hex>-partial``: the data, pre-sized to the blob's length (sparse);
- ``sha256-<hex>-partial-<N>``: one JSON object per part,
  ``{"N":0,"Offset":0,"Size":104857600,"Completed":524288}``, Ollama's own format, so that a store
  shared with Ollama resumes in either program.

``Completed`` never runs ahead of the data: the file is synced before the state that counts it is
written, so after a crash a part resumes at or before the first byte that is missing.

A part is fetched as a run of ranged requests of at most a few megabytes, taken in blob order by
a pool of connections, so that the bytes arrive nearly in order and the hash (which must read
them in order) keeps up with the download. Requests finish out of order, so a part also keeps
the ranges that have landed past its first missing byte; ``Completed`` counts only the
unbroken prefix, and what lies past a gap is fetched again after a crash.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from ollamad.registry.settings import TransferSettings

PARTIAL = "-partial"
_STATE_SUFFIX = re.compile(r"-partial-(\d{1,6})")
# A state file is a few dozen bytes; anything large is not ours.
MAX_STATE_BYTES = 4096


@dataclass
class Part:
    n: int
    offset: int
    size: int
    completed: int = 0
    # Ranges [start, end) written past the first missing byte, sorted, disjoint, not adjacent.
    landed: list[tuple[int, int]] = field(default_factory=list, compare=False, repr=False)

    @property
    def start(self) -> int:
        """The first byte still missing."""
        return self.offset + self.completed

    @property
    def end(self) -> int:
        """One past the last byte of the part."""
        return self.offset + self.size

    @property
    def remaining(self) -> int:
        return self.size - self.completed

    @property
    def arrived(self) -> int:
        """Bytes of the part on disk: the prefix and the ranges past it."""
        return self.completed + sum(end - start for start, end in self.landed)

    def record(self, start: int, count: int) -> None:
        """``count`` bytes from blob offset ``start`` have been written."""
        merged: list[tuple[int, int]] = []
        for first, end in sorted([*self.landed, (start, start + count)]):
            if merged and first <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], end))
            else:
                merged.append((first, end))
        if merged[0][0] <= self.start:
            self.completed = max(self.completed, min(merged.pop(0)[1], self.end) - self.offset)
        self.landed = merged

    def to_json(self) -> bytes:
        # Go's json.Encoder output for Ollama's blobDownloadPart: field order, trailing newline.
        return json.dumps({"N": self.n, "Offset": self.offset, "Size": self.size,
                           "Completed": self.completed}, separators=(",", ":")).encode() + b"\n"

    @classmethod
    def from_json(cls, data: bytes) -> Part | None:
        """A part from its state file, or None if the bytes are not a plausible part."""
        if len(data) > MAX_STATE_BYTES:
            return None
        try:
            obj = json.loads(data)
        except ValueError:
            return None
        if not isinstance(obj, dict):
            return None
        values = [obj.get(key) for key in ("N", "Offset", "Size", "Completed")]
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
            return None
        n, offset, size, completed = values
        return cls(n, offset, size, min(completed, size))


def plan(total: int, settings: TransferSettings) -> list[Part]:
    """Consecutive parts covering ``[0, total)``; an empty blob has none."""
    size = settings.part_size(total)
    return [Part(n, offset, min(size, total - offset))
            for n, offset in enumerate(range(0, total, size))]


def restore(found: Iterable[Part], total: int) -> list[Part] | None:
    """The parts of an interrupted download of a ``total``-byte blob, in order, if they tile
    ``[0, total)`` exactly with numbers 0..n-1; None when they do not (another size, a lost or
    doctored file), and the download must start over."""
    parts = sorted(found, key=lambda part: part.n)
    offset = 0
    for index, part in enumerate(parts):
        if part.n != index or part.offset != offset or part.size == 0:
            return None
        offset = part.end
    if offset != total or not parts:
        return None
    return parts


def ranges(parts: Iterable[Part], most: int) -> Iterator[tuple[Part, int, int]]:
    """The missing bytes of ``parts`` as requests ``(part, start, end)`` of at most ``most``
    bytes each, in blob order."""
    for part in parts:
        for start in range(part.start, part.end, most):
            yield part, start, min(start + most, part.end)


def state_number(filename: str, blob_filename: str) -> int | None:
    """N for ``<blob>-partial-N``, None for any other file name."""
    if not filename.startswith(blob_filename):
        return None
    match = _STATE_SUFFIX.fullmatch(filename, len(blob_filename))
    return int(match.group(1)) if match else None


def contiguous(parts: Iterable[Part]) -> int:
    """How many bytes from the start of the blob are all present: what can be hashed so far."""
    done = 0
    for part in parts:
        done += part.completed
        if part.remaining:
            break
    return done
