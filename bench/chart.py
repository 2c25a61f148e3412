"""The PNG of bench.run_all: aggregate tokens/s by number of simultaneous streams."""

from __future__ import annotations

from pathlib import Path
from typing import Any

STYLES = {"ollamad": "o-", "ollamad, default slots": "s", "raw batched decode": "^--",
          "llama_cpp.server": "v-."}


def series(concurrency: dict[str, Any]) -> dict[str, tuple[list[int], list[float]]]:
    """Per subject: the levels it was measured at and its tokens/s there."""
    out = {}
    for name, by_level in concurrency["subjects"].items():
        points = [(int(level), figures["tokens_per_s"]) for level, figures in by_level.items()
                  if figures["tokens_per_s"] is not None]
        out[name] = ([level for level, _ in points], [rate for _, rate in points])
    return out


def draw(path: Path, concurrency: dict[str, Any], in_process: float, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    for name, (levels, rates) in series(concurrency).items():
        axes.plot(levels, rates, STYLES.get(name, "x-"), label=name)
    axes.plot([1], [in_process], "D", label="llama-cpp-python in-process (1 stream)")
    axes.set_xscale("log", base=2)
    axes.set_xticks(concurrency["levels"], [str(n) for n in concurrency["levels"]])
    axes.set_xlabel("simultaneous streams")
    axes.set_ylabel("aggregate tokens/s")
    axes.set_ylim(bottom=0)
    axes.set_title(title, fontsize=9)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
