"""`ollamactl list` with 100 models: wall time against `python -c pass`, measured in one run.

    .venv/bin/python -m bench.list_startup [--models 100] [--runs 30]

Runs alternate between the two commands so that machine noise hits both alike; the figure that
matters is the ratio of medians, printed with the absolute times.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ollamad.store import Layer, Manifest, MediaType, ModelName, ModelStore
from tests.daemon import running_daemon

BIN = Path(sys.executable).parent


def fill_store(root: Path, count: int) -> None:
    store = ModelStore(root)
    store.create_folders()
    config = json.dumps({"model_format": "gguf", "model_family": "llama",
                         "model_families": ["llama"], "model_type": "134.52M",
                         "file_type": "Q4_1"}).encode()
    weights = b"GGUF" + bytes(4096)
    manifest = Manifest(
        Layer(MediaType.CONFIG, store.blobs.write_bytes(config), len(config)),
        (Layer(MediaType.MODEL, store.blobs.write_bytes(weights), len(weights)),))
    for index in range(count):
        store.write_manifest(ModelName.parse(f"bench/model-{index:03d}:latest"),
                             manifest.to_json())


def timed(command: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=100)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        fill_store(Path(home) / ".ollama" / "models", args.models)
        with running_daemon(Path(home)) as daemon:
            env = daemon.client_env()
            listed = daemon.ollamactl("list").stdout.count("\n") - 1
            assert listed == args.models, f"listed {listed} models"
            baseline, subject = [], []
            for _ in range(args.runs):
                baseline.append(timed([sys.executable, "-c", "pass"], env))
                subject.append(timed([str(BIN / "ollamactl"), "list"], env))
    base, ours = statistics.median(baseline), statistics.median(subject)
    print(f"{'measure':<34}{'median':>10}{'min':>10}")
    print(f"{'python -c pass':<34}{base * 1000:>8.1f}ms{min(baseline) * 1000:>8.1f}ms")
    print(f"{f'ollamactl list ({args.models} models)':<34}{ours * 1000:>8.1f}ms"
          f"{min(subject) * 1000:>8.1f}ms")
    print(f"ratio ollamactl list / python -c pass: {ours / base:.2f}x "
          f"(target: under 100 ms absolute: {'met' if ours < 0.1 else 'NOT met'})")


if __name__ == "__main__":
    main()
