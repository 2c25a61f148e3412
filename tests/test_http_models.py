"""The HTTP bridge with the real SmolLM2 model, driven by the official ``ollama`` and ``openai``
clients unchanged, plus raw HTTP for ``stream: false`` shapes and for disconnects."""

from __future__ import annotations

import contextlib
import json
import math
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import ollama
import openai
import pytest

from tests.daemon import Daemon
from tests.http_daemon import MODEL, http_daemon
from tests.ollama_layout import write_ollama_model

GREEDY = {"temperature": 0, "num_predict": 16, "num_ctx": 1024}
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory,
           smollm2_gguf: Path) -> Iterator[tuple[Daemon, str]]:
    home = tmp_path_factory.mktemp("models")
    write_ollama_model(home / ".ollama" / "models", smollm2_gguf)
    with http_daemon(home) as running:
        yield running


@pytest.fixture
def client(served: tuple[Daemon, str]) -> ollama.Client:
    return ollama.Client(host=served[1])


@pytest.fixture
def oai(served: tuple[Daemon, str]) -> openai.OpenAI:
    return openai.OpenAI(base_url=served[1] + "/v1", api_key="ollama")


# -- the ollama client ------------------------------------------------------------------------

def test_list_show_copy_delete(client: ollama.Client) -> None:
    assert [m.model for m in client.list().models] == [MODEL]
    shown = client.show(MODEL)
    assert "completion" in (shown.capabilities or [])
    assert shown.modelinfo and shown.modelinfo["general.architecture"] == "llama"
    assert shown.template and "<|im_start|>" in shown.template
    assert client.copy(MODEL, "me/copy:v1").status == "success"
    assert {m.model for m in client.list().models} == {MODEL, "me/copy:v1"}
    assert client.delete("me/copy:v1").status == "success"
    assert [m.model for m in client.list().models] == [MODEL]


def test_create_from_an_existing_model(client: ollama.Client) -> None:
    try:
        progress = list(client.create(model="pirate", from_=MODEL,
                                      system="Talk like a pirate.", stream=True))
        assert progress[-1].status == "success"
        assert "Talk like a pirate." in (client.show("pirate").modelfile or "")
        assert client.create(model="pirate2", from_=MODEL, stream=False).status == "success"
    finally:
        for name in ("pirate", "pirate2"):
            with contextlib.suppress(ollama.ResponseError):
                client.delete(name)


def test_generate_streamed_and_not(client: ollama.Client) -> None:
    parts = list(client.generate(model=MODEL, prompt="Count: one, two,", options=GREEDY,
                                 stream=True))
    assert all(not p.done for p in parts[:-1]) and parts[-1].done
    streamed = "".join(p.response for p in parts)
    assert streamed
    final = parts[-1]
    assert final.done_reason in ("stop", "length")
    assert final.eval_count and final.prompt_eval_count and final.total_duration
    whole = client.generate(model=MODEL, prompt="Count: one, two,", options=GREEDY)
    assert whole.done and whole.response == streamed  # greedy: the same text either way
    assert whole.context


def test_chat_streamed_and_ps(client: ollama.Client) -> None:
    parts = list(client.chat(model=MODEL, messages=QUESTION, options=GREEDY, stream=True))
    assert "Paris" in "".join(p.message.content or "" for p in parts)
    assert parts[-1].done and parts[-1].eval_count
    loaded = client.ps().models
    assert [m.model for m in loaded] == [MODEL]
    assert loaded[0].context_length == 1024


def test_chat_with_a_json_schema_format(client: ollama.Client) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}},
              "required": ["city"]}
    reply = client.chat(model=MODEL, messages=QUESTION, format=schema,
                        options=GREEDY | {"num_predict": 40})
    assert isinstance(json.loads(reply.message.content or "")["city"], str)


def test_tools_on_a_model_without_tool_support_is_refused(client: ollama.Client) -> None:
    tool = {"type": "function", "function": {"name": "weather", "description": "weather",
                                             "parameters": {"type": "object", "properties": {}}}}
    with pytest.raises(ollama.ResponseError) as failure:
        client.chat(model=MODEL, messages=QUESTION, tools=[tool])
    assert failure.value.status_code == 400
    assert "does not support tools" in failure.value.error


def test_embed_and_legacy_embeddings(client: ollama.Client) -> None:
    result = client.embed(model=MODEL, input=["hello", "the sky is blue"])
    assert len(result.embeddings) == 2 and len(result.embeddings[0]) == 576
    assert math.isclose(sum(v * v for v in result.embeddings[0]), 1.0, rel_tol=1e-4)
    assert len(client.embeddings(model=MODEL, prompt="hello").embedding) == 576


# -- raw shapes -------------------------------------------------------------------------------

def test_stream_false_shapes(served: tuple[Daemon, str]) -> None:
    with httpx.Client(base_url=served[1], timeout=120) as http:
        generated = http.post("/api/generate", json={
            "model": MODEL, "prompt": "Say hi", "stream": False, "options": GREEDY})
        assert generated.headers["content-type"] == "application/json; charset=utf-8"
        body = generated.json()
        assert list(body)[:5] == ["model", "created_at", "response", "done", "done_reason"]
        assert body["done"] is True and body["response"]
        for key in ("context", "total_duration", "load_duration", "prompt_eval_count",
                    "eval_count", "eval_duration"):
            assert key in body, key
        chatted = http.post("/api/chat", json={
            "model": MODEL, "messages": QUESTION, "stream": False, "options": GREEDY}).json()
        assert chatted["message"]["role"] == "assistant" and chatted["message"]["content"]
        assert chatted["done"] is True and "context" not in chatted
        streamed = http.post("/api/chat", json={"model": MODEL, "messages": QUESTION,
                                                "options": GREEDY})
        assert streamed.headers["content-type"] == "application/x-ndjson"
        lines = streamed.text.splitlines()
        assert len(lines) > 2 and json.loads(lines[-1])["done"] is True
        loaded = http.post("/api/generate", json={"model": MODEL}).json()
        assert (loaded["done"], loaded["done_reason"]) == (True, "load")


def test_metrics_count_tokens_and_loaded_models(served: tuple[Daemon, str]) -> None:
    with httpx.Client(base_url=served[1], timeout=120) as http:
        http.post("/api/generate", json={"model": MODEL, "prompt": "Hi", "stream": False,
                                         "options": GREEDY})
        text = http.get("/metrics").text
    assert f'ollamad_prompt_tokens_total{{model="{MODEL}"}}' in text
    assert f'ollamad_completion_tokens_total{{model="{MODEL}"}}' in text
    assert "ollamad_loaded_models 1" in text


# -- the openai client ------------------------------------------------------------------------

def test_openai_chat_streamed_and_not(oai: openai.OpenAI) -> None:
    reply = oai.chat.completions.create(model=MODEL, messages=QUESTION, temperature=0,
                                        max_tokens=16)
    assert reply.id.startswith("chatcmpl-") and reply.system_fingerprint == "fp_ollama"
    assert "Paris" in (reply.choices[0].message.content or "")
    assert reply.choices[0].finish_reason in ("stop", "length")
    assert reply.usage and reply.usage.completion_tokens > 0
    chunks = list(oai.chat.completions.create(
        model=MODEL, messages=QUESTION, temperature=0, max_tokens=16, stream=True,
        stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == reply.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] in ("stop", "length") and set(finishes[:-1]) == {None}
    assert chunks[-1].choices == [] and chunks[-1].usage and chunks[-1].usage.total_tokens


def test_openai_json_schema_response_format(oai: openai.OpenAI) -> None:
    reply = oai.chat.completions.create(
        model=MODEL, messages=QUESTION, temperature=0, max_tokens=40,
        response_format={"type": "json_schema", "json_schema": {"name": "answer", "schema": {
            "type": "object", "properties": {"city": {"type": "string"}},
            "required": ["city"]}}})
    assert isinstance(json.loads(reply.choices[0].message.content or "")["city"], str)


def test_openai_num_ctx_through_the_options_extension(oai: openai.OpenAI,
                                                      client: ollama.Client) -> None:
    oai.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=4,
                                extra_body={"options": {"num_ctx": 2048}})
    assert client.ps().models[0].context_length == 2048
    oai.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=4,
                                extra_body={"num_ctx": 1536})
    assert client.ps().models[0].context_length == 1536


def test_openai_completions(oai: openai.OpenAI) -> None:
    done = oai.completions.create(model=MODEL, prompt="One, two, three,", temperature=0,
                                  max_tokens=8)
    assert done.id.startswith("cmpl-") and done.object == "text_completion"
    assert done.choices[0].text and done.usage and done.usage.prompt_tokens > 0
    chunks = list(oai.completions.create(model=MODEL, prompt="One, two, three,",
                                         temperature=0, max_tokens=8, stream=True))
    assert "".join(c.choices[0].text for c in chunks) == done.choices[0].text
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


def test_openai_embeddings_and_models(oai: openai.OpenAI) -> None:
    floats = oai.embeddings.create(model=MODEL, input=["hello", "world"],
                                   encoding_format="float")
    assert [d.index for d in floats.data] == [0, 1] and len(floats.data[0].embedding) == 576
    # The client asks for base64 by default and decodes it itself.
    decoded = oai.embeddings.create(model=MODEL, input="hello")
    assert decoded.data[0].embedding == pytest.approx(floats.data[0].embedding, abs=1e-6)
    assert [m.id for m in oai.models.list().data] == [MODEL]
    retrieved = oai.models.retrieve(MODEL)
    assert (retrieved.id, retrieved.owned_by) == (MODEL, "library")
    assert abs(retrieved.created - time.time()) < 365 * 86400


# -- a client that goes away ------------------------------------------------------------------

def _request(url: str, body: dict) -> socket.socket:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    raw = socket.create_connection((host, int(port)), timeout=120)
    data = json.dumps(body).encode()
    raw.sendall(b"POST /api/generate HTTP/1.1\r\nHost: localhost\r\nContent-Type: "
                b"application/json\r\nContent-Length: " + str(len(data)).encode() + b"\r\n\r\n"
                + data)
    return raw


@pytest.mark.parametrize("stream", [True, False])
def test_a_client_that_disconnects_cancels_its_generation(served: tuple[Daemon, str],
                                                          stream: bool) -> None:
    daemon, url = served
    mark = daemon.log_position
    endless = {"model": MODEL, "prompt": "Write a very long story about the sea.",
               "stream": stream, "options": {"num_predict": 100_000, "num_ctx": 1024,
                                             "temperature": 1}}
    raw = _request(url, endless)
    if stream:
        assert raw.recv(4096).startswith(b"HTTP/1.1 200")  # tokens are flowing
    else:
        # Nothing is sent before the end, so only the disconnect itself can stop the work.
        # Wait until the request is being served (its access line comes only at the end).
        with httpx.Client(base_url=url, timeout=30) as http:
            while "ollamad_loaded_models 1" not in http.get("/metrics").text:
                time.sleep(0.1)
        time.sleep(1)
    raw.close()
    daemon.wait_for_log(r"client disconnected: cancelled POST /api/generate", start=mark)
    # The runner's slot is free again: a short request is answered at once, not after the
    # ten thousand tokens the abandoned one asked for.
    started = time.monotonic()
    with httpx.Client(base_url=url, timeout=120) as http:
        answer = http.post("/api/generate", json={"model": MODEL, "prompt": "Hi",
                                                  "stream": False, "options": GREEDY})
    assert answer.status_code == 200
    assert time.monotonic() - started < 30


# -- pull and push against a local registry -----------------------------------------------------

def test_push_and_pull_with_the_ollama_client(client: ollama.Client, served: tuple[Daemon, str],
                                              tmp_path: Path) -> None:
    from tests.registry_fixtures import docker_registry

    with docker_registry(tmp_path) as registry:
        name = f"{registry.host}/library/smollm2:http"
        client.copy(MODEL, name)
        pushed = list(client.push(name, insecure=True, stream=True))
        assert pushed[0].status == "retrieving manifest" and pushed[-1].status == "success"
        client.delete(name)
        pulled = list(client.pull(name, insecure=True, stream=True))
        assert pulled[0].status == "pulling manifest" and pulled[-1].status == "success"
        assert any(p.total and p.completed == p.total for p in pulled)
        assert name in {m.model for m in client.list().models}
        # stream: false answers the last progress object only.
        assert client.pull(name, insecure=True, stream=False).status == "success"
        with httpx.Client(base_url=served[1], timeout=60) as http:
            missing = http.post("/api/pull", json={"model": f"{registry.host}/library/none",
                                                   "insecure": True, "stream": False})
            assert missing.status_code == 500 and "error" in missing.json()
            streamed = http.post("/api/pull", json={"model": f"{registry.host}/library/none",
                                                    "insecure": True})
            lines = [json.loads(line) for line in streamed.text.splitlines()]
            assert streamed.status_code == 200
            assert lines[0] == {"status": "pulling manifest"} and "error" in lines[-1]
        client.delete(name)
