"""The HTTP bridge against a live daemon with an empty store: raw HTTP for the exact statuses,
bodies and headers, and the official ``ollama`` client for the simple calls."""

from __future__ import annotations

import hashlib
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import ollama
import openai
import pytest

from tests.daemon import Daemon, base_env, short_tempdir
from tests.http_daemon import http_daemon

JSON = "application/json; charset=utf-8"


@pytest.fixture(scope="module")
def bridge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, str]]:
    with http_daemon(tmp_path_factory.mktemp("http")) as running:
        yield running


@pytest.fixture
def http(bridge: tuple[Daemon, str]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=bridge[1], timeout=30) as client:
        yield client


def test_root_and_version(http: httpx.Client, bridge: tuple[Daemon, str]) -> None:
    root = http.get("/")
    assert (root.status_code, root.text) == (200, "Ollama is running")
    assert root.headers["content-type"] == "text/plain; charset=utf-8"
    assert http.head("/").status_code == 200
    version = http.get("/api/version")
    assert version.headers["content-type"] == JSON
    assert version.content == b'{"version":"0.1.0"}'
    assert http.head("/api/version").status_code == 200
    assert ollama.Client(host=bridge[1]).list().models == []


def test_unknown_paths_and_methods_get_gins_plain_texts(http: httpx.Client) -> None:
    missing = http.get("/api/nothing")
    assert (missing.status_code, missing.text) == (404, "404 page not found")
    assert missing.headers["content-type"] == "text/plain"
    for method, path in [("POST", "/api/tags"), ("GET", "/api/chat"), ("HEAD", "/api/ps"),
                         ("POST", "/api/delete"), ("HEAD", "/v1/models")]:
        wrong = http.request(method, path)
        assert wrong.status_code == 405, (method, path)
        if method != "HEAD":
            assert wrong.text == "405 method not allowed"


@pytest.mark.parametrize(("path", "body", "status", "message"), [
    ("/api/show", b"", 400, "missing request body"),
    ("/api/chat", b"   ", 400, "missing request body"),
    ("/api/generate", b"{bad", 400,
     "invalid character 'b' looking for beginning of object key string"),
    ("/api/show", b'{"model": 7}', 400,
     "json: cannot unmarshal number into Go struct field ShowRequest.model of type string"),
    ("/api/chat", b'{"model": "m", "messages": "hi"}', 400,
     "json: cannot unmarshal string into Go struct field ChatRequest.messages of type "
     "[]api.Message"),
    ("/api/show", b"{}", 400, "model is required"),
    ("/api/show", b'{"model": "nope"}', 404, "model 'nope' not found"),
    ("/api/show", b'{"name": "nope"}', 404, "model 'nope' not found"),
    ("/api/generate", b'{"model": "nope", "prompt": "hi"}', 404, "model 'nope' not found"),
    ("/api/chat", b'{"model": "nope", "messages": [], "stream": false}', 404,
     "model 'nope' not found"),
    ("/api/embed", b'{"model": "nope", "input": "x"}', 404, "model 'nope' not found"),
    ("/api/copy", b'{"source": "nope", "destination": "other"}', 404, 'model "nope" not found'),
    ("/api/copy", b'{"source": "", "destination": "other"}', 400, 'source "" is invalid'),
])
def test_errors_have_ollamas_status_and_message(http: httpx.Client, path: str, body: bytes,
                                                status: int, message: str) -> None:
    answer = http.post(path, content=body)
    assert answer.status_code == status
    assert answer.json() == {"error": message}
    assert answer.headers["content-type"] == JSON


def test_delete_of_a_missing_model_is_404(http: httpx.Client) -> None:
    answer = http.request("DELETE", "/api/delete", content=b'{"model": "nope"}')
    assert (answer.status_code, answer.json()) == (404, {"error": "model 'nope' not found"})


def test_ollama_client_raises_the_servers_error(bridge: tuple[Daemon, str]) -> None:
    client = ollama.Client(host=bridge[1])
    with pytest.raises(ollama.ResponseError) as failure:
        client.show("nope")
    assert failure.value.status_code == 404
    assert failure.value.error == "model 'nope' not found"
    with pytest.raises(ollama.ResponseError) as failure:
        list(client.generate(model="nope", prompt="x", stream=True))
    assert failure.value.status_code == 404
    assert client.ps().models == []


def test_blobs_are_verified_while_they_stream(http: httpx.Client,
                                              bridge: tuple[Daemon, str]) -> None:
    data = b"some layer content\n" * 50_000
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    assert http.head(f"/api/blobs/{digest}").status_code == 404
    wrong = "sha256:" + "0" * 64
    mismatch = http.post(f"/api/blobs/{wrong}", content=data)
    assert mismatch.status_code == 400
    assert mismatch.json()["error"].startswith(f'digest mismatch, expected "{wrong}", got')
    assert http.post("/api/blobs/sha256:xyz", content=b"x").status_code == 400

    def chunks() -> Iterator[bytes]:  # chunked transfer encoding: no length known up front
        for start in range(0, len(data), 65536):
            yield data[start:start + 65536]

    created = http.post(f"/api/blobs/{digest}", content=chunks())
    assert created.status_code == 201
    assert http.post(f"/api/blobs/{digest}", content=data).status_code == 200
    assert http.head(f"/api/blobs/{digest}").status_code == 200
    stored = bridge[0].models / "blobs" / ("sha256-" + digest[7:])
    assert stored.read_bytes() == data
    assert not [p for p in stored.parent.iterdir() if p.name.startswith(".")]


def test_create_blob_through_the_ollama_client(bridge: tuple[Daemon, str],
                                               tmp_path: Path) -> None:
    path = tmp_path / "layer.bin"
    path.write_bytes(b"\x00\x01" * 1000)
    digest = ollama.Client(host=bridge[1]).create_blob(path)
    assert digest == "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(("host", "status"), [
    ("evil.example.com", 403), ("8.8.8.8:11434", 403), ("localhost.evil.com", 403),
    ("localhost:11434", 200), ("127.0.0.1", 200), ("[::1]:80", 200), ("10.0.0.7", 200),
    ("printer.local", 200), ("api.internal", 200), ("x.localhost", 200),
])
def test_host_header_guard_on_loopback(http: httpx.Client, host: str, status: int) -> None:
    answer = http.get("/api/version", headers={"Host": host})
    assert answer.status_code == status
    if status == 403:
        assert answer.content == b""


def test_options_to_a_local_name_is_204(http: httpx.Client) -> None:
    assert http.options("/api/chat", headers={"Host": "localhost"}).status_code == 204


def test_cors_preflight_allowed_and_refused(http: httpx.Client) -> None:
    preflight = http.options("/api/chat", headers={
        "Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type"})
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == "http://localhost:3000"
    assert "Content-Type" in preflight.headers["access-control-allow-headers"]
    assert "POST" in preflight.headers["access-control-allow-methods"]
    simple = http.get("/api/version", headers={"Origin": "vscode-webview://abc"})
    assert simple.status_code == 200
    assert simple.headers["access-control-allow-origin"] == "vscode-webview://abc"
    assert simple.headers["vary"] == "Origin"
    for method in ("OPTIONS", "GET", "POST"):
        refused = http.request(method, "/api/tags",
                               headers={"Origin": "https://evil.example.com"})
        assert (refused.status_code, refused.content) == (403, b"")
    # An Origin naming the server itself is a same-origin request, not CORS.
    host = http.base_url.netloc.decode()
    same = http.get("/api/version", headers={"Origin": f"http://{host}"})
    assert same.status_code == 200 and "access-control-allow-origin" not in same.headers


def test_limits_on_body_and_header_sizes(http: httpx.Client) -> None:
    # A raw socket: httpx would not send a Content-Length its body does not have.
    host, port = http.base_url.host, http.base_url.port
    with socket.create_connection((host, port), timeout=30) as raw:
        raw.sendall(b"POST /api/chat HTTP/1.1\r\nHost: localhost\r\n"
                    b"Content-Length: 1099511627776\r\n\r\n{}")
        received = b""
        while chunk := raw.recv(65536):  # the server closes: it did not read the body
            received += chunk
        answer = received.decode()
    assert answer.startswith("HTTP/1.1 413")
    assert '"error":"request body larger than' in answer
    huge = http.get("/api/version", headers={"X-Filler": "a" * 100_000})
    assert (huge.status_code, huge.text) == (431, "431 Request Header Fields Too Large")


def test_metrics_count_requests(http: httpx.Client) -> None:
    http.get("/api/version")
    http.get("/api/nothing")
    text = http.get("/metrics").text
    assert 'ollamad_http_requests_total{route="/api/version",method="GET",status="200"}' in text
    assert 'ollamad_http_requests_total{route="unmatched",method="GET",status="404"}' in text
    assert "ollamad_loaded_models 0" in text
    assert "ollamad_pulled_bytes_total 0" in text


def test_openai_errors_use_the_openai_envelope(http: httpx.Client,
                                               bridge: tuple[Daemon, str]) -> None:
    empty = http.post("/v1/chat/completions", content=b"")
    assert empty.status_code == 400
    assert empty.json() == {"error": {"message": "EOF", "type": "invalid_request_error",
                                      "param": None, "code": None}}
    no_messages = http.post("/v1/chat/completions", json={"model": "m", "messages": []})
    assert no_messages.json()["error"]["message"] == "[] is too short - 'messages'"
    missing = http.post("/v1/chat/completions",
                        json={"model": "nope", "messages": [{"role": "user", "content": "x"}]})
    assert missing.status_code == 404
    assert missing.json()["error"] == {"message": "model 'nope' not found",
                                       "type": "not_found_error", "param": None, "code": None}
    client = openai.OpenAI(base_url=bridge[1] + "/v1", api_key="unused")
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")
    assert not client.models.list().data  # Ollama's list is null when the store is empty


# -- daemons configured differently ----------------------------------------------------------

def test_api_keys_when_configured(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("# clients\nsecret-one\nsecret-two\n")
    with http_daemon(tmp_path, env={"OLLAMAD_API_KEYS_FILE": str(keys)}) as (_, url), \
            httpx.Client(base_url=url, timeout=30) as http:
        assert http.get("/").status_code == 200  # the liveness probe stays open
        refused = http.get("/api/tags")
        assert refused.status_code == 401
        assert refused.json() == {"error": "unauthorized"}
        assert refused.headers["www-authenticate"] == "Bearer"
        assert http.get("/api/tags", headers={"Authorization": "Bearer wrong"}).status_code \
            == 401
        assert http.get("/api/tags", headers={"Authorization": "Bearer secret-two"}) \
            .status_code == 200
        with pytest.raises(ollama.ResponseError) as failure:
            ollama.Client(host=url).list()
        assert failure.value.status_code == 401
        authorized = ollama.Client(host=url, headers={"Authorization": "Bearer secret-one"})
        assert authorized.list().models == []
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=url + "/v1", api_key="wrong").models.list()
        assert not openai.OpenAI(base_url=url + "/v1", api_key="secret-one").models.list().data


def test_configured_origins_and_a_wildcard(tmp_path: Path) -> None:
    env = {"OLLAMA_ORIGINS": "chrome-extension://*,https://ui.example.com"}
    with http_daemon(tmp_path, env=env) as (_, url), httpx.Client(base_url=url) as http:
        for origin in ("chrome-extension://abcdef", "https://ui.example.com"):
            answer = http.options("/api/chat", headers={"Origin": origin,
                                                        "Access-Control-Request-Method": "POST"})
            assert answer.status_code == 204
            assert answer.headers["access-control-allow-origin"] == origin
        assert http.get("/", headers={"Origin": "moz-extension://x"}).status_code == 403


def test_listening_on_every_interface_drops_the_host_check(tmp_path: Path) -> None:
    with http_daemon(tmp_path, ["--http", "0.0.0.0:0"]) as (_, url):
        port = url.rsplit(":", 1)[1]
        answer = httpx.get(f"http://127.0.0.1:{port}/api/version",
                           headers={"Host": "anything.example.com"})
        assert answer.status_code == 200


def test_http_none_and_a_port_in_use(tmp_path: Path) -> None:
    from tests.daemon import running_daemon

    (tmp_path / "off").mkdir()
    with running_daemon(tmp_path / "off", ["--http", "none"]) as daemon:
        assert not any("HTTP on" in line for line in daemon.notify.received)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        home = tmp_path / "busy"
        home.mkdir()
        rundir = short_tempdir()
        result = subprocess.run(
            [sys.executable, "-m", "ollamad", "serve", "--socket", str(rundir / "s.sock"),
             "--http", f"127.0.0.1:{port}"],
            env=base_env(home, home / ".ollama" / "models"), capture_output=True, text=True,
            timeout=60)
    assert result.returncode == 1
    assert f"cannot listen for HTTP on 127.0.0.1:{port}" in result.stderr
