"""Chat turn 2 with a ~1,000-token history against turn 1: prefix reuse in the runner's slots.

    .venv/bin/python -m bench.chat_reuse [--runs 3] [--history 960] [--threads N] [--ctx 2048]

Turn 1 is a conversation's first request (a short question); its time to first token is what a
user waits for at the start. The long conversation's turn 1 asks for a story of ``--history``
tokens; turn 2 sends that history back with a short follow-up, as every chat client does. With
the history still cached in a slot, turn 2 evaluates only the follow-up, so its first token
should come about as soon as turn 1's (target: at most 1.2x). The control is the same turn 2
with another system prompt: nothing reusable, the whole history evaluated. The baseline for
the ratio is llama.cpp in-process: the same number of new tokens evaluated after the history
cached against after a short prefix, with flash attention on (as the runner has it) and off.
The whole conversation runs twice: on a default daemon and on one with
``OLLAMA_FLASH_ATTENTION=0``.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import (
    MODEL,
    SEED,
    Settings,
    fetch_model,
    in_process_llama,
    median,
    model_daemon,
)
from ollamactl.client import Client

STORY = "Write a long story about a lighthouse keeper and the sea."
FIRST_QUESTIONS = ["What is the capital of France?", "Name three colours of the rainbow.",
                   "How many legs does a spider have?", "What is two plus two?",
                   "Which planet is closest to the sun?"]
FOLLOW_UPS = ["Summarize the story in one sentence.", "Who is the main character?",
              "Where does the story take place?", "How does the story end?",
              "Give the story a title."]
SHORT_REPLY = 16
SHORT_PREFIX = 14  # the system prompt's tokens that a turn 1 finds cached in another slot
Message = dict[str, str]


@dataclass(frozen=True)
class Turn:
    first_token: float
    reply: str
    prompt_eval_count: int
    eval_count: int


def chat(socket: Path, messages: list[Message], settings: Settings, tokens: int) -> Turn:
    """One chat request on a connection of its own, timed from the send to the first content."""
    options = {"temperature": 0, "seed": SEED, "num_predict": tokens,
               "num_thread": settings.threads, "num_ctx": settings.ctx}
    start = time.perf_counter()
    first, pieces, final = 0.0, [], {}
    with Client(socket) as client:
        for event in client.stream("chat", {"model": MODEL, "messages": messages,
                                            "options": options}):
            piece = (event.get("message") or {}).get("content")
            if piece:
                first = first or time.perf_counter() - start
                pieces.append(piece)
            if event.get("done"):
                final = event
    return Turn(first, "".join(pieces), final.get("prompt_eval_count", 0),
                final.get("eval_count", 0))


def user(text: str) -> Message:
    return {"role": "user", "content": text}


def conversation(socket: Path, settings: Settings, history: int,
                 runs: int) -> dict[str, list[Turn]]:
    turns: dict[str, list[Turn]] = {"turn 1": [], "turn 2": [], "turn 2, no reuse": []}
    chat(socket, [user("Hello")], settings, 1)  # loads the model
    for question in FIRST_QUESTIONS[:runs]:
        turns["turn 1"].append(chat(socket, [user(question)], settings, SHORT_REPLY))
    opening = chat(socket, [user(STORY)], settings, history)
    turns["turn 1"].append(opening)
    past = [user(STORY), {"role": "assistant", "content": opening.reply}]
    for follow_up in FOLLOW_UPS[:runs]:
        turns["turn 2"].append(chat(socket, [*past, user(follow_up)], settings, SHORT_REPLY))
    for index, follow_up in enumerate(FOLLOW_UPS[:runs]):
        other = {"role": "system", "content": f"Du bist ein hilfreicher Assistent ({index})."}
        turns["turn 2, no reuse"].append(
            chat(socket, [other, *past, user(follow_up)], settings, SHORT_REPLY))
    return turns


def in_process_ratio(model: Path, settings: Settings, cached: int, new: int, runs: int,
                     flash_attn: bool) -> dict[str, float]:
    """llama.cpp alone: the time to evaluate ``new`` tokens after ``cached`` tokens against after
    a short prefix (a turn 1, whose system prompt other slots share)."""
    llama = in_process_llama(model, settings.threads, settings.ctx, flash_attn)
    text = (STORY + " ") * (cached + new)
    tokens = llama.tokenize(text.encode(), add_bos=False)[:cached + new]

    def evaluation(prefix: int) -> float:
        llama.reset()  # the next eval drops the cache from the position it starts at
        llama.eval(tokens[:prefix])
        start = time.perf_counter()
        llama.eval(tokens[prefix:prefix + new])
        return time.perf_counter() - start

    short = median(evaluation(SHORT_PREFIX) for _ in range(runs))
    long = median(evaluation(cached) for _ in range(runs))
    return {"short_s": short, "long_s": long, "ratio": long / short}


FLASH_OFF = "OLLAMA_FLASH_ATTENTION=0"


def summarize(turns: dict[str, list[Turn]]) -> dict[str, Any]:
    kinds = {kind: {"first_token_s": median(t.first_token for t in samples),
                    "prompt_eval_count": median(t.prompt_eval_count for t in samples)}
             for kind, samples in turns.items()}
    opening = turns["turn 1"][-1]
    return {"kinds": kinds,
            "history_tokens": opening.prompt_eval_count + opening.eval_count,
            "ratio": kinds["turn 2"]["first_token_s"] / kinds["turn 1"]["first_token_s"]}


def measure_chat(model: Path, settings: Settings, history: int = 960) -> dict[str, Any]:
    with model_daemon(model) as daemon:
        result = summarize(conversation(daemon.socket, settings, history, settings.runs))
    name, value = FLASH_OFF.split("=")
    with model_daemon(model, env={name: value}) as daemon:
        result[FLASH_OFF] = summarize(conversation(daemon.socket, settings, history,
                                                   settings.runs))
    kinds = result["kinds"]
    new = int(kinds["turn 2"]["prompt_eval_count"])
    cached = int(kinds["turn 2, no reuse"]["prompt_eval_count"]) - new
    return {**result,
            "in_process": {"cached": cached, "new": new, **{
                name: in_process_ratio(model, settings, cached, new, settings.runs, flash)
                for name, flash in (("flash attention", True), ("no flash attention", False))}}}


def report(result: dict[str, Any]) -> None:
    print(f"history: {result['history_tokens']} tokens")
    print(f"{'':20}{'first token':>14}{'prompt tokens evaluated':>26}")
    for kind, figures in result["kinds"].items():
        print(f"{kind:20}{figures['first_token_s'] * 1000:>12.1f}ms"
              f"{figures['prompt_eval_count']:>26.0f}")
    print(f"turn 2 / turn 1 first token: {result['ratio']:.2f} (target <= 1.2)")
    off = result[FLASH_OFF]
    print(f"with {FLASH_OFF}: turn 1 {off['kinds']['turn 1']['first_token_s'] * 1000:.1f} ms, "
          f"turn 2 {off['kinds']['turn 2']['first_token_s'] * 1000:.1f} ms: "
          f"{off['ratio']:.2f}")
    alone = result["in_process"]
    for name in ("flash attention", "no flash attention"):
        figures = alone[name]
        print(f"llama.cpp in-process, {name}: {alone['new']} tokens after {alone['cached']} "
              f"cached {figures['long_s'] * 1000:.1f} ms, after {SHORT_PREFIX} "
              f"{figures['short_s'] * 1000:.1f} ms: {figures['ratio']:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    Settings.add_arguments(parser, runs=3)
    parser.add_argument("--history", type=int, default=960,
                        help="tokens of the story that makes the history")
    args = parser.parse_args()
    report(measure_chat(fetch_model(), Settings.from_args(args), args.history))


if __name__ == "__main__":
    main()
