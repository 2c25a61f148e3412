"""Soak: a long run of mixed load against one daemon, then checks that nothing crept.

    .venv/bin/python -m bench.soak [--minutes 30] [--clients 8] [--work-dir DIR]

Loopback only: the daemon (Unix socket and HTTP bridge on 127.0.0.1), and Debian's
docker-registry on 127.0.0.1 (started as tests/registry_fixtures.py starts it). For the run:

- ``--clients`` clients (half on the socket, half over HTTP) chat and generate with SmolLM2,
  short answers, without pause;
- one client lists, shows and asks ``ps`` every couple of seconds;
- once a minute a small model is pulled from the registry and deleted again.

A warm-up (a fifth of the run, at least 30 s) comes first; then the load pauses, and once every
request in flight has ended the daemon's RSS and open descriptors are read idle; at the end the
same is read again. The run passes when the idle figures are flat (descriptors equal, RSS within
a small margin), every request got exactly one end (one ``done``, nothing after it, no error),
the bridge's own request counter agrees with the HTTP clients' count, and the store verifies.
Prints ``soak: passed`` and exits 0, or lists what failed and exits 1. CI runs two minutes of
it (tests/test_faults.py::test_soak_for_two_minutes).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.common import fetch_model
from bench.pull_blob import publish
from ollamactl.client import Client
from tests.daemon import Daemon
from tests.http_daemon import http_url
from tests.ollama_layout import write_ollama_model
from tests.processes import children
from tests.registry_fixtures import docker_registry
from tests.test_hardening import assert_store_intact

MODEL = "smollm2:135m"
OPTIONS = {"num_predict": 16, "num_ctx": 1024, "temperature": 0.7}
PROMPTS = ["Name a colour.", "Say hello.", "What is 2 + 2?", "Name a fruit.", "Say a number."]
PULLED_SIZE = 8 << 20
Stream = Callable[[str, dict[str, object]], Iterator[dict[str, object]]]
ADMIN_PAUSE = 2.0
SAMPLE_EVERY = 5.0
IDLE_SETTLE = 8.0
# An idle daemon's RSS may move a little between two reads (allocator arenas, caches that
# fill once); more than this over the run is growth.
RSS_MARGIN = 16 << 20
RSS_RATIO = 0.05


@dataclass
class Tally:
    """What the clients saw, by kind of request; shared by the client threads."""

    sent: Counter[str] = field(default_factory=Counter)
    ended: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def send(self, kind: str) -> None:
        with self.lock:
            self.sent[kind] += 1

    def end(self, kind: str, dones: int, after_done: int) -> None:
        with self.lock:
            if dones == 1 and after_done == 0:
                self.ended[kind] += 1
            else:
                self.problems.append(f"{kind}: {dones} done events, {after_done} after the end")

    def fail(self, kind: str, error: BaseException) -> None:
        with self.lock:
            self.problems.append(f"{kind}: {type(error).__name__}: {error}")


@dataclass
class Sample:
    at: float
    rss: int
    fds: int


def daemon_usage(pid: int) -> tuple[int, int]:
    """(RSS in bytes, open descriptors) of process ``pid``."""
    status = Path(f"/proc/{pid}/status").read_text()
    found = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
    if found is None:
        raise OSError(f"process {pid} has no resident set (it has exited)")
    return int(found.group(1)) * 1024, len(os.listdir(f"/proc/{pid}/fd"))


class Load:
    """The clients. ``running`` gates every loop: cleared, each client finishes the request it
    is in and waits; ``stop`` ends them."""

    def __init__(self, daemon: Daemon, url: str, pulled: str, clients: int) -> None:
        self.daemon, self.url, self.pulled, self.clients = daemon, url, pulled, clients
        self.tally = Tally()
        self.running = threading.Event()
        self.stop = threading.Event()
        self.busy = threading.Semaphore(0)
        self._idle = threading.Condition()
        self._active = 0
        self.threads: list[threading.Thread] = []

    # -- the gate -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _request(self) -> Iterator[bool]:
        """Yields False once the run is over; otherwise counts the request as in flight."""
        while True:
            if self.stop.is_set():
                yield False
                return
            if not self.running.wait(0.2):
                continue
            with self._idle:
                # Checked again under the lock: pause() clears the flag before it counts.
                if self.running.is_set():
                    self._active += 1
                    break
        try:
            yield not self.stop.is_set()
        finally:
            with self._idle:
                self._active -= 1
                self._idle.notify_all()

    def pause(self, timeout: float = 600) -> None:
        """Stop starting requests and wait for those in flight to end."""
        self.running.clear()
        with self._idle:
            if not self._idle.wait_for(lambda: self._active == 0, timeout):
                raise RuntimeError("requests still in flight after the pause timeout")

    def start(self) -> None:
        workers: list[Callable[[int], None]] = [
            self._socket_chat if n % 2 == 0 else self._http_chat for n in range(self.clients)]
        for number, worker in enumerate(workers):
            self.threads.append(threading.Thread(target=worker, args=(number,), daemon=True))
        self.threads.append(threading.Thread(target=self._admin, daemon=True))
        self.threads.append(threading.Thread(target=self._pull_and_delete, daemon=True))
        self.running.set()
        for thread in self.threads:
            thread.start()

    def finish(self) -> None:
        self.stop.set()
        self.running.set()
        for thread in self.threads:
            thread.join(600)

    # -- the clients ----------------------------------------------------------------------------

    def _args(self, number: int, turn: int) -> tuple[str, dict[str, object]]:
        prompt = PROMPTS[(number + turn) % len(PROMPTS)]
        if turn % 2:
            return "generate", {"model": MODEL, "prompt": prompt, "options": OPTIONS}
        return "chat", {"model": MODEL, "options": OPTIONS,
                        "messages": [{"role": "user", "content": prompt}]}

    def _chat(self, number: int, transport: str, stream: Stream) -> None:
        """Chat and generate in turns until the run ends, each answer checked and counted."""
        for turn in range(sys.maxsize):
            with self._request() as go:
                if not go:
                    return
                op, args = self._args(number, turn)
                kind = f"{transport} {op}"
                self.tally.send(kind)
                try:
                    self.tally.end(kind, *_ends(stream(op, args)))
                except Exception as exc:
                    self.tally.fail(kind, exc)

    def _socket_chat(self, number: int) -> None:
        with Client(self.daemon.socket) as client:  # one connection for the whole run
            self._chat(number, "socket", client.stream)

    def _http_chat(self, number: int) -> None:
        with httpx.Client(base_url=self.url, timeout=300) as http:  # kept alive all along
            def stream(op: str, args: dict[str, object]) -> Iterator[dict[str, object]]:
                with http.stream("POST", f"/api/{op}", json=args) as answer:
                    answer.raise_for_status()
                    yield from (json.loads(line) for line in answer.iter_lines() if line)

            self._chat(number, "http", stream)

    def _admin(self) -> None:
        with Client(self.daemon.socket) as client:
            while True:
                with self._request() as go:
                    if not go:
                        return
                    for op, args in (("list", {}), ("show", {"model": MODEL}), ("ps", {})):
                        self.tally.send(op)
                        try:
                            client.call(op, args)
                            self.tally.end(op, 1, 0)
                        except Exception as exc:
                            self.tally.fail(op, exc)
                self.stop.wait(ADMIN_PAUSE)

    def _pull_and_delete(self) -> None:
        while True:
            with self._request() as go:
                if not go:
                    return
                for op, args in (("pull", {"model": self.pulled, "insecure": True}),
                                 ("delete", {"model": self.pulled})):
                    self.tally.send(op)
                    try:
                        with Client(self.daemon.socket) as client:
                            last = client.call(op, args)
                        if op == "pull" and last.get("status") != "success":
                            raise RuntimeError(f"pull ended with {last}")
                        self.tally.end(op, 1, 0)
                    except Exception as exc:
                        self.tally.fail(op, exc)
            self.stop.wait(60)


def _ends(events: Iterator[dict[str, object]]) -> tuple[int, int]:
    """(done events, events after the first done) of one streamed answer."""
    dones = after = 0
    for event in events:
        if dones:
            after += 1
        if event.get("done"):
            dones += 1
    return dones, after


def http_requests_served(url: str, routes: tuple[str, ...]) -> int:
    """What the bridge's own metrics count as answered (status 200) on ``routes``."""
    text = httpx.get(f"{url}/metrics", timeout=30).text
    total = 0
    for route in routes:
        pattern = rf'^ollamad_http_requests_total{{route="{re.escape(route)}",method="POST",' \
                  r'status="200"} (\d+)'
        total += sum(int(match) for match in re.findall(pattern, text, re.M))
    return total


def sample(pid: int, start: float, samples: list[Sample], stop: threading.Event) -> None:
    while not stop.wait(SAMPLE_EVERY):
        with contextlib.suppress(OSError):
            samples.append(Sample(time.monotonic() - start, *daemon_usage(pid)))


def idle_usage(pid: int) -> tuple[int, int]:
    """RSS and descriptors once the daemon has closed what ended: past Hypercorn's keep-alive
    timeout (5 s), so that idle HTTP connections are gone at every reading, not at some."""
    time.sleep(IDLE_SETTLE)
    return daemon_usage(pid)


def run(minutes: float, clients: int, work: Path) -> list[str]:
    """The soak; the list of what failed (empty: passed)."""
    duration = minutes * 60
    warmup = max(30.0, duration / 5)
    home = work / "home"
    gguf = fetch_model()
    write_ollama_model(home / ".ollama" / "models", gguf)
    failures: list[str] = []
    with docker_registry(work / "registry") as registry:
        pulled, _ = publish(work / "publisher", registry.host, PULLED_SIZE)
        daemon = Daemon(home, ["--http", "127.0.0.1:0"]).start()
        try:
            assert daemon.proc is not None
            pid, url = daemon.proc.pid, http_url(daemon)
            load = Load(daemon, url, pulled, clients)
            samples: list[Sample] = []
            stop_sampling = threading.Event()
            started = time.monotonic()
            sampler = threading.Thread(target=sample, args=(pid, started, samples, stop_sampling),
                                       daemon=True)
            sampler.start()
            load.start()
            print(f"soak: {minutes:g} min, {clients} clients, warm-up {warmup:.0f} s", flush=True)
            time.sleep(warmup)
            load.pause()
            warm = idle_usage(pid)
            print(f"soak: after warm-up, idle: RSS {warm[0] >> 20} MiB, {warm[1]} fds",
                  flush=True)
            load.running.set()
            time.sleep(max(0.0, duration - (time.monotonic() - started)))
            load.pause()
            end = idle_usage(pid)
            load.finish()
            stop_sampling.set()
            sampler.join()
            print(f"soak: at the end, idle: RSS {end[0] >> 20} MiB, {end[1]} fds", flush=True)
            failures += check_usage(warm, end, samples, warmup)
            failures += check_requests(load.tally, url)
            runners = children(pid)
            print(f"soak: {len(runners)} runner(s) alive", flush=True)
            with Client(daemon.socket) as client:
                names = [m["name"] for m in client.call("list")["models"]]
            if MODEL not in names:
                failures.append(f"{MODEL} is no longer listed: {names}")
        finally:
            with contextlib.suppress(Exception):
                daemon.stop()
            daemon.close()
    try:
        assert_store_intact(home / ".ollama" / "models", allow_partial=False)
    except AssertionError as exc:
        failures.append(f"the store does not verify: {exc}")
    return failures


def check_usage(warm: tuple[int, int], end: tuple[int, int], samples: list[Sample],
                warmup: float) -> list[str]:
    failures = []
    (warm_rss, warm_fds), (end_rss, end_fds) = warm, end
    allowed = max(RSS_MARGIN, int(warm_rss * RSS_RATIO))
    if end_rss - warm_rss > allowed:
        failures.append(f"RSS grew by {(end_rss - warm_rss) >> 20} MiB after warm-up "
                        f"(allowed {allowed >> 20} MiB)")
    if end_fds != warm_fds:
        failures.append(f"open descriptors went from {warm_fds} to {end_fds} after warm-up")
    loaded = [s for s in samples if s.at > warmup]
    if loaded:
        print(f"soak: under load after warm-up: RSS {min(s.rss for s in loaded) >> 20}-"
              f"{max(s.rss for s in loaded) >> 20} MiB, fds {min(s.fds for s in loaded)}-"
              f"{max(s.fds for s in loaded)} ({len(loaded)} samples)", flush=True)
    return failures


def check_requests(tally: Tally, url: str) -> list[str]:
    failures = list(tally.problems)
    for kind in sorted(tally.sent):
        print(f"soak: {kind}: {tally.sent[kind]} sent, {tally.ended[kind]} answered once",
              flush=True)
        if tally.sent[kind] != tally.ended[kind]:
            failures.append(f"{kind}: {tally.sent[kind]} sent, {tally.ended[kind]} answered")
    http_sent = tally.sent["http chat"] + tally.sent["http generate"]
    served = http_requests_served(url, ("/api/chat", "/api/generate"))
    if served != http_sent:
        failures.append(f"the bridge counts {served} HTTP chat/generate answers, the clients "
                        f"sent {http_sent}")
    if not tally.ended["pull"]:
        failures.append("no pull completed")
    return failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="where the store, registry and logs go (default: a temp folder)")
    options = parser.parse_args(argv)
    work = options.work_dir or Path(tempfile.mkdtemp(prefix="ollamad-soak-"))
    failures = run(options.minutes, options.clients, work)
    if failures:
        print("soak: FAILED\n  " + "\n  ".join(failures), flush=True)
        print(f"soak: the daemon's log is {work / 'home' / 'daemon.stderr'}", flush=True)
        return 1
    if options.work_dir is None:
        shutil.rmtree(work, ignore_errors=True)
    print("soak: passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
