"""Every benchmark of issue 7 in one run: a table of ratios against baselines measured in the
same run, with the issue's targets, and a JSON file and a PNG chart in bench/results/.

    .venv/bin/python -m bench.run_all [--tokens 128] [--runs 5] [--threads N] [--ctx 2048] \
        [--requests 1000] [--cold-runs 5]

Sections, each with its own daemon(s) (see each module for the method): bench.single_stream,
bench.concurrency (1/2/4/8 streams against bench.raw_decode and llama_cpp.server),
bench.chat_reuse, bench.activation, bench.memory. The load average is recorded before and after
each section: the figures mean little on a busy machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import activation, chart, chat_reuse, concurrency, memory, single_stream
from bench.common import (
    REPO,
    Settings,
    cpu_count,
    fetch_model,
    load_average,
    machine_busy,
    own_cpu,
)

RESULTS = REPO / "bench" / "results"


@dataclass(frozen=True)
class Row:
    measure: str
    ours: str
    baseline: str
    ratio: float | None
    target: str
    met: bool | None


def timed_section(name: str, run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run a section; note its time, the load average, and the share of the CPUs that processes
    other than this run's took meanwhile (the noise in its figures)."""
    print(f"== {name} (load average {load_average():.2f}) ...", end=" ", flush=True)
    start, load, busy, own = time.perf_counter(), load_average(), machine_busy(), own_cpu()
    result = run()
    seconds = time.perf_counter() - start
    others = (machine_busy() - busy) - (own_cpu() - own)
    result["_section"] = {"seconds": seconds, "load_before": load, "load_after": load_average(),
                          "others_cpu_share": max(others, 0.0) / (seconds * cpu_count())}
    print(f"{seconds:.0f} s, other processes took "
          f"{result['_section']['others_cpu_share']:.0%} of the CPUs", flush=True)
    return result


def run_sections(model: Path, settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    return {
        "single_stream": timed_section("single stream", lambda: single_stream.compare(
            model, settings)),
        "concurrency": timed_section("concurrent streams", lambda: concurrency.
                                     measure_concurrency(model, settings)),
        "chat": timed_section("chat prefix reuse", lambda: chat_reuse.measure_chat(
            model, settings)),
        "activation": timed_section("socket activation", lambda: activation.measure_activation(
            model, args.cold_runs)),
        "memory": timed_section("memory", lambda: memory.measure_memory(model, args.requests)),
    }


# -- the table ----------------------------------------------------------------------------------

def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} tok/s"


def ratio_of(ours: float | None, base: float | None) -> float | None:
    return None if ours is None or not base else ours / base


def single_rows(result: dict[str, Any]) -> list[Row]:
    ours = result["subjects"][single_stream.OURS]
    base = result["subjects"][result["baseline"]]
    delta = result["first_token_delta_s"]
    return [
        Row("1 stream tokens/s", rate(ours["tokens_per_s"]),
            f"{rate(base['tokens_per_s'])} ({result['baseline']})", result["ratio"], ">= 0.95",
            result["ratio"] >= 0.95),
        Row("1 stream first token", ms(ours["first_token_s"]),
            f"{ms(base['first_token_s'])} ({result['baseline']})",
            ratio_of(ours["first_token_s"], base["first_token_s"]),
            "<= +10 ms (bench/single_stream.py)", delta <= 0.010),
    ]


def concurrency_rows(result: dict[str, Any]) -> list[Row]:
    subjects = result["subjects"]
    ours, raw = subjects[concurrency.OURS], subjects[concurrency.RAW]
    server = subjects.get(concurrency.SERVER, {})
    solo_first = ours["1"]["first_token_median_s"]
    rows = []
    for level in map(str, result["levels"]):
        mine, ceiling = ours[level]["tokens_per_s"], raw[level]["tokens_per_s"]
        ratio = ratio_of(mine, ceiling)
        target = ">= 0.9" if level in ("4", "8") else ""
        rows.append(Row(f"{level} streams tokens/s vs raw", rate(mine),
                        f"{rate(ceiling)} (raw batched decode)", ratio, target,
                        None if not target else ratio is not None and ratio >= 0.9))
        if level in server:
            theirs = server[level]["tokens_per_s"]
            rows.append(Row(f"{level} streams tokens/s vs server", rate(mine),
                            f"{rate(theirs)} (llama_cpp.server)", ratio_of(mine, theirs), "",
                            None))
        slowest = ours[level]["first_token_slowest_s"]
        if level != "1":
            rows.append(Row(f"{level} streams slowest first token", ms(slowest),
                            f"{ms(solo_first)} (ollamad, 1 stream)", slowest / solo_first,
                            "<= 3.0", slowest <= 3 * solo_first))
    rows.append(identity_row(ours))
    rows.extend(default_slots_rows(subjects, str(max(result["levels"]))))
    return rows


def identity_row(ours: dict[str, Any]) -> Row:
    streams = sum(figures["streams"] for figures in ours.values())
    bad = sum(figures["failed"] + figures["differing_from_solo"] for figures in ours.values())
    return Row("streams complete, = solo text", f"{streams - bad}/{streams}", "solo run", None,
               "all", bad == 0)


def default_slots_rows(subjects: dict[str, Any], top: str) -> list[Row]:
    default = subjects.get(concurrency.OURS_DEFAULT, {}).get(top)
    if default is None:
        return []
    ceiling = subjects[concurrency.RAW][top]["tokens_per_s"]
    return [Row(f"{top} streams, default slots", rate(default["tokens_per_s"]),
                f"{rate(ceiling)} (raw batched decode)",
                ratio_of(default["tokens_per_s"], ceiling), "(info)", None)]


def chat_rows(result: dict[str, Any]) -> list[Row]:
    kinds = result["kinds"]
    turn1, turn2, cold = kinds["turn 1"], kinds["turn 2"], kinds["turn 2, no reuse"]
    alone = result["in_process"]
    off = result[chat_reuse.FLASH_OFF]
    return [
        Row(f"chat turn 2 first token ({result['history_tokens']}-token history)",
            ms(turn2["first_token_s"]), f"{ms(turn1['first_token_s'])} (turn 1)",
            result["ratio"], "<= 1.2", result["ratio"] <= 1.2),
        Row(f"the same with {chat_reuse.FLASH_OFF}",
            ms(off["kinds"]["turn 2"]["first_token_s"]),
            f"{ms(off['kinds']['turn 1']['first_token_s'])} (turn 1)",
            off["ratio"], "<= 1.2", off["ratio"] <= 1.2),
        *(Row(f"chat turn 2/1 vs llama.cpp alone, {name[:-10]}", f"{result['ratio']:.2f}x",
              f"{alone[name]['ratio']:.2f}x ({alone['new']} tokens after {alone['cached']} "
              f"/ after {chat_reuse.SHORT_PREFIX})", result["ratio"] / alone[name]["ratio"],
              "(info)", None) for name in ("flash attention", "no flash attention")),
        Row("chat turn 2 prompt tokens evaluated", f"{turn2['prompt_eval_count']:.0f}",
            f"{cold['prompt_eval_count']:.0f} (same turn, nothing cached)",
            turn2["prompt_eval_count"] / cold["prompt_eval_count"], "(info)", None),
        Row("chat turn 2 first token, nothing cached", ms(cold["first_token_s"]),
            f"{ms(turn1['first_token_s'])} (turn 1)",
            cold["first_token_s"] / turn1["first_token_s"], "(info)", None),
    ]


def activation_rows(result: dict[str, Any]) -> list[Row]:
    cold = result["cold, connect to answer"]["median_s"]
    cold_cli = result["cold, ollamactl list"]["median_s"]
    warm = result["warm, connect to answer"]["median_s"]
    warm_cli = result["warm, ollamactl list"]["median_s"]
    python = result["python -c pass"]["median_s"]
    return [
        Row("cold list, connect to answer", ms(cold), f"{ms(warm)} (warm)", cold / warm,
            "<= 500 ms", cold <= 0.5),
        Row("cold ollamactl list (process)", ms(cold_cli), f"{ms(warm_cli)} (warm)",
            cold_cli / warm_cli, "<= 500 ms", cold_cli <= 0.5),
        Row("warm ollamactl list (process)", ms(warm_cli), f"{ms(python)} (python -c pass)",
            warm_cli / python, "<= 100 ms", warm_cli <= 0.1),
    ]


def memory_rows(result: dict[str, Any]) -> list[Row]:
    return [
        Row("daemon idle RSS", f"{result['idle_mb']:.1f} MB", "", None, "<= 80 MB",
            result["idle_mb"] <= 80),
        Row(f"daemon RSS after {result['requests']} requests", f"{result['after_mb']:.1f} MB",
            f"{result['warm_up_mb']:.1f} MB (after {result['warm_up_requests']})",
            None, f"flat (<= +{memory.FLAT_MB:.0f} MB)", result["flat"]),
    ]


def table(results: dict[str, Any]) -> list[Row]:
    return [*single_rows(results["single_stream"]), *concurrency_rows(results["concurrency"]),
            *chat_rows(results["chat"]), *activation_rows(results["activation"]),
            *memory_rows(results["memory"])]


def print_table(rows: list[Row]) -> None:
    widths = (46, 14, 42, 8, 36)
    header = ("measure", "ollamad", "baseline", "ratio", "target")
    print("".join(f"{title:<{width}}" for title, width in zip(header, widths, strict=True))
          + "met")
    for row in rows:
        ratio = "" if row.ratio is None else f"{row.ratio:.2f}"
        verdict = {True: "yes", False: "NO", None: ""}[row.met]
        cells = (row.measure, row.ours, row.baseline, ratio, row.target)
        print("".join(f"{cell:<{width}}" for cell, width in zip(cells, widths, strict=True))
              + verdict)


# -- the run ------------------------------------------------------------------------------------

def machine(settings: Settings) -> dict[str, Any]:
    from importlib.metadata import version

    return {"cpus": cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(),
            "llama_cpp_python": version("llama-cpp-python"), "settings": asdict(settings)}


def save(path: Path, results: dict[str, Any], settings: Settings,
         rows: list[Row] | None = None) -> None:
    data = {"machine": machine(settings), "results": results,
            "table": [asdict(row) for row in rows or []]}
    path.write_text(json.dumps(data, indent=2) + "\n")


def draw(path: Path, results: dict[str, Any], settings: Settings) -> None:
    single = results["single_stream"]
    others = results["concurrency"]["_section"]["others_cpu_share"]
    chart.draw(path, results["concurrency"],
               single["subjects"][single["baseline"]]["tokens_per_s"],
               f"SmolLM2-135M Q4_1, {settings.tokens} tokens per stream, {settings.threads} "
               f"threads, {cpu_count()} CPUs, other processes {others:.0%} of the CPUs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    Settings.add_arguments(parser, runs=5)
    parser.add_argument("--requests", type=int, default=1000, help="for the memory section")
    parser.add_argument("--cold-runs", type=int, default=5, help="socket-activated cold starts")
    args = parser.parse_args()
    settings = Settings.from_args(args)
    start = time.perf_counter()
    results = run_sections(fetch_model(), settings, args)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    json_path, png_path = RESULTS / f"run-{stamp}.json", RESULTS / f"run-{stamp}.png"
    save(json_path, results, settings)  # the figures are kept even if the table fails
    rows = table(results)
    print()
    print_table(rows)
    save(json_path, results, settings, rows)
    draw(png_path, results, settings)
    shares = [section["_section"]["others_cpu_share"] for section in results.values()]
    print(f"\n{time.perf_counter() - start:.0f} s; other processes took {min(shares):.0%}-"
          f"{max(shares):.0%} of the CPUs by section; load average now {load_average():.2f}; "
          f"wrote {json_path.relative_to(REPO)} and {png_path.relative_to(REPO)}")


if __name__ == "__main__":
    main()
