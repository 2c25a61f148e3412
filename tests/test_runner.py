"""The runner child and its trio handle, with the real SmolLM2 model and real processes."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from ollamad.errors import BadRequest
from ollamad.protocol import ClientConnection, ServerHello
from ollamad.runner.engine import common_prefix
from ollamad.runner.handle import LoadOptions, Runner, RunnerError
from ollamad.runner.textstream import TextStream
from tests.processes import children, wait_gone

CHAT = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
FRANCE = CHAT.format("What is the capital of France?")
GREEDY = {"temperature": 0}
# How long a test waits for a runner process to answer.
EXIT_TIMEOUT = 30
# No test here takes more than a few seconds; a hung runner must fail the test, not stall the run.
TEST_DEADLINE = 60


def bounded(test: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    @functools.wraps(test)
    async def run(*args: Any, **kwargs: Any) -> None:
        with trio.fail_after(TEST_DEADLINE):
            await test(*args, **kwargs)
    return run


async def start(nursery: trio.Nursery, model: Path, **options: Any) -> Runner:
    # One llama thread: with two on a busy two-core machine, each decode waits on the slower.
    load = LoadOptions(**{"num_ctx": 512, "num_thread": 1, **options})
    return await Runner.start(nursery, model, load)


@pytest.fixture
async def runner(nursery: trio.Nursery, smollm2_gguf: Path) -> AsyncIterator[Runner]:
    runner = await start(nursery, smollm2_gguf)
    yield runner
    await runner.stop()


async def complete(runner: Runner, prompt: str, **args: Any) -> tuple[str, dict[str, Any]]:
    """The whole answer and the final event."""
    pieces = []
    final: dict[str, Any] = {}
    async for event in runner.completion({"prompt": prompt, **args}):
        if "content" in event:
            pieces.append(event["content"])
        else:
            final = event
    return "".join(pieces), final


# -- text streaming (pure) ----------------------------------------------------------------------


def test_text_stream_never_splits_a_character() -> None:
    stream = TextStream([])
    euro = "€".encode()
    assert stream.feed(b"price: " + euro[:1]) == "price: "
    assert stream.feed(euro[1:]) == "€"
    assert stream.feed(euro[:2]) == ""
    assert stream.flush() == ""


def test_text_stream_holds_back_and_cuts_stop_sequences() -> None:
    stream = TextStream(["</end>", "STOP"])
    assert stream.feed(b"hello </") == "hello "
    assert stream.feed(b"en") == ""
    assert stream.feed(b"dless") == "</endless"
    assert stream.feed(b" S") == " "
    assert stream.feed(b"TOP and more") == ""
    assert stream.stopped
    assert stream.feed(b"ignored") == ""


def test_text_stream_releases_held_text_at_the_end() -> None:
    stream = TextStream(["###"])
    assert stream.feed(b"a #") == "a "
    assert stream.flush() == "#"
    assert stream.sent_bytes == 3


# -- the runner ---------------------------------------------------------------------------------


@bounded
async def test_load_reports_progress_and_answers_greedily(nursery: trio.Nursery,
                                                          smollm2_gguf: Path) -> None:
    progress: list[float] = []
    runner = await Runner.start(nursery, smollm2_gguf, LoadOptions(num_ctx=512),
                                on_progress=progress.append)
    try:
        assert progress and progress[-1] == 1.0
        assert runner.alive and runner.options.num_ctx == 512
        info = runner.info
        assert (info["status"], info["n_ctx_per_slot"], info["n_embd"]) == ("ready", 512, 576)
        assert info["num_thread"] == len(os.sched_getaffinity(0))
        assert info["n_ctx_train"] == 8192 and info["bos"] is False
        health = await runner.health()
        assert (health["status"], health["slots"], health["busy"]) == ("ready", 1, 0)

        text, final = await complete(runner, FRANCE, options=GREEDY)
        assert "Paris" in text
        assert final["done"] is True and final["done_reason"] == "stop"
        assert final["prompt_eval_count"] == len(await runner.tokenize(FRANCE))
        assert final["eval_count"] > 0 and final["eval_duration"] > 0
        assert final["prompt_eval_duration"] > 0
        assert "context" not in final
    finally:
        await runner.stop()
    assert not runner.alive


@bounded
async def test_same_seed_same_text(runner: Runner) -> None:
    prompt = CHAT.format("Tell me a short story about a cat.")
    options = {"temperature": 0.8, "seed": 42, "num_predict": 24}
    first, _ = await complete(runner, prompt, options=options)
    second, _ = await complete(runner, prompt, options=options)
    assert first == second and first


@bounded
async def test_stop_sequence_cuts_the_answer(runner: Runner) -> None:
    whole, _ = await complete(runner, FRANCE, options=GREEDY)
    assert "Paris" in whole
    text, final = await complete(runner, FRANCE, options={**GREEDY, "stop": ["Paris"]},
                                 return_context=True)
    assert text == whole[:whole.index("Paris")]
    assert final["done_reason"] == "stop"
    # The context ends with the answer's tokens before the stop sequence.
    assert await runner.detokenize(final["context"]) == FRANCE + text.rstrip()


@bounded
async def test_num_predict_ends_with_length(runner: Runner) -> None:
    text, final = await complete(runner, FRANCE, options={**GREEDY, "num_predict": 3})
    assert (final["done_reason"], final["eval_count"]) == ("length", 3)
    assert text


@bounded
async def test_format_json_gives_json(runner: Runner) -> None:
    prompt = CHAT.format('Is Paris in France? Answer with {"answer": true} or {"answer": false}.')
    text, final = await complete(runner, prompt, format="json",
                                 options={**GREEDY, "num_predict": 128, "repeat_penalty": 1.3})
    assert final["done_reason"] == "stop"
    assert isinstance(json.loads(text), dict)


@bounded
async def test_format_schema_is_followed(runner: Runner) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
        "required": ["city", "population"],
    }
    prompt = CHAT.format("What is the largest city in France, and how many people live there?")
    text, final = await complete(runner, prompt, format=schema,
                                 options={**GREEDY, "num_predict": 128})
    assert final["done_reason"] == "stop"
    answer = json.loads(text)
    assert set(answer) == {"city", "population"}
    assert isinstance(answer["city"], str) and isinstance(answer["population"], int)


@bounded
async def test_invalid_format_and_options_are_bad_requests(runner: Runner) -> None:
    with pytest.raises(BadRequest, match="invalid format"):
        await complete(runner, FRANCE, format="yaml")
    with pytest.raises(BadRequest, match='option "temperature" must be of type float32'):
        await complete(runner, FRANCE, options={"temperature": "hot"})
    with pytest.raises(BadRequest, match="invalid token"):
        async for _ in runner.completion({"tokens": [1, 10**9]}):
            pass


@bounded
async def test_embedding(runner: Runner) -> None:
    result = await runner.embed("The sky is blue.")
    assert len(result["embedding"]) == runner.info["n_embd"]
    assert result["prompt_eval_count"] == len(await runner.tokenize("The sky is blue."))
    assert result == await runner.embed("The sky is blue.")
    assert result["embedding"] != (await runner.embed("Bananas are yellow."))["embedding"]

    too_long = "word " * 600
    with pytest.raises(BadRequest, match=r"^the input length exceeds the context length$"):
        await runner.embed(too_long, truncate=False)
    truncated = await runner.embed(too_long)
    assert truncated["prompt_eval_count"] == 512


@bounded
async def test_tokenize_round_trip(runner: Runner) -> None:
    text = "Hello, world! Ünïcödé and <|im_start|> too."
    tokens = await runner.tokenize(text)
    assert tokens and all(isinstance(t, int) for t in tokens)
    assert await runner.detokenize(tokens) == text


@bounded
async def test_next_turn_evaluates_only_new_tokens(runner: Runner) -> None:
    answer, first = await complete(runner, FRANCE, options={**GREEDY, "num_predict": 4},
                                   return_context=True)
    assert first["done_reason"] == "length"
    assert first["prompt_eval_count"] == len(await runner.tokenize(FRANCE))
    follow_up = FRANCE + answer + "<|im_end|>\n" + CHAT.format("And of Germany?")
    _, second = await complete(runner, follow_up, options={**GREEDY, "num_predict": 4})
    tokens = await runner.tokenize(follow_up)
    # The cache holds the first prompt and the answer but its last token, never decoded.
    cached = first["context"][:-1]
    assert tokens[:len(cached)] == cached
    assert second["prompt_eval_count"] == len(tokens) - len(cached)
    assert second["prompt_cached"] == len(cached)


@bounded
async def test_parallel_streams_match_their_solo_answers(nursery: trio.Nursery,
                                                         smollm2_gguf: Path) -> None:
    runner = await start(nursery, smollm2_gguf, parallel=4)
    # One more question than slots: the last one waits for a slot to free.
    questions = ["What is the capital of France?", "Name three colours.",
                 "Write a haiku about the sea.", "What is two plus two?", "Who wrote Hamlet?"]
    options = {**GREEDY, "num_predict": 40}
    try:
        solo = [(await complete(runner, CHAT.format(q), options=options))[0] for q in questions]
        together: dict[int, str] = {}

        async def ask(i: int) -> None:
            together[i], _ = await complete(runner, CHAT.format(questions[i]), options=options)

        async with trio.open_nursery() as streams:
            for i in range(len(questions)):
                streams.start_soon(ask, i)
        assert [together[i] for i in range(len(questions))] == solo
        assert (await runner.health())["busy"] == 0
    finally:
        await runner.stop()


@bounded
async def test_flash_attention_off_answers(nursery: trio.Nursery, smollm2_gguf: Path) -> None:
    runner = await start(nursery, smollm2_gguf, flash_attn=False)
    try:
        text, final = await complete(runner, FRANCE, options=GREEDY)
        assert "Paris" in text and final["done_reason"] == "stop"
    finally:
        await runner.stop()


SYSTEM = ("<|im_start|>system\n" + "You are a careful assistant who answers briefly. " * 6
          + "<|im_end|>\n")
STORY = SYSTEM + CHAT.format("Write a long story about a dragon.")
QUESTION = SYSTEM + CHAT.format("What is two plus two?")
SHORT = {**GREEDY, "num_predict": 12}


@pytest.fixture
async def two_slots(nursery: trio.Nursery, smollm2_gguf: Path) -> AsyncIterator[Runner]:
    runner = await start(nursery, smollm2_gguf, parallel=2)
    yield runner
    await runner.stop()


async def question_alone(runner: Runner) -> tuple[str, int]:
    """QUESTION's answer from a runner with nothing cached, and the tokens it shares with
    STORY: the system prompt and the chat template's start."""
    alone, _ = await complete(runner, QUESTION, options=SHORT)
    return alone, common_prefix(await runner.tokenize(STORY), await runner.tokenize(QUESTION))


@bounded
async def test_new_conversation_copies_the_shared_prefix_and_spares_the_long_one(
        runner: Runner, two_slots: Runner) -> None:
    alone, shared = await question_alone(runner)
    answer, first = await complete(two_slots, STORY, options={**GREEDY, "num_predict": 120},
                                   return_context=True)
    story_cache = (await two_slots.health())["slot_tokens"][0]
    # Taking the story's slot would keep the system prompt and lose the story: the question
    # goes to the other slot, starting from a copy of the system prompt.
    text, final = await complete(two_slots, QUESTION, options=SHORT)
    assert text == alone
    assert final["prompt_cached"] == shared
    question_cache = shared + final["prompt_eval_count"] + final["eval_count"] - 1
    assert (await two_slots.health())["slot_tokens"] == [story_cache, question_cache]
    follow_up = STORY + answer + "<|im_end|>\n" + CHAT.format("Give it a title.")
    _, second = await complete(two_slots, follow_up, options=SHORT)
    # The story's slot still holds the story (up to where the answer, tokenized again as
    # text, parts from the tokens generated).
    kept = common_prefix(first["context"][:-1], await two_slots.tokenize(follow_up))
    assert kept > len(await two_slots.tokenize(STORY))
    assert second["prompt_cached"] == kept
    # The same prompt again (a regenerated answer) takes the slot that holds it, however long
    # the answer there: that answer is what is being replaced.
    await complete(two_slots, QUESTION, options={**GREEDY, "num_predict": 200})
    _, again = await complete(two_slots, QUESTION, options=SHORT)
    assert again["prompt_cached"] == len(await two_slots.tokenize(QUESTION)) - 1
    assert (await two_slots.health())["slot_tokens"][0] >= kept


@bounded
async def test_copy_from_a_slot_that_is_streaming(runner: Runner, two_slots: Runner) -> None:
    alone, shared = await question_alone(runner)
    async with contextlib.aclosing(two_slots.completion(
            {"prompt": STORY, "options": {**GREEDY, "num_predict": 400}})) as streaming:
        async for event in streaming:
            if "content" in event:
                break
        # The story's slot is being written at every step while the copy is pending.
        text, final = await complete(two_slots, QUESTION, options=SHORT)
    assert text == alone
    assert final["prompt_cached"] == shared


@bounded
async def test_a_new_stream_takes_the_free_slot_between_busy_ones(nursery: trio.Nursery,
                                                                   smollm2_gguf: Path) -> None:
    runner = await start(nursery, smollm2_gguf, parallel=4)

    async def ask(question: str, num_predict: int, first: trio.Event, done: trio.Event) -> None:
        async for _event in runner.completion({"prompt": CHAT.format(question), "options": {
                **GREEDY, "num_predict": num_predict}}):
            first.set()
        done.set()

    async def start_stream(streams: trio.Nursery, question: str, num_predict: int) -> trio.Event:
        first, done = trio.Event(), trio.Event()
        streams.start_soon(ask, question, num_predict, first, done)
        await first.wait()
        return done

    try:
        async with trio.open_nursery() as streams:
            await start_stream(streams, "Write a long story about a dragon.", 400)
            short = await start_stream(streams, "What is two plus two?", 30)
            await start_stream(streams, "Write a long poem about the sea.", 400)
            await short.wait()
            # Slots 0 and 2 stream; slot 3 has never been used, slot 1 was the short answer's.
            # Slot 3 would split each decode into two passes (runs 0 and 2-3).
            await start_stream(streams, "Name three colours.", 400)
            assert (await runner.health())["slot_tokens"][3] == 0
            streams.cancel_scope.cancel()
    finally:
        await runner.stop()


@bounded
async def test_cancel_stops_generation_and_frees_the_slot(runner: Runner) -> None:
    prompt = CHAT.format("Write a very long story about a dragon.")
    prompt_tokens = len(await runner.tokenize(prompt))
    received = 0
    async with contextlib.aclosing(runner.completion(
            {"prompt": prompt, "options": {**GREEDY, "num_predict": 400}})) as events:
        async for event in events:
            received += "content" in event
            if received == 3:
                break
    # Closing the stream waits until the runner has let go of the request.
    health = await runner.health()
    assert health["busy"] == 0
    generated_into_cache = health["slot_tokens"][0] - prompt_tokens
    assert generated_into_cache <= received + 2

    with trio.move_on_after(0.5) as scope:
        await complete(runner, prompt, options={**GREEDY, "num_predict": 400})
    assert scope.cancelled_caught
    text, final = await complete(runner, FRANCE, options=GREEDY)
    assert "Paris" in text and final["done_reason"] == "stop"


@bounded
async def test_killed_runner_fails_requests_clearly(runner: Runner) -> None:
    message = r"^llama runner process has terminated: signal 9 \(SIGKILL\)$"
    killed = False
    with pytest.raises(RunnerError, match=message):
        async for event in runner.completion(
                {"prompt": FRANCE, "options": {**GREEDY, "num_predict": 200}}):
            if "content" in event and not killed:
                os.kill(runner.pid, signal.SIGKILL)
                killed = True
    assert not runner.alive
    with pytest.raises(RunnerError, match="signal 9"):
        await runner.health()
    with pytest.raises(RunnerError, match="signal 9"):
        await runner.embed("anything")


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
@bounded
async def test_bad_model_file_fails_to_start(nursery: trio.Nursery, smollm2_gguf: Path,
                                             tmp_path: Path, damage: str) -> None:
    bad = tmp_path / "bad.gguf"
    if damage == "truncated":
        with smollm2_gguf.open("rb") as src, bad.open("wb") as dst:
            shutil.copyfileobj(src, dst)
            dst.truncate(smollm2_gguf.stat().st_size // 2)
        cause = "corrupted or incomplete"
    else:
        bad.write_bytes(b"this is not a model\n" * 100)
        cause = "invalid magic"
    with pytest.raises(RunnerError, match=f"^error loading model {re.escape(str(bad))}: .*{cause}"):
        await start(nursery, bad)
    assert children(os.getpid()) == set()


@bounded
async def test_missing_model_file_fails_to_start(nursery: trio.Nursery, tmp_path: Path) -> None:
    missing = tmp_path / "missing.gguf"
    with pytest.raises(RunnerError,
                       match=f"^error loading model {re.escape(str(missing))}: No such file"):
        await start(nursery, missing)
    assert children(os.getpid()) == set()


@bounded
async def test_long_prompt_is_truncated_and_context_shifts(nursery: trio.Nursery,
                                                           smollm2_gguf: Path) -> None:
    runner = await start(nursery, smollm2_gguf, num_ctx=128)
    counting = ", ".join(str(n) for n in range(1, 80)) + ","
    try:
        assert len(await runner.tokenize(counting)) > 128
        _, final = await complete(runner, counting, options={**GREEDY, "num_predict": 150})
        assert (final["done_reason"], final["eval_count"]) == ("length", 150)
        assert final["prompt_eval_count"] == 128

        short = "1, 2, 3, 4, 5,"
        _, filled = await complete(runner, short, options={**GREEDY, "num_predict": -2})
        assert filled["done_reason"] == "length"
        # The last token is sampled from the logits of a full context, and never decoded.
        assert filled["eval_count"] == 128 - len(await runner.tokenize(short)) + 1
    finally:
        await runner.stop()


# -- the child process's lifetime ---------------------------------------------------------------

SPAWNING_PARENT = """
import os, signal, subprocess, sys
fd = int(sys.argv[1])
child = subprocess.Popen([sys.executable, "-m", "ollamad.runner", "--fd", str(fd),
                          "--parent-pid", str(os.getpid())], pass_fds=(fd,))
print(child.pid, flush=True)
signal.pause()
"""


def test_runner_dies_with_its_parent() -> None:
    # The test keeps the other end of the socket: the runner's only reason to go is its parent.
    ours, theirs = socket.socketpair()
    parent = subprocess.Popen([sys.executable, "-c", SPAWNING_PARENT, str(theirs.fileno())],
                              pass_fds=(theirs.fileno(),), stdout=subprocess.PIPE)
    theirs.close()
    try:
        assert parent.stdout is not None
        runner_pid = int(parent.stdout.readline())
        client = ClientConnection("test")
        ours.settimeout(EXIT_TIMEOUT)
        ours.sendall(client.hello())
        assert isinstance(client.receive_data(ours.recv(4096))[0], ServerHello)

        parent.kill()
        parent.wait()
        wait_gone(runner_pid)
        assert ours.recv(4096) == b""
    finally:
        parent.kill()
        parent.wait()
        ours.close()


def test_runner_refuses_to_start_without_its_parent() -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        result = subprocess.run(
            [sys.executable, "-m", "ollamad.runner", "--fd", str(theirs.fileno()),
             "--parent-pid", "1"],
            pass_fds=(theirs.fileno(),), capture_output=True, text=True, timeout=EXIT_TIMEOUT)
    assert result.returncode != 0
    assert "the parent process 1 is gone" in result.stderr
