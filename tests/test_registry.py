"""Pull, push, export and import through the real daemon, against Debian's docker-registry.

Parts are small here (``OLLAMAD_TRANSFER_PART_MIN=4MB``), so the 98 MB SmolLM2 blob goes in
sixteen parts of about 6 MB.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from ollamactl.client import Client
from ollamad import identity
from ollamad.registry import Registry, push
from ollamad.registry.parts import Part
from ollamad.registry.settings import TransferSettings
from ollamad.store import ModelName, ModelStore
from tests.daemon import Daemon, running_daemon
from tests.ollama_layout import write_ollama_model
from tests.registry_fixtures import DockerRegistry, Proxy, docker_registry, serving

SMALL_PARTS = {"OLLAMAD_TRANSFER_PART_MIN": "4MB"}
GGUF_DIGEST = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
GGUF_SIZE = 98362432
PART = GGUF_SIZE // 16


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerRegistry]:
    with docker_registry(tmp_path_factory.mktemp("registry")) as running:
        yield running


@pytest.fixture(scope="module")
def published(registry: DockerRegistry, tmp_path_factory: pytest.TempPathFactory,
              smollm2_gguf: Path) -> str:
    """smollm2 pushed to the registry (in-process, no daemon): its repository path and tag."""
    home = tmp_path_factory.mktemp("publisher")
    store = ModelStore(home / "models")
    write_ollama_model(store.root, smollm2_gguf)
    target = ModelName.parse(f"{registry.host}/library/smollm2:135m")
    store.copy(ModelName.parse("smollm2:135m"), target)

    async def run() -> None:
        access = Registry(TransferSettings(), lambda: identity.load_or_create(home), [])
        async for _ in push(store, access, target, insecure=True):
            pass

    trio.run(run)
    return "library/smollm2:135m"


def snapshot(models: Path) -> dict[str, str]:
    """sha256 of every manifest and blob of a store, by path."""
    found = {}
    for path in sorted(models.rglob("*")):
        if path.is_file():
            found[str(path.relative_to(models))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def generates(daemon: Daemon, model: str) -> None:
    with Client(daemon.socket) as client:
        events = list(client.stream("generate", {"model": model, "prompt": "Say hi.", "options":
                                                 {"temperature": 0, "num_predict": 8,
                                                  "num_ctx": 1024}}))
    assert events[-1]["done"] and "".join(event["response"] for event in events).strip()


def test_create_push_rm_pull_is_byte_identical_and_runs(tmp_path: Path, smollm2_gguf: Path,
                                                        registry: DockerRegistry) -> None:
    name = f"{registry.host}/test/smol:v1"
    modelfile = tmp_path / "Modelfile"
    modelfile.write_text(f"FROM {smollm2_gguf}\n")
    with running_daemon(tmp_path, env=SMALL_PARTS) as daemon:
        daemon.ollamactl("create", name, "-f", str(modelfile))
        before = snapshot(daemon.models)
        pushed = daemon.ollamactl("push", "--insecure", name)
        assert pushed.stdout == f"\nYou can find your model at:\n\n\t{name}\n"
        lines = pushed.stderr.splitlines()
        assert lines[0] == "retrieving manifest" and lines[-2:] == ["pushing manifest",
                                                                    "success"]
        assert any(line.startswith(f"pushing {GGUF_DIGEST[:12]} 100%") for line in lines)
        daemon.ollamactl("rm", name)
        assert not list((daemon.models / "blobs").iterdir())
        pulled = daemon.ollamactl("pull", "--insecure", name)
        daemon.wait_for_log(rf"downloading {GGUF_DIGEST[:12]} in 16 part\(s\)")
        assert snapshot(daemon.models) == before
        lines = pulled.stderr.splitlines()
        assert lines[0] == "pulling manifest"
        assert lines[-3:] == ["verifying sha256 digest", "writing manifest", "success"]
        assert any(line.startswith(f"pulling {GGUF_DIGEST[:12]}: 100%") for line in lines)
        generates(daemon, name)


def test_a_pull_killed_mid_blob_resumes_where_it_stopped(tmp_path: Path, published: str,
                                                         registry: DockerRegistry) -> None:
    proxy = Proxy(registry.host)
    proxy.rate = 20e6
    blob_path = f"/v2/library/smollm2/blobs/sha256:{GGUF_DIGEST}"
    blobs = tmp_path / ".ollama" / "models" / "blobs"
    with serving(proxy.handle) as proxy_host:
        name = f"{proxy_host}/{published}"
        daemon = Daemon(tmp_path, env=SMALL_PARTS).start()
        try:
            puller = subprocess.Popen([sys.executable, "-m", "ollamactl", "pull", "--insecure",
                                       name], env=daemon.client_env(),
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            # Past the first checkpoints (one a second), well before the end.
            assert proxy.log.wait_for(blob_path, 45e6, timeout=60)
            assert daemon.proc is not None
            os.kill(daemon.proc.pid, signal.SIGKILL)
            daemon.proc.wait()
            assert puller.wait(30) != 0
        finally:
            daemon.close()
        states = [Part.from_json(path.read_bytes())
                  for path in blobs.glob(f"sha256-{GGUF_DIGEST}-partial-*")]
        assert len(states) == 16 and all(states)
        on_disk = sum(part.completed for part in states if part)
        assert 0 < on_disk < GGUF_SIZE
        # Age every file: the start-up prune would take them now if it took partial downloads.
        old = time.time() - 7200
        for path in blobs.iterdir():
            os.utime(path, (old, old))
        proxy.rate = None
        proxy.log.reset()
        with running_daemon(tmp_path, env=SMALL_PARTS) as restarted:
            restarted.ollamactl("pull", "--insecure", name)
            restarted.wait_for_log(rf"resuming {GGUF_DIGEST[:12]}: {on_disk} of")
    requested = proxy.log.requested[blob_path]
    assert requested < GGUF_SIZE - on_disk + PART
    assert (blobs / f"sha256-{GGUF_DIGEST}").stat().st_size == GGUF_SIZE
    with open(blobs / f"sha256-{GGUF_DIGEST}", "rb") as blob:
        assert hashlib.file_digest(blob, "sha256").hexdigest() == GGUF_DIGEST
    assert not list(blobs.glob("*-partial*"))


def test_basic_auth_against_docker_registry_with_htpasswd(tmp_path: Path,
                                                          smollm2_gguf: Path) -> None:
    write_ollama_model(tmp_path / ".ollama" / "models", smollm2_gguf)
    with docker_registry(tmp_path / "registry", {"alice": "s3cret"}) as private, \
            running_daemon(tmp_path, env=SMALL_PARTS) as daemon:
        name = f"{private.host}/team/smol:v1"
        daemon.ollamactl("cp", "smollm2:135m", name)
        refused = daemon.ollamactl("push", "--insecure", name, check=False)
        assert refused.returncode == 1
        assert refused.stderr.endswith("Error: you are not authorized to push to this "
                                       "namespace, create the model under a namespace you own\n")
        (tmp_path / ".docker").mkdir()
        (tmp_path / ".docker" / "config.json").write_text(json.dumps(
            {"auths": {private.host: {"auth": "YWxpY2U6czNjcmV0"}}}))
        daemon.ollamactl("push", "--insecure", name)
        before = snapshot(daemon.models)
        daemon.ollamactl("rm", name, "smollm2:135m")
        daemon.ollamactl("pull", "--insecure", name)
        after = snapshot(daemon.models)
    assert {k: v for k, v in before.items() if "smollm2" not in k} == after


def test_export_rm_import_run_and_key(tmp_path: Path, smollm2_gguf: Path) -> None:
    write_ollama_model(tmp_path / ".ollama" / "models", smollm2_gguf)
    archive = tmp_path / "smollm2.tar"
    with running_daemon(tmp_path) as daemon:
        before = snapshot(daemon.models)
        daemon.ollamactl("export", "smollm2:135m", str(archive))
        with tarfile.open(archive) as tar:
            names = tar.getnames()
        assert names[:4] == ["blobs", "blobs/sha256", "oci-layout", "index.json"]
        assert f"blobs/sha256/{GGUF_DIGEST}" in names
        assert not list(tmp_path.glob(".smollm2.tar.*"))
        daemon.ollamactl("rm", "smollm2:135m")
        imported = daemon.ollamactl("import", str(archive))
        assert imported.stdout == "imported 'smollm2:135m'\n"
        assert snapshot(daemon.models) == before
        generates(daemon, "smollm2:135m")
        daemon.ollamactl("import", str(archive), "copy:v2")
        assert "copy:v2" in daemon.ollamactl("list").stdout
        public = (tmp_path / ".ollama" / "id_ed25519.pub").read_text().strip()
        assert daemon.ollamactl("key").stdout.strip() == public


def test_a_failed_export_leaves_no_file(tmp_path: Path) -> None:
    with running_daemon(tmp_path) as daemon:
        failed = daemon.ollamactl("export", "nothing:here", str(tmp_path / "x.tar"), check=False)
    assert failed.returncode == 1 and "not found" in failed.stderr
    assert [p.name for p in tmp_path.iterdir() if "x.tar" in p.name] == []
