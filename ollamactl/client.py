"""A blocking client for the daemon's Unix socket, on the shared sans-IO protocol.

Imports neither trio nor httpx: ``ollamactl list`` must start in well under 100 ms.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from ollamactl import __version__
from ollamad.config import socket_candidates
from ollamad.protocol import ClientConnection, Done, Error, ErrorCode, Event, ProtocolError


class ClientError(Exception):
    """Base of everything this client raises; the message is for the user."""


class DaemonUnreachable(ClientError):
    pass


class RequestFailed(ClientError):
    """The daemon answered a request with an error frame."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code

    @property
    def unsupported(self) -> bool:
        """The daemon does not know the operation (an older daemon, or one still growing)."""
        return self.code == ErrorCode.BAD_REQUEST and str(self).startswith("unknown operation")


def find_socket(env: Mapping[str, str] = os.environ) -> Path:
    """The first candidate socket that exists (a user's own daemon before the system one)."""
    candidates = socket_candidates(env)
    return next((path for path in candidates if path.exists()), candidates[0])


class Client:
    def __init__(self, path: Path | None = None) -> None:
        self.path = path or find_socket()
        self._protocol = ClientConnection(f"ollamactl/{__version__}")
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._sock.connect(str(self.path))
        except OSError as exc:
            self._sock.close()
            raise DaemonUnreachable(
                f"could not connect to ollamad at {self.path} ({exc.strerror}); start it with "
                "'ollamad serve', or 'sudo systemctl enable --now ollamad.socket'"
            ) from None
        # The hello goes out with the first request; no need to wait for the daemon's answer.
        self._sock.sendall(self._protocol.hello())
        self._pending: list[Any] = []

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._sock.close()

    def stream(self, op: str, args: dict[str, Any] | None = None,
               files: Sequence[int] = ()) -> Iterator[dict[str, Any]]:
        """Send one request and yield its events; raises RequestFailed on an error frame.

        ``files`` are open descriptors handed to the daemon with the request (SCM_RIGHTS), for
        operations that read a local file: the daemon reads what this process opened.
        Closing the generator early (Ctrl-C, break) cancels the request in the daemon.
        """
        if files:
            args = {**(args or {}), "fds": len(files)}
        id_, data = self._protocol.request(op, args)
        if files:
            # The descriptors ride with the first byte; the rest of the frame follows.
            socket.send_fds(self._sock, [data[:1]], list(files))
            self._sock.sendall(data[1:])
        else:
            self._sock.sendall(data)
        finished = False
        try:
            while True:
                frame = self._next_frame()
                if isinstance(frame, Error) and frame.id in (id_, None):
                    finished = True
                    raise RequestFailed(frame.code, frame.message)
                if getattr(frame, "id", None) != id_:
                    continue
                if isinstance(frame, Done):
                    finished = True
                    return
                if isinstance(frame, Event):
                    yield frame.data
        finally:
            if not finished:
                self._cancel(id_)

    def supports(self, op: str) -> bool:
        """Whether the daemon offers ``op``, from the capabilities in its hello."""
        while self._protocol.server is None:
            self._receive()
        return op in self._protocol.server.capabilities

    def call(self, op: str, args: dict[str, Any] | None = None,
             files: Sequence[int] = ()) -> dict[str, Any]:
        """A one-shot request: its last event (``{}`` if it sent none)."""
        result: dict[str, Any] = {}
        for event in self.stream(op, args, files):
            result = event
        return result

    def _cancel(self, id_: int) -> None:
        with contextlib.suppress(OSError):
            self._sock.sendall(self._protocol.cancel(id_))

    def _next_frame(self) -> Any:
        while not self._pending:
            self._receive()
        return self._pending.pop(0)

    def _receive(self) -> None:
        try:
            data = self._sock.recv(65536)
        except OSError as exc:
            raise DaemonUnreachable(f"connection to ollamad lost: {exc.strerror}") from None
        if not data:
            raise DaemonUnreachable("ollamad closed the connection")
        try:
            self._pending.extend(self._protocol.receive_data(data))
        except ProtocolError as exc:
            raise ClientError(f"ollamad sent something unreadable: {exc.message}") from None
