"""Transfer settings, from the environment of the daemon.

Ollama fixes these in its code; ollamad reads them so that a slow link, a small disk or a test
can change them. The defaults are Ollama's, but for the size of one request (Ollama asks for a
whole part at once).

=============================  ===========  ====================================================
variable                       default      meaning
=============================  ===========  ====================================================
``OLLAMAD_TRANSFER_PARTS``     16           parts a blob is split into (more when the
                                            maximum size binds), and the requests that run
                                            at once
``OLLAMAD_TRANSFER_PART_MIN``  100MB        smallest part; a smaller blob is one request
``OLLAMAD_TRANSFER_PART_MAX``  1000MB       largest part
``OLLAMAD_TRANSFER_REQUEST``   16MiB        most bytes one ranged request asks for: the
                                            parts' bytes are requested in this order by
                                            the ``PARTS`` connections, so that they arrive
                                            nearly in order and hashing keeps up
``OLLAMAD_TRANSFER_STALL``     30s          no byte for this long restarts a part (and times
                                            out a manifest or token request)
``OLLAMAD_TRANSFER_RETRIES``   6            attempts of a part that makes no progress
``OLLAMAD_TRANSFER_BACKOFF``   1s           wait before the second attempt; doubles after each
=============================  ===========  ====================================================

Sizes take decimal (``KB``, ``MB``, ``GB``) or binary (``KiB``, ``MiB``, ``GiB``) units or plain
bytes; durations are Go durations (``30s``, ``1m``) or seconds.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from ollamad.config import env_duration, env_int, env_value

MB = 1000 * 1000
_SIZE = re.compile(r"(\d+)\s*([KMGT]i?B|B)?", re.IGNORECASE)
_SCALE = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def parse_size(text: str) -> int:
    """Bytes from ``4MB``, ``512KiB`` or ``1048576``. Raises ValueError."""
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a size")
    return int(match.group(1)) * _SCALE[(match.group(2) or "").upper()]


def _env_size(env: Mapping[str, str], key: str, default: int) -> int:
    value = env_value(env, key)
    try:
        return parse_size(value) if value else default
    except ValueError:
        raise ValueError(f"{key}={value!r} is not a size such as 100MB") from None


@dataclass(frozen=True)
class TransferSettings:
    parts: int = 16
    part_min: int = 100 * MB
    part_max: int = 1000 * MB
    stall: float = 30.0
    retries: int = 6
    backoff: float = 1.0
    # How often part progress is made durable; a kill loses at most this much of a pull.
    checkpoint: float = 1.0
    request: int = 16 << 20

    def __post_init__(self) -> None:
        if self.parts < 1 or self.retries < 1:
            raise ValueError("transfer parts and retries must be at least 1")
        if not 0 < self.part_min <= self.part_max:
            raise ValueError("transfer part sizes must satisfy 0 < minimum <= maximum")
        if self.request <= 0:
            raise ValueError("the transfer request size must be positive")
        if self.stall <= 0 or self.backoff < 0:
            raise ValueError("the stall timeout must be positive and the backoff not negative")

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> TransferSettings:
        return cls(
            parts=env_int(env, "OLLAMAD_TRANSFER_PARTS", cls.parts),
            part_min=_env_size(env, "OLLAMAD_TRANSFER_PART_MIN", cls.part_min),
            part_max=_env_size(env, "OLLAMAD_TRANSFER_PART_MAX", cls.part_max),
            request=_env_size(env, "OLLAMAD_TRANSFER_REQUEST", cls.request),
            stall=env_duration(env, "OLLAMAD_TRANSFER_STALL", cls.stall),
            retries=env_int(env, "OLLAMAD_TRANSFER_RETRIES", cls.retries),
            backoff=env_duration(env, "OLLAMAD_TRANSFER_BACKOFF", cls.backoff),
        )

    def part_size(self, total: int) -> int:
        """Ollama's rule: a sixteenth of the blob, clamped to the minimum and maximum."""
        return min(max(total // self.parts, self.part_min), self.part_max)

    def delay(self, attempt: int) -> float:
        """The wait after failed attempt ``attempt`` (1-based): backoff, doubled each time."""
        return self.backoff * 2 ** (attempt - 1)
