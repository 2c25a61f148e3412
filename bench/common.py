"""What the benchmarks share: the model, the prompt, the subjects' streams, timing, baselines.

A *stream* is one generation request as a callable that yields each piece of generated text as
it arrives; :func:`measure` stamps the arrivals. A stream's rate is (pieces - 1) / (last arrival
- first arrival) as the client sees it: decoding plus transport, without loading or prompt
evaluation. The aggregate rate of simultaneous streams is their pieces over the span from the
earliest first piece to the latest last one.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from ollamactl.client import Client
from tests.daemon import Daemon, running_daemon
from tests.ollama_layout import write_ollama_model

REPO = Path(__file__).resolve().parent.parent
MODEL = "smollm2:135m"
# Already in the model's chat format, sent raw to every subject so that they see the same tokens.
PROMPT = ("<|im_start|>user\nWrite a long story about a lighthouse keeper and the sea."
          "<|im_end|>\n<|im_start|>assistant\n")
STOP = ["<|im_start|>", "<|im_end|>"]
SEED = 42
SETTLE = 0.2
Stream = Callable[[], Iterable[str]]


def fetch_model() -> Path:
    """The test GGUF (SmolLM2-135M Q4_1), downloaded once into the cache."""
    out = subprocess.run([str(REPO / "scripts" / "fetch-test-model")], check=True, text=True,
                         capture_output=True, env=dict(os.environ, PYTHON=sys.executable))
    return Path(out.stdout.strip().splitlines()[-1])


def cpu_count() -> int:
    return len(os.sched_getaffinity(0))


def load_average() -> float:
    return os.getloadavg()[0]


# -- CPU accounting -----------------------------------------------------------------------------

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> float:
    """CPU seconds (user and system) process ``pid`` has used so far; 0 once it has gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def machine_busy() -> float:
    """CPU seconds, summed over the CPUs, that the machine has been busy since boot."""
    ticks = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = ticks[:8]
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


def own_cpu() -> float:
    """CPU seconds of this process and of its children waited for (with theirs)."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


@dataclass(frozen=True)
class Settings:
    """What every generation benchmark shares: tokens per stream, threads, context, runs."""

    tokens: int = 128
    threads: int = field(default_factory=cpu_count)
    ctx: int = 2048
    runs: int = 3

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser, runs: int = 3) -> None:
        parser.add_argument("--tokens", type=int, default=128, help="tokens per stream")
        parser.add_argument("--threads", type=int, default=cpu_count())
        parser.add_argument("--ctx", type=int, default=2048, help="context per sequence")
        parser.add_argument("--runs", type=int, default=runs, help="measured runs (medians)")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Settings:
        return cls(args.tokens, args.threads, args.ctx, args.runs)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# -- timing -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Sample:
    """One stream as the client saw it: when it was sent, when each piece arrived, the text."""

    start: float
    stamps: tuple[float, ...]
    text: str

    @property
    def pieces(self) -> int:
        return len(self.stamps)

    @property
    def first_token(self) -> float:
        return self.stamps[0] - self.start

    @property
    def rate(self) -> float:
        return (self.pieces - 1) / (self.stamps[-1] - self.stamps[0])


def measure(stream: Stream) -> Sample:
    start = time.perf_counter()
    stamps, parts = [], []
    for piece in stream():
        stamps.append(time.perf_counter())
        parts.append(piece)
    if len(stamps) < 2:
        raise RuntimeError("the stream produced fewer than two pieces")
    return Sample(start, tuple(stamps), "".join(parts))


def settle() -> None:
    """A pause between two measurements: llama.cpp's worker threads spin for a while after a
    decode, and would take the CPUs from the next subject (seen as 10-30 ms on its first token)."""
    time.sleep(SETTLE)


def alternate(subjects: dict[str, Stream], runs: int) -> dict[str, list[Sample]]:
    """``runs`` samples of each subject, taking turns, after one unmeasured warm-up each."""
    for stream in subjects.values():
        measure(stream)
    samples: dict[str, list[Sample]] = {name: [] for name in subjects}
    for _ in range(runs):
        for name, stream in subjects.items():
            settle()
            samples[name].append(measure(stream))
    return samples


def aggregate_rate(samples: Sequence[Sample]) -> float:
    """Total pieces per second of simultaneous streams."""
    first = min(sample.stamps[0] for sample in samples)
    last = max(sample.stamps[-1] for sample in samples)
    return sum(sample.pieces - 1 for sample in samples) / (last - first)


def simultaneously(stream: Stream, count: int) -> list[Sample | Exception]:
    """``count`` copies of ``stream`` started together, one thread each, in start order."""
    outcomes: list[Sample | Exception] = [RuntimeError("not run")] * count
    barrier = threading.Barrier(count)

    def one(index: int) -> None:
        barrier.wait()
        try:
            outcomes[index] = measure(stream)
        except Exception as exc:
            outcomes[index] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


def completed(outcomes: Sequence[Sample | Exception]) -> list[Sample]:
    """The samples, or the first failure raised."""
    for outcome in outcomes:
        if isinstance(outcome, Exception):
            raise RuntimeError(f"a concurrent stream failed: {outcome!r}") from outcome
    return [outcome for outcome in outcomes if isinstance(outcome, Sample)]


def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


# -- ollamad ------------------------------------------------------------------------------------

def ollama_options(tokens: int, threads: int, ctx: int) -> dict[str, object]:
    return {"num_predict": tokens, "temperature": 0, "seed": SEED, "num_ctx": ctx,
            "num_thread": threads}


def msgpack_stream(path: Path, options: dict[str, object], prompt: str = PROMPT) -> Stream:
    """A raw generate over the daemon's Unix socket, on a connection of its own."""
    args = {"model": MODEL, "prompt": prompt, "raw": True, "options": options}

    def run() -> Iterator[str]:
        with Client(path) as client:
            for event in client.stream("generate", args):
                if event.get("response"):
                    yield event["response"]

    return run


@contextlib.contextmanager
def model_home(model: Path) -> Iterator[Path]:
    """A temporary HOME whose Ollama store holds the model as ``smollm2:135m``."""
    with tempfile.TemporaryDirectory(prefix="ollamad-bench-") as home:
        write_ollama_model(Path(home) / ".ollama" / "models", model)
        yield Path(home)


@contextlib.contextmanager
def model_daemon(model: Path, extra_args: Sequence[str] = ("--http", "none"),
                 env: dict[str, str] | None = None) -> Iterator[Daemon]:
    """A daemon of its own (no HTTP unless asked) with the model in its store. Stopped with
    SIGTERM, so that it waits for its runner, whose CPU time then counts as this run's."""
    with model_home(model) as home, running_daemon(home, extra_args, env) as daemon:
        yield daemon
        daemon.stop()


# -- llama-cpp-python ---------------------------------------------------------------------------

def in_process_llama(model: Path, threads: int, ctx: int, flash_attn: bool = False) -> Any:
    from llama_cpp import Llama

    return Llama(str(model), n_ctx=ctx, n_threads=threads, n_threads_batch=threads, seed=SEED,
                 flash_attn=flash_attn, verbose=False)


def in_process_stream(llama: Any, tokens: int, prompt: str = PROMPT) -> Stream:
    def run() -> Iterator[str]:
        for piece in llama.create_completion(prompt, max_tokens=tokens, temperature=0,
                                             seed=SEED, stop=STOP, stream=True):
            if piece["choices"][0]["text"]:
                yield piece["choices"][0]["text"]

    return run


def server_stream(url: str, tokens: int, prompt: str = PROMPT) -> Stream:
    """A completion from llama_cpp.server, streamed over HTTP (a connection of its own)."""
    body = {"prompt": prompt, "max_tokens": tokens, "temperature": 0, "seed": SEED,
            "stop": STOP, "stream": True}

    def run() -> Iterator[str]:
        with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=300) as answer:
            for line in answer.iter_lines():
                if line.startswith("data: {"):
                    text = json.loads(line[6:])["choices"][0]["text"]
                    if text:
                        yield text

    return run


def server_available() -> bool:
    return all(importlib.util.find_spec(name) is not None
               for name in ("uvicorn", "fastapi", "sse_starlette", "starlette_context"))


@dataclass(frozen=True)
class Server:
    url: str
    pid: int


@contextlib.contextmanager
def llama_server(model: Path, threads: int, ctx: int,
                 flash_attn: bool = False) -> Iterator[Server | None]:
    """llama_cpp.server on a loopback port, or None without the ``bench`` extra."""
    if not server_available():
        yield None
        return
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--n_ctx", str(ctx),
         "--n_threads", str(threads), "--n_threads_batch", str(threads), "--seed", str(SEED),
         "--flash_attn", str(flash_attn), "--host", "127.0.0.1", "--port", str(port),
         "--verbose", "False",
         # By default a new request cuts the one streaming; here they queue instead.
         "--interrupt_requests", "False"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for_server(proc, url)
        yield Server(url, proc.pid)
    finally:
        proc.terminate()
        proc.wait(30)


def _wait_for_server(proc: subprocess.Popen[bytes], url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{url}/v1/models", timeout=5).status_code == 200:
                return
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("llama_cpp.server did not start")
        time.sleep(0.2)
