"""The registry client's pure parts: part plans and resume state, challenges and token URLs,
ranges, credentials, settings, archive checks, and the transfer progress bar."""

from __future__ import annotations

import base64
import io
import itertools
import json
import os
import tarfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from ollamactl.transfer import RateBar, _time_left
from ollamad import identity
from ollamad.registry import archive, auth, parts, protocol
from ollamad.registry.errors import ArchiveRefused, RegistryRefused, Unauthorized
from ollamad.registry.settings import MB, TransferSettings, parse_size
from ollamad.store import Digest, ModelName, ModelStore
from tests.registry_fixtures import verify_ollama_signature

# -- parts --------------------------------------------------------------------------------------


def test_part_plan_follows_ollama() -> None:
    settings = TransferSettings()
    assert parts.plan(0, settings) == []
    assert [(p.offset, p.size) for p in parts.plan(50 * MB, settings)] == [(0, 50 * MB)]
    big = parts.plan(4_000 * MB, settings)
    assert len(big) == 16 and {p.size for p in big} == {250 * MB}
    huge = parts.plan(40_000 * MB, settings)
    assert len(huge) == 40 and huge[-1].end == 40_000 * MB
    small = parts.plan(98362432, TransferSettings(part_min=4 * MB))
    assert len(small) == 16 and small[-1].end == 98362432


@given(st.integers(0, 10**12), st.integers(1, 64), st.integers(1, 10**9))
def test_parts_tile_the_blob(total: int, count: int, minimum: int) -> None:
    settings = TransferSettings(parts=count, part_min=minimum, part_max=max(minimum, 10**10))
    planned = parts.plan(total, settings)
    assert sum(p.size for p in planned) == total
    assert all(a.end == b.offset for a, b in itertools.pairwise(planned))
    if planned:
        assert parts.restore(reversed(planned), total) == planned


def test_state_files_are_ollamas_format() -> None:
    part = parts.Part(3, 300, 100, 42)
    assert part.to_json() == b'{"N":3,"Offset":300,"Size":100,"Completed":42}\n'
    assert parts.Part.from_json(part.to_json()) == part
    # Completed beyond the size is clamped; garbage is no part.
    assert parts.Part.from_json(b'{"N":0,"Offset":0,"Size":10,"Completed":99}').completed == 10
    for bad in (b"", b"[]", b'{"N":-1,"Offset":0,"Size":1,"Completed":0}', b"{" * 5000,
                b'{"N":true,"Offset":0,"Size":1,"Completed":0}'):
        assert parts.Part.from_json(bad) is None


def test_restore_refuses_what_does_not_tile() -> None:
    good = [parts.Part(0, 0, 10, 3), parts.Part(1, 10, 5, 5)]
    assert parts.restore(good, 15) == good
    assert parts.restore(good, 16) is None
    assert parts.restore(good[1:], 15) is None
    assert parts.restore([good[0], parts.Part(1, 11, 4)], 15) is None
    assert parts.restore([], 0) is None
    assert parts.contiguous(good) == 3
    assert parts.contiguous([parts.Part(0, 0, 10, 10), parts.Part(1, 10, 5, 2)]) == 12



def test_ranges_come_in_blob_order_and_stop_at_part_ends() -> None:
    plan = [parts.Part(0, 0, 10, 3), parts.Part(1, 10, 5), parts.Part(2, 15, 4, 4)]
    assert [(p.n, start, end) for p, start, end in parts.ranges(plan, 4)] == [
        (0, 3, 7), (0, 7, 10), (1, 10, 14), (1, 14, 15)]


def test_completed_counts_only_the_unbroken_prefix() -> None:
    part = parts.Part(1, 100, 50, 10)
    part.record(130, 10)  # a later request landed first
    part.record(120, 10)
    assert (part.completed, part.arrived) == (10, 30)
    part.record(110, 10)  # the gap closes: everything up to 140 is in
    assert (part.completed, part.arrived, part.landed) == (40, 40, [])
    part.record(135, 5)  # a retry writing again what is there counts once
    part.record(140, 10)
    assert (part.completed, part.remaining) == (50, 0)
    assert part.to_json() == b'{"N":1,"Offset":100,"Size":50,"Completed":50}\n'


@given(st.permutations(range(8)))
def test_any_arrival_order_completes_the_part(order: list[int]) -> None:
    part = parts.Part(0, 64, 80)
    for index in order:
        part.record(64 + index * 10, 10)
        assert part.arrived == 10 * (order.index(index) + 1)
    assert part.completed == 80 and part.landed == []

def test_state_numbers() -> None:
    blob = "sha256-" + "a" * 64
    assert parts.state_number(blob + "-partial-7", blob) == 7
    for other in (blob, blob + "-partial", blob + "-partial-x", "sha256-" + "b" * 64 + "-partial-1",
                  blob + "-partial-1.tmp"):
        assert parts.state_number(other, blob) is None


# -- protocol -----------------------------------------------------------------------------------


def test_urls() -> None:
    name = ModelName.parse("127.0.0.1:5000/team/smol:v1")
    base = protocol.base_url(name, insecure=True)
    assert base == "http://127.0.0.1:5000"
    assert protocol.base_url(ModelName.parse("llama3"), False) == "https://registry.ollama.ai"
    digest = Digest("a" * 64)
    assert protocol.blob_url(base, name, digest) == f"{base}/v2/team/smol/blobs/sha256:{'a' * 64}"
    assert protocol.manifest_url(base, name) == f"{base}/v2/team/smol/manifests/v1"
    assert protocol.upload_url(base, name, digest, ModelName.parse("library/llama3")) == (
        f"{base}/v2/team/smol/blobs/uploads/?from=library%2Fllama3&mount=sha256%3A{'a' * 64}")
    assert protocol.with_query("http://h/u?_state=x%3D", [("digest", "sha256:1")]) == \
        "http://h/u?_state=x%3D&digest=sha256%3A1"


def test_challenges() -> None:
    bearer = protocol.parse_challenge(
        'Bearer realm="https://registry.ollama.ai/v2/token",service="ollama.com",'
        'scope="repository:library/llama3:pull repository:x/y:pull,push"')
    assert bearer is not None and bearer.scheme == "bearer"
    assert bearer.realm == "https://registry.ollama.ai/v2/token"
    assert bearer.scope == "repository:library/llama3:pull repository:x/y:pull,push"
    basic = protocol.parse_challenge('Basic realm="Registry Realm"')
    assert basic is not None and (basic.scheme, basic.realm) == ("basic", "Registry Realm")
    assert protocol.parse_challenge(None) is None
    odd = protocol.parse_challenge('Bearer realm=unquoted, service="a\\"b"')
    assert odd is not None and odd.params == {"realm": "unquoted", "service": 'a"b'}


def test_token_url_and_signature_are_ollamas() -> None:
    challenge = protocol.parse_challenge(
        'Bearer realm="https://registry.ollama.ai/v2/token?x=1",service="ollama.com",'
        'scope="repository:library/llama3:pull"')
    assert challenge is not None
    url = protocol.token_url(challenge, 1700000000, "bm9uY2U")
    assert url == ("https://registry.ollama.ai/v2/token?nonce=bm9uY2U&"
                   "scope=repository%3Alibrary%2Fllama3%3Apull&service=ollama.com&"
                   "ts=1700000000&x=1")
    payload = protocol.signing_payload("GET", url)
    empty = ("ZTNiMGM0NDI5OGZjMWMxNDlhZmJmNGM4OTk2ZmI5MjQyN2FlNDFlNDY0OWI5MzRjYTQ5NTk5MWI3ODUy"
             "Yjg1NQ==")
    assert payload == f"GET,{url},{empty}".encode()
    key = identity.Identity(Ed25519PrivateKey.generate())
    header = key.sign(payload)
    assert header.split(":")[0] == key.public_key.split()[1]
    assert verify_ollama_signature(header, url)
    assert not verify_ollama_signature(header, url + "&more=1")
    assert len(protocol.new_nonce()) == 22


def test_realm_must_be_the_registrys_host() -> None:
    protocol.check_realm("https://registry.ollama.ai:443/v2/token", "https://registry.ollama.ai")
    with pytest.raises(Unauthorized, match=r'realm host "evil.example" does not match original '
                                           r'host "registry.ollama.ai"'):
        protocol.check_realm("https://evil.example/token", "https://registry.ollama.ai")


@pytest.mark.parametrize(("status", "header", "start", "end", "ok"), [
    (206, "bytes 10-19/100", 10, 19, True),
    (206, "bytes 10-15/100", 10, 19, True),     # less than asked: the rest comes next time
    (206, "bytes 10-19/*", 10, 19, True),
    (206, "bytes 0-19/100", 10, 19, False),     # not where we asked
    (206, "bytes 10-29/100", 10, 19, False),    # more than we asked
    (206, "bytes 10-19/99", 10, 19, False),     # another blob
    (206, None, 10, 19, False),
    (200, None, 0, 99, True),                   # the whole blob was asked for
    (200, None, 10, 19, False),                 # the Range header was ignored
    (204, None, 0, 99, False),
])
def test_range_answers(status: int, header: str | None, start: int, end: int,
                       ok: bool) -> None:
    if ok:
        protocol.check_range_response(status, header, start, end, 100)
    else:
        with pytest.raises(RegistryRefused):
            protocol.check_range_response(status, header, start, end, 100)


def test_locations() -> None:
    assert protocol.resolve_location("http://a:1/v2/x/blobs/uploads/", "/v2/x/u/1?s=2") == \
        "http://a:1/v2/x/u/1?s=2"
    assert protocol.same_host("http://a:1/x", "https://A:1/y")
    assert not protocol.same_host("http://a/x", "http://a:8080/x")
    for bad in (None, "", "file:///etc/passwd", "javascript:alert(1)"):
        with pytest.raises(RegistryRefused):
            protocol.resolve_location("http://a/", bad)


# -- credentials and settings -------------------------------------------------------------------


def test_credentials_in_docker_format(tmp_path: Path) -> None:
    obj = {"auths": {
        "https://index.docker.io/v1/": {"auth": base64.b64encode(b"u:p:with:colons").decode()},
        "registry.example.com:5000": {"username": "a", "password": "b"},
        "tokens.example.com": {"registrytoken": "t0k"},
        "broken.example.com": {"auth": "!!!"},
        "empty.example.com": {},
    }}
    found = auth.parse_auths(obj)
    assert found["index.docker.io"] == auth.Credentials("u", "p:with:colons")
    assert found["registry.example.com:5000"].basic == "Basic " + base64.b64encode(
        b"a:b").decode()
    assert found["tokens.example.com"] == auth.Credentials(token="t0k")
    assert "broken.example.com" not in found and "empty.example.com" not in found
    assert auth.parse_auths([1, 2]) == {}
    ours, docker = auth.credential_files(tmp_path / ".ollama", {"HOME": str(tmp_path)})
    docker.parent.mkdir()
    docker.write_text(json.dumps(obj))
    ours.parent.mkdir()
    ours.write_text("not json")
    assert auth.load_credentials([ours, docker], "Registry.Example.com:5000") == \
        auth.Credentials("a", "b")
    assert auth.load_credentials([ours, docker], "other") is None


def test_settings_from_the_environment() -> None:
    assert TransferSettings.from_env({}) == TransferSettings()
    env = {"OLLAMAD_TRANSFER_PARTS": "4", "OLLAMAD_TRANSFER_PART_MIN": "4MiB",
           "OLLAMAD_TRANSFER_PART_MAX": "1GB", "OLLAMAD_TRANSFER_STALL": "5s",
           "OLLAMAD_TRANSFER_RETRIES": "3", "OLLAMAD_TRANSFER_BACKOFF": "250ms"}
    assert TransferSettings.from_env(env) == TransferSettings(4, 4 << 20, 10**9, 5.0, 3, 0.25)
    assert parse_size("100") == 100 and parse_size("2 kb") == 2000
    with pytest.raises(ValueError, match="OLLAMAD_TRANSFER_PART_MIN"):
        TransferSettings.from_env({"OLLAMAD_TRANSFER_PART_MIN": "lots"})
    with pytest.raises(ValueError):
        TransferSettings(part_min=10, part_max=5)


# -- archives -----------------------------------------------------------------------------------


def _member(name: str, kind: bytes = tarfile.REGTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    return info


def test_archive_entries() -> None:
    hexdigest = "c" * 64
    assert archive.entry_name(_member("./oci-layout")) == "oci-layout"
    assert archive.entry_name(_member(f"blobs/sha256/{hexdigest}")) == f"blobs/sha256/{hexdigest}"
    assert archive.entry_name(_member("blobs/sha256/", tarfile.DIRTYPE)) == "blobs/sha256"
    refusals = {
        "../oci-layout": "points outside", "/etc/passwd": "points outside",
        "blobs/sha256/../../x": "points outside", "blobs/sha256/" + "C" * 64: "not part",
        "blobs/sha512/" + hexdigest: "not part", "manifest.json": "not part",
    }
    for name, message in refusals.items():
        with pytest.raises(ArchiveRefused, match=message):
            archive.entry_name(_member(name))
    for kind, message in ((tarfile.SYMTYPE, "is a link"), (tarfile.LNKTYPE, "is a link"),
                          (tarfile.CHRTYPE, "not a regular file"),
                          (tarfile.FIFOTYPE, "not a regular file")):
        with pytest.raises(ArchiveRefused, match=message):
            archive.entry_name(_member("index.json", kind))


def test_index_names_its_model() -> None:
    name = ModelName.parse("example.com/team/smol:v1")
    raw = b'{"schemaVersion":2}'
    index = archive.index_json(name, raw, "application/vnd.docker.distribution.manifest.v2+json")
    choice = archive.choose_manifest(index, None)
    assert (choice.digest, choice.size, choice.name) == (Digest.of(raw), len(raw), name)
    two = json.loads(index)
    two["manifests"].append(dict(two["manifests"][0], annotations={
        archive.NAME_ANNOTATION: "other:tag"}))
    with pytest.raises(ArchiveRefused, match="holds 2 models"):
        archive.choose_manifest(json.dumps(two).encode(), None)
    assert archive.choose_manifest(json.dumps(two).encode(),
                                   ModelName.parse("other:tag")).name == ModelName.parse(
                                       "other:tag")
    for bad in (b"{}", b"[]", b'{"manifests":[{"digest":"sha256:../x","size":1}]}',
                b'{"manifests":[{"digest":"sha256:' + b"a" * 64 + b'","size":0}]}'):
        with pytest.raises(ArchiveRefused):
            archive.choose_manifest(bad, None)


# -- import refusals (in-process) ---------------------------------------------------------------


def _tar(entries: list[tuple[str, bytes | None, bytes]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data, kind in entries:
            info = tarfile.TarInfo(name)
            info.type = kind
            if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE):
                info.linkname = "oci-layout"
            info.size = len(data or b"")
            tar.addfile(info, io.BytesIO(data or b""))
    return out.getvalue()


def _layout(blob: bytes = b"weights") -> list[tuple[str, bytes | None, bytes]]:
    config = b'{"model_format":"gguf"}'
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                   "digest": str(Digest.of(config)), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.ollama.image.model",
                    "digest": str(Digest.of(b"weights")), "size": 7}]}).encode()
    index = archive.index_json(ModelName.parse("imported:v1"), manifest,
                               "application/vnd.docker.distribution.manifest.v2+json")
    return [("oci-layout", archive.OCI_LAYOUT, tarfile.REGTYPE),
            ("index.json", index, tarfile.REGTYPE),
            (f"blobs/sha256/{Digest.of(manifest).hex}", manifest, tarfile.REGTYPE),
            (f"blobs/sha256/{Digest.of(config).hex}", config, tarfile.REGTYPE),
            (f"blobs/sha256/{Digest.of(b'weights').hex}", blob, tarfile.REGTYPE)]


async def _import(tmp_path: Path, data: bytes, name: str | None = None) -> list[dict]:
    store = ModelStore(tmp_path / "models")
    store.create_folders()
    path = tmp_path / "in.tar"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        return [event async for event in archive.import_archive(
            store, fd, ModelName.parse(name) if name else None)]
    finally:
        os.close(fd)


async def test_import_of_a_good_archive(tmp_path: Path) -> None:
    events = await _import(tmp_path, _tar(_layout()))
    assert events[-1] == {"status": "success", "model": "imported:v1"}
    statuses = [e["status"] for e in events]
    assert statuses[-3:] == ["verifying sha256 digest", "writing manifest", "success"]
    store = ModelStore(tmp_path / "models")
    assert store.blobs.path(Digest.of(b"weights")).read_bytes() == b"weights"
    assert not list(store.blobs.folder.glob(".tmp-*"))


ARCHIVE_CASES = {
    "traversing entry": (lambda e: [*e, ("../../escape", b"x", tarfile.REGTYPE)],
                         "points outside the archive"),
    "duplicate entry": (lambda e: [*e, e[1]], 'archive entry "index.json" appears twice'),
    "symlink": (lambda e: [("index.json", None, tarfile.SYMTYPE), *e], "is a link"),
    "hard link": (lambda e: [*e[:1], ("index.json", None, tarfile.LNKTYPE), *e[2:]],
                  "is a link"),
    "wrong digest": (lambda e: [*e[:4], (e[4][0], b"WEIGHTS", tarfile.REGTYPE)],
                     "in the archive has digest"),
    "missing blob": (lambda e: e[:4], "is neither in the archive nor in the store"),
    "no layout": (lambda e: e[1:], "no oci-layout"),
    "not a tar": (lambda e: None, "not a readable tar archive"),
}


@pytest.mark.parametrize("case", sorted(ARCHIVE_CASES))
async def test_import_refusals_write_nothing(tmp_path: Path, case: str) -> None:
    change, message = ARCHIVE_CASES[case]
    entries = change(_layout())
    data = _tar(entries) if entries is not None else b"garbage" * 100
    with pytest.raises(ArchiveRefused, match=message):
        await _import(tmp_path, data)
    store = tmp_path / "models"
    assert list((store / "blobs").iterdir()) == []
    assert list((store / "manifests").iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.tar", "models"]


# -- the progress bar ---------------------------------------------------------------------------


def test_rate_bar_shows_speed_and_time_left(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.0]
    monkeypatch.setattr("ollamactl.transfer._clock", lambda: clock[0])
    bar = RateBar("pulling abc:", 1000 * MB, 0)
    for second in range(1, 4):
        clock[0] += 1.01
        bar.completed = second * 100 * MB
    line = bar.line(100)
    assert line.startswith("pulling abc:  30% ▕")
    assert line.endswith("▏ 300 MB/  1 GB  100 MB/s      7s")
    assert len(line) == 99  # as Ollama: the last column stays free
    clock[0] += 10
    bar.completed = 1000 * MB
    assert bar.line(80).endswith("▏   1 GB" + " " * 25)
    assert [_time_left(s) for s in (0.4, 59, 61, 3599, 3600, 7260, 400000)] == [
        "0s", "59s", "1m1s", "59m59s", "1h0m", "2h1m", "99h+"]

