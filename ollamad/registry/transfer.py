"""A blob transfer that outlives the request that started it, shared by all who wait for it.

Ollama keeps a map of blob downloads (and uploads): a second pull of a blob waits on the first
one's transfer instead of starting its own, and the transfer stops once nobody waits for it. Here
a transfer runs as a trio system task, since a request's own nursery ends with the request;
:func:`follow` is how a request joins one and watches its progress.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import AsyncIterator, Callable, Hashable, Iterator
from typing import TypeVar

import trio

from ollamad.errors import OllamadError
from ollamad.registry.errors import RegistryError

log = logging.getLogger(__name__)

# How often a waiter reports progress: Ollama's 60 ms ticker.
TICK = 0.06


class Transfer:
    """Subclasses implement :meth:`_run` and keep :attr:`completed` up to date."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.done = trio.Event()
        self.error: BaseException | None = None
        self.refs = 0
        self._scope = trio.CancelScope()

    @property
    def completed(self) -> int:
        raise NotImplementedError

    async def _run(self) -> None:
        raise NotImplementedError

    def cancel(self) -> None:
        self._scope.cancel()

    def close(self) -> None:
        """Release what :meth:`_run` left open; called once the task has ended."""

    async def run(self) -> None:
        """The system task's body: never raises, but for trio's cancellation at shutdown."""
        try:
            with self._scope:
                await self._run()
            if self._scope.cancelled_caught:
                self.error = RegistryError("transfer cancelled")
        except Exception as exc:
            self.error = exc
            # A thread told to stop by cancel() ends in its own exception: not a failure.
            if not isinstance(exc, OllamadError | OSError) and not self._scope.cancel_called:
                log.exception("%s failed", self)
        finally:
            self.close()
            self.done.set()

    def failure(self) -> BaseException:
        """The error for a waiter to raise: a copy, since every waiter raises it."""
        if self.error is None:
            return RegistryError("transfer failed")
        try:
            return copy.copy(self.error)
        except Exception:
            return self.error


T = TypeVar("T", bound=Transfer)


async def follow(active: dict[Hashable, T], key: Hashable,
                 start: Callable[[], T]) -> AsyncIterator[T]:
    """Join the transfer under ``key`` (starting it with ``start`` if there is none) and yield
    it every tick for its progress, then once more when it has succeeded; raise its error.

    Leaving early drops this waiter; the transfer is cancelled when the last one leaves.
    """
    transfer = active.get(key)
    if transfer is None:
        transfer = active[key] = start()
        trio.lowlevel.spawn_system_task(_run_and_forget, active, key, transfer,
                                        name=f"transfer {key}")
    transfer.refs += 1
    try:
        while not transfer.done.is_set():
            yield transfer
            with trio.move_on_after(TICK):
                await transfer.done.wait()
        if transfer.error is not None:
            raise transfer.failure()
        yield transfer
    finally:
        transfer.refs -= 1
        if transfer.refs == 0 and not transfer.done.is_set():
            transfer.cancel()


async def _run_and_forget(active: dict[Hashable, T], key: Hashable, transfer: T) -> None:
    try:
        await transfer.run()
    finally:
        if active.get(key) is transfer:
            del active[key]


@contextlib.contextmanager
def first_error() -> Iterator[None]:
    """Raise the first real failure out of trio's exception groups (parts fail alike: one is
    the message); a group of cancellations alone is left for trio to handle."""
    try:
        yield
    except BaseExceptionGroup as group:
        real = [exc for exc in _leaves(group) if not isinstance(exc, trio.Cancelled)]
        if not real:
            raise
        raise real[0] from None


def _leaves(group: BaseExceptionGroup) -> Iterator[BaseException]:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from _leaves(exc)
        else:
            yield exc
