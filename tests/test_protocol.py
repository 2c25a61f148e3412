"""The sans-IO protocol codec, byte by byte and at its limits."""

from __future__ import annotations

import msgpack
import pytest

from ollamad.protocol import (
    PROTOCOL_VERSION,
    Cancel,
    ClientConnection,
    Done,
    Error,
    ErrorCode,
    Event,
    FrameDecoder,
    FrameTooLarge,
    Hello,
    ProtocolError,
    Request,
    ServerConnection,
    ServerHello,
    encode,
)


def server(limit: int = 1024) -> ServerConnection:
    return ServerConnection("ollamad/test", ("list", "show"), limit)


def test_a_conversation_round_trips() -> None:
    client, srv = ClientConnection("test/1"), server()
    id_, request = client.request("show", {"model": "x"})
    frames = srv.receive_data(client.hello() + request + client.cancel(id_))
    assert frames == [Hello(PROTOCOL_VERSION, "test/1"), Request(id_, "show", {"model": "x"}),
                      Cancel(id_)]
    answers = client.receive_data(srv.hello() + srv.event(id_, {"a": [1, 2.5, "é", b"\0"]})
                                  + srv.done(id_) + srv.error(None, "bad_request", "m"))
    assert answers == [ServerHello(PROTOCOL_VERSION, "ollamad/test", ("list", "show")),
                       Event(id_, {"a": [1, 2.5, "é", b"\0"]}), Done(id_),
                       Error(None, "bad_request", "m")]
    assert client.server is not None and srv.in_flight == set()


def test_frames_split_at_every_byte_decode_the_same() -> None:
    client = ClientConnection("test/1")
    data = client.hello() + b"".join(client.request("list")[1] for _ in range(3))
    srv = server()
    frames = [frame for byte in range(len(data)) for frame in srv.receive_data(data[byte:byte + 1])]
    assert [type(f) for f in frames] == [Hello, Request, Request, Request]
    assert [f.id for f in frames[1:]] == [1, 2, 3]


def test_frame_limit_is_exact() -> None:
    limit = 200
    fits = msgpack.packb({"type": "cancel", "id": 1, "pad": "x" * 150})
    fits = msgpack.packb({"type": "cancel", "id": 1, "pad": "x" * (150 + limit - len(fits))})
    assert len(fits) == limit
    decoder = FrameDecoder(limit)
    assert decoder.feed(fits * 3) == [msgpack.unpackb(fits)] * 3
    too_big = msgpack.packb({"type": "cancel", "id": 1, "pad": "x" * limit})
    with pytest.raises(FrameTooLarge):
        FrameDecoder(limit).feed(too_big)
    # Trickled in small pieces, the oversized frame is refused as soon as the limit is passed.
    decoder = FrameDecoder(limit)
    with pytest.raises(FrameTooLarge):
        for start in range(0, len(too_big), 7):
            decoder.feed(too_big[start:start + 7])
    assert start < len(too_big) - 7


def test_encoder_refuses_oversized_frames() -> None:
    with pytest.raises(FrameTooLarge):
        encode(Event(1, {"x": "y" * 300}), max_frame_size=100)


@pytest.mark.parametrize("data", [
    b"\xc1",                                  # never-used msgpack byte
    msgpack.packb([1, 2]),                    # not a map
    msgpack.packb({"type": "nope"}),
    msgpack.packb({1: 2}),                    # non-string key
    b"\xd4\x05\x00",                          # extension type
    b"\xa3\xff\xfe\xfd",                      # invalid UTF-8 string
    b"\x91" * 5000,                           # nesting deeper than the decoder allows
])
def test_malformed_input_is_a_protocol_error(data: bytes) -> None:
    srv = server(1 << 20)
    with pytest.raises(ProtocolError):
        srv.receive_data(ClientConnection("t").hello() + data)


@pytest.mark.parametrize("frame", [
    {"type": "request", "id": True, "op": "list"},
    {"type": "request", "id": -1, "op": "list"},
    {"type": "request", "id": 2**64 - 1, "op": "list"},
    {"type": "request", "id": 1, "op": 5},
    {"type": "request", "id": 1, "op": "list", "args": [1]},
    {"type": "cancel"},
])
def test_invalid_fields_are_protocol_errors(frame: dict) -> None:
    with pytest.raises(ProtocolError):
        server().receive_data(ClientConnection("t").hello() + msgpack.packb(frame))


def test_hello_must_come_first_and_once() -> None:
    client = ClientConnection("t")
    with pytest.raises(ProtocolError, match="first frame must be hello"):
        server().receive_data(client.request("list")[1])
    with pytest.raises(ProtocolError, match="hello sent twice"):
        server().receive_data(client.hello() + client.hello())
    wrong = msgpack.packb({"type": "hello", "version": PROTOCOL_VERSION + 1})
    with pytest.raises(ProtocolError, match="not supported"):
        server().receive_data(wrong)


def test_request_id_may_not_be_reused_while_in_flight() -> None:
    srv = server()
    request = msgpack.packb({"type": "request", "id": 9, "op": "list"})
    srv.receive_data(ClientConnection("t").hello() + request)
    with pytest.raises(ProtocolError, match="already in flight"):
        srv.receive_data(request)
    srv.done(9)
    assert srv.receive_data(request) == [Request(9, "list", {})]
    srv.error(9, ErrorCode.CANCELLED, "request cancelled")
    assert srv.in_flight == set()
