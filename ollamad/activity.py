"""Activity tracking for ``--idle-exit``: the daemon is idle when nothing holds it busy."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import trio


class Activity:
    """Counts what keeps the daemon busy: connections, requests, loaded models."""

    def __init__(self) -> None:
        self._busy = 0
        self._changed = trio.Event()
        self._idle_since = trio.current_time()

    @property
    def idle(self) -> bool:
        return self._busy == 0

    @contextlib.contextmanager
    def busy(self) -> Iterator[None]:
        self._busy += 1
        self._notify()
        try:
            yield
        finally:
            self._busy -= 1
            if self._busy == 0:
                self._idle_since = trio.current_time()
            self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_idle(self, seconds: float) -> None:
        """Return once the daemon has been idle for ``seconds`` without a break."""
        while True:
            deadline = self._idle_since + seconds if self.idle else math.inf
            if trio.current_time() >= deadline:
                return
            with trio.move_on_at(deadline):
                await self._changed.wait()
