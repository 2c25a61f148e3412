"""One stream: tokens/s and time to first token through the daemon vs llama-cpp-python in-process.

    .venv/bin/python -m bench.single_stream [--tokens 128] [--runs 3] [--threads N]

Same model (SmolLM2-135M Q4_1), prompt, seed, temperature 0, threads and token count on both
sides; the runs alternate so that machine noise falls on both alike. Prints the medians and the
ratios (daemon / in-process); targets: tokens/s ratio >= 0.95, first token at most 10 ms later.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ollamactl.client import Client
from tests.daemon import running_daemon
from tests.ollama_layout import write_ollama_model

# Already in the model's chat format, sent raw to both sides so that they see the same tokens.
PROMPT = ("<|im_start|>user\nWrite a long story about a lighthouse keeper and the sea."
          "<|im_end|>\n<|im_start|>assistant\n")
REPO = Path(__file__).resolve().parent.parent


def model_path() -> Path:
    out = subprocess.run([str(REPO / "scripts" / "fetch-test-model")], check=True,
                         capture_output=True, text=True, env=dict(os.environ,
                                                                   PYTHON=sys.executable))
    return Path(out.stdout.strip().splitlines()[-1])


def through_daemon(client: Client, tokens: int, threads: int) -> tuple[float, float, int]:
    """(tokens/s, seconds to first token, tokens) for one generate over the socket."""
    start = time.perf_counter()
    first = 0.0
    final: dict = {}
    for event in client.stream("generate", {
            "model": "smollm2:135m", "prompt": PROMPT, "raw": True,
            "options": {"temperature": 0, "seed": 1, "num_predict": tokens,
                        "num_thread": threads, "num_ctx": 2048}}):
        if not first:
            first = time.perf_counter() - start
        if event.get("done"):
            final = event
    return final["eval_count"] / (final["eval_duration"] / 1e9), first, final["eval_count"]


def in_process(llama: object, tokens: int) -> tuple[float, float, int]:
    start = time.perf_counter()
    stamps = []
    for _ in llama.create_completion(PROMPT, max_tokens=tokens, temperature=0,  # type: ignore[attr-defined]
                                     seed=1, stream=True):
        stamps.append(time.perf_counter())
    # The same measure the runner reports: tokens after the first over the time they took.
    rate = (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else 0.0
    return rate, stamps[0] - start, len(stamps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    args = parser.parse_args()
    gguf = model_path()

    from llama_cpp import Llama

    llama = Llama(str(gguf), n_ctx=2048, n_threads=args.threads,
                  n_threads_batch=args.threads, seed=1, verbose=False)
    ours: list[tuple[float, float, int]] = []
    theirs: list[tuple[float, float, int]] = []
    with tempfile.TemporaryDirectory() as home:
        write_ollama_model(Path(home) / ".ollama" / "models", gguf)
        with running_daemon(Path(home), ["--http", "none"]) as daemon, \
                Client(daemon.socket) as client:
            through_daemon(client, 8, args.threads)  # load the model; not measured
            in_process(llama, 8)
            for _ in range(args.runs):
                ours.append(through_daemon(client, args.tokens, args.threads))
                theirs.append(in_process(llama, args.tokens))
    rate_ours = statistics.median(r for r, _, _ in ours)
    rate_theirs = statistics.median(r for r, _, _ in theirs)
    ttft_ours = statistics.median(t for _, t, _ in ours)
    ttft_theirs = statistics.median(t for _, t, _ in theirs)
    print(f"{'':28}{'tokens/s':>10}{'first token':>14}{'tokens':>8}")
    print(f"{'ollamad (msgpack socket)':28}{rate_ours:>10.1f}{ttft_ours * 1000:>12.1f}ms"
          f"{ours[0][2]:>8}")
    print(f"{'llama-cpp-python in-process':28}{rate_theirs:>10.1f}{ttft_theirs * 1000:>12.1f}ms"
          f"{theirs[0][2]:>8}")
    print(f"tokens/s ratio: {rate_ours / rate_theirs:.3f} (target >= 0.95); first token "
          f"{(ttft_ours - ttft_theirs) * 1000:+.1f} ms (target <= +10 ms); threads {args.threads}")


if __name__ == "__main__":
    main()
