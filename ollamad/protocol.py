"""The local protocol between ollamactl (or any client) and the daemon: msgpack maps over a stream.

Sans-IO: this module turns bytes into frames and frames into bytes and keeps the little state a
connection has (has the peer said hello, which request ids are in flight). It performs no I/O and
imports nothing but msgpack, so the thin client can use it without pulling in trio.

Wire format: a stream of msgpack maps in each direction, no extra framing (msgpack is
self-delimiting). Every map has a ``type``:

client → daemon
    ``{"type": "hello", "version": 1, "client": "ollamactl/0.1.0"}``  (must come first)
    ``{"type": "request", "id": 7, "op": "list", "args": {...}}``
    ``{"type": "cancel", "id": 7}``
daemon → client
    ``{"type": "hello", "version": 1, "server": "ollamad/0.1.0", "capabilities": [...]}``
    ``{"type": "event", "id": 7, "data": {...}}``  zero or more, then exactly one of
    ``{"type": "done", "id": 7}``
    ``{"type": "error", "id": 7, "code": "not_found", "message": "..."}``

An ``error`` with ``id`` nil is about the connection itself; the daemon closes the connection
after sending it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgpack

PROTOCOL_VERSION = 1
# Large enough for a chat with a few base64 images, small enough that one client cannot make the
# daemon buffer without bound.
DEFAULT_MAX_FRAME_SIZE = 16 * 1024 * 1024
MAX_REQUEST_ID = 2**63 - 1


class ErrorCode:
    """The stable ``code`` strings of ``error`` frames. Clients may branch on these."""

    BAD_REQUEST = "bad_request"
    NOT_FOUND = "not_found"
    BUSY = "busy"
    UNAVAILABLE = "unavailable"
    CANCELLED = "cancelled"
    NO_SPACE = "no_space"
    INTERNAL = "internal"
    PROTOCOL = "protocol_error"


class ProtocolError(Exception):
    """The peer broke the protocol; the connection cannot continue and must be closed."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class FrameTooLarge(ProtocolError):
    """A frame over the size limit, sent or received."""


# -- frames -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hello:
    """The client's greeting."""

    version: int
    client: str


@dataclass(frozen=True)
class Request:
    id: int
    op: str
    args: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Cancel:
    id: int


@dataclass(frozen=True)
class ServerHello:
    version: int
    server: str
    capabilities: tuple[str, ...]


@dataclass(frozen=True)
class Event:
    id: int
    data: dict[str, Any]


@dataclass(frozen=True)
class Done:
    id: int


@dataclass(frozen=True)
class Error:
    id: int | None
    code: str
    message: str


ClientFrame = Hello | Request | Cancel
ServerFrame = ServerHello | Event | Done | Error


def _to_wire(frame: ClientFrame | ServerFrame) -> dict[str, Any]:
    match frame:
        case Hello(version, client):
            return {"type": "hello", "version": version, "client": client}
        case Request(id_, op, args):
            return {"type": "request", "id": id_, "op": op, "args": args}
        case Cancel(id_):
            return {"type": "cancel", "id": id_}
        case ServerHello(version, server, caps):
            return {"type": "hello", "version": version, "server": server,
                    "capabilities": list(caps)}
        case Event(id_, data):
            return {"type": "event", "id": id_, "data": data}
        case Done(id_):
            return {"type": "done", "id": id_}
        case Error(id_, code, message):
            return {"type": "error", "id": id_, "code": code, "message": message}
    raise TypeError(f"not a protocol frame: {frame!r}")


def encode(frame: ClientFrame | ServerFrame, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> bytes:
    """Serialise one frame. Raises :class:`FrameTooLarge` rather than emit what the peer refuses."""
    data = msgpack.packb(_to_wire(frame), use_bin_type=True)
    if len(data) > max_frame_size:
        raise FrameTooLarge(f"frame of {len(data)} bytes exceeds the limit of {max_frame_size}")
    return data


# -- decoding -----------------------------------------------------------------------------------


def _refuse_ext(code: int, data: bytes) -> Any:
    raise ValueError(f"msgpack extension type {code} is not allowed")


class FrameDecoder:
    """Incremental msgpack decoder with a hard limit on the size of any one frame.

    The limit is exact: bytes that belong to a frame not yet complete never exceed
    ``max_frame_size``, so a peer cannot make us buffer more than that.
    """

    def __init__(self, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        self.max_frame_size = max_frame_size
        self._fed = 0
        # Stream offset where the frame being received began. Unpacker.tell() alone will not do:
        # it also counts the parsed head of an incomplete object.
        self._frame_start = 0
        self._unpacker = msgpack.Unpacker(
            raw=False,
            strict_map_key=True,
            ext_hook=_refuse_ext,
            max_buffer_size=2 * max_frame_size,
            timestamp=0,
        )

    def feed(self, data: bytes) -> list[Any]:
        """Return every object completed by ``data``. Raises :class:`ProtocolError`."""
        objects: list[Any] = []
        view = memoryview(data)
        while view:
            room = self.max_frame_size - (self._fed - self._frame_start)
            if room <= 0:
                raise FrameTooLarge(f"frame exceeds the limit of {self.max_frame_size} bytes")
            chunk, view = view[:room], view[room:]
            self._unpacker.feed(chunk)
            self._fed += len(chunk)
            try:
                for obj in self._unpacker:
                    objects.append(obj)
                    self._frame_start = self._unpacker.tell()
            except (ValueError, TypeError, msgpack.UnpackException) as exc:
                # msgpack signals malformed input with several types (FormatError, StackError,
                # ExtraData, UnicodeDecodeError, our ext refusal); all mean the same to us.
                raise ProtocolError(f"malformed msgpack: {exc}") from exc
        return objects


def _require(obj: dict[str, Any], key: str, kind: type, what: str) -> Any:
    value = obj.get(key)
    # bool is an int subclass; an id of True is a client bug, not id 1.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ProtocolError(f"{what} frame needs {key!r} of type {kind.__name__}")
    return value


def _request_id(obj: dict[str, Any], what: str) -> int:
    id_ = _require(obj, "id", int, what)
    if not 0 <= id_ <= MAX_REQUEST_ID:
        raise ProtocolError(f"request id {id_} is out of range")
    return id_


def parse_client_frame(obj: Any) -> ClientFrame:
    """Validate one decoded object from a client."""
    if not isinstance(obj, dict):
        raise ProtocolError(f"a frame must be a map, not {type(obj).__name__}")
    kind = obj.get("type")
    if kind == "hello":
        return Hello(_require(obj, "version", int, "hello"), str(obj.get("client", "")))
    if kind == "request":
        args = obj.get("args", {})
        if not isinstance(args, dict):
            raise ProtocolError("request frame needs 'args' of type dict")
        return Request(_request_id(obj, "request"), _require(obj, "op", str, "request"), args)
    if kind == "cancel":
        return Cancel(_request_id(obj, "cancel"))
    raise ProtocolError(f"unknown frame type {kind!r}")


def parse_server_frame(obj: Any) -> ServerFrame:
    """Validate one decoded object from the daemon."""
    if not isinstance(obj, dict):
        raise ProtocolError(f"a frame must be a map, not {type(obj).__name__}")
    kind = obj.get("type")
    if kind == "hello":
        caps = obj.get("capabilities", [])
        return ServerHello(
            _require(obj, "version", int, "hello"),
            str(obj.get("server", "")),
            tuple(str(c) for c in caps) if isinstance(caps, list) else (),
        )
    if kind == "event":
        return Event(_request_id(obj, "event"), _require(obj, "data", dict, "event"))
    if kind == "done":
        return Done(_request_id(obj, "done"))
    if kind == "error":
        id_ = None if obj.get("id") is None else _request_id(obj, "error")
        return Error(id_, str(obj.get("code", ErrorCode.INTERNAL)), str(obj.get("message", "")))
    raise ProtocolError(f"unknown frame type {kind!r}")


# -- connection state ---------------------------------------------------------------------------


class ServerConnection:
    """The daemon's side of one connection: hello first, unique ids in flight, size limits."""

    def __init__(self, server: str, capabilities: tuple[str, ...],
                 max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        self.server = server
        self.capabilities = capabilities
        self.max_frame_size = max_frame_size
        self.peer: str | None = None
        self.in_flight: set[int] = set()
        self._decoder = FrameDecoder(max_frame_size)

    def receive_data(self, data: bytes) -> list[ClientFrame]:
        """Frames completed by ``data``. Raises :class:`ProtocolError` on any violation."""
        frames: list[ClientFrame] = []
        for obj in self._decoder.feed(data):
            frame = parse_client_frame(obj)
            if isinstance(frame, Hello):
                if self.peer is not None:
                    raise ProtocolError("hello sent twice")
                if frame.version != PROTOCOL_VERSION:
                    raise ProtocolError(
                        f"protocol version {frame.version} is not supported "
                        f"(this daemon speaks version {PROTOCOL_VERSION})"
                    )
                self.peer = frame.client
            elif self.peer is None:
                raise ProtocolError("the first frame must be hello")
            elif isinstance(frame, Request):
                if frame.id in self.in_flight:
                    raise ProtocolError(f"request id {frame.id} is already in flight")
                self.in_flight.add(frame.id)
            frames.append(frame)
        return frames

    def hello(self) -> bytes:
        return encode(ServerHello(PROTOCOL_VERSION, self.server, self.capabilities))

    def event(self, id_: int, data: dict[str, Any]) -> bytes:
        return encode(Event(id_, data), self.max_frame_size)

    def done(self, id_: int) -> bytes:
        self.in_flight.discard(id_)
        return encode(Done(id_))

    def error(self, id_: int | None, code: str, message: str) -> bytes:
        if id_ is not None:
            self.in_flight.discard(id_)
        return encode(Error(id_, code, message[:4096]))


class ClientConnection:
    """The client's side of one connection: numbering requests and reading answers."""

    def __init__(self, client: str, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        self.client = client
        self.max_frame_size = max_frame_size
        self.server: ServerHello | None = None
        self._next_id = 1
        self._decoder = FrameDecoder(max_frame_size)

    def hello(self) -> bytes:
        return encode(Hello(PROTOCOL_VERSION, self.client))

    def request(self, op: str, args: dict[str, Any] | None = None) -> tuple[int, bytes]:
        id_ = self._next_id
        self._next_id += 1
        return id_, encode(Request(id_, op, args or {}), self.max_frame_size)

    def cancel(self, id_: int) -> bytes:
        return encode(Cancel(id_))

    def receive_data(self, data: bytes) -> list[ServerFrame]:
        frames = [parse_server_frame(obj) for obj in self._decoder.feed(data)]
        for frame in frames:
            if isinstance(frame, ServerHello):
                self.server = frame
        return frames
