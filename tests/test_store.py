"""The store: digest grammar, verified atomic blob writes, manifests, pruning, crash safety."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ollamad.errors import CorruptStore, DigestMismatch, InvalidDigest, NotFound
from ollamad.store import Digest, InvalidManifest, Layer, Manifest, MediaType, ModelName, ModelStore

HEX = "a" * 64


@pytest.mark.parametrize("text", [f"sha256:{HEX}", f"sha256-{HEX}", f"sha256:{HEX.upper()}"])
def test_digest_accepts_both_separators(text: str) -> None:
    digest = Digest.parse(text)
    assert digest.filename == f"sha256-{HEX}" and str(digest) == f"sha256:{HEX}"


@pytest.mark.parametrize("text", [
    "", "sha256", f"sha256_{HEX}", f"sha512:{HEX}", f"sha256:{HEX[:-1]}", f"sha256:{HEX}0",
    f"sha256:{HEX[:-1]}g", "sha256-../../x", f"sha256-{HEX[:60]}/../", f" sha256:{HEX}",
    f"sha256:{HEX}\n", f"sha256:{HEX}\x00", None, 5,
])
def test_digest_grammar_is_strict(text: object) -> None:
    with pytest.raises(InvalidDigest, match="invalid digest format"):
        Digest.parse(text)


def _store(tmp_path: Path) -> ModelStore:
    store = ModelStore(tmp_path / "models")
    store.create_folders()
    return store


def _files(store: ModelStore) -> list[str]:
    return sorted(p.name for p in store.blobs.folder.iterdir())


def test_blob_write_is_verified_and_leaves_nothing_on_mismatch(tmp_path: Path) -> None:
    store = _store(tmp_path)
    data = b"hello world"
    digest = store.blobs.write_bytes(data, Digest.of(data))
    path = store.blobs.path(digest)
    assert path.read_bytes() == data and path.stat().st_mode & 0o777 == 0o644
    with pytest.raises(DigestMismatch, match='digest mismatch, expected "sha256:'):
        store.blobs.write([b"other ", b"bytes"], Digest(HEX))
    assert _files(store) == [digest.filename]
    assert store.blobs.write([b"hello", b" ", b"world"]) == (digest, len(data))


def _model(store: ModelStore, name: str, *contents: bytes) -> tuple[ModelName, Manifest]:
    layers = tuple(Layer(MediaType.LICENSE, store.blobs.write_bytes(c), len(c)) for c in contents)
    config = b'{"model_format":"gguf"}'
    manifest = Manifest(Layer(MediaType.CONFIG, store.blobs.write_bytes(config), len(config)),
                        layers)
    parsed = ModelName.parse(name)
    store.write_manifest(parsed, manifest.to_json())
    return parsed, manifest


def test_manifest_json_is_what_go_writes(tmp_path: Path) -> None:
    store = _store(tmp_path)
    name, manifest = _model(store, "ns/m:t", b"<b>&")
    raw = store.manifests.path(name).read_bytes()
    assert raw.endswith(b"}\n") and b" " not in raw
    assert list(json.loads(raw)) == ["schemaVersion", "mediaType", "config", "layers"]
    assert list(json.loads(raw)["layers"][0]) == ["mediaType", "digest", "size"]
    assert Manifest.parse(raw) == manifest
    assert store.get(ModelName.parse("NS/M:T")).name == name


def test_copy_is_byte_for_byte_and_delete_prunes_only_unshared_blobs(tmp_path: Path) -> None:
    store = _store(tmp_path)
    a, _ = _model(store, "a", b"shared", b"only-a")
    b = store.copy(a, ModelName.parse("Copy/B:x"))
    assert store.manifests.path(b).read_bytes() == store.manifests.path(a).read_bytes()
    assert store.manifests.path(b) == store.manifests.folder / "registry.ollama.ai/Copy/B/x"
    _model(store, "c", b"shared")
    store.delete(ModelName.parse("a"))
    assert len(_files(store)) == 3  # shared, only-a (still in the copy), config
    store.delete(ModelName.parse("copy/b:X"))
    assert sorted(store.blobs.path(d).read_bytes() for d in store.blobs.digests()) == \
        [b"shared", b'{"model_format":"gguf"}']
    assert not (store.manifests.folder / "registry.ollama.ai" / "Copy").exists()
    with pytest.raises(NotFound, match="model 'a' not found"):
        store.delete(ModelName.parse("a"))


def test_overwriting_a_tag_prunes_what_only_the_old_manifest_held(tmp_path: Path) -> None:
    store = _store(tmp_path)
    _model(store, "m", b"old")
    _model(store, "M", b"new")  # same model, other spelling: the stored spelling wins
    assert [n.model for n in store.manifests.names()] == ["m"]
    assert b"old" not in [store.blobs.path(d).read_bytes() for d in store.blobs.digests()]


def test_prune_respects_grace_pins_partials_and_broken_manifests(tmp_path: Path) -> None:
    store = _store(tmp_path)
    _model(store, "kept", b"referenced")
    orphan = store.blobs.write_bytes(b"orphan")
    pinned = store.blobs.write_bytes(b"pinned")
    partial = store.blobs.folder / f"sha256-{HEX}-partial"
    partial.write_bytes(b"half a download")
    temp = store.blobs.folder / ".tmp-0123456789abcdef"
    temp.write_bytes(b"crashed write")
    manifest_temp = store.manifests.folder / "registry.ollama.ai/library/kept/.tmp-0123456789abcdef"
    manifest_temp.write_bytes(b"crashed manifest write")
    old = time.time() - 7200
    for path in [*store.blobs.folder.iterdir(), manifest_temp]:
        os.utime(path, (old, old))
    assert store.prune(grace_seconds=3600 * 10) == 0  # everything is younger than the grace
    broken = store.manifests.folder / "registry.ollama.ai/library/broken/latest"
    broken.parent.mkdir(parents=True)
    broken.write_text("{not json")
    assert store.prune(grace_seconds=3600) == 0  # cannot tell garbage from the broken model's
    broken.unlink()
    with store.pinned([pinned]):
        assert store.prune(grace_seconds=3600) == 1
    assert not store.blobs.has(orphan) and store.blobs.has(pinned)
    assert partial.exists() and not temp.exists() and not manifest_temp.exists()
    assert store.models()[0].name.model == "kept"


def test_legacy_colon_blob_names_are_renamed(tmp_path: Path) -> None:
    store = _store(tmp_path)
    data = b"legacy"
    digest = Digest.of(data)
    (store.blobs.folder / f"sha256:{digest.hex}").write_bytes(data)
    store.fix_legacy_blob_names()
    assert list(store.blobs.digests()) == [digest] and store.blobs.verify(digest)


@pytest.mark.parametrize("raw", [
    b"", b"[]", b'{"schemaVersion":1}', b"{" * 100000,
    json.dumps({"schemaVersion": 2, "config": {}, "layers": []}).encode(),
    json.dumps({"schemaVersion": 2, "layers": [],
                "config": {"mediaType": "x", "digest": "sha256-../../etc", "size": 1}}).encode(),
    json.dumps({"schemaVersion": 2, "layers": [],
                "config": {"mediaType": "x", "digest": f"sha256:{HEX}", "size": -1}}).encode(),
    json.dumps({"schemaVersion": 2, "layers": [],
                "config": {"mediaType": "x", "digest": f"sha256:{HEX}", "size": 2**60}}).encode(),
    json.dumps({"schemaVersion": 2, "mediaType": "text/html", "layers": [],
                "config": {"mediaType": "x", "digest": f"sha256:{HEX}", "size": 1}}).encode(),
])
def test_malformed_manifests_are_refused(raw: bytes) -> None:
    with pytest.raises(InvalidManifest):
        Manifest.parse(raw)


def test_unreadable_manifest_is_skipped_in_lists_and_reported_on_read(tmp_path: Path) -> None:
    store = _store(tmp_path)
    _model(store, "good", b"x")
    bad = store.manifests.folder / "registry.ollama.ai/library/bad/latest"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"\x00garbage")
    (store.manifests.folder / "registry.ollama.ai/library/bad/..hidden").write_text("x")
    assert [m.name.model for m in store.models()] == ["good"]
    with pytest.raises(CorruptStore):
        store.get(ModelName.parse("bad"))


WRITER = """
import sys, os
from pathlib import Path
from ollamad.store import BlobStore
def chunks():
    yield b"x" * (1 << 20)
    os.write(1, b"writing\\n")
    sys.stdin.read()          # block here until killed
    yield b"never"
BlobStore(Path(sys.argv[1])).write(chunks())
"""


def test_kill_during_a_blob_write_leaves_no_visible_blob(tmp_path: Path) -> None:
    store = _store(tmp_path)
    child = subprocess.Popen([sys.executable, "-c", WRITER, str(store.blobs.folder)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert child.stdout is not None and child.stdout.readline() == b"writing\n"
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert list(store.blobs.digests()) == []
    leftovers = list(store.blobs.folder.iterdir())
    assert [p.name[:5] for p in leftovers] == [".tmp-"]
    old = time.time() - 7200
    os.utime(leftovers[0], (old, old))
    store.prune()
    assert list(store.blobs.folder.iterdir()) == []


def test_blob_digest_matches_sha256_of_content(tmp_path: Path) -> None:
    store = _store(tmp_path)
    data = os.urandom(3 << 20)
    digest, size = store.blobs.write(data[i:i + 65536] for i in range(0, len(data), 65536))
    assert digest.hex == hashlib.sha256(data).hexdigest() and size == len(data)
    assert store.blobs.verify(digest)
    store.blobs.path(digest).write_bytes(b"tampered")
    assert not store.blobs.verify(digest)
