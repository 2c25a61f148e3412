"""N simultaneous streams: aggregate tokens/s and first-token times of ollamad against the raw
batched decode and llama-cpp-python's own server, all measured in one run.

    .venv/bin/python -m bench.concurrency [--levels 1,2,4,8] [--tokens 128] [--runs 3] \
        [--threads N] [--ctx 2048]

Subjects, all on the same model, prompt (the same for every stream), temperature 0, threads and
context per sequence:

* ``ollamad``: the daemon with ``OLLAMA_NUM_PARALLEL`` = the top level, so that every stream has
  a slot; each stream is a msgpack connection of its own.
* ``ollamad, default slots``: the daemon as installed (4 slots on a CPU), at the top level only:
  the streams beyond its slots queue.
* ``raw batched decode`` (bench.raw_decode): the ceiling, and the issue's baseline.
* ``llama_cpp.server``: one context of ``--ctx``; one HTTP stream per request (it serves them one
  at a time). Skipped without the ``bench`` extra.

Each run takes the levels in turn and, at each level, the subjects in turn. Every stream's text
is compared with its subject's solo run (temperature 0: they must be identical).
"""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import (
    Sample,
    Server,
    Settings,
    aggregate_rate,
    fetch_model,
    llama_server,
    median,
    model_daemon,
    msgpack_stream,
    ollama_options,
    process_cpu,
    server_stream,
    settle,
    simultaneously,
)
from bench.raw_decode import RawDecoder
from tests.daemon import Daemon
from tests.processes import children

OURS = "ollamad"
OURS_DEFAULT = "ollamad, default slots"
RAW = "raw batched decode"
SERVER = "llama_cpp.server"
Outcomes = list[Sample | Exception]


@dataclass
class Subject:
    """One way of serving ``level`` simultaneous streams, the processes that do the work (their
    CPU seconds so far, by role), and the text of its solo run."""

    serve: Callable[[int], Outcomes]
    levels: Sequence[int]
    cpu: Callable[[], dict[str, float]]
    solo: str = ""


def cpu_of(**pids: int) -> Callable[[], dict[str, float]]:
    """CPU seconds of this process (the clients, or the raw decode), of the processes named, and
    of a daemon's runner children."""
    def read() -> dict[str, float]:
        found = {"bench": process_cpu(os.getpid())}
        for role, pid in pids.items():
            found[role] = process_cpu(pid)
            if role == "daemon":
                found["runner"] = sum(process_cpu(child) for child in children(pid))
        return found

    return read


@dataclass
class Level:
    """What the runs of one subject at one level gave."""

    rates: list[float] = field(default_factory=list)
    first_tokens: list[float] = field(default_factory=list)
    slowest: list[float] = field(default_factory=list)
    streams: int = 0
    failed: list[str] = field(default_factory=list)
    differing: int = 0
    pieces: int = 0
    cpu: dict[str, float] = field(default_factory=dict)

    def add(self, outcomes: Outcomes, solo: str, cpu: dict[str, float]) -> None:
        samples = [o for o in outcomes if isinstance(o, Sample)]
        self.pieces += sum(sample.pieces for sample in samples)
        for role, seconds in cpu.items():
            self.cpu[role] = self.cpu.get(role, 0.0) + seconds
        self.failed.extend(repr(o) for o in outcomes if isinstance(o, Exception))
        self.streams += len(outcomes)
        self.differing += sum(sample.text != solo for sample in samples)
        if len(samples) == len(outcomes):
            self.rates.append(aggregate_rate(samples))
        self.first_tokens.extend(sample.first_token for sample in samples)
        if samples:
            self.slowest.append(max(sample.first_token for sample in samples))

    def summary(self) -> dict[str, Any]:
        return {"tokens_per_s": median(self.rates) if self.rates else None,
                "first_token_median_s": median(self.first_tokens) if self.first_tokens else None,
                "first_token_slowest_s": median(self.slowest) if self.slowest else None,
                "streams": self.streams, "failed": len(self.failed),
                "failures": self.failed[:3], "differing_from_solo": self.differing,
                "cpu_ms_per_token": {role: 1000 * seconds / max(self.pieces, 1)
                                     for role, seconds in self.cpu.items()}}


def daemon_subject(daemon: Daemon, settings: Settings, levels: Sequence[int]) -> Subject:
    stream = msgpack_stream(daemon.socket, ollama_options(settings.tokens, settings.threads,
                                                          settings.ctx))
    assert daemon.proc is not None
    return Subject(lambda n: simultaneously(stream, n), levels, cpu_of(daemon=daemon.proc.pid))


def server_subject(server: Server, settings: Settings, levels: Sequence[int]) -> Subject:
    stream = server_stream(server.url, settings.tokens)
    return Subject(lambda n: simultaneously(stream, n), levels, cpu_of(server=server.pid))


def raw_subject(decoder: RawDecoder, settings: Settings, levels: Sequence[int]) -> Subject:
    return Subject(lambda n: list(decoder.run(n, settings.tokens)), levels, cpu_of())


@contextlib.contextmanager
def subjects(model: Path, settings: Settings,
             levels: Sequence[int]) -> Iterator[dict[str, Subject]]:
    """Every subject, started; stopped on leaving."""
    top = max(levels)
    with contextlib.ExitStack() as stack:
        ours = stack.enter_context(model_daemon(model, env={"OLLAMA_NUM_PARALLEL": str(top)}))
        default = stack.enter_context(model_daemon(model))
        decoder = RawDecoder(model, top, settings.ctx, settings.threads)
        stack.callback(decoder.close)
        found = {OURS: daemon_subject(ours, settings, levels),
                 OURS_DEFAULT: daemon_subject(default, settings, [top]),
                 RAW: raw_subject(decoder, settings, levels)}
        server = stack.enter_context(llama_server(model, settings.threads, settings.ctx))
        if server is not None:
            found[SERVER] = server_subject(server, settings, levels)
        yield found


def solo_text(subject: Subject) -> str:
    """The text of one stream alone; the first of two runs loads the model and warms up."""
    text = ""
    for _ in range(2):
        outcome = subject.serve(1)[0]
        if isinstance(outcome, Exception):
            raise outcome
        text = outcome.text
    return text


def run_levels(found: dict[str, Subject], levels: Sequence[int],
               runs: int) -> dict[str, dict[int, Level]]:
    for subject in found.values():
        subject.solo = solo_text(subject)
    results: dict[str, dict[int, Level]] = {name: {} for name in found}
    for _ in range(runs):
        for level in levels:
            for name, subject in found.items():
                if level in subject.levels:
                    settle()
                    before = subject.cpu()
                    outcomes = subject.serve(level)
                    used = {role: seconds - before.get(role, 0.0)
                            for role, seconds in subject.cpu().items()}
                    results[name].setdefault(level, Level()).add(outcomes, subject.solo, used)
    return results


def measure_concurrency(model: Path, settings: Settings,
                        levels: Sequence[int] = (1, 2, 4, 8)) -> dict[str, Any]:
    with subjects(model, settings, levels) as found:
        results = run_levels(found, levels, settings.runs)
    return {"levels": list(levels),
            "subjects": {name: {str(level): figures.summary()
                                for level, figures in by_level.items()}
                         for name, by_level in results.items()}}


def report(result: dict[str, Any]) -> None:
    print(f"{'subject':<24}{'streams':>8}{'tokens/s':>10}{'first token':>13}{'slowest':>10}"
          f"{'failed':>8}{'differ':>8}  CPU ms per token")
    for name, by_level in result["subjects"].items():
        for level, figures in by_level.items():
            cpu = ", ".join(f"{role} {ms:.2f}" for role, ms in
                            figures["cpu_ms_per_token"].items())
            print(f"{name:<24}{level:>8}{_number(figures['tokens_per_s'], 1):>10}"
                  f"{_number(figures['first_token_median_s'], 3):>12}s"
                  f"{_number(figures['first_token_slowest_s'], 3):>9}s"
                  f"{figures['failed']:>8}{figures['differing_from_solo']:>8}  {cpu}")


def _number(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    Settings.add_arguments(parser, runs=3)
    parser.add_argument("--levels", default="1,2,4,8", help="numbers of simultaneous streams")
    args = parser.parse_args()
    levels = sorted({int(level) for level in args.levels.split(",")})
    report(measure_concurrency(fetch_model(), Settings.from_args(args), levels))


if __name__ == "__main__":
    main()
