"""Generation tokens/s through the HTTP bridge against the msgpack socket, llama-cpp-python in
process and llama-cpp-python's own server, measured in one run; then four concurrent streams.

    .venv/bin/python -m bench.http_throughput [--tokens 128] [--runs 5] [--threads 2]

Same model (SmolLM2-135M), prompt, seed, greedy sampling, context and threads everywhere. A
stream's rate is (tokens - 1) / (last token's arrival - first token's arrival) as the client sees
it: decoding plus transport, without loading or prompt evaluation. Subjects alternate run by run
so that machine noise hits them alike; the figures that matter are the ratios of medians.
The server needs ``pip install 'llama-cpp-python[server]'`` (the ``bench`` extra); without it that
column is skipped.
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
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import httpx

from ollamactl.client import Client
from tests.daemon import running_daemon
from tests.http_daemon import MODEL, http_url
from tests.ollama_layout import write_ollama_model

REPO = Path(__file__).resolve().parent.parent
PROMPT = ("<|im_start|>user\nWrite a long story about a lighthouse keeper and the sea."
          "<|im_end|>\n<|im_start|>assistant\n")
STOP = ["<|im_start|>", "<|im_end|>"]
CTX, SEED = 1024, 42
Stream = Callable[[], Iterable[object]]  # yields once per generated token (or piece)


def rate(pieces: Iterable[object]) -> tuple[int, float, float]:
    """(tokens, first arrival, last arrival) of one stream."""
    stamps = [time.perf_counter() for _ in pieces]
    if len(stamps) < 2:
        raise RuntimeError("the stream produced fewer than two tokens")
    return len(stamps), stamps[0], stamps[-1]


def per_second(result: tuple[int, float, float]) -> float:
    tokens, first, last = result
    return (tokens - 1) / (last - first)


def fetch_model() -> Path:
    out = subprocess.run([str(REPO / "scripts" / "fetch-test-model")], check=True, text=True,
                         capture_output=True, env=dict(os.environ, PYTHON=sys.executable))
    return Path(out.stdout.strip().splitlines()[-1])


# -- the subjects -------------------------------------------------------------------------------

def ollama_options(tokens: int, threads: int) -> dict[str, object]:
    return {"num_predict": tokens, "temperature": 0, "seed": SEED, "num_ctx": CTX,
            "num_thread": threads}


def http_stream(url: str, tokens: int, threads: int) -> Stream:
    body = {"model": MODEL, "prompt": PROMPT, "raw": True,
            "options": ollama_options(tokens, threads)}

    def run() -> Iterator[object]:
        with httpx.stream("POST", f"{url}/api/generate", json=body, timeout=300) as answer:
            for line in answer.iter_lines():
                if line and json.loads(line).get("response"):
                    yield line

    return run


def msgpack_stream(path: Path, tokens: int, threads: int) -> Stream:
    args = {"model": MODEL, "prompt": PROMPT, "raw": True,
            "options": ollama_options(tokens, threads)}

    def run() -> Iterator[object]:
        with Client(path) as client:
            for event in client.stream("generate", args):
                if event.get("response"):
                    yield event

    return run


def in_process_stream(model: Path, tokens: int, threads: int) -> Stream:
    from llama_cpp import Llama

    llm = Llama(str(model), n_ctx=CTX, n_threads=threads, seed=SEED, verbose=False)

    def run() -> Iterator[object]:
        for piece in llm.create_completion(PROMPT, max_tokens=tokens, temperature=0,
                                           seed=SEED, stop=STOP, stream=True):
            if piece["choices"][0]["text"]:
                yield piece

    return run


def server_stream(url: str, tokens: int) -> Stream:
    body = {"prompt": PROMPT, "max_tokens": tokens, "temperature": 0, "seed": SEED,
            "stop": STOP, "stream": True}

    def run() -> Iterator[object]:
        with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=300) as answer:
            for line in answer.iter_lines():
                if line.startswith("data: {") and json.loads(line[6:])["choices"][0]["text"]:
                    yield line

    return run


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def llama_server(model: Path, threads: int) -> Iterator[str | None]:
    if importlib.util.find_spec("uvicorn") is None or importlib.util.find_spec("fastapi") is None:
        yield None
        return
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--n_ctx", str(CTX),
         "--n_threads", str(threads), "--seed", str(SEED), "--host", "127.0.0.1",
         "--port", str(port),
         # By default a new request cuts the one streaming; here they queue instead.
         "--interrupt_requests", "False"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/v1/models", timeout=5).status_code == 200:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("llama_cpp.server did not start")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(30)


# -- measuring ----------------------------------------------------------------------------------

def single(subjects: dict[str, Stream], runs: int) -> dict[str, float]:
    for stream in subjects.values():  # warm up: load the model, fill caches
        rate(stream())
    samples: dict[str, list[float]] = {name: [] for name in subjects}
    for _ in range(runs):
        for name, stream in subjects.items():
            samples[name].append(per_second(rate(stream())))
    return {name: statistics.median(values) for name, values in samples.items()}


def _into(results: list[tuple[int, float, float] | BaseException], stream: Stream) -> None:
    try:
        results.append(rate(stream()))
    except Exception as exc:
        results.append(exc)


def concurrent(stream: Stream, streams: int, runs: int) -> float:
    """Total tokens/s of ``streams`` simultaneous requests (median over runs)."""
    rate(stream())
    totals = []
    for _ in range(runs):
        outcomes: list[tuple[int, float, float] | BaseException] = []
        threads = [threading.Thread(target=_into, args=(outcomes, stream))
                   for _ in range(streams)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        results = [r for r in outcomes if not isinstance(r, BaseException)]
        if len(results) < streams:
            raise RuntimeError(f"a concurrent stream failed: {outcomes}")
        first, last = min(r[1] for r in results), max(r[2] for r in results)
        totals.append(sum(r[0] - 1 for r in results) / (last - first))
    return statistics.median(totals)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--streams", type=int, default=4)
    args = parser.parse_args()
    model = fetch_model()
    with tempfile.TemporaryDirectory() as home:
        write_ollama_model(Path(home) / ".ollama" / "models", model)
        with running_daemon(Path(home), ["--http", "127.0.0.1:0"]) as daemon, \
                llama_server(model, args.threads) as server:
            subjects = {
                "HTTP bridge": http_stream(http_url(daemon), args.tokens, args.threads),
                "msgpack socket": msgpack_stream(daemon.socket, args.tokens, args.threads),
                "llama-cpp-python in process": in_process_stream(model, args.tokens,
                                                                 args.threads),
            }
            if server is not None:
                subjects["llama_cpp.server"] = server_stream(server, args.tokens)
            rates = single(subjects, args.runs)
    print(f"single stream, {args.tokens} tokens, {args.threads} threads, median of {args.runs}:")
    for name, value in rates.items():
        print(f"  {name:<30}{value:>8.1f} tokens/s")
    http = rates["HTTP bridge"]
    for name, target in (("msgpack socket", 0.97), ("llama-cpp-python in process", 0.95),
                         ("llama_cpp.server", None)):
        if name not in rates:
            continue
        ratio = http / rates[name]
        verdict = "" if target is None else \
            f" (target >= {target}: {'met' if ratio >= target else 'NOT met'})"
        print(f"  ratio HTTP / {name}: {ratio:.3f}{verdict}")

    with tempfile.TemporaryDirectory() as home:
        write_ollama_model(Path(home) / ".ollama" / "models", model)
        env = {"OLLAMA_NUM_PARALLEL": str(args.streams)}
        with running_daemon(Path(home), ["--http", "127.0.0.1:0"], env) as daemon, \
                llama_server(model, args.threads) as server:
            ours = concurrent(http_stream(http_url(daemon), args.tokens, args.threads),
                              args.streams, args.runs)
            socket_rate = concurrent(msgpack_stream(daemon.socket, args.tokens, args.threads),
                                     args.streams, args.runs)
            theirs = concurrent(server_stream(server, args.tokens), args.streams, args.runs) \
                if server is not None else None
    print(f"{args.streams} concurrent streams, total tokens/s, median of {args.runs}:")
    print(f"  {'HTTP bridge':<30}{ours:>8.1f} tokens/s")
    print(f"  {'msgpack socket':<30}{socket_rate:>8.1f} tokens/s")
    print(f"  ratio HTTP / msgpack socket: {ours / socket_rate:.3f}")
    if theirs is not None:
        print(f"  {'llama_cpp.server':<30}{theirs:>8.1f} tokens/s")
        print(f"  ratio HTTP / llama_cpp.server: {ours / theirs:.2f}")
    else:
        print("  llama_cpp.server: skipped (pip install 'llama-cpp-python[server]')")


if __name__ == "__main__":
    main()
