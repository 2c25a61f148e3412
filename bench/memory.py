"""The daemon's resident memory idle and after 1,000 requests (list, show, short generate).

    .venv/bin/python -m bench.memory [--requests 1000]

One daemon of its own; the requests go one after another, each on a connection of its own, over
the Unix socket: five in ten ``list``, four in ten ``show``, one in ten a generate of 4 tokens
with a prompt of its own. VmRSS of the daemon process (not of the runner child, which holds the
model and is reported apart) is read when idle at the start and at checkpoints. Targets: idle
<= 80 MB, and flat: after the first 100 requests (lazy imports, the runner's start, caches
filling) it grows by at most 4 MB more up to the last.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from bench.common import MODEL, SEED, fetch_model, model_daemon
from ollamactl.client import Client
from tests.processes import children

WARM_UP = 100
FLAT_MB = 4.0
CHECKPOINTS = (WARM_UP, 250, 500, 750)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def request(socket: Path, index: int) -> None:
    """Request ``index`` of the mix."""
    kind = index % 10
    with Client(socket) as client:
        if kind < 5:
            client.call("list")
        elif kind < 9:
            client.call("show", {"model": MODEL})
        else:
            client.call("generate", {"model": MODEL, "prompt": f"Say the number {index}.",
                                     "options": {"num_predict": 4, "temperature": 0,
                                                 "seed": SEED}})


def measure_memory(model: Path, requests: int = 1000) -> dict[str, Any]:
    with model_daemon(model) as daemon:
        assert daemon.proc is not None
        pid = daemon.proc.pid
        curve = {0: rss_mb(pid)}
        for index in range(requests):
            request(daemon.socket, index)
            if index + 1 in CHECKPOINTS or index + 1 == min(WARM_UP, requests):
                curve[index + 1] = rss_mb(pid)
        curve[requests] = rss_mb(pid)
        runner = sum(rss_mb(child) for child in children(pid))
    warm_up = min(WARM_UP, requests)
    growth = curve[requests] - curve[warm_up]
    return {"idle_mb": curve[0], "after_mb": curve[requests], "requests": requests,
            "warm_up_requests": warm_up, "warm_up_mb": curve[warm_up],
            "curve_mb": {str(n): value for n, value in curve.items()},
            "growth_after_warm_up_mb": growth, "flat": growth <= FLAT_MB,
            "runner_mb": runner}


def report(result: dict[str, Any]) -> None:
    curve = ", ".join(f"{n}: {mb:.1f}" for n, mb in result["curve_mb"].items())
    print(f"daemon RSS by requests served (MB): {curve}")
    print(f"idle {result['idle_mb']:.1f} MB (target <= 80); after {result['requests']} "
          f"requests {result['after_mb']:.1f} MB, {result['growth_after_warm_up_mb']:+.1f} MB "
          f"after the first {result['warm_up_requests']} (flat: <= {FLAT_MB:+.0f} MB); "
          f"runner child {result['runner_mb']:.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    args = parser.parse_args()
    report(measure_memory(fetch_model(), args.requests))


if __name__ == "__main__":
    main()
