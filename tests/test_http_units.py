"""The HTTP bridge's pure parts: addresses, the Go decoder's messages, CORS and Host rules, the
OpenAI mapping, the metrics text. No daemon."""

from __future__ import annotations

import base64
import json
import struct

import pytest

from ollamad.http import openai_requests as mapping
from ollamad.http import openai_shapes as shapes
from ollamad.http.address import Address, parse_host
from ollamad.http.jsonbody import BOOL, INTS, MESSAGES, STRING, Struct, decode
from ollamad.http.metrics import Metrics
from ollamad.http.safety import CORS, host_allowed
from ollamad.http.settings import allowed_origins, load_api_keys
from ollamad.http.status import HTTPProblem


@pytest.mark.parametrize(("value", "expected"), [
    ("", Address("127.0.0.1", 11434)),
    ("0.0.0.0", Address("0.0.0.0", 11434)),
    (":8080", Address("", 8080)),
    ("localhost:1234", Address("localhost", 1234)),
    ("http://example.com", Address("example.com", 80)),
    ("https://example.com", Address("example.com", 443)),
    ("https://example.com:8443/path", Address("example.com", 8443)),
    ("[::1]", Address("::1", 11434)),
    ("[::1]:9999", Address("::1", 9999)),
    ("example.com:99999", Address("example.com", 11434)),
    ("ollama.com", Address("ollama.com", 443)),
    ("  10.0.0.1:5000  ", Address("10.0.0.1", 5000)),
])
def test_ollama_host_is_read_as_ollama_reads_it(value: str, expected: Address) -> None:
    assert parse_host(value) == expected


GENERATE = Struct("api.GenerateRequest", {"model": STRING, "stream": BOOL, "context": INTS})
CHAT = Struct("api.ChatRequest", {"messages": MESSAGES})


@pytest.mark.parametrize(("body", "message"), [
    (b"", "missing request body"),
    (b" \n", "missing request body"),
    (b"{", "unexpected EOF"),
    (b'{"model": "x"', "unexpected EOF"),
    (b"{bad}", "invalid character 'b' looking for beginning of object key string"),
    (b'{"a" 1}', "invalid character '1' after object key"),
    (b'{"a": 1 "b": 2}', "invalid character '\"' after object key:value pair"),
    (b'{"a": [1 2]}', "invalid character '2' after array element"),
    (b'{"a": tru}', "invalid character '}' in literal true (expecting 'e')"),
    (b'{"a": nul', "unexpected EOF"),
    (b'{"a": NaN}', "invalid character 'N' looking for beginning of value"),
    (b'{"a": "\\q"}', "invalid character 'q' in string escape code"),
    (b"[1]", "json: cannot unmarshal array into Go value of type api.GenerateRequest"),
    (b'{"model": 5}', "json: cannot unmarshal number into Go struct field GenerateRequest.model "
                      "of type string"),
    (b'{"stream": "no"}', "json: cannot unmarshal string into Go struct field "
                          "GenerateRequest.stream of type bool"),
    (b'{"context": [1, 2.5]}', "json: cannot unmarshal number 2.5 into Go struct field "
                               "GenerateRequest.context of type int"),
])
def test_bodies_fail_with_the_go_decoders_words(body: bytes, message: str) -> None:
    with pytest.raises(HTTPProblem) as failure:
        decode(body, GENERATE)
    assert failure.value.status == 400
    assert failure.value.message == message


def test_decoding_matches_fields_case_insensitively_and_ignores_trailing_data() -> None:
    assert decode(b'{"Model": "m", "STREAM": false} trailing', GENERATE) == \
        {"model": "m", "stream": False}
    assert decode(b"null", GENERATE) == {}
    with pytest.raises(HTTPProblem, match=r"ChatRequest\.messages of type api\.Message"):
        decode(b'{"messages": ["hi"]}', CHAT)


def test_cors_allows_ollamas_defaults_and_configured_wildcards() -> None:
    cors = CORS.from_origins(allowed_origins({"OLLAMA_ORIGINS": "chrome-extension://*,"
                                                                "https://app.example.com"}))
    for origin in ("http://localhost", "http://localhost:3000", "https://127.0.0.1:8443",
                   "http://0.0.0.0:1", "app://x", "file://", "tauri://localhost",
                   "vscode-webview://abc", "chrome-extension://abcdef",
                   "https://app.example.com"):
        assert cors.allows(origin), origin
    for origin in ("http://evil.com", "https://localhost.evil.com", "moz-extension://abc",
                   "https://app.example.com.evil"):
        assert not cors.allows(origin), origin
    assert not cors.allow_all
    assert CORS.from_origins(allowed_origins({"OLLAMA_ORIGINS": "*"})).allows("http://evil")


def test_preflight_headers_are_gin_cors_headers() -> None:
    headers = dict(CORS.from_origins(allowed_origins({})).preflight_headers("http://localhost"))
    assert headers["Access-Control-Allow-Methods"] == "GET,POST,PUT,PATCH,DELETE,HEAD,OPTIONS"
    assert headers["Access-Control-Allow-Headers"].startswith(
        "Authorization,Content-Type,User-Agent,Accept,X-Requested-With,Openai-Beta,"
        "X-Stainless-Arch,")
    assert headers["Access-Control-Max-Age"] == "43200"
    assert headers["Access-Control-Allow-Origin"] == "http://localhost"


@pytest.mark.parametrize(("host", "allowed"), [
    ("", (True, True)),
    ("localhost", (True, True)),
    ("localhost:11434", (True, True)),
    ("LOCALHOST", (True, True)),
    ("127.0.0.1:11434", (True, False)),
    ("[::1]:11434", (True, False)),
    ("10.1.2.3", (True, False)),
    ("192.168.1.10:80", (True, False)),
    ("0.0.0.0", (True, False)),
    ("box.local", (True, True)),
    ("svc.internal:8080", (True, True)),
    ("app.localhost", (True, True)),
    ("evil.com", (False, True)),
    ("8.8.8.8", (False, True)),
    ("localhost.evil.com", (False, True)),
])
def test_host_header_rules_are_ollamas(host: str, allowed: tuple[bool, bool]) -> None:
    assert host_allowed(host) == allowed


def test_api_keys_file_ignores_blanks_and_comments(tmp_path) -> None:
    path = tmp_path / "keys"
    path.write_text("# the web UI\nkey-one\n\n  key-two  \n")
    assert load_api_keys(path) == {"key-one", "key-two"}


def test_openai_chat_request_maps_to_ollamas_chat() -> None:
    args = mapping.chat_args({
        "model": "m", "max_tokens": 7, "stop": "x", "seed": 3,
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "look"},
                                         {"type": "image_url",
                                          "image_url": {"url": "data:image/png;base64,aGk="}}]},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": "weather", "arguments": '{"city": "Paris"}'}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}],
        "response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "object"}}},
        "tools": [{"type": "function", "function": {"name": "weather"}}],
        "reasoning_effort": "minimal",
        "options": {"num_ctx": 8192, "temperature": 0.5}, "num_ctx": 4096,
        "temperature": 0.1})
    assert args["options"] == {"temperature": 0.1, "top_p": 1.0, "num_ctx": 4096,
                               "stop": ["x"], "num_predict": 7, "seed": 3}
    assert args["stream"] is False
    assert args["format"] == {"type": "object"}
    assert args["think"] == "low"
    messages = args["messages"]
    assert messages[1] == {"role": "user", "content": "look"}
    assert messages[2] == {"role": "user", "content": "", "images": ["aGk="]}
    assert messages[3]["tool_calls"] == [{"id": "call_1", "function": {
        "name": "weather", "arguments": {"city": "Paris"}}}]
    assert messages[4] == {"role": "tool", "content": "sunny", "tool_name": "weather",
                           "tool_call_id": "call_1"}


def test_openai_defaults_and_refusals() -> None:
    args = mapping.chat_args({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    assert args["options"] == {"temperature": 1.0, "top_p": 1.0}
    assert mapping.chat_args({"model": "m", "messages": [{"role": "user", "content": "x"}],
                             "response_format": {"type": "json_object"}})["format"] == "json"
    for body, message in [
        ({"messages": []}, "[] is too short - 'messages'"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url",
                                                     "image_url": "https://x/y.png"}]}]},
         "image URLs are not currently supported, please use base64 encoded data instead"),
        ({"messages": [{"role": "user"}]}, "invalid message content type: <nil>"),
        ({"messages": [{"role": "user", "content": "x"}], "reasoning_effort": "huge"},
         'invalid reasoning value: "huge"'),
    ]:
        with pytest.raises(HTTPProblem, match=message.replace("[", r"\[").replace("]", r"\]")):
            mapping.chat_args(body)
    completion = mapping.completion_args({"model": "m", "prompt": "p", "top_p": 0})
    assert completion["options"] == {"temperature": 1.0, "top_p": 1.0,
                                     "frequency_penalty": 0, "presence_penalty": 0}
    with pytest.raises(HTTPProblem, match="invalid type for 'stop' field: float64"):
        mapping.completion_args({"stop": ["a", 1]})
    assert mapping.embed_args({"model": "m", "input": ""})["input"] == [""]
    with pytest.raises(HTTPProblem, match="invalid input"):
        mapping.embed_args({"model": "m", "input": []})
    with pytest.raises(HTTPProblem, match="Invalid value for 'encoding_format' = hex"):
        mapping.embed_args({"model": "m", "input": "x", "encoding_format": "hex"})


def _sse(chunks: list[bytes]) -> list[dict | str]:
    out: list[dict | str] = []
    for chunk in chunks:
        text = chunk.decode()
        assert text.startswith("data: ") and text.endswith("\n\n")
        body = text[6:-2]
        out.append(body if body == "[DONE]" else json.loads(body))
    return out


def test_chat_chunks_follow_ollamas_chat_writer() -> None:
    writer = shapes.ChatChunks("chatcmpl-1", include_usage=True)
    first = _sse(writer.event({"model": "m", "message": {"role": "assistant", "content": "Hel"},
                               "done": False}))
    middle = _sse(writer.event({"model": "m", "message": {
        "role": "assistant", "content": "", "tool_calls": [
            {"id": "call_x", "function": {"index": 0, "name": "f", "arguments": {"a": 1}}}]},
        "done": False}))
    end = _sse(writer.event({"model": "m", "message": {"role": "assistant", "content": ""},
                             "done": True, "done_reason": "stop", "prompt_eval_count": 5,
                             "eval_count": 2}))
    assert first[0]["choices"][0]["delta"] == {"role": "assistant", "content": "Hel"}
    assert first[0]["object"] == "chat.completion.chunk"
    assert first[0]["system_fingerprint"] == "fp_ollama"
    assert first[0]["choices"][0]["finish_reason"] is None
    assert middle[0]["choices"][0]["delta"]["tool_calls"] == [
        {"id": "call_x", "index": 0, "type": "function",
         "function": {"name": "f", "arguments": '{"a":1}'}}]
    finish, usage, done = end  # the empty trailer itself makes no content chunk
    assert finish["choices"] == [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]
    assert usage["choices"] == [] and usage["usage"] == {
        "prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
    assert done == "[DONE]"
    assert len({c["created"] for c in [*first, *middle, finish]}) == 1


def test_completion_and_embedding_shapes() -> None:
    final = {"model": "m", "response": "text", "done": True, "done_reason": "length",
             "prompt_eval_count": 3, "eval_count": 4}
    body = shapes.completion("cmpl-5", final)
    assert body["choices"] == [{"text": "text", "index": 0, "finish_reason": "length"}]
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    chunks = _sse(shapes.CompletionChunks("cmpl-5", include_usage=False).event(final))
    assert chunks[0]["choices"][0]["finish_reason"] == "length" and chunks[1] == "[DONE]"
    listed = shapes.embedding_list("m", {"embeddings": [[0.5, -1.0]], "prompt_eval_count": 2},
                                   "base64")
    raw = base64.b64decode(listed["data"][0]["embedding"])
    assert struct.unpack("<2f", raw) == (0.5, -1.0)
    assert listed["usage"] == {"prompt_tokens": 2, "total_tokens": 2}
    models = shapes.model_list({"models": [{"model": "user/m:tag",
                                            "modified_at": "2025-05-01T12:00:00.123456789Z"}]})
    assert models["data"] == [{"id": "user/m:tag", "object": "model", "created": 1746100800,
                               "owned_by": "user"}]
    assert shapes.model_list({"models": []})["data"] is None


def test_metrics_render_prometheus_text() -> None:
    metrics = Metrics()
    metrics.request("/api/chat", "POST", 200)
    metrics.request("/api/chat", "POST", 200)
    metrics.tokens({"model": "m", "prompt_eval_count": 10, "eval_count": 5})
    metrics.pulled(1024)
    text = metrics.render(["m:latest"])
    assert 'ollamad_http_requests_total{route="/api/chat",method="POST",status="200"} 2' in text
    assert 'ollamad_prompt_tokens_total{model="m"} 10' in text
    assert 'ollamad_completion_tokens_total{model="m"} 5' in text
    assert "ollamad_loaded_models 1" in text
    assert "ollamad_pulled_bytes_total 1024" in text
    assert "# TYPE ollamad_http_requests_total counter" in text
