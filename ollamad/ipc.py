"""The Unix-socket server: msgpack protocol connections mapped onto service operations.

A thin trio shell over :class:`ollamad.protocol.ServerConnection`: it reads bytes, runs each
request as its own task under its own cancel scope, and writes the frames back. A protocol
violation closes that one connection; every other connection carries on.
"""

from __future__ import annotations

import collections
import logging
import os
import socket
import struct

import trio

from ollamad import __version__
from ollamad.activity import Activity
from ollamad.errors import classify
from ollamad.protocol import (
    Cancel,
    ErrorCode,
    ProtocolError,
    Request,
    ServerConnection,
)
from ollamad.service import OPERATIONS, Caller, Service

log = logging.getLogger(__name__)

RECEIVE_SIZE = 64 * 1024
# Files a client may have passed and not yet claimed by a request; more is abuse.
MAX_PENDING_FDS = 8
_PEERCRED = struct.Struct("3i")
_FD = struct.Struct("i")


def peer_credentials(sock: trio.socket.SocketType) -> Caller:
    """The connecting process's pid/uid/gid, as the kernel vouches for them (SO_PEERCRED)."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    pid, uid, gid = _PEERCRED.unpack(raw)
    return Caller("unix", uid=uid, gid=gid, pid=pid)


class IPCServer:
    def __init__(self, service: Service, activity: Activity, max_frame_size: int) -> None:
        self.service = service
        self.activity = activity
        self.max_frame_size = max_frame_size
        self._accepting = trio.CancelScope()
        self._connections: set[Connection] = set()

    async def serve(self, listener: trio.SocketListener) -> None:
        """Accept until :meth:`stop_accepting`, then wait for the open connections to end."""
        async with trio.open_nursery() as nursery:
            with self._accepting:
                while True:
                    stream = await listener.accept()
                    nursery.start_soon(self._handle, stream)
            await listener.aclose()

    def stop_accepting(self) -> None:
        self._accepting.cancel()

    def drain(self) -> None:
        """Close every connection as soon as it has no request in flight."""
        for connection in list(self._connections):
            connection.drain()

    async def _handle(self, stream: trio.SocketStream) -> None:
        connection = Connection(self, stream)
        self._connections.add(connection)
        try:
            with self.activity.busy():
                await connection.run()
        finally:
            self._connections.discard(connection)
            await stream.aclose()


class Connection:
    def __init__(self, server: IPCServer, stream: trio.SocketStream) -> None:
        self.server = server
        self.stream = stream
        self.caller = peer_credentials(stream.socket)
        self.protocol = ServerConnection(f"ollamad/{__version__}", tuple(sorted(OPERATIONS)),
                                         server.max_frame_size)
        self._send_lock = trio.Lock()
        self._requests: dict[int, trio.CancelScope] = {}
        self._fds: collections.deque[int] = collections.deque()
        self._draining = False
        self._scope = trio.CancelScope()

    def drain(self) -> None:
        self._draining = True
        if not self._requests:
            self._scope.cancel()

    async def run(self) -> None:
        log.debug("connection from %s", self.caller)
        with self._scope:
            async with trio.open_nursery() as nursery:
                try:
                    await self._receive_loop(nursery)
                except ProtocolError as exc:
                    log.warning("closing connection from %s: %s", self.caller, exc.message)
                    await self._send(self.protocol.error(None, ErrorCode.PROTOCOL, exc.message))
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    pass
                # A closed (or broken) connection cancels its requests.
                nursery.cancel_scope.cancel()
        while self._fds:
            os.close(self._fds.popleft())

    async def _receive(self) -> bytes:
        """Bytes from the peer, queueing any file descriptors that came with them."""
        sock = self.stream.socket
        data, ancillary, _, _ = await sock.recvmsg(
            RECEIVE_SIZE, socket.CMSG_SPACE(MAX_PENDING_FDS * _FD.size), socket.MSG_CMSG_CLOEXEC)
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                usable = len(payload) - len(payload) % _FD.size
                self._fds.extend(fd for (fd,) in _FD.iter_unpack(payload[:usable]))
        if len(self._fds) > MAX_PENDING_FDS:
            raise ProtocolError(f"more than {MAX_PENDING_FDS} unclaimed file descriptors")
        return data

    def _claim_files(self, request: Request) -> list[int]:
        """The descriptors a request says it carries (``args["fds"]``), oldest first."""
        count = request.args.get("fds", 0)
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise ProtocolError("'fds' must be a count of passed file descriptors")
        if count > len(self._fds):
            raise ProtocolError(f"request {request.id} carries {count} file descriptors, "
                                f"{len(self._fds)} arrived")
        return [self._fds.popleft() for _ in range(count)]

    async def _receive_loop(self, nursery: trio.Nursery) -> None:
        while True:
            data = await self._receive()
            if not data:
                return
            for frame in self.protocol.receive_data(data):
                if isinstance(frame, Request) and self._draining:
                    await self._send(self.protocol.error(frame.id, ErrorCode.UNAVAILABLE,
                                                         "the daemon is shutting down"))
                elif isinstance(frame, Request):
                    scope = trio.CancelScope()
                    self._requests[frame.id] = scope
                    nursery.start_soon(self._run_request, frame, scope, self._claim_files(frame))
                elif isinstance(frame, Cancel):
                    if frame.id in self._requests:
                        self._requests[frame.id].cancel()
                else:
                    await self._send(self.protocol.hello())

    async def _run_request(self, request: Request, scope: trio.CancelScope,
                           files: list[int]) -> None:
        try:
            with scope, self.server.activity.busy():
                await self._answer(request, files)
            if scope.cancelled_caught:
                await self._send(self.protocol.error(request.id, ErrorCode.CANCELLED,
                                                     "request cancelled"))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            for fd in files:
                os.close(fd)
            del self._requests[request.id]
            if self._draining and not self._requests:
                self._scope.cancel()

    async def _answer(self, request: Request, files: list[int]) -> None:
        try:
            events = self.server.service.run(request.op, request.args, self.caller, files)
            async for event in events:
                await self._send(self.protocol.event(request.id, event))
        except Exception as exc:
            code, message = classify(exc)
            if code == ErrorCode.INTERNAL:
                log.exception("%s failed for %s", request.op, self.caller)
            await self._send(self.protocol.error(request.id, code, message))
            return
        await self._send(self.protocol.done(request.id))

    async def _send(self, frame: bytes) -> None:
        # trio streams allow one sender at a time; the lock also keeps frames whole.
        async with self._send_lock:
            await self.stream.send_all(frame)
