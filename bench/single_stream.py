"""One stream: tokens/s and time to first token through the daemon vs llama-cpp-python in-process.

    .venv/bin/python -m bench.single_stream [--tokens 128] [--runs 3] [--threads N] [--ctx 2048]

Same model (SmolLM2-135M Q4_1), prompt, seed, temperature 0, threads, context and token count on
both sides; the runs alternate so that machine noise falls on both alike. In-process runs twice,
with flash attention off (llama-cpp-python's default) and on; the baseline is the faster of the
two, the best setting for this hardware. Rates are as the client sees them (bench.common).
Prints the medians and the ratios (daemon / in-process); targets: tokens/s ratio >= 0.95, first
token at most 10 ms later.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from bench.common import (
    Sample,
    Settings,
    Stream,
    alternate,
    fetch_model,
    in_process_llama,
    in_process_stream,
    median,
    model_daemon,
    msgpack_stream,
    ollama_options,
)
from tests.daemon import Daemon

OURS = "ollamad"
IN_PROCESS = "in-process"
IN_PROCESS_FLASH = "in-process, flash attention"


def through_daemon(daemon: Daemon, settings: Settings, tokens: int | None = None) -> Stream:
    """One raw generate over the daemon's socket (the daemon loads the model on the first)."""
    return msgpack_stream(daemon.socket, ollama_options(tokens or settings.tokens,
                                                        settings.threads, settings.ctx))


def in_process(model: Path, settings: Settings, flash_attn: bool) -> Stream:
    return in_process_stream(in_process_llama(model, settings.threads, settings.ctx, flash_attn),
                             settings.tokens)


def summary(samples: list[Sample]) -> dict[str, float]:
    return {"tokens_per_s": median(s.rate for s in samples),
            "first_token_s": median(s.first_token for s in samples),
            "pieces": median(s.pieces for s in samples)}


def compare(model: Path, settings: Settings) -> dict[str, Any]:
    """Medians per subject, and which in-process setting is the baseline."""
    with model_daemon(model) as daemon:
        subjects = {OURS: through_daemon(daemon, settings),
                    IN_PROCESS: in_process(model, settings, flash_attn=False),
                    IN_PROCESS_FLASH: in_process(model, settings, flash_attn=True)}
        results = {name: summary(samples)
                   for name, samples in alternate(subjects, settings.runs).items()}
    baseline = max((IN_PROCESS, IN_PROCESS_FLASH), key=lambda n: results[n]["tokens_per_s"])
    return {"subjects": results, "baseline": baseline,
            "ratio": results[OURS]["tokens_per_s"] / results[baseline]["tokens_per_s"],
            "first_token_delta_s": (results[OURS]["first_token_s"]
                                    - results[baseline]["first_token_s"])}


def report(result: dict[str, Any]) -> None:
    print(f"{'':30}{'tokens/s':>10}{'first token':>14}{'pieces':>8}")
    for name, figures in result["subjects"].items():
        print(f"{name:30}{figures['tokens_per_s']:>10.1f}{figures['first_token_s'] * 1000:>12.1f}"
              f"ms{figures['pieces']:>8.0f}")
    print(f"tokens/s ratio ollamad / {result['baseline']}: {result['ratio']:.3f} (target >= 0.95); "
          f"first token {result['first_token_delta_s'] * 1000:+.1f} ms (target <= +10 ms)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    Settings.add_arguments(parser, runs=3)
    settings = Settings.from_args(parser.parse_args())
    report(compare(fetch_model(), settings))


if __name__ == "__main__":
    main()
