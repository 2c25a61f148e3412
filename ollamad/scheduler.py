"""Which runners live: loading, sharing, keep_alive expiry, eviction, the request queue.

One runner per (model file, load options). Requests hold a runner while they use it; when the
last one lets go, the runner's keep_alive timer starts. At most ``max_loaded`` runners live at
once: a new load first evicts an idle one, least recently used first, and waits for a busy one to
finish when none is idle. Memory is checked the same way against an estimate of what the runner
will need.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from ollamad.activity import Activity
from ollamad.errors import Busy, OllamadError
from ollamad.runner.handle import LoadOptions, Runner, RunnerError

log = logging.getLogger(__name__)

QUEUE_FULL = "server busy, please try again.  maximum pending requests exceeded"


class InsufficientMemory(OllamadError):
    """The model needs more memory than the machine has free, even with everything unloaded."""


@dataclass(frozen=True)
class ModelRef:
    """What to load: the weights, and how the model is reported in ``ps``."""

    path: Path
    name: str
    digest: str
    details: dict[str, Any]
    memory: int  # estimated bytes for weights + KV cache at the requested options


@dataclass(eq=False)
class Loaded:
    ref: ModelRef
    options: LoadOptions
    keep_alive: float
    runner: Runner | None = None
    ready: trio.Event = field(default_factory=trio.Event)
    error: BaseException | None = None
    users: int = 0
    expires_at: float = math.inf  # wall clock, for ps
    last_used: float = 0.0
    expired: trio.Event = field(default_factory=trio.Event)
    _timer: trio.CancelScope | None = None
    _activity: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    @property
    def alive(self) -> bool:
        return self.error is None and (self.runner is None or self.runner.alive)


def available_memory() -> int:
    """MemAvailable from /proc/meminfo, in bytes."""
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


class Scheduler:
    def __init__(self, activity: Activity, *, default_keep_alive: float, max_loaded: int,
                 max_queue: int, free_memory: Callable[[], int] = available_memory) -> None:
        self.activity = activity
        self.default_keep_alive = default_keep_alive
        self.max_loaded = max_loaded
        self.max_queue = max_queue
        self.free_memory = free_memory
        self._loaded: list[Loaded] = []
        self._pending = 0
        self._changed = trio.Condition()
        self._nursery: trio.Nursery | None = None

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the runners; on cancellation (daemon shutdown) stop every one of them."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True):
                for loaded in list(self._loaded):
                    await self._unload(loaded)

    # -- the public face ------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def use(self, ref: ModelRef, options: LoadOptions, keep_alive: float | None,
                  on_progress: Callable[[float], None] | None = None) -> AsyncIterator[Loaded]:
        """A ready runner for ``ref`` with ``options``, held for the block.

        ``keep_alive`` (seconds, ``math.inf`` for ever, None for the current or default value)
        applies once the last user lets go; 0 unloads at once.
        """
        if self._pending >= self.max_queue:
            raise Busy(QUEUE_FULL)
        self._pending += 1
        try:
            loaded = await self._acquire(ref, options, keep_alive, on_progress)
        finally:
            self._pending -= 1
        try:
            yield loaded
        finally:
            # Shielded: a cancelled user (a client that went away) must still give it back.
            with trio.CancelScope(shield=True):
                await self._release(loaded)

    def ps(self) -> list[Loaded]:
        return sorted((m for m in self._loaded if m.alive), key=lambda m: m.expires_at,
                      reverse=True)

    async def expire(self, path: Path) -> None:
        """Unload the model at ``path`` as soon as it is idle (``keep_alive: 0``, ``stop``)."""
        for loaded in [m for m in self._loaded if m.ref.path == path]:
            loaded.keep_alive = 0
            if loaded.users == 0:
                await self._unload(loaded)

    # -- internals ------------------------------------------------------------------------------

    async def _acquire(self, ref: ModelRef, options: LoadOptions, keep_alive: float | None,
                       on_progress: Callable[[float], None] | None) -> Loaded:
        while True:
            async with self._changed:
                current = next((m for m in self._loaded if m.ref.path == ref.path), None)
                if current is not None and not current.alive and current.ready.is_set():
                    await self._unload(current)  # crashed: reap it, load afresh
                    current = None
                if current is not None and current.options != options:
                    # Different load-time options: the old runner goes once it is idle.
                    current.keep_alive = 0
                    if current.users == 0:
                        await self._unload(current)
                    else:
                        await self._changed.wait()
                    continue
                if current is None:
                    if not await self._make_room(ref):
                        await self._changed.wait()
                        continue
                    current = Loaded(ref, options, self._keep_alive(keep_alive, None))
                    self._loaded.append(current)
                    assert self._nursery is not None
                    self._nursery.start_soon(self._load, current, on_progress)
                current.users += 1
                current.keep_alive = self._keep_alive(keep_alive, current)
                self._stop_timer(current)
            try:
                await current.ready.wait()
            except BaseException:
                with trio.CancelScope(shield=True):
                    await self._release(current)
                raise
            if current.error is not None:
                await self._release(current)
                raise current.error
            if not current.alive:
                await self._release(current)
                continue
            return current

    def _keep_alive(self, requested: float | None, current: Loaded | None) -> float:
        if requested is not None:
            return requested
        return current.keep_alive if current is not None else self.default_keep_alive

    async def _make_room(self, ref: ModelRef) -> bool:
        """Evict idle runners until ``ref`` fits; False if it must wait for a busy one."""
        while True:
            live = [m for m in self._loaded if m.alive]
            too_many = len(live) >= self.max_loaded
            too_big = bool(live) and ref.memory > self.free_memory()
            if not too_many and not too_big:
                break
            idle = sorted((m for m in live if m.users == 0 and m.ready.is_set()),
                          key=lambda m: m.last_used)
            if not idle:
                return False
            log.info("unloading %s to make room for %s", idle[0].ref.name, ref.name)
            await self._unload(idle[0])
        if not self._loaded and ref.memory > self.free_memory():
            raise InsufficientMemory(
                f"model requires more system memory ({_gib(ref.memory)}) than is available "
                f"({_gib(self.free_memory())})")
        return True

    async def _load(self, loaded: Loaded, on_progress: Callable[[float], None] | None) -> None:
        loaded._activity.enter_context(self.activity.busy())
        try:
            loaded.runner = await Runner.start(self._nursery, loaded.ref.path, loaded.options,
                                               on_progress=on_progress)
        except (RunnerError, OSError) as exc:
            log.error("loading %s failed: %s", loaded.ref.name, exc)
            loaded.error = exc if isinstance(exc, OllamadError) else RunnerError(str(exc))
            self._forget(loaded)
        loaded.last_used = time.monotonic()
        loaded.ready.set()
        async with self._changed:
            self._changed.notify_all()

    async def _release(self, loaded: Loaded) -> None:
        async with self._changed:
            loaded.users -= 1
            loaded.last_used = time.monotonic()
            if loaded.users == 0 and loaded in self._loaded:
                if not loaded.alive or loaded.keep_alive <= 0:
                    await self._unload(loaded)
                else:
                    self._start_timer(loaded)
            self._changed.notify_all()

    def _start_timer(self, loaded: Loaded) -> None:
        self._stop_timer(loaded)
        if math.isinf(loaded.keep_alive):
            loaded.expires_at = math.inf
            return
        loaded.expires_at = time.time() + loaded.keep_alive
        scope = loaded._timer = trio.CancelScope()
        assert self._nursery is not None
        self._nursery.start_soon(self._expire_after, loaded, scope)

    def _stop_timer(self, loaded: Loaded) -> None:
        if loaded._timer is not None:
            loaded._timer.cancel()
            loaded._timer = None
        loaded.expires_at = time.time() + loaded.keep_alive if not math.isinf(
            loaded.keep_alive) else math.inf

    async def _expire_after(self, loaded: Loaded, scope: trio.CancelScope) -> None:
        with scope:
            await trio.sleep(loaded.keep_alive)
            async with self._changed:
                if loaded.users == 0:
                    log.info("keep_alive of %s expired", loaded.ref.name)
                    await self._unload(loaded)
                    self._changed.notify_all()

    def _forget(self, loaded: Loaded) -> None:
        if loaded in self._loaded:
            self._loaded.remove(loaded)
        loaded._activity.close()

    async def _unload(self, loaded: Loaded) -> None:
        self._forget(loaded)
        self._stop_timer(loaded)
        if loaded.runner is not None:
            await loaded.runner.stop()
        loaded.expired.set()


def _gib(size: int) -> str:
    return f"{size / 2**30:.1f} GiB"
