"""``ollamactl list`` against a socket-activated daemon, cold (the request starts it) and warm.

    .venv/bin/python -m bench.activation [--runs 5]

systemd's own tool, ``systemd-socket-activate``, listens on the control socket and starts
``ollamad serve --idle-exit`` on the first connection, as ``ollamad.socket`` does. Cold: the time
from the connect that triggers the start to the answer of ``list`` (an in-process client, the
one ollamactl uses), and the wall time of a whole ``ollamactl list`` process that triggers the
start. Warm: the same two against the daemon already running. ``python -c pass`` is timed too,
for the part of a command's time that is the interpreter's. Targets: cold <= 0.5 s, warm
``ollamactl list`` <= 100 ms.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.common import fetch_model, median, model_home
from bench.list_startup import timed
from ollamactl.client import Client
from tests.daemon import base_env, short_tempdir

ACTIVATE = shutil.which("systemd-socket-activate")
PASSED = ("HOME", "PATH", "OLLAMA_MODELS", "PYTHONUNBUFFERED")
WARM_RUNS = 5


@contextlib.contextmanager
def activator(home: Path, socket: Path) -> Iterator[dict[str, str]]:
    """systemd-socket-activate listening on ``socket``; yields the client environment."""
    if ACTIVATE is None:
        raise RuntimeError("systemd-socket-activate is not installed (apt install systemd)")
    env = base_env(home, home / ".ollama" / "models")
    proc = subprocess.Popen(
        [ACTIVATE, f"--listen={socket}", "--fdname=ctl",
         *(f"--setenv={key}={env[key]}" for key in PASSED),
         sys.executable, "-m", "ollamad", "serve", "--http", "none", "--idle-exit", "5m"],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True)
    try:
        _wait_until_listening(proc)
        yield env | {"OLLAMAD_SOCKET": str(socket)}
    finally:
        proc.terminate()  # systemd-socket-activate has become the daemon: a clean shutdown
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        socket.unlink(missing_ok=True)


def _wait_until_listening(proc: subprocess.Popen[str]) -> None:
    assert proc.stderr is not None
    lines = []
    while not any("Listening on" in line for line in lines):
        line = proc.stderr.readline()
        if not line:
            raise RuntimeError("systemd-socket-activate failed: " + "".join(lines))
        lines.append(line)
    # Keep reading, so that the daemon never blocks on a full pipe.
    threading.Thread(target=proc.stderr.read, daemon=True).start()


def list_in_process(socket: Path) -> float:
    """Seconds from the connect to the answer of ``list``."""
    start = time.perf_counter()
    with Client(socket) as client:
        client.call("list")
    return time.perf_counter() - start


def ollamactl_list(env: dict[str, str]) -> float:
    return timed([str(Path(sys.executable).parent / "ollamactl"), "list"], env)


def one_round(home: Path, socket: Path, figures: dict[str, list[float]]) -> None:
    """A cold start by each client; then the warm figures against the daemon running."""
    with activator(home, socket):
        figures["cold, connect to answer"].append(list_in_process(socket))
        for _ in range(WARM_RUNS):
            figures["warm, connect to answer"].append(list_in_process(socket))
    with activator(home, socket) as env:
        figures["cold, ollamactl list"].append(ollamactl_list(env))
        for _ in range(WARM_RUNS):
            figures["warm, ollamactl list"].append(ollamactl_list(env))
            figures["python -c pass"].append(timed([sys.executable, "-c", "pass"], env))


def measure_activation(model: Path, runs: int = 5) -> dict[str, Any]:
    figures: dict[str, list[float]] = {name: [] for name in (
        "cold, connect to answer", "cold, ollamactl list", "warm, connect to answer",
        "warm, ollamactl list", "python -c pass")}
    rundir = short_tempdir()
    try:
        with model_home(model) as home:
            for _ in range(runs):
                one_round(home, rundir / "ollamad.sock", figures)
    finally:
        shutil.rmtree(rundir, ignore_errors=True)
    return {name: {"median_s": median(values), "max_s": max(values), "runs": len(values)}
            for name, values in figures.items()}


def report(result: dict[str, Any]) -> None:
    print(f"{'':28}{'median':>10}{'max':>10}")
    for name, figures in result.items():
        print(f"{name:28}{figures['median_s'] * 1000:>8.1f}ms{figures['max_s'] * 1000:>8.1f}ms")
    print("targets: cold <= 500 ms, warm ollamactl list <= 100 ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="cold starts of each kind")
    args = parser.parse_args()
    report(measure_activation(fetch_model(), args.runs))


if __name__ == "__main__":
    main()
