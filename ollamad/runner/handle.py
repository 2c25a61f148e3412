"""The daemon's handle on one runner child: spawn, load, requests over one socket, stop.

Use::

    async with trio.open_nursery() as nursery:            # owned by the scheduler
        runner = await Runner.start(nursery, path, LoadOptions(num_ctx=2048))
        async with contextlib.aclosing(runner.completion(args)) as events:
            async for event in events:
                ...
        await runner.stop()

The runner's background tasks (the frame reader, the stderr reader, the exit watcher) run in the
nursery given to :meth:`Runner.start`; they end by themselves once the child has exited. If that
nursery is cancelled first, the child is killed on the way out: a runner never outlives it.
:meth:`Runner.start` has no timeout of its own: the caller's load timeout wraps it, and
cancelling it kills the child.

Several requests may be in flight at once: frames are demultiplexed by request id. Leaving a
``completion`` early (closing it, or a cancelled trio scope) sends ``cancel`` and waits, briefly,
until the child has freed the slot. If the child dies, every request in flight and every later
one raises :class:`RunnerError` saying how it ended.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import socket
import subprocess
import sys
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import trio

from ollamad.errors import BadRequest, Busy, NotFound, OllamadError, Unavailable
from ollamad.protocol import (
    ClientConnection,
    Done,
    Error,
    ErrorCode,
    Event,
    ProtocolError,
    ServerFrame,
    ServerHello,
)

log = logging.getLogger(__name__)

RECEIVE_SIZE = 64 * 1024
STDERR_TAIL_LINES = 20
# How long stop() lets the child exit by itself after closing its socket, before SIGKILL.
STOP_GRACE = 5.0
# How long a request that is left early waits for the child to confirm that its slot is free.
CANCEL_WAIT = 5.0
# After the socket closes: how long to wait for the exit status and last words of the child.
EXIT_WAIT = 2.0


class RunnerError(OllamadError):
    """The runner child failed: it could not load its model, or it died, or it broke protocol."""


@dataclass(frozen=True)
class LoadOptions:
    """Load-time options; a runner is reloaded when these differ (so they are hashable)."""

    num_ctx: int
    num_batch: int = 512
    num_thread: int | None = None
    use_mmap: bool = True
    parallel: int = 1
    # None: llama.cpp decides (on, on the CPU); see ollamad.runner.llama for why that matters.
    flash_attn: bool | None = None


_ERRORS: dict[str, type[OllamadError]] = {
    ErrorCode.BAD_REQUEST: BadRequest,
    ErrorCode.NOT_FOUND: NotFound,
    ErrorCode.BUSY: Busy,
    ErrorCode.UNAVAILABLE: Unavailable,
}


class Runner:
    def __init__(self, process: subprocess.Popen[bytes], stream: trio.SocketStream,
                 stderr: trio.lowlevel.FdStream, options: LoadOptions) -> None:
        self._process = process
        self._stream = stream
        self._stderr = stderr
        self._options = options
        self._protocol = ClientConnection("ollamad")
        self._send_lock = trio.Lock()
        self._pending: dict[int, trio.MemorySendChannel[ServerFrame | RunnerError]] = {}
        self._error: RunnerError | None = None
        self._hello = trio.Event()
        self._exited = trio.Event()
        self._stderr_closed = trio.Event()
        self._tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
        self._info: dict[str, Any] = {}

    @classmethod
    async def start(cls, nursery: trio.Nursery, model_path: Path, options: LoadOptions, *,
                    on_progress: Callable[[float], None] | None = None) -> Runner:
        """Spawn a runner and load ``model_path``. Raises :class:`RunnerError`, leaving no child."""
        runner = cls._spawn(options)
        nursery.start_soon(runner._watch_exit)
        nursery.start_soon(runner._read_stderr)
        nursery.start_soon(runner._read_frames)
        try:
            await runner._send(runner._protocol.hello())
            await runner._hello.wait()
            runner._raise_if_failed()
            load = runner._call("load", {"model": str(model_path), **asdict(options)})
            async with contextlib.aclosing(load) as events:
                async for event in events:
                    if "progress" in event and on_progress is not None:
                        on_progress(float(event["progress"]))
                    elif event.get("status") == "ready":
                        runner._info = event
        except BaseException:
            await runner.stop()
            raise
        log.info("runner %d loaded %s", runner.pid, model_path)
        return runner

    @classmethod
    def _spawn(cls, options: LoadOptions) -> Runner:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        read_end, write_end = os.pipe()
        try:
            # Spawned here, on the trio thread, and not with trio's open_process: that forks in a
            # worker thread, and PR_SET_PDEATHSIG fires when the *thread* that forked exits, which
            # a trio worker does after ten idle seconds. Forking takes milliseconds.
            process = subprocess.Popen(
                [sys.executable, "-m", "ollamad.runner", "--fd", str(theirs.fileno()),
                 "--parent-pid", str(os.getpid())],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, stdout=write_end,
                stderr=write_end,
                # Its own session: a Ctrl-C meant for a foreground daemon must not reach it.
                start_new_session=True)
        except BaseException:
            ours.close()
            os.close(read_end)
            raise
        finally:
            theirs.close()
            os.close(write_end)
        stream = trio.SocketStream(trio.socket.from_stdlib_socket(ours))
        return cls(process, stream, trio.lowlevel.FdStream(read_end), options)

    # -- properties -----------------------------------------------------------------------------

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def options(self) -> LoadOptions:
        return self._options

    @property
    def info(self) -> dict[str, Any]:
        """The child's ready event: n_ctx, n_ctx_per_slot, n_ctx_train, n_embd, bos, ..."""
        return self._info

    @property
    def alive(self) -> bool:
        return self._error is None and self._process.returncode is None

    # -- requests -------------------------------------------------------------------------------

    async def completion(self, args: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """The child's events: ``{"content": ...}`` pieces, then ``{"done": True, ...}``."""
        # Closed explicitly: left to the garbage collector, the inner generator would cancel
        # the request whenever it happens to be finalized.
        async with contextlib.aclosing(self._call("completion", args)) as events:
            async for event in events:
                yield event

    async def embed(self, text: str, truncate: bool = True) -> dict[str, Any]:
        """``{"embedding": [...] (not normalised), "prompt_eval_count": n}``."""
        return await self._single("embed", {"input": text, "truncate": truncate})

    async def tokenize(self, text: str) -> list[int]:
        return list((await self._single("tokenize", {"content": text}))["tokens"])

    async def detokenize(self, tokens: list[int]) -> str:
        return str((await self._single("detokenize", {"tokens": tokens}))["content"])

    async def health(self) -> dict[str, Any]:
        """``{"status": "loading"|"ready", "progress", "slots", "busy", ...}``."""
        return await self._single("health", {})

    async def stop(self) -> None:
        """Close the socket, give the child a grace period to exit, then kill it."""
        with trio.CancelScope(shield=True):
            self._fail(RunnerError("the llama runner was stopped"))
            await self._stream.aclose()
            with trio.move_on_after(STOP_GRACE):
                await self._exited.wait()
            if not self._exited.is_set():
                log.warning("runner %d did not exit after its socket closed; killing it", self.pid)
                self._process.kill()
                await self._exited.wait()

    async def _single(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        async with contextlib.aclosing(self._call(op, args)) as events:
            async for event in events:
                result = event
        return result

    async def _call(self, op: str, args: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        self._raise_if_failed()
        request_id, frame = self._protocol.request(op, args)
        send, receive = trio.open_memory_channel[ServerFrame | RunnerError](math.inf)
        self._pending[request_id] = send
        sent = finished = False
        try:
            # Never cut a frame in half: a cancelled send would leave the stream unreadable.
            with trio.CancelScope(shield=True):
                await self._send(frame)
            sent = True
            async for item in receive:
                if isinstance(item, Event):
                    yield item.data
                    continue
                finished = True
                if isinstance(item, Done):
                    return
                if isinstance(item, Error):
                    raise _ERRORS.get(item.code, RunnerError)(item.message)
                raise RunnerError(item.message)
            self._raise_if_failed()
            raise RunnerError("the llama runner closed the request")
        finally:
            if sent and not finished:
                await self._abandon(request_id, receive)
            self._pending.pop(request_id, None)

    async def _abandon(self, request_id: int,
                       receive: trio.MemoryReceiveChannel[ServerFrame | RunnerError]) -> None:
        """Cancel a request left early and wait until the child has let go of it."""
        with trio.CancelScope(shield=True), trio.move_on_after(CANCEL_WAIT):
            if self._error is None:
                with contextlib.suppress(RunnerError):
                    await self._send(self._protocol.cancel(request_id))
                async for item in receive:
                    if not isinstance(item, Event):
                        break

    async def _send(self, frame: bytes) -> None:
        async with self._send_lock:
            try:
                await self._stream.send_all(frame)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                await self._wait_for_exit()
                self._raise_if_failed()
                raise self._termination() from None

    def _raise_if_failed(self) -> None:
        # A new exception each time: one object raised in several tasks would mix tracebacks.
        if self._error is not None:
            raise RunnerError(self._error.message)

    # -- background tasks -----------------------------------------------------------------------

    async def _read_frames(self) -> None:
        try:
            while data := await self._stream.receive_some(RECEIVE_SIZE):
                for frame in self._protocol.receive_data(data):
                    self._deliver(frame)
        except ProtocolError as exc:
            self._fail(RunnerError(f"the llama runner broke the protocol: {exc.message}"))
            self._process.kill()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        if self._error is None:
            await self._wait_for_exit()
            self._fail(self._termination())

    def _deliver(self, frame: ServerFrame) -> None:
        if isinstance(frame, ServerHello):
            self._hello.set()
        elif frame.id is None:
            assert isinstance(frame, Error)
            self._fail(RunnerError(f"the llama runner refused the connection: {frame.message}"))
        elif (channel := self._pending.get(frame.id)) is not None:
            # The request may have ended already (cancelled, or failed with the runner).
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                channel.send_nowait(frame)

    async def _read_stderr(self) -> None:
        async with self._stderr:
            buffered = b""
            while chunk := await self._stderr.receive_some(RECEIVE_SIZE):
                *lines, buffered = (buffered + chunk).split(b"\n")
                for line in lines:
                    self._log_line(line)
            if buffered:
                self._log_line(buffered)
        self._stderr_closed.set()

    def _log_line(self, raw: bytes) -> None:
        line = raw.decode(errors="replace").rstrip()
        if line:
            self._tail.append(line)
            log.info("runner %d: %s", self.pid, line)

    async def _watch_exit(self) -> None:
        pidfd = os.pidfd_open(self.pid)
        try:
            await trio.lowlevel.wait_readable(pidfd)
        finally:
            # Also on cancellation of the nursery: the child must not outlive its owner.
            if self._process.poll() is None:
                self._process.kill()
            self._process.wait()
            os.close(pidfd)
            self._exited.set()
        log.info("runner %d exited: %s", self.pid, _exit_status(self._process.returncode))
        await self._wait_for_exit()
        self._fail(self._termination())

    async def _wait_for_exit(self) -> None:
        """Give a dying child a moment to be reaped and to have its last words read."""
        with trio.move_on_after(EXIT_WAIT):
            await self._exited.wait()
            await self._stderr_closed.wait()

    def _termination(self) -> RunnerError:
        code = self._process.returncode
        if code is None:
            return RunnerError("the llama runner closed its connection")
        message = f"llama runner process has terminated: {_exit_status(code)}"
        # After a kill from outside the tail is just the runner's routine log; after a crash or
        # an exit of its own, the last lines usually say why.
        if code not in (-signal.SIGKILL, -signal.SIGTERM) and self._tail:
            message += ": " + " | ".join(list(self._tail)[-3:])
        return RunnerError(message)

    def _fail(self, error: RunnerError) -> None:
        """Fail every request in flight, and all later ones, with ``error``."""
        if self._error is not None:
            return
        self._error = error
        self._hello.set()
        for channel in self._pending.values():
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                channel.send_nowait(error)
            channel.close()


def _exit_status(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        return f"signal {-code} ({signal.Signals(-code).name})"
    return f"exit status {code}"
