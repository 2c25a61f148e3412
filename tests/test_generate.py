"""generate, chat and embed through the daemon, with the real SmolLM2 model."""

from __future__ import annotations

import json
import math
import os
import signal
from pathlib import Path

import pytest

from ollamactl.client import Client, RequestFailed
from tests.daemon import Daemon, running_daemon
from tests.ollama_layout import write_ollama_model
from tests.processes import children, wait_gone

MODEL = "smollm2:135m"
GREEDY = {"temperature": 0, "num_predict": 24, "num_ctx": 1024}


def collect(client: Client, op: str, args: dict) -> tuple[str, dict]:
    """The streamed text and the final event of one generate or chat."""
    text, final = [], {}
    for event in client.stream(op, args):
        if event.get("done"):
            final = event
        elif op == "chat":
            text.append(event["message"]["content"])
        else:
            text.append(event["response"])
    return "".join(text), final


def chat(client: Client, messages: list[dict], **options) -> tuple[str, dict]:
    return collect(client, "chat", {"model": MODEL, "messages": messages,
                                    "options": GREEDY | options})


def test_chat_answers_and_the_next_turn_reuses_the_prompt_cache(model_daemon: Daemon) -> None:
    with Client(model_daemon.socket) as client:
        question = [{"role": "user", "content": "What is the capital of France?"}]
        answer, first = chat(client, question)
        assert "Paris" in answer
        assert first["done_reason"] in ("stop", "length")
        for key in ("total_duration", "load_duration", "prompt_eval_count", "eval_count",
                    "eval_duration"):
            assert first[key] > 0, key
        follow_up = [*question, {"role": "assistant", "content": answer},
                     {"role": "user", "content": "And of Italy?"}]
        _, second = chat(client, follow_up)
        # Only the new turn is evaluated: the answer and the question so far are cached.
        assert second["prompt_eval_count"] < first["prompt_eval_count"]
        assert second["prompt_eval_count"] <= 20


def test_same_seed_same_text(model_daemon: Daemon) -> None:
    with Client(model_daemon.socket) as client:
        args = {"model": MODEL, "prompt": "Write a short poem about the sea.",
                "options": {"temperature": 0.9, "seed": 42, "num_predict": 24}}
        first, _ = collect(client, "generate", args)
        second, _ = collect(client, "generate", args)
        other, _ = collect(client, "generate", args | {"options": args["options"] | {"seed": 7}})
        assert first == second and first
        assert other != first


def test_json_schema_format_gives_valid_json(model_daemon: Daemon) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"},
                                               "population": {"type": "integer"}},
              "required": ["city", "population"]}
    with Client(model_daemon.socket) as client:
        text, _ = collect(client, "chat", {
            "model": MODEL, "format": schema, "options": {"temperature": 0, "num_predict": 64},
            "messages": [{"role": "user", "content": "Describe Paris as JSON."}]})
    value = json.loads(text)
    assert isinstance(value["city"], str) and isinstance(value["population"], int)


def test_embed_is_normalised_with_the_model_dimension(model_daemon: Daemon) -> None:
    with Client(model_daemon.socket) as client:
        result = client.call("embed", {"model": MODEL, "input": ["hello", "the sky is blue"]})
        cut = client.call("embed", {"model": MODEL, "input": "hello", "dimensions": 64})
        legacy = client.call("embeddings", {"model": MODEL, "prompt": "hello"})
    vectors = result["embeddings"]
    assert len(vectors) == 2 and len(vectors[0]) == 576  # SmolLM2-135M's embedding length
    for vector in vectors:
        assert math.isclose(math.sqrt(sum(v * v for v in vector)), 1.0, rel_tol=1e-5)
    assert vectors[0] != vectors[1]
    assert len(cut["embeddings"][0]) == 64
    assert math.isclose(sum(v * v for v in cut["embeddings"][0]), 1.0, rel_tol=1e-5)
    assert len(legacy["embedding"]) == 576
    assert result["prompt_eval_count"] > 0


def test_load_unload_and_ps(model_daemon: Daemon) -> None:
    with Client(model_daemon.socket) as client:
        loaded = client.call("generate", {"model": MODEL})
        assert (loaded["done"], loaded["done_reason"], loaded["response"]) == (True, "load", "")
        models = client.call("ps")["models"]
        assert [m["name"] for m in models] == [MODEL]
        assert models[0]["size_vram"] == 0 and models[0]["context_length"] > 0
        unloaded = client.call("generate", {"model": MODEL, "keep_alive": 0})
        assert unloaded["done_reason"] == "unload"
        assert client.call("ps")["models"] == []
        out = model_daemon.ollamactl("ps").stdout
        assert out.startswith("NAME")


def test_keep_alive_expires(model_daemon: Daemon) -> None:
    with Client(model_daemon.socket) as client:
        client.call("generate", {"model": MODEL, "keep_alive": "1s"})
        model_daemon.wait_for_log(r"keep_alive of smollm2:135m expired", timeout=30)
        assert client.call("ps")["models"] == []


def test_errors_are_ollamas(model_daemon: Daemon) -> None:
    with Client(model_daemon.socket) as client:
        cases = [
            ("generate", {"model": "nope"}, "not_found", "model 'nope' not found"),
            ("chat", {"model": MODEL, "messages": [], "keep_alive": "300"}, "bad_request",
             'time: missing unit in duration "300"'),
            ("generate", {"model": MODEL, "prompt": "x", "raw": True, "system": "s"},
             "bad_request", "raw mode does not support template, system, or context"),
            ("generate", {"model": MODEL, "prompt": "x", "format": "yaml"}, "bad_request",
             'invalid format: "yaml"; expected "json" or a valid JSON Schema object'),
            ("generate", {"model": MODEL, "prompt": "x", "think": True}, "bad_request",
             f'"{MODEL}" does not support thinking'),
            ("embed", {"model": MODEL, "input": 5}, "bad_request", "invalid input type"),
            ("generate", {"model": MODEL, "prompt": "x", "options": {"top_k": "many"}},
             "bad_request", 'option "top_k" must be of type integer'),
        ]
        for op, args, code, message in cases:
            with pytest.raises(RequestFailed) as failure:
                client.call(op, args)
            assert (failure.value.code, str(failure.value)) == (code, message), (op, args)


def test_cancel_stops_the_stream_and_the_runner_carries_on(model_daemon: Daemon) -> None:
    with Client(model_daemon.socket) as client:
        stream = client.stream("generate", {"model": MODEL, "prompt": "Count to a thousand.",
                                            "options": {"temperature": 0, "num_predict": 4000}})
        for _, _event in zip(range(3), stream, strict=False):
            pass
        stream.close()  # sends cancel
        text, final = collect(client, "generate", {"model": MODEL, "prompt": "Say hi.",
                                                   "options": GREEDY})
        assert text and final["done"]
        # The runner was reused, not reloaded: loading took no time to speak of.
        assert final["load_duration"] < 1_000_000_000


def test_a_killed_runner_fails_its_request_and_the_next_one_works(model_daemon: Daemon) -> None:
    assert model_daemon.proc is not None
    with Client(model_daemon.socket) as client:
        client.call("generate", {"model": MODEL})
        (runner,) = children(model_daemon.proc.pid)
        stream = client.stream("generate", {"model": MODEL, "prompt": "Tell me a long story.",
                                            "options": {"temperature": 0, "num_predict": 4000}})
        next(stream)
        os.kill(runner, signal.SIGKILL)
        with pytest.raises(RequestFailed) as failure:
            for _ in stream:
                pass
        assert "runner process has terminated" in str(failure.value)
        text, _ = collect(client, "generate", {"model": MODEL, "prompt": "Say hi.",
                                               "options": GREEDY})
        assert text


def test_a_truncated_model_fails_to_load_clearly(tmp_path: Path, smollm2_gguf: Path) -> None:
    truncated = tmp_path / "truncated.gguf"
    with open(smollm2_gguf, "rb") as source:
        truncated.write_bytes(source.read(20 << 20))
    write_ollama_model(tmp_path / ".ollama" / "models", truncated, model="broken")
    write_ollama_model(tmp_path / ".ollama" / "models", smollm2_gguf)
    with running_daemon(tmp_path) as daemon, Client(daemon.socket) as client:
        with pytest.raises(RequestFailed) as failure:
            client.call("generate", {"model": "broken:135m", "prompt": "hi"})
        assert failure.value.code == "internal"
        assert "broken" in str(failure.value) or "load" in str(failure.value)
        text, _ = collect(client, "generate", {"model": MODEL, "prompt": "Say hi.",
                                               "options": GREEDY})
        assert text


def test_runners_do_not_outlive_the_daemon(model_daemon: Daemon) -> None:
    assert model_daemon.proc is not None
    with Client(model_daemon.socket) as client:
        client.call("generate", {"model": MODEL})
    (runner,) = children(model_daemon.proc.pid)
    os.kill(model_daemon.proc.pid, signal.SIGKILL)
    wait_gone(runner)


def test_max_loaded_models_evicts_the_idle_one(tmp_path: Path, smollm2_gguf: Path) -> None:
    # A second, distinct GGUF: the same weights under another general.name.
    data = bytearray(smollm2_gguf.read_bytes())
    at = data.find(b"SmolLM2")
    data[at:at + 7] = b"SmolLM3"
    other = tmp_path / "other.gguf"
    other.write_bytes(bytes(data))
    models = tmp_path / ".ollama" / "models"
    write_ollama_model(models, smollm2_gguf)
    write_ollama_model(models, other, model="other")
    with running_daemon(tmp_path, env={"OLLAMA_MAX_LOADED_MODELS": "1"}) as daemon, \
            Client(daemon.socket) as client:
        client.call("generate", {"model": MODEL})
        client.call("generate", {"model": "other:135m"})
        assert [m["name"] for m in client.call("ps")["models"]] == ["other:135m"]
        daemon.wait_for_log(r"unloading smollm2:135m to make room for other:135m", timeout=5)
