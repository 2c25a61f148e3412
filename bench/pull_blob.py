"""Pull of a large blob from a local docker-registry: ollamad against ``curl -o FILE && sync``.

    .venv/bin/python -m bench.pull_blob [--size-mb 600] [--runs 3] [--parts N] [--part-max SIZE]

Both fetch the same blob from the same registry on loopback and end with the data durable
(curl is followed by ``sync``; ollamad syncs before the blob becomes visible), so the ratio
compares like with like. Runs alternate between the two so that machine noise hits both; the
figure that matters is the throughput ratio of medians (curl's time over ollamad's; the target
is at least 0.9), printed with the absolute times.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import trio

from bench.list_startup import timed
from ollamad import identity
from ollamad.registry import Registry, push
from ollamad.registry.settings import TransferSettings
from ollamad.store import Layer, Manifest, MediaType, ModelName, ModelStore
from tests.daemon import running_daemon
from tests.registry_fixtures import docker_registry

CHUNK = 1 << 20


def publish(folder: Path, host: str, size: int) -> tuple[str, str]:
    """A model with one random ``size``-byte layer, pushed to ``host``; (name, blob URL)."""
    store = ModelStore(folder / "models")
    store.create_folders()

    def chunks():
        for _ in range(size // CHUNK):
            yield os.urandom(CHUNK)

    digest, written = store.blobs.write(chunks())
    config = b'{"model_format":"gguf"}'
    manifest = Manifest(Layer(MediaType.CONFIG, store.blobs.write_bytes(config), len(config)),
                        (Layer(MediaType.MODEL, digest, written),))
    name = ModelName.parse(f"{host}/bench/big:latest")
    store.write_manifest(name, manifest.to_json())

    async def run() -> None:
        access = Registry(TransferSettings(), lambda: identity.load_or_create(folder), [])
        async for _ in push(store, access, name, insecure=True):
            pass

    trio.run(run)
    shutil.rmtree(store.root)
    return str(name), f"http://{host}/v2/bench/big/blobs/{digest}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=600)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--parts", help="OLLAMAD_TRANSFER_PARTS for the daemon (default 16)")
    parser.add_argument("--part-max", help="OLLAMAD_TRANSFER_PART_MAX for the daemon (default "
                        "1000MB); smaller than a sixteenth of the blob, parts run as a window "
                        "that the in-order hash follows closely")
    args = parser.parse_args()
    settings = {key: value for key, value in (("OLLAMAD_TRANSFER_PARTS", args.parts),
                                              ("OLLAMAD_TRANSFER_PART_MAX", args.part_max),
                                              ("OLLAMAD_TRANSFER_PART_MIN", args.part_max))
                if value}
    size = args.size_mb * CHUNK
    with tempfile.TemporaryDirectory(prefix="pull-bench-", dir="/var/tmp") as work:
        folder = Path(work)
        with docker_registry(folder / "registry") as registry:
            name, url = publish(folder / "publisher", registry.host, size)
            target = folder / "curl.out"
            curl = ["sh", "-c", f'curl -sSf -o "{target}" "{url}" && sync']
            quiet = ["sh", "-c", '"$@" 2>/dev/null', "quiet"]
            (folder / "home").mkdir()
            with running_daemon(folder / "home", env=settings) as daemon:
                pull = [*quiet, sys.executable, "-m", "ollamactl", "pull", "--insecure", name]
                env = daemon.client_env()
                baseline, subject = [], []
                for _ in range(args.runs):
                    baseline.append(timed(curl, env))
                    target.unlink()
                    subprocess.run(["sync"], check=True)
                    subject.append(timed(pull, env))
                    daemon.ollamactl("rm", name)
                    subprocess.run(["sync"], check=True)
    curl_time, pull_time = statistics.median(baseline), statistics.median(subject)
    mb = size / 1e6
    print(f"blob {mb:.0f} MB, {args.runs} runs each (medians), {settings or 'default settings'}")
    print(f"curl -o FILE && sync: {curl_time:.2f} s ({mb / curl_time:.0f} MB/s)")
    print(f"ollamactl pull:       {pull_time:.2f} s ({mb / pull_time:.0f} MB/s)")
    print(f"throughput ratio (curl time / pull time): {curl_time / pull_time:.2f} "
          "(target >= 0.9)")


if __name__ == "__main__":
    main()
