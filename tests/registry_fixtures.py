"""Registries for the tests: Debian's docker-registry, a throttling proxy, a hostile registry.

All listen on 127.0.0.1 only. docker-registry runs with its own config file and a temporary
storage folder (never the system service's), and is stopped by its pid.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import http.server
import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_ssh_public_key

DOCKER_REGISTRY = shutil.which("docker-registry") or "/usr/bin/docker-registry"
START_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- docker-registry ----------------------------------------------------------------------------


class DockerRegistry:
    """``docker-registry serve`` on a loopback port, optionally with htpasswd Basic auth."""

    def __init__(self, folder: Path, users: dict[str, str] | None = None) -> None:
        self.folder = folder
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.log = folder / "registry.log"
        self.users = users or {}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> DockerRegistry:
        for program in (DOCKER_REGISTRY, "htpasswd"):
            if not shutil.which(program):
                raise AssertionError(f"{program} is missing: apt-get install docker-registry "
                                     "apache2-utils (scripts/setup installs them)")
        storage = self.folder / "storage"
        storage.mkdir(parents=True, exist_ok=True)
        auth = ""
        if self.users:
            htpasswd = self.folder / "htpasswd"
            lines = [subprocess.run(["htpasswd", "-Bbn", user, password], check=True,
                                    capture_output=True, text=True).stdout.strip()
                     for user, password in self.users.items()]
            htpasswd.write_text("\n".join(lines) + "\n")
            auth = f"auth:\n  htpasswd:\n    realm: test-realm\n    path: {htpasswd}\n"
        config = self.folder / "config.yml"
        config.write_text(
            "version: 0.1\n"
            "log:\n  level: warn\n  accesslog:\n    disabled: false\n"
            f"storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n"
            f"http:\n  addr: 127.0.0.1:{self.port}\n  secret: test-secret\n" + auth)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([DOCKER_REGISTRY, "serve", str(config)],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        # An external program with no readiness signal: a bounded wait for its port.
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"docker-registry exited: {self.log.read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError("docker-registry did not start") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@contextlib.contextmanager
def docker_registry(folder: Path, users: dict[str, str] | None = None) -> Iterator[DockerRegistry]:
    registry = DockerRegistry(folder, users)
    try:
        yield registry.start()
    finally:
        registry.stop()


# -- small threaded HTTP servers ----------------------------------------------------------------


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, handle: Callable[[_Handler], None]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.handle_request_with = handle


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _dispatch(self) -> None:
        try:
            self.server.handle_request_with(self)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _dispatch

    def reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
              length: int | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))


@contextlib.contextmanager
def serving(handle: Callable[[_Handler], None]) -> Iterator[str]:
    """Run ``handle`` for every request on a loopback port; yields ``127.0.0.1:<port>``."""
    server = _Server(handle)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


# -- throttling proxy ---------------------------------------------------------------------------


@dataclass
class ProxyLog:
    """What passed through the proxy: Range bytes asked for and body bytes sent, per path."""

    requested: dict[str, int] = field(default_factory=dict)
    sent: dict[str, int] = field(default_factory=dict)
    changed: threading.Condition = field(default_factory=threading.Condition)

    def reset(self) -> None:
        with self.changed:
            self.requested.clear()
            self.sent.clear()

    def add(self, table: dict[str, int], path: str, count: int) -> None:
        with self.changed:
            table[path] = table.get(path, 0) + count
            self.changed.notify_all()

    def wait_for(self, path: str, sent: float, timeout: float) -> bool:
        """Block until ``sent`` body bytes of ``path`` have gone through."""
        with self.changed:
            return self.changed.wait_for(lambda: self.sent.get(path, 0) >= sent, timeout)


class Proxy:
    """A reverse proxy in front of ``upstream`` whose downloads can be slowed to ``rate``
    bytes a second (shared by all connections)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.rate: float | None = None
        self.log = ProxyLog()
        self._next = 0.0
        self._lock = threading.Lock()

    def _throttle(self, count: int) -> None:
        rate = self.rate
        if not rate:
            return
        with self._lock:
            now = time.monotonic()
            self._next = max(self._next, now) + count / rate
            wait = self._next - now
        time.sleep(wait)

    def handle(self, request: _Handler) -> None:
        path = urlsplit(request.path).path
        wanted = request.headers.get("Range", "")
        if wanted.startswith("bytes="):
            first, _, last = wanted[6:].partition("-")
            self.log.add(self.log.requested, path, int(last) - int(first) + 1)
        body = request.body() if request.headers.get("Content-Length") else None
        upstream = http.client.HTTPConnection(self.upstream, timeout=60)
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        upstream.request(request.command, request.path, body=body, headers=headers)
        response = upstream.getresponse()
        request.send_response(response.status)
        for key, value in response.getheaders():
            if key.lower() not in ("connection", "transfer-encoding", "keep-alive"):
                request.send_header(key, value)
        if response.getheader("Content-Length") is None:
            data = response.read()
            request.send_header("Content-Length", str(len(data)))
            request.end_headers()
            request.wfile.write(data)
            return
        request.end_headers()
        while request.command != "HEAD" and (chunk := response.read(64 * 1024)):
            self._throttle(len(chunk))
            request.wfile.write(chunk)
            self.log.add(self.log.sent, path, len(chunk))
        upstream.close()


# -- a registry that misbehaves on demand -------------------------------------------------------


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Hostile:
    """A tiny in-memory registry; each field is a way to misbehave.

    ``manifests`` maps ``repo:tag`` to manifest bytes, ``blobs`` a digest to its bytes. Blob
    GETs honour ``Range`` unless ``ignore_range``; ``truncate_at`` closes every body at that
    absolute offset; ``stall_at`` stops sending there (until ``release`` is set); ``redirect``
    sends blob GETs to that URL prefix. ``auth`` is None, "bearer" (realm ``realm``, which
    defaults to this server's /token) or "basic"; ``users`` the Basic credentials accepted.
    """

    manifests: dict[str, bytes] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)
    ignore_range: bool = False
    truncate_at: int | None = None
    stall_at: int | None = None
    redirect: str | None = None
    redirect_loop: bool = False
    head_missing: bool = False  # every blob is "not in this repository": mounts are tried
    auth: str | None = None
    realm: str | None = None
    users: dict[str, str] = field(default_factory=dict)
    token_auth: list[str] = field(default_factory=list)  # Authorization headers of token GETs
    token_urls: list[str] = field(default_factory=list)
    blob_auth: list[str] = field(default_factory=list)   # Authorization headers of blob GETs
    served: dict[str, int] = field(default_factory=dict)
    uploads: dict[str, bytearray] = field(default_factory=dict)
    mounted: list[tuple[str, str]] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    host: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)
    token: str = "good-token"

    def handle(self, request: _Handler) -> None:
        url = urlsplit(request.path)
        if url.path == "/token":
            self._token(request)
            return
        if not self._authorized(request):
            return
        parts = url.path.split("/")
        if url.path.startswith("/v2/") and "/manifests/" in url.path:
            repo, tag = url.path[4:].split("/manifests/")
            if request.command == "PUT":
                self.manifests[f"{repo}:{tag}"] = request.body()
                request.reply(201)
                return
            data = self.manifests.get(f"{repo}:{tag}")
            if data is None:
                request.reply(404, b'{"errors":[{"code":"MANIFEST_UNKNOWN"}]}')
            else:
                request.reply(200, data, {
                    "Content-Type": "application/vnd.docker.distribution.manifest.v2+json"})
            return
        if "/blobs/uploads/" in url.path:
            self._upload(request, url.path, dict(parse_qsl(url.query)))
            return
        if (url.path.startswith("/v2/") and parts[-2] == "blobs") or parts[1] == "cdn":
            self._blob(request, parts[-1])
            return
        request.reply(404)

    def _authorized(self, request: _Handler) -> bool:
        given = request.headers.get("Authorization", "")
        if self.auth == "bearer" and given != f"Bearer {self.token}":
            realm = self.realm or f"http://{self.host}/token"
            request.reply(401, b"{}", {"WWW-Authenticate": f'Bearer realm="{realm}",'
                                       'service="test-registry",scope="repository:library/m:pull"'})
            return False
        if self.auth == "basic":
            expected = {"Basic " + base64.b64encode(f"{u}:{p}".encode()).decode()
                        for u, p in self.users.items()}
            if given not in expected:
                request.reply(401, b"{}", {"WWW-Authenticate": 'Basic realm="test"'})
                return False
        return True

    def _token(self, request: _Handler) -> None:
        given = request.headers.get("Authorization", "")
        self.token_auth.append(given)
        url = f"http://{request.headers['Host']}{request.path}"
        self.token_urls.append(url)
        if given.startswith("Basic "):
            ok = given in {"Basic " + base64.b64encode(f"{u}:{p}".encode()).decode()
                           for u, p in self.users.items()}
        else:
            ok = verify_ollama_signature(given, url)
        if ok:
            request.reply(200, json.dumps({"token": self.token}).encode())
        else:
            request.reply(403, b"bad signature")

    def _blob(self, request: _Handler, digest: str) -> None:
        self.blob_auth.append(request.headers.get("Authorization", ""))
        if self.redirect_loop:
            request.reply(307, headers={"Location": request.path})
            return
        if self.redirect and not request.path.startswith("/cdn/"):
            request.reply(307, headers={"Location": f"{self.redirect}/cdn/{digest}"})
            return
        data = self.blobs.get(digest)
        if data is None or (request.command == "HEAD" and self.head_missing):
            request.reply(404)
            return
        start, end = 0, len(data) - 1
        status, headers = 200, {}
        wanted = request.headers.get("Range", "")
        if wanted.startswith("bytes=") and not self.ignore_range:
            first, _, last = wanted[6:].partition("-")
            start, end = int(first), min(int(last or len(data) - 1), len(data) - 1)
            if start >= len(data):
                request.reply(416, b"range not satisfiable")
                return
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        request.reply(status, headers=headers, length=end - start + 1)
        if request.command == "HEAD":
            return
        stop = end + 1
        for limit in (self.truncate_at, self.stall_at):
            if limit is not None:
                stop = max(start, min(stop, limit))
        request.wfile.write(data[start:stop])
        request.wfile.flush()
        with self.lock:
            self.served[digest] = self.served.get(digest, 0) + stop - start
        if self.stall_at is not None and stop <= end:
            self.release.wait(30)
        if stop <= end:
            request.close_connection = True

    def _upload(self, request: _Handler, path: str, query: dict[str, str]) -> None:
        repo = path[4:].split("/blobs/uploads/")[0]
        if request.command == "POST":
            if query.get("mount") in self.blobs and query.get("from"):
                self.mounted.append((query["from"], query["mount"]))
                request.reply(201)
                return
            uid = str(len(self.uploads))
            self.uploads[uid] = bytearray()
            request.reply(202, headers={"Location": f"/v2/{repo}/blobs/uploads/{uid}"})
            return
        uid = path.rsplit("/", 1)[1]
        if request.command == "PATCH":
            self.uploads[uid] += request.body()
            request.reply(202, headers={"Location": f"/v2/{repo}/blobs/uploads/{uid}"})
        elif request.command == "PUT":
            data = bytes(self.uploads.pop(uid)) + request.body()
            if digest_of(data) != query.get("digest"):
                request.reply(400, b"digest invalid")
                return
            self.blobs[query["digest"]] = data
            request.reply(201)


def verify_ollama_signature(header: str, url: str) -> bool:
    """Check ``<ssh public key blob>:<signature>`` over Ollama's token challenge for ``url``,
    independently of ollamad's code."""
    try:
        key_b64, signature_b64 = header.split(":")
        key = load_ssh_public_key(b"ssh-ed25519 " + key_b64.encode())
        assert isinstance(key, Ed25519PublicKey)
        empty = base64.b64encode(hashlib.sha256(b"").hexdigest().encode()).decode()
        key.verify(base64.b64decode(signature_b64), f"GET,{url},{empty}".encode())
    except Exception:
        return False
    return True


def model_manifest(blobs: dict[str, bytes], layers: list[tuple[str, str]],
                   config: str) -> bytes:
    """A manifest over ``blobs``: ``layers`` as (media type, digest), ``config`` a digest."""
    return json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                   "digest": config, "size": len(blobs[config])},
        "layers": [{"mediaType": media, "digest": digest, "size": len(blobs[digest])}
                   for media, digest in layers],
    }).encode()


def http_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
