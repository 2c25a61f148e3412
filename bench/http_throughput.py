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
import json
from collections.abc import Iterator

import httpx

from bench.common import (
    PROMPT,
    Stream,
    aggregate_rate,
    alternate,
    completed,
    fetch_model,
    in_process_llama,
    in_process_stream,
    llama_server,
    measure,
    median,
    model_home,
    msgpack_stream,
    ollama_options,
    server_stream,
    simultaneously,
)
from tests.daemon import running_daemon
from tests.http_daemon import MODEL, http_url

CTX = 1024


def http_stream(url: str, tokens: int, threads: int) -> Stream:
    body = {"model": MODEL, "prompt": PROMPT, "raw": True,
            "options": ollama_options(tokens, threads, CTX)}

    def run() -> Iterator[str]:
        with httpx.stream("POST", f"{url}/api/generate", json=body, timeout=300) as answer:
            for line in answer.iter_lines():
                piece = json.loads(line).get("response") if line else None
                if piece:
                    yield piece

    return run


def single(subjects: dict[str, Stream], runs: int) -> dict[str, float]:
    """Median tokens/s of each subject, the subjects taking turns (after a warm-up each)."""
    return {name: median(sample.rate for sample in samples)
            for name, samples in alternate(subjects, runs).items()}


def concurrent(stream: Stream, streams: int, runs: int) -> float:
    """Total tokens/s of ``streams`` simultaneous requests (median over runs)."""
    measure(stream)
    return median(aggregate_rate(completed(simultaneously(stream, streams)))
                  for _ in range(runs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--streams", type=int, default=4)
    args = parser.parse_args()
    model = fetch_model()
    options = ollama_options(args.tokens, args.threads, CTX)
    with model_home(model) as home, \
            running_daemon(home, ["--http", "127.0.0.1:0"]) as daemon, \
            llama_server(model, args.threads, CTX) as server:
        subjects = {
            "HTTP bridge": http_stream(http_url(daemon), args.tokens, args.threads),
            "msgpack socket": msgpack_stream(daemon.socket, options),
            "llama-cpp-python in process": in_process_stream(
                in_process_llama(model, args.threads, CTX), args.tokens),
        }
        if server is not None:
            subjects["llama_cpp.server"] = server_stream(server.url, args.tokens)
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

    env = {"OLLAMA_NUM_PARALLEL": str(args.streams)}
    with model_home(model) as home, \
            running_daemon(home, ["--http", "127.0.0.1:0"], env) as daemon, \
            llama_server(model, args.threads, CTX) as server:
        ours = concurrent(http_stream(http_url(daemon), args.tokens, args.threads),
                          args.streams, args.runs)
        socket_rate = concurrent(msgpack_stream(daemon.socket, options), args.streams,
                                 args.runs)
        theirs = concurrent(server_stream(server.url, args.tokens), args.streams, args.runs) \
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
