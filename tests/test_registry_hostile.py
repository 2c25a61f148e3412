"""Pull and push in-process against a small registry that misbehaves on demand (trio tests).

Every hostile case ends in a clear error with no manifest written, nothing outside the store,
and a blob that failed its digest deleted.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ollamad import identity
from ollamad.errors import NoSpace, OllamadError
from ollamad.registry import Registry, download, pull, push
from ollamad.registry.errors import (
    CorruptBlob,
    InsecureProtocol,
    ManifestNotFound,
    RegistryError,
    RegistryRefused,
    TransferFailed,
    Unauthorized,
)
from ollamad.registry.parts import Part
from ollamad.registry.settings import TransferSettings
from ollamad.store import Digest, ModelName, ModelStore
from tests.registry_fixtures import Hostile, digest_of, model_manifest, serving

KB = 1024
BIG = 3 * 1024 * KB
SETTINGS = TransferSettings(part_min=256 * KB, stall=0.5, retries=2, backoff=0.01)
MODEL = "application/vnd.ollama.image.model"


@pytest.fixture
def hostile() -> Iterator[Hostile]:
    registry = Hostile()
    with serving(registry.handle) as host:
        registry.host = host
        yield registry
        registry.release.set()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    (tmp_path / ".ollama" / "models").mkdir(parents=True)
    return tmp_path


def store_of(home: Path) -> ModelStore:
    store = ModelStore(home / ".ollama" / "models")
    store.create_folders()
    return store


def registry_for(home: Path, settings: TransferSettings = SETTINGS) -> Registry:
    folder = home / ".ollama"
    return Registry(settings, lambda: identity.load_or_create(folder),
                    [folder / "credentials.json", home / ".docker" / "config.json"])


def add_model(registry: Hostile, repo: str = "library/m", tag: str = "latest",
              big: bytes | None = None) -> dict[str, bytes]:
    """A model of one big layer (several parts) and a small config; returns blobs by digest."""
    data = big if big is not None else os.urandom(BIG)
    config = b'{"model_format":"gguf"}'
    blobs = {digest_of(data): data, digest_of(config): config}
    registry.blobs.update(blobs)
    registry.manifests[f"{repo}:{tag}"] = model_manifest(blobs, [(MODEL, digest_of(data))],
                                                         digest_of(config))
    return blobs


async def pull_events(home: Path, name: str, settings: TransferSettings = SETTINGS,
                      registry: Registry | None = None) -> list[dict[str, Any]]:
    events = []
    async for event in pull(store_of(home), registry or registry_for(home, settings),
                            ModelName.parse(name), insecure=True):
        events.append(event)
    return events


def files_under(folder: Path) -> set[str]:
    return {str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file()}


def assert_nothing_kept(home: Path, keep_partial: bool = False) -> None:
    """No manifest, no blob (partial downloads only if allowed), nothing outside the store."""
    store = home / ".ollama" / "models"
    assert files_under(store / "manifests") == set()
    blobs = files_under(store / "blobs")
    assert not [name for name in blobs if "-partial" not in name], blobs
    if not keep_partial:
        assert blobs == set()
    outside = {name for name in files_under(home) if not name.startswith(
        (".ollama/models/", ".docker/"))}
    assert outside <= {".ollama/id_ed25519", ".ollama/id_ed25519.pub",
                       ".ollama/credentials.json"}, outside


# -- the ordinary case ----------------------------------------------------------------------------


async def test_pull_fetches_parts_once_and_writes_the_manifest_last(hostile: Hostile,
                                                                    home: Path) -> None:
    blobs = add_model(hostile)
    events = await pull_events(home, f"{hostile.host}/library/m")
    store = store_of(home)
    stored = store.get(ModelName.parse(f"{hostile.host}/library/m"))
    assert stored.raw == hostile.manifests["library/m:latest"]
    for digest, data in blobs.items():
        assert store.blobs.path(Digest.parse(digest)).read_bytes() == data
        # Every byte once, plus (for a blob in parts) the probe that finds where they go.
        assert hostile.served[digest] == len(data) + (len(data) == BIG)
    assert files_under(store.blobs.folder) == {Digest.parse(d).filename for d in blobs}
    statuses = [event["status"] for event in events]
    assert statuses[0] == "pulling manifest"
    assert statuses[-3:] == ["verifying sha256 digest", "writing manifest", "success"]
    big = next(d for d, data in blobs.items() if len(data) == BIG)
    progress = [e for e in events if e.get("digest") == big]
    assert progress[0]["status"] == f"pulling {big[7:19]}"
    assert {e["total"] for e in progress} == {BIG} and progress[-1]["completed"] == BIG
    # Pulling again is all cache hits: one event per blob, complete.
    again = await pull_events(home, f"{hostile.host}/library/m")
    assert [e["completed"] for e in again if "digest" in e] == [BIG, len(blobs[digest_of(
        b'{"model_format":"gguf"}')])]


async def test_unknown_model_and_insecure_names(hostile: Hostile, home: Path) -> None:
    with pytest.raises(ManifestNotFound) as failure:
        await pull_events(home, f"{hostile.host}/library/nothing")
    assert failure.value.message == "pull model manifest: file does not exist"
    assert failure.value.code == "not_found"
    with pytest.raises(InsecureProtocol, match=r"^insecure protocol http$"):
        async for _ in pull(store_of(home), registry_for(home),
                            ModelName.parse(f"http://{hostile.host}/library/m"), insecure=False):
            pass
    assert_nothing_kept(home)


async def test_two_pulls_of_one_blob_share_the_download(hostile: Hostile, home: Path) -> None:
    blobs = add_model(hostile, tag="a")
    hostile.manifests["library/m:b"] = hostile.manifests["library/m:a"]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pull_events, home, f"{hostile.host}/library/m:a")
        nursery.start_soon(pull_events, home, f"{hostile.host}/library/m:b")
    big = next(d for d, data in blobs.items() if len(data) == BIG)
    assert hostile.served[big] in (BIG, BIG + 1)


# -- hostile manifests ----------------------------------------------------------------------------


def _layer(digest: str, size: int) -> dict[str, Any]:
    return {"mediaType": MODEL, "digest": digest, "size": size}


GOOD = "sha256:" + "ab" * 32
HOSTILE_MANIFESTS = {
    "malformed digest": ([_layer("sha256:1234", 4)], RegistryRefused, "is malformed"),
    "traversing digest": ([_layer("sha256:../../../../tmp/evil", 4)], RegistryRefused,
                          "is malformed"),
    "traversing digest 2": ([_layer("../" * 8 + "etc/passwd", 4)], RegistryRefused,
                            "is malformed"),
    "repeated digest": ([_layer(GOOD, 4), _layer(GOOD, 5)], RegistryRefused, "listed twice"),
    "absurd size": ([_layer(GOOD, 2**60)], RegistryRefused, "not a plausible byte count"),
    "negative size": ([_layer(GOOD, -1)], RegistryRefused, "not a plausible byte count"),
    "larger than the disk": ([_layer(GOOD, 2**49)], NoSpace, "not enough space"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_MANIFESTS))
async def test_hostile_manifests_are_refused(hostile: Hostile, home: Path, case: str) -> None:
    layers, error, message = HOSTILE_MANIFESTS[case]
    config = b"{}"
    hostile.blobs[digest_of(config)] = config
    hostile.manifests["library/m:latest"] = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                   "digest": digest_of(config), "size": 2},
        "layers": layers}).encode()
    with pytest.raises(error) as failure:
        await pull_events(home, f"{hostile.host}/library/m")
    assert message in failure.value.message
    assert hostile.served == {}
    assert_nothing_kept(home)
    assert not (home.parent / "tmp" / "evil").exists() and not Path("/tmp/evil").exists()


async def test_a_manifest_that_is_not_json_is_refused(hostile: Hostile, home: Path) -> None:
    hostile.manifests["library/m:latest"] = b"<html>not a manifest</html>"
    with pytest.raises(RegistryRefused, match=r"^pull model manifest: manifest is not JSON"):
        await pull_events(home, f"{hostile.host}/library/m")
    assert_nothing_kept(home)


# -- hostile blobs --------------------------------------------------------------------------------


async def test_a_blob_that_is_not_its_digest_is_deleted(hostile: Hostile, home: Path) -> None:
    blobs = add_model(hostile)
    big = next(d for d, data in blobs.items() if len(data) == BIG)
    hostile.blobs[big] = os.urandom(BIG)
    with pytest.raises(CorruptBlob) as failure:
        await pull_events(home, f"{hostile.host}/library/m")
    assert failure.value.message == (
        f"digest mismatch, file must be downloaded again: want {big}, got "
        f"{digest_of(hostile.blobs[big])}")
    assert_nothing_kept(home)


async def test_a_truncated_body_fails_then_resumes(hostile: Hostile, home: Path) -> None:
    blobs = add_model(hostile)
    big = next(d for d, data in blobs.items() if len(data) == BIG)
    hostile.truncate_at = 1000 * KB
    with pytest.raises(TransferFailed, match=r"^max retries exceeded: "):
        await pull_events(home, f"{hostile.host}/library/m")
    assert_nothing_kept(home, keep_partial=True)
    folder = home / ".ollama" / "models" / "blobs"
    states = [Part.from_json(path.read_bytes()) for path in folder.glob("*-partial-*")]
    data = (folder / f"{Digest.parse(big).filename}-partial").read_bytes()
    for part in states:
        assert part is not None
        # What a state counts is on disk, and right.
        assert data[part.offset:part.start] == blobs[big][part.offset:part.start]
    on_disk = sum(part.completed for part in states if part is not None)
    assert 0 < on_disk <= 1000 * KB
    # The registry heals: the pull resumes and asks only for what is missing.
    hostile.truncate_at = None
    hostile.served.clear()
    await pull_events(home, f"{hostile.host}/library/m")
    assert hostile.served[big] <= BIG - on_disk + 1
    assert store_of(home).blobs.verify(Digest.parse(big))
    assert not list(folder.glob("*-partial*"))


async def test_a_cancelled_pull_keeps_its_progress_for_the_next(hostile: Hostile,
                                                                 home: Path) -> None:
    blobs = add_model(hostile)
    big = next(d for d, data in blobs.items() if len(data) == BIG)
    hostile.stall_at = 1000 * KB
    patient = TransferSettings(part_min=256 * KB, stall=30, retries=2, backoff=0.01)
    with trio.move_on_after(1):  # as a client's Ctrl-C does to its request
        await pull_events(home, f"{hostile.host}/library/m", patient)
    # The download stops once its last waiter has gone, and records what it has.
    with trio.fail_after(10):
        while download._ACTIVE:
            await trio.sleep(0.01)
    folder = home / ".ollama" / "models" / "blobs"
    states = [Part.from_json(path.read_bytes()) for path in folder.glob("*-partial-*")]
    on_disk = sum(part.completed for part in states if part is not None)
    assert 0 < on_disk <= 1000 * KB
    hostile.release.set()
    hostile.stall_at = None
    hostile.served.clear()
    await pull_events(home, f"{hostile.host}/library/m", patient)
    assert hostile.served[big] <= BIG - on_disk + 1
    assert store_of(home).blobs.verify(Digest.parse(big))


async def test_a_stalled_registry_is_given_up_on(hostile: Hostile, home: Path) -> None:
    add_model(hostile)
    hostile.stall_at = 100 * KB
    with trio.fail_after(10), pytest.raises(TransferFailed) as failure:
        await pull_events(home, f"{hostile.host}/library/m")
    assert failure.value.message == "max retries exceeded: part stalled"
    assert_nothing_kept(home, keep_partial=True)


@pytest.mark.parametrize(("size", "extra", "message"), [
    (BIG, b"", "ignored the Range header"),  # several parts, each answered with the whole blob
    (100 * KB, b"and some more", "more bytes than the range asked for"),
])
async def test_a_registry_ignoring_ranges_is_refused(hostile: Hostile, home: Path, size: int,
                                                     extra: bytes, message: str) -> None:
    blobs = add_model(hostile, big=os.urandom(size))
    hostile.blobs[next(d for d, data in blobs.items() if len(data) == size)] += extra
    hostile.ignore_range = True
    with pytest.raises(RegistryRefused, match=message):
        await pull_events(home, f"{hostile.host}/library/m")
    assert_nothing_kept(home, keep_partial=True)


async def test_a_small_blob_without_ranges_is_fine(hostile: Hostile, home: Path) -> None:
    add_model(hostile, big=os.urandom(100 * KB))
    hostile.ignore_range = True
    await pull_events(home, f"{hostile.host}/library/m")


async def test_a_redirect_loop_ends(hostile: Hostile, home: Path) -> None:
    add_model(hostile)
    hostile.redirect_loop = True
    with pytest.raises(RegistryError, match=r"maximum redirects exceeded \(10\)"):
        await pull_events(home, f"{hostile.host}/library/m")
    assert_nothing_kept(home, keep_partial=True)


# -- redirects and auth ---------------------------------------------------------------------------


async def test_parts_go_to_the_cdn_without_credentials(hostile: Hostile, home: Path) -> None:
    cdn = Hostile()
    with serving(cdn.handle) as cdn_host:
        blobs = add_model(hostile)
        cdn.blobs.update(blobs)
        hostile.auth, hostile.redirect = "bearer", f"http://{cdn_host}"
        await pull_events(home, f"{hostile.host}/library/m")
    big = next(d for d, data in blobs.items() if len(data) == BIG)
    assert cdn.served[big] == BIG
    assert set(cdn.blob_auth) == {""}
    assert "Bearer good-token" in hostile.blob_auth


async def test_bearer_token_by_ed25519_signature(hostile: Hostile, home: Path) -> None:
    add_model(hostile)
    hostile.auth = "bearer"
    await pull_events(home, f"{hostile.host}/library/m")
    # One token for the whole pull; the test server verified the signature over the exact URL.
    assert len(hostile.token_auth) == 1
    public = (home / ".ollama" / "id_ed25519.pub").read_text().split()[1]
    assert hostile.token_auth[0].startswith(public + ":")
    query = hostile.token_urls[0].split("?", 1)[1]
    keys = [pair.split("=")[0] for pair in query.split("&")]
    assert keys == ["nonce", "scope", "service", "ts"]
    assert "scope=repository%3Alibrary%2Fm%3Apull" in query
    assert "service=test-registry" in query


async def test_a_token_realm_on_another_host_is_refused(hostile: Hostile, home: Path) -> None:
    add_model(hostile)
    port = hostile.host.split(":")[1]
    hostile.auth, hostile.realm = "bearer", f"http://localhost:{port}/token"
    with pytest.raises(Unauthorized) as failure:
        await pull_events(home, f"{hostile.host}/library/m")
    assert failure.value.message == (f'pull model manifest: realm host "localhost:{port}" does '
                                     f'not match original host "{hostile.host}"')
    assert hostile.token_auth == []
    assert_nothing_kept(home)


async def test_a_rejected_signature_is_an_error(hostile: Hostile, home: Path) -> None:
    add_model(hostile)
    hostile.auth = "bearer"
    real = identity.load_or_create(home / ".ollama")
    stranger = Ed25519PrivateKey.generate()

    class Impostor(identity.Identity):
        """Claims the real public key, signs with another."""

        def sign(self, data: bytes) -> str:
            return f"{real.public_key.split()[1]}:{base64.b64encode(stranger.sign(data)).decode()}"

    registry = Registry(SETTINGS, lambda: Impostor(real.private_key), [])
    with pytest.raises(Unauthorized, match=r"^pull model manifest: 403: bad signature$"):
        await pull_events(home, f"{hostile.host}/library/m", registry=registry)
    assert_nothing_kept(home)


@pytest.mark.parametrize("where", ["credentials.json", "docker config.json"])
async def test_basic_credentials_from_files(hostile: Hostile, home: Path, where: str) -> None:
    add_model(hostile)
    hostile.auth, hostile.users = "basic", {"alice": "s3cret"}
    with pytest.raises(Unauthorized, match=r"^pull model manifest: unauthorized: access denied$"):
        await pull_events(home, f"{hostile.host}/library/m")
    entry = {"auth": "YWxpY2U6czNjcmV0"} if where == "credentials.json" else \
        {"username": "alice", "password": "s3cret"}
    path = home / ".ollama" / "credentials.json" if where == "credentials.json" else \
        home / ".docker" / "config.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps({"auths": {f"http://{hostile.host}": entry}}))
    await pull_events(home, f"{hostile.host}/library/m")


async def test_credentials_fetch_a_bearer_token(hostile: Hostile, home: Path) -> None:
    add_model(hostile)
    hostile.auth, hostile.users = "bearer", {"bob": "pw"}
    (home / ".ollama" / "credentials.json").write_text(json.dumps(
        {"auths": {hostile.host: {"username": "bob", "password": "pw"}}}))
    await pull_events(home, f"{hostile.host}/library/m")
    assert hostile.token_auth == ["Basic Ym9iOnB3"]


# -- push -----------------------------------------------------------------------------------------


async def test_push_uploads_what_is_missing_then_the_manifest(hostile: Hostile,
                                                              home: Path) -> None:
    source = Hostile()
    with serving(source.handle) as source_host:
        source.host = source_host
        blobs = add_model(source)
        await pull_events(home, f"{source_host}/library/m")
    store = store_of(home)
    store.copy(ModelName.parse(f"{source_host}/library/m"),
               ModelName.parse(f"{hostile.host}/team/m:v1"))
    settings = TransferSettings(part_min=1024 * KB, part_max=1024 * KB)
    events = [event async for event in push(store, registry_for(home, settings),
                                            ModelName.parse(f"{hostile.host}/team/m:v1"),
                                            insecure=True)]
    assert hostile.blobs == blobs
    assert hostile.manifests["team/m:v1"] == source.manifests["library/m:latest"]
    statuses = [event["status"] for event in events]
    assert statuses[0] == "retrieving manifest"
    assert statuses[-2:] == ["pushing manifest", "success"]
    big = next(d for d, data in blobs.items() if len(data) == BIG)
    assert [e for e in events if e.get("digest") == big][-1]["completed"] == BIG
    # Again: every blob is there already (HEAD), so nothing is uploaded.
    hostile.uploads.clear()
    again = [event async for event in push(store, registry_for(home),
                                           ModelName.parse(f"{hostile.host}/team/m:v1"),
                                           insecure=True)]
    assert hostile.uploads == {}
    assert [e["completed"] for e in again if "digest" in e] == [BIG, len(blobs[
        digest_of(b'{"model_format":"gguf"}')])]


async def test_push_mounts_a_layer_from_the_model_it_came_from(hostile: Hostile,
                                                                home: Path) -> None:
    blobs = add_model(hostile)
    await pull_events(home, f"{hostile.host}/library/m")
    store = store_of(home)
    manifest = json.loads(hostile.manifests["library/m:latest"])
    for layer in manifest["layers"]:
        layer["from"] = f"{hostile.host}/library/m:latest"
    derived = ModelName.parse(f"{hostile.host}/team/derived:v1")
    store.write_manifest(derived, json.dumps(manifest).encode())
    hostile.head_missing = True
    async for _ in push(store, registry_for(home), derived, insecure=True):
        pass
    big = next(d for d, data in blobs.items() if len(data) == BIG)
    assert hostile.mounted == [("library/m", big)]
    assert len(hostile.uploads) == 0 and hostile.manifests["team/derived:v1"] == \
        json.dumps(manifest).encode()


async def test_push_of_a_missing_model(hostile: Hostile, home: Path) -> None:
    events: list[dict[str, Any]] = []
    with pytest.raises(OllamadError) as failure:
        async for event in push(store_of(home), registry_for(home),
                                ModelName.parse(f"{hostile.host}/team/none"), insecure=True):
            events.append(event)
    assert failure.value.code == "not_found"
    assert events == [{"status": "retrieving manifest"}, {"status": "couldn't retrieve manifest"}]
