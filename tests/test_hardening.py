"""Hostile input, one class per kind of attack Ollama has had a CVE for, against real daemons.

Every test ends the same way: the request is refused with a clear error, nothing was written
outside the store (the files around it are byte for byte as before), the store is consistent,
and the daemon still serves. What other files already prove is cited, not repeated:

- tests/test_registry_hostile.py: in-process pulls from a misbehaving registry (malformed,
  traversing, repeated and absurdly sized digests; blobs that are not their digest; truncated,
  stalled, range-ignoring and redirect-looping registries; foreign token realms);
- tests/test_registry_units.py: archive entry and index.json checks, import refusals in-process;
- tests/test_model_info.py: the bounded GGUF reader on truncated and hostile headers;
- tests/test_daemon.py: protocol violations (including a frame over the limit) close only that
  connection; tests/test_protocol.py: the frame limit is exact;
- tests/test_http.py: the Host check on loopback, CORS, body and header limits;
- tests/test_prompt.py: template resource limits, Jinja sandbox escapes;
- tests/test_fuzz.py: the same parsers under generated input.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import socket
import stat
import struct
import tarfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import msgpack
import numpy as np
import pytest

from ollamactl.client import Client, RequestFailed
from ollamad.registry import archive
from ollamad.store import Digest, ModelName, ModelStore
from ollamad.store.files import TEMP_PREFIX
from tests import test_registry_hostile
from tests.daemon import Daemon, running_daemon
from tests.http_daemon import http_daemon, http_url
from tests.ollama_layout import write_ollama_model
from tests.processes import children
from tests.registry_fixtures import Hostile, digest_of, model_manifest

MODEL_MEDIA = "application/vnd.ollama.image.model"
SOCKET_ONLY = ["--http", "none"]
MB = 1 << 20


# -- what every test checks afterwards ----------------------------------------------------------


def write_tiny_gguf(path: Path, architecture: str = "llama") -> Path:
    """A small well-formed GGUF (no real weights): enough for create, show, list and delete."""
    import gguf

    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_block_count(1)
    writer.add_context_length(64)
    writer.add_embedding_length(8)
    writer.add_head_count(1)
    writer.add_file_type(0)
    writer.add_token_list(["a", "b"])
    writer.add_tensor("token_embd.weight", np.zeros((2, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def tree(folder: Path, skip: tuple[Path, ...] = ()) -> dict[str, str]:
    """sha256 (or the link target, or "dir") of everything under ``folder``, by relative path,
    leaving out the folders in ``skip``."""
    found: dict[str, str] = {}
    for path in sorted(folder.rglob("*")):
        if any(path == s or s in path.parents for s in skip):
            continue
        key = str(path.relative_to(folder))
        if path.is_symlink():
            found[key] = "-> " + os.readlink(path)
        elif path.is_dir():
            found[key] = "dir"
        elif path.is_file():
            found[key] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            found[key] = stat.filemode(path.lstat().st_mode)
    return found


class Outside:
    """The files around a daemon's store, to show an attack wrote nothing there.

    The home folder holds the store, the identity and the daemon's own logs, which change by
    design; everything else in it must stay as it was. A victim file sits where a traversal out
    of ``blobs/`` would land.
    """

    def __init__(self, home: Path) -> None:
        self.home = home
        self.models = home / ".ollama" / "models"
        self.victim = home / "victim"
        self.victim.write_text("precious\n")
        self.before = self._state()

    def _state(self) -> dict[str, str]:
        return tree(self.home, skip=(self.models, self.home / ".ollama" / "logs",
                                     self.home / "daemon.stderr"))

    def assert_untouched(self) -> None:
        assert self._state() == self.before
        assert self.victim.read_text() == "precious\n"


def assert_store_intact(models: Path, allow_partial: bool = True) -> None:
    """Every manifest parses and each of its blobs exists and verifies; every file named like a
    blob is its digest; anything else in ``blobs/`` is a temp file or a partial download, which
    are never taken for a blob."""
    store = ModelStore(models)
    for name in store.manifests.names():
        for digest in store.manifests.read(name).manifest.digests:
            assert store.blobs.verify(digest), f"{name}: blob {digest} is missing or corrupt"
    for path in store.blobs.folder.iterdir() if store.blobs.folder.exists() else ():
        digest = Digest.from_filename(path.name)
        if digest is not None:
            assert path.is_file() and store.blobs.verify(digest), f"{path.name} is not its digest"
        else:
            assert path.name.startswith(TEMP_PREFIX) or (
                allow_partial and "-partial" in path.name), f"stray {path.name} in blobs/"


def assert_serving(daemon: Daemon) -> None:
    """The daemon answers on a fresh connection, and a store operation works."""
    assert daemon.proc is not None and daemon.proc.poll() is None
    with Client(daemon.socket) as client:
        assert client.call("version")["version"]
        client.call("list")


def refused(client: Client, op: str, args: dict[str, Any], files: list[int] | None = None
            ) -> RequestFailed:
    with pytest.raises(RequestFailed) as failure:
        client.call(op, args, files=files or [])
    return failure.value


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def run_in_thread(target: Callable[..., Any], *args: Any) -> tuple[threading.Thread, list[Any]]:
    """Start ``target(*args)`` in a thread; the list gets its result or its exception."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(target(*args))
        except Exception as exc:  # handed to the test, which asserts on it
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


# The misbehaving registry of the in-process registry tests, as a fixture here too.
hostile = test_registry_hostile.hostile


# -- CVE-2024-37032: path traversal through digests ---------------------------------------------


def _hostile_manifest(config_digest: str, layer_digest: str) -> bytes:
    return json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                   "digest": config_digest, "size": 2},
        "layers": [{"mediaType": MODEL_MEDIA, "digest": layer_digest, "size": 9}]}).encode()


GOOD = "sha256:" + "ab" * 32
# From blobs/, three levels up is the home folder, where the victim file is.
TRAVERSALS = ["sha256:../../../victim", "sha256-../../../victim", "../../../victim",
              f"{GOOD}/../../../../victim", f"sha256:{'ab' * 32}\n", "sha256:" + "AB" * 31 + "/.",
              "sha256:%2e%2e%2f%2e%2e%2fvictim", "sha256:" + "ab" * 33]


class TestDigestTraversal:
    """CVE-2024-37032: a registry's manifest named blobs by digests like ``../../x``, and Ollama
    wrote (and deleted, and pushed) files where they pointed. Here a digest passes a strict
    grammar before it is ever a path, at every door: pull, the blob operations, a manifest
    planted in the store."""

    @pytest.fixture
    def daemon(self, tmp_path: Path) -> Iterator[Daemon]:
        with http_daemon(tmp_path) as (running, _):
            yield running

    @pytest.mark.parametrize("where", ["layer", "config"])
    def test_pulled_manifests_with_traversing_digests_are_refused(
            self, daemon: Daemon, hostile: Hostile, where: str) -> None:
        outside = Outside(daemon.home)
        with Client(daemon.socket) as client:
            for number, digest in enumerate(TRAVERSALS):
                config, layer = (digest, GOOD) if where == "config" else (GOOD, digest)
                hostile.manifests[f"library/m{number}:latest"] = _hostile_manifest(config, layer)
                failure = refused(client, "pull", {"model": f"{hostile.host}/library/m{number}",
                                                   "insecure": True})
                assert failure.code == "unavailable"
                assert "pull model manifest: " in str(failure) and "is malformed" in str(failure)
        assert hostile.served == {}  # not one blob was even asked for
        outside.assert_untouched()
        assert tree(daemon.models) == {"blobs": "dir", "manifests": "dir"}
        assert_serving(daemon)

    def test_blob_operations_refuse_traversing_digests(self, daemon: Daemon,
                                                       tmp_path: Path) -> None:
        source = tmp_path / "upload.bin"
        source.write_bytes(b"precious\n")  # the victim's own bytes: a match would overwrite
        outside = Outside(daemon.home)
        url = http_url(daemon)
        with Client(daemon.socket) as client:
            for digest in TRAVERSALS:
                fd = os.open(source, os.O_RDONLY)
                try:
                    failure = refused(client, "blob", {"digest": digest}, [fd])
                finally:
                    os.close(fd)
                assert (failure.code, str(failure)) == ("bad_request", "invalid digest format")
        with httpx.Client(base_url=url, timeout=30) as http:
            for digest in TRAVERSALS:
                quoted = digest.replace("/", "%2F").replace("\n", "%0A")
                for method in ("HEAD", "POST"):
                    answer = http.request(method, f"/api/blobs/{quoted}", content=b"precious\n")
                    assert answer.status_code in (400, 404), (method, digest)
        outside.assert_untouched()
        assert list((daemon.models / "blobs").iterdir()) == []
        assert_serving(daemon)

    def test_a_planted_manifest_with_a_traversing_digest_is_never_followed(
            self, daemon: Daemon, hostile: Hostile, tmp_path: Path) -> None:
        """A manifest written into the store by something else (an old tool, a shared store):
        listing skips it; show, copy, delete and push refuse it; nothing it names is touched."""
        planted = daemon.models / "manifests" / "registry.ollama.ai" / "library" / "evil"
        planted.mkdir(parents=True)
        (planted / "latest").write_bytes(_hostile_manifest(GOOD, "sha256:../../../victim"))
        outside = Outside(daemon.home)
        with Client(daemon.socket) as client:
            assert client.call("list") == {"models": []}
            for op, args in (("show", {"model": "evil"}), ("delete", {"model": "evil"}),
                             ("copy", {"source": "evil", "destination": "copy"}),
                             ("push", {"model": "evil"}), ("generate", {"model": "evil"})):
                failure = refused(client, op, args)
                assert failure.code == "internal" and "unreadable" in str(failure), op
        outside.assert_untouched()
        assert hostile.uploads == {} and hostile.manifests == {}
        (planted / "latest").unlink()
        assert_store_intact(daemon.models)
        assert_serving(daemon)


# -- CVE-2024-39720: malformed, truncated and adversarial GGUF files -----------------------------


def _patched(source: bytes, key: bytes, value: int) -> bytes:
    """``source`` with the uint32 value of header key ``key`` replaced, the file still well
    formed: the kind of lie only the loader of the weights can catch."""
    data = bytearray(source)
    at = data.index(key) + len(key)
    assert struct.unpack_from("<I", data, at)[0] == 4  # GGUF value type uint32
    struct.pack_into("<I", data, at + 4, value)
    return bytes(data)


def _architecture(source: bytes, name: bytes) -> bytes:
    data = bytearray(source)
    key = data.index(b"general.architecture")
    at = data.index(b"llama", key)
    data[at:at + len(name)] = name
    return bytes(data)


def _counts(kv_count: int, tensor_count: int) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", 3, tensor_count, kv_count)


# Refused by the daemon's bounded header reader: show, list and generate name the damage.
UNREADABLE = {
    "garbage": lambda gguf: b"GGUF" + os.urandom(4096),
    "truncated header": lambda gguf: gguf[:5000],
    "kv count 2^60": lambda gguf: _counts(2**60, 0) + bytes(64),
    "tensor count 2^50": lambda gguf: _counts(0, 2**50) + bytes(64),
    "array of 2^40": lambda gguf: _counts(1, 0) + struct.pack("<Q", 1) + b"a"
    + struct.pack("<IIQ", 9, 0, 2**40),
    "string of 2^62": lambda gguf: _counts(1, 0) + struct.pack("<Q", 2**62) + b"k",
    "tensor data past the end": lambda gguf: gguf[:len(gguf) // 2],
}
# Well-formed headers whose content llama.cpp refuses, or crashes on: only the runner pays.
UNLOADABLE = {
    "unknown architecture": (lambda gguf: _architecture(gguf, b"llamz"),
                             "unknown model architecture: 'llamz'"),
    "wrong tensor shape": (lambda gguf: _patched(gguf, b"llama.embedding_length", 577),
                           "has wrong shape"),
    "1000 layers (llama.cpp aborts)": (lambda gguf: _patched(gguf, b"llama.block_count", 1000),
                                       "llama runner process has terminated"),
}


@pytest.fixture(scope="module")
def gguf_daemon(tmp_path_factory: pytest.TempPathFactory, smollm2_gguf: Path) -> Iterator[Daemon]:
    """A daemon whose store holds smollm2:135m and, as bad<N>:135m, every hostile GGUF below."""
    home = tmp_path_factory.mktemp("gguf")
    models = home / ".ollama" / "models"
    source = smollm2_gguf.read_bytes()
    write_ollama_model(models, smollm2_gguf)
    for number, make in enumerate([*UNREADABLE.values(),
                                   *(make for make, _ in UNLOADABLE.values())]):
        bad = home / f"bad{number}.gguf"
        bad.write_bytes(make(source))
        write_ollama_model(models, bad, model=f"bad{number}")
        bad.unlink()
    del source
    with running_daemon(home, SOCKET_ONLY) as running:
        yield running


class TestHostileGGUF:
    """CVE-2024-39720: a crafted GGUF crashed Ollama's server. Here the daemon parses a header
    only with its bounded reader, and llama.cpp runs only in a runner child: a file the reader
    refuses is a clear error from show and generate; a file that passes it but that llama.cpp
    refuses, or aborts on, costs a runner and nothing else. The good model keeps working."""

    @pytest.mark.parametrize("case", sorted(UNREADABLE))
    def test_an_unreadable_header_is_a_clear_error_from_show_and_generate(
            self, gguf_daemon: Daemon, case: str) -> None:
        model = f"bad{list(UNREADABLE).index(case)}:135m"
        outside = Outside(gguf_daemon.home)
        with Client(gguf_daemon.socket) as client:
            for op in ("show", "generate"):
                failure = refused(client, op, {"model": model, "prompt": "hi"})
                assert failure.code == "internal", op
                assert f"model {model} is damaged" in str(failure), op
                assert "not a readable GGUF file" in str(failure), op
            # A damaged model does not hide the others.
            names = [m["name"] for m in client.call("list")["models"]]
            assert "smollm2:135m" in names
        assert gguf_daemon.proc is not None and children(gguf_daemon.proc.pid) == set()
        outside.assert_untouched()
        assert_serving(gguf_daemon)

    @pytest.mark.parametrize("case", sorted(UNLOADABLE))
    def test_a_header_llama_cpp_refuses_costs_only_the_runner(self, gguf_daemon: Daemon,
                                                              case: str) -> None:
        model = f"bad{len(UNREADABLE) + list(UNLOADABLE).index(case)}:135m"
        _, message = UNLOADABLE[case]
        assert gguf_daemon.proc is not None
        outside = Outside(gguf_daemon.home)
        with Client(gguf_daemon.socket) as client:
            shown = client.call("show", {"model": model})
            assert shown["details"]["format"] == "gguf"  # the header itself reads fine
            failure = refused(client, "generate", {"model": model, "prompt": "hi",
                                                   "options": {"num_ctx": 256}})
            assert failure.code == "internal" and message in str(failure)
            assert children(gguf_daemon.proc.pid) == set()  # the failed runner is gone
            answer = client.call("generate", {"model": "smollm2:135m", "prompt": "Say hi.",
                                              "keep_alive": 0, "options": {
                                                  "num_predict": 4, "num_ctx": 256}})
            assert answer["done"]
        outside.assert_untouched()
        assert_store_intact(gguf_daemon.models)
        assert_serving(gguf_daemon)

    def test_create_from_a_hostile_gguf_writes_no_model(self, gguf_daemon: Daemon,
                                                        tmp_path: Path) -> None:
        bad = tmp_path / "bad.gguf"
        bad.write_bytes(UNREADABLE["kv count 2^60"](b""))
        before = set(tree(gguf_daemon.models / "manifests"))
        with Client(gguf_daemon.socket) as client:
            fd = os.open(bad, os.O_RDONLY)
            try:
                digest = client.call("blob", {}, files=[fd])["digest"]
            finally:
                os.close(fd)
            failure = refused(client, "create", {"model": "made", "files": {"m.gguf": digest}})
        assert failure.code == "bad_request"
        assert str(failure).startswith("supplied file is not a usable GGUF: ")
        assert set(tree(gguf_daemon.models / "manifests")) == before
        assert_serving(gguf_daemon)


# -- CVE-2024-39722 and CVE-2024-45436: paths and archives from clients -------------------------


def tar_of(entries: list[tarfile.TarInfo | tuple[str, bytes]], gzip: bool = False) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz" if gzip else "w") as tar:
        for entry in entries:
            if isinstance(entry, tarfile.TarInfo):
                tar.addfile(entry)
            else:
                name, data = entry
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _member(name: str, kind: bytes, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


def oci_layout(weights: bytes = b"weights") -> list[tarfile.TarInfo | tuple[str, bytes]]:
    """A valid OCI layout of a one-layer model named hostile:v1."""
    config = b'{"model_format":"gguf"}'
    blobs = {digest_of(weights): weights, digest_of(config): config}
    manifest = model_manifest(blobs, [(MODEL_MEDIA, digest_of(weights))], digest_of(config))
    index = archive.index_json(ModelName.parse("hostile:v1"), manifest,
                               "application/vnd.docker.distribution.manifest.v2+json")
    return [("oci-layout", archive.OCI_LAYOUT), ("index.json", index),
            (f"blobs/sha256/{Digest.of(manifest).hex}", manifest),
            (f"blobs/sha256/{Digest.of(config).hex}", config),
            (f"blobs/sha256/{Digest.of(weights).hex}", weights)]


def _hostile_archives(escape: Path) -> dict[str, tuple[bytes, str]]:
    """Archives that try to write ``escape`` (outside the store), with the refusal each gets."""
    good = oci_layout()
    weights = f"blobs/sha256/{Digest.of(b'weights').hex}"
    rel = os.path.relpath(escape, "/")
    return {
        "relative traversal": (tar_of([*good, ("../../../../../../" + rel, b"x")]),
                               "points outside the archive"),
        "absolute path": (tar_of([*good, (str(escape), b"x")]), "points outside the archive"),
        "traversal inside blobs": (tar_of([*good, (f"blobs/sha256/../../../../{rel}", b"x")]),
                                   "points outside the archive"),
        "symlink then write through it": (
            tar_of([_member("blobs", tarfile.SYMTYPE, str(escape.parent)), *good]), "is a link"),
        "symlink blob": (tar_of([*good[:4], _member(weights, tarfile.SYMTYPE, str(escape))]),
                         "is a link"),
        "hard link to a host file": (tar_of([*good[:4], _member(weights, tarfile.LNKTYPE,
                                                              "/etc/passwd")]), "is a link"),
        "device node": (tar_of([*good, _member("index.json", tarfile.CHRTYPE)]),
                        "not a regular file"),
        "repeated entry": (tar_of([*good, good[1]]), 'archive entry "index.json" appears twice'),
        "repeated blob": (tar_of([*good, good[4]]), "appears twice"),
        "oversized index.json": (tar_of([good[0], ("index.json", b" " * (2 * MB)), *good[2:]]),
                                 "index.json is too large"),
        "compressed": (tar_of(good, gzip=True), "not a readable tar archive"),
        "blob not its digest": (tar_of([*good[:4], (weights, b"WEIGHTS")]),
                                "in the archive has digest"),
    }


class TestClientPaths:
    """CVE-2024-39722 (and CVE-2024-39719): Ollama opened paths clients named, and its answers
    told which files exist. Here the daemon opens no client path at all: files cross the socket
    as descriptors the client opened. A path in a create request is a model name or an error,
    the same error whether the file exists or not, and a FIFO on such a path is never opened
    (opening it for reading would block until a writer came, so a daemon that tried would
    hang the request)."""

    @pytest.fixture
    def daemon(self, tmp_path: Path) -> Iterator[Daemon]:
        with running_daemon(tmp_path, SOCKET_ONLY) as running:
            yield running

    def test_create_requests_naming_paths_answer_the_same_for_any_file(
            self, daemon: Daemon, tmp_path: Path) -> None:
        existing = tmp_path / "secret.gguf"
        existing.write_bytes(b"GGUF" + bytes(100))
        fifo = tmp_path / "trap.gguf"
        os.mkfifo(fifo)
        outside = Outside(daemon.home)
        answers: dict[str, set[tuple[str, str]]] = {}
        with Client(daemon.socket) as client:
            for path in (existing, tmp_path / "missing.gguf", fifo, Path("/etc/shadow")):
                for template, args in (
                    ("modelfile FROM", {"modelfile": f"FROM {path}\n"}),
                    ("modelfile ADAPTER", {"modelfile": f"FROM base\nADAPTER {path}\n"}),
                    ("modelfile FROM relative", {"modelfile": f"FROM ../../..{path}\n"}),
                    ("from", {"from": str(path)}),
                    ("files", {"files": {"model.gguf": str(path)}}),
                    ("file name", {"files": {f"../..{path}": GOOD}}),
                    ("adapters", {"from": "base", "adapters": {"a.gguf": str(path)}}),
                    ("path (old API)", {"path": str(path)}),
                ):
                    failure = refused(client, "create", {"model": "made", **args})
                    # The answer may quote the request's own text, never a fact about the file.
                    message = str(failure).replace(str(path), "<path>")
                    answers.setdefault(template, set()).add((failure.code, message))
        for template, seen in answers.items():
            assert len(seen) == 1, (template, seen)  # no oracle: one answer for every file
            assert {code for code, _ in seen} <= {"bad_request", "not_found"}
        with pytest.raises(OSError) as nobody:  # nobody ever opened the FIFO for reading
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        assert nobody.value.errno == errno.ENXIO
        outside.assert_untouched()
        assert list((daemon.models / "manifests").iterdir()) == []
        assert_serving(daemon)

    def test_names_that_traverse_are_invalid_in_every_operation(self, daemon: Daemon) -> None:
        outside = Outside(daemon.home)
        with Client(daemon.socket) as client:
            for name in ("../../victim", "a/../../../victim", "/abs/path", "a/./b", "..",
                         "h/n/m/../../x", "x\0y", "%2e%2e/victim"):
                for op, args in (("push", {"model": name}), ("pull", {"model": name}),
                                 ("show", {"model": name}), ("delete", {"model": name}),
                                 ("create", {"model": name, "from": "base"}),
                                 ("copy", {"source": "base", "destination": name})):
                    failure = refused(client, op, args)
                    assert failure.code == "bad_request" and "invalid" in str(failure), (op, name)
        outside.assert_untouched()
        assert_serving(daemon)

    @pytest.mark.parametrize("case", sorted(_hostile_archives(Path("/x/y"))))
    def test_hostile_archives_are_refused_whole(self, daemon: Daemon, tmp_path: Path,
                                                case: str) -> None:
        """CVE-2024-45436: members that traverse, link or repeat. The archive arrives as the
        client's descriptor; nothing of it is visible in the store unless all of it passed."""
        escape = daemon.home / "escaped" / "victim"
        escape.parent.mkdir()
        data, message = _hostile_archives(escape)[case]
        path = tmp_path / "hostile.tar"
        path.write_bytes(data)
        outside = Outside(daemon.home)
        with Client(daemon.socket) as client:
            fd = os.open(path, os.O_RDONLY)
            try:
                failure = refused(client, "import", {}, [fd])
            finally:
                os.close(fd)
        assert failure.code == "bad_request" and message in str(failure)
        outside.assert_untouched()
        assert not escape.exists() and list(escape.parent.iterdir()) == []
        assert tree(daemon.models) == {"blobs": "dir", "manifests": "dir"}  # not even temps
        assert_serving(daemon)
        # The same store takes a good archive afterwards.
        path.write_bytes(tar_of(oci_layout()))
        fd = os.open(path, os.O_RDONLY)
        try:
            with Client(daemon.socket) as client:
                assert client.call("import", {}, files=[fd])["model"] == "hostile:v1"
        finally:
            os.close(fd)
        assert_store_intact(daemon.models, allow_partial=False)


# -- CVE-2024-28224: DNS rebinding against the HTTP bridge --------------------------------------


class TestHostHeaders:
    """CVE-2024-28224: a web page on a name that resolves to 127.0.0.1 drove Ollama's API from
    the browser. The bridge on loopback answers only requests whose Host is a local name (and
    tests/test_http.py checks the rule itself); here every request that would change the store,
    sent as a rebinding page or a cross-origin form would, is refused and changes nothing."""

    @pytest.fixture
    def bridge(self, tmp_path: Path) -> Iterator[tuple[Daemon, str]]:
        write_ollama_model(tmp_path / ".ollama" / "models",
                           write_tiny_gguf(tmp_path / "tiny.gguf"))
        (tmp_path / "tiny.gguf").unlink()
        with http_daemon(tmp_path) as running:
            yield running

    def test_store_changes_from_a_rebound_or_foreign_page_are_refused(
            self, bridge: tuple[Daemon, str]) -> None:
        daemon, url = bridge
        outside = Outside(daemon.home)
        before = tree(daemon.models)
        requests = [("DELETE", "/api/delete", {"model": "smollm2:135m"}),
                    ("POST", "/api/copy", {"source": "smollm2:135m", "destination": "stolen"}),
                    ("POST", "/api/create", {"model": "made", "from": "smollm2:135m"}),
                    # A closed port: were the guard to fail, these would fail fast, not reach out.
                    ("POST", "/api/pull", {"model": "127.0.0.1:1/library/m", "insecure": True}),
                    ("POST", "/api/push", {"model": "127.0.0.1:1/library/m", "insecure": True}),
                    ("POST", "/api/blobs/" + digest_of(b"x"), None),
                    ("POST", "/v1/chat/completions", {"model": "smollm2:135m", "messages": [
                        {"role": "user", "content": "hi"}]})]
        rebinding = [{"Host": "attacker.example.com"}, {"Host": "attacker.example.com:11434"},
                     {"Host": "127.0.0.1.nip.io"}, {"Host": "localhost.attacker.com"}]
        cross_origin = [{"Host": "localhost", "Origin": "https://attacker.example.com"},
                        {"Host": "127.0.0.1", "Origin": "null"}]
        with httpx.Client(base_url=url, timeout=30) as http:
            for headers in [*rebinding, *cross_origin]:
                for method, path, body in requests:
                    answer = http.request(method, path, headers={
                        **headers, "Content-Type": "text/plain"},
                        content=json.dumps(body).encode() if body is not None else b"x")
                    assert (answer.status_code, answer.content) == (403, b""), (headers, path)
            assert tree(daemon.models) == before
            # The same request with a local Host does change the store: the guard is the cause.
            allowed = http.request("DELETE", "/api/delete", json={"model": "smollm2:135m"},
                                   headers={"Host": "localhost"})
            assert allowed.status_code == 200
        outside.assert_untouched()
        assert_store_intact(daemon.models)
        assert_serving(daemon)


# -- size limits --------------------------------------------------------------------------------


def _send_fds(sock: socket.socket, data: bytes, fds: list[int]) -> None:
    socket.send_fds(sock, [data[:1]], fds)
    sock.sendall(data[1:])


def _frames_until_closed(sock: socket.socket) -> list[Any]:
    """Every frame the daemon sends until it closes the connection."""
    from ollamad.protocol import ClientConnection

    client, frames = ClientConnection("test"), []
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            frames.extend(client.receive_data(chunk))
    return frames


def request_frame(op: str, id_: int, args: dict[str, Any]) -> bytes:
    return msgpack.packb({"type": "request", "id": id_, "op": op, "args": args})


class TestSizeLimits:
    """Every limit a client, a registry or an archive can run into ends in a refusal of that one
    request or connection, with nothing held on to: no descriptor, no buffer, no temp file."""

    @pytest.fixture
    def bridge(self, tmp_path: Path) -> Iterator[tuple[Daemon, str]]:
        with http_daemon(tmp_path) as running:
            yield running

    @pytest.fixture
    def tiny_daemon(self, tmp_path: Path) -> Iterator[Daemon]:
        write_ollama_model(tmp_path / ".ollama" / "models",
                           write_tiny_gguf(tmp_path / "tiny.gguf"))
        with running_daemon(tmp_path, SOCKET_ONLY) as running:
            yield running

    def test_descriptors_beyond_the_limit_close_the_connection_and_leak_none(
            self, bridge: tuple[Daemon, str], tmp_path: Path) -> None:
        from ollamad.ipc import MAX_PENDING_FDS
        from ollamad.protocol import ClientConnection, Error

        daemon, _ = bridge
        assert daemon.proc is not None
        hello = ClientConnection("test").hello()
        with daemon.connect() as warm:  # the first connection allocates what every one reuses
            warm.sendall(hello + request_frame("version", 1, {}))
            warm.recv(65536)
        baseline = open_fds(daemon.proc.pid)
        target = tmp_path / "file"
        target.write_bytes(b"x")
        # (descriptors sent with the hello, then with the request): one receive takes at most
        # the limit (the kernel closes any more), so the excess has to come in a second message.
        half = MAX_PENDING_FDS // 2 + 1
        cases = [(half, half, request_frame("version", 1, {}),
                  f"more than {MAX_PENDING_FDS} unclaimed file descriptors"),
                 (0, 1, request_frame("blob", 1, {"fds": 2}),
                  "carries 2 file descriptors, 1 arrived"),
                 (0, 1, request_frame("blob", 1, {"fds": -1}), "'fds' must be a count")]
        for first, second, request, message in cases:
            fds = [os.open(target, os.O_RDONLY) for _ in range(first + second)]
            try:
                with daemon.connect() as sock:
                    if first:
                        _send_fds(sock, hello, fds[:first])
                    else:
                        sock.sendall(hello)
                    _send_fds(sock, request, fds[first:])
                    frames = _frames_until_closed(sock)
            finally:
                for fd in fds:
                    os.close(fd)
            errors = [f for f in frames if isinstance(f, Error) and f.id is None]
            assert errors and errors[0].code == "protocol_error"
            assert message in errors[0].message
        assert open_fds(daemon.proc.pid) <= baseline
        assert_serving(daemon)

    def test_an_http_body_over_the_limit_without_a_length_is_413(
            self, bridge: tuple[Daemon, str]) -> None:
        from ollamad.http.settings import MAX_JSON_BODY

        daemon, url = bridge
        host, port = url.removeprefix("http://").rsplit(":", 1)
        sent = [0]

        def send_chunks(sock: socket.socket) -> None:
            # Chunked: the limit must hold when no Content-Length announces the size.
            chunk = b"%x\r\n" % MB + b" " * MB + b"\r\n"
            with contextlib.suppress(OSError):
                sock.sendall(b"POST /api/chat HTTP/1.1\r\nHost: localhost\r\n"
                             b"Transfer-Encoding: chunked\r\n\r\n")
                while sent[0] <= MAX_JSON_BODY + 8 * MB:
                    sock.sendall(chunk)
                    sent[0] += MB

        with socket.create_connection((host, int(port)), timeout=60) as raw:
            sender, _ = run_in_thread(send_chunks, raw)
            received = b""
            with contextlib.suppress(ConnectionResetError):
                while chunk := raw.recv(65536):
                    received += chunk
                    if b"\r\n\r\n" in received:
                        break
            with contextlib.suppress(OSError):  # the bridge may have reset it already
                raw.shutdown(socket.SHUT_RDWR)  # stops the sender, whatever it is doing
            sender.join(60)
        assert received.startswith(b"HTTP/1.1 413"), received[:200]
        assert sent[0] <= MAX_JSON_BODY + 8 * MB
        assert_serving(daemon)

    def test_a_template_over_the_limit_is_a_bad_request(self, tiny_daemon: Daemon) -> None:
        from ollamad.prompt import Limits

        before = tree(tiny_daemon.models)
        with Client(tiny_daemon.socket) as client:
            failure = refused(client, "create", {"model": "made", "from": "smollm2:135m",
                                                 "template": "x" * (Limits().max_source + 1)})
        assert failure.code == "bad_request"
        assert str(failure) == f"template error: template is longer than {Limits().max_source}" \
            " characters"
        assert tree(tiny_daemon.models) == before
        assert_serving(tiny_daemon)

    async def test_a_manifest_over_the_limit_is_refused_unread(self, hostile: Hostile,
                                                               tmp_path: Path) -> None:
        from ollamad import identity
        from ollamad.registry import Registry, pull
        from ollamad.registry.errors import RegistryError
        from ollamad.registry.settings import TransferSettings
        from ollamad.store.manifests import MAX_MANIFEST_BYTES

        hostile.manifests["library/m:latest"] = b" " * (MAX_MANIFEST_BYTES + 1)
        store = ModelStore(tmp_path / "models")
        store.create_folders()
        registry = Registry(TransferSettings(), lambda: identity.load_or_create(tmp_path), [])
        with pytest.raises(RegistryError, match="registry sent more than 4194304 bytes"):
            async for _ in pull(store, registry, ModelName.parse(f"{hostile.host}/library/m"),
                                insecure=True):
                pass
        assert tree(store.root) == {"blobs": "dir", "manifests": "dir"}

    def test_an_answer_over_the_frame_limit_is_an_error_not_a_dead_connection(
            self, tiny_daemon: Daemon) -> None:
        """A system prompt of 12 MiB fits a request frame, but show's answer quotes it twice
        (system and Modelfile) and would not fit one: that request fails, the connection
        lives."""
        with Client(tiny_daemon.socket) as client:
            client.call("create", {"model": "big", "from": "smollm2:135m",
                                   "system": "x" * (12 * MB)})
            failure = refused(client, "show", {"model": "big"})
            assert failure.code == "internal" and "exceeds the limit" in str(failure)
            assert client.call("version")["version"]  # same connection, still open
        assert_store_intact(tiny_daemon.models)
        assert_serving(tiny_daemon)


# -- hostile registries: what tests/test_registry_hostile.py does not already cover --------------


class TestHostileRegistryURLs:
    """A registry's Location and WWW-Authenticate headers are URLs it chose; one that is not a
    URL at all (a bad port, a broken IPv6 literal) is a refusal, not an internal error."""

    @pytest.mark.parametrize(("setup", "message"), [
        ({"redirect": "http://["}, "registry redirected to a malformed URL"),
        ({"redirect": "http://127.0.0.1:99999"}, "registry redirected to a malformed URL"),
        ({"auth": "bearer", "realm": "http://[/token"}, "token realm"),
        ({"auth": "bearer", "realm": "http://127.0.0.1:abc/token"}, "token realm"),
    ])
    async def test_malformed_urls_from_a_registry_are_refused(
            self, hostile: Hostile, tmp_path: Path, setup: dict[str, str], message: str) -> None:
        from ollamad import identity
        from ollamad.registry import Registry, pull
        from ollamad.registry.errors import RegistryError
        from ollamad.registry.settings import TransferSettings

        data, config = os.urandom(3 * MB), b"{}"
        blobs = {digest_of(data): data, digest_of(config): config}
        hostile.blobs.update(blobs)
        hostile.manifests["library/m:latest"] = model_manifest(
            blobs, [(MODEL_MEDIA, digest_of(data))], digest_of(config))
        for key, value in setup.items():
            setattr(hostile, key, value)
        store = ModelStore(tmp_path / "models")
        store.create_folders()
        settings = TransferSettings(part_min=MB, stall=2, retries=1, backoff=0)
        registry = Registry(settings, lambda: identity.load_or_create(tmp_path), [])
        with pytest.raises(RegistryError, match=message):
            async for _ in pull(store, registry, ModelName.parse(f"{hostile.host}/library/m"),
                                insecure=True):
                pass
        assert list((store.root / "manifests").iterdir()) == []
        assert_store_intact(store.root)

    def test_a_name_whose_host_is_not_a_url_is_a_bad_request(self, tmp_path: Path) -> None:
        with running_daemon(tmp_path, SOCKET_ONLY) as daemon, Client(daemon.socket) as client:
            for name in ("127.0.0.1:abc/library/m", "a:b:c/ns/m", "h:99999/ns/m"):
                failure = refused(client, "pull", {"model": name, "insecure": True})
                assert (failure.code, str(failure)) == (
                    "bad_request", f'invalid registry host "{name.split("/")[0]}"')
            assert_serving(daemon)
