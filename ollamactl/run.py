"""``ollamactl run``: find (or pull) the model, then answer one prompt or open the REPL."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from ollamactl.client import Client, ClientError, RequestFailed
from ollamactl.session import Session, print_conversation


def pull_model(client: Client, name: str, insecure: bool) -> None:
    """Pull with Ollama's progress display; ClientError when the daemon cannot pull."""
    from ollamactl.transfer import pull_model as pull_with_bars  # speed and time left

    try:
        pull_with_bars(client, name, insecure)
    except RequestFailed as exc:
        if exc.unsupported:
            raise _cannot_pull(name) from None
        raise


def _cannot_pull(name: str) -> ClientError:
    return ClientError(f"model '{name}' not found, and this ollamad cannot pull models; import "
                       f"a GGUF file instead: write a Modelfile with the line 'FROM "
                       f"./model.gguf' and run 'ollamactl create {name} -f Modelfile'")


def show_or_pull(name: str, insecure: bool) -> dict[str, Any]:
    """The model's ``show``, pulling it first if the store lacks it (as ``ollama run`` does)."""
    with Client() as client:
        try:
            return client.call("show", {"model": name})
        except RequestFailed as exc:
            if exc.code != "not_found":
                raise
        if not client.supports("pull"):
            raise _cannot_pull(name)
        pull_model(client, name, insecure)
        return client.call("show", {"model": name})


def _embed(name: str, prompt: str, keep_alive: str | None) -> None:
    if not prompt:
        raise ClientError(f"embedding models require input text. Usage: ollamactl run {name} "
                          '"your text here"')
    request: dict[str, Any] = {"model": name, "input": prompt}
    if keep_alive is not None:
        request["keep_alive"] = keep_alive
    with Client() as client:
        embeddings = client.call("embed", request).get("embeddings") or []
    if not embeddings:
        raise ClientError("no embeddings returned")
    print(json.dumps(embeddings[0], separators=(",", ":")))


def read_prompt(words: tuple[str, ...]) -> tuple[str, bool]:
    """The prompt, and whether to be interactive: piped stdin comes first and means one shot."""
    parts, interactive = list(words), True
    if not sys.stdin.isatty():
        if piped := sys.stdin.read():
            parts.insert(0, piped)
        interactive = False
    if parts or not sys.stdout.isatty():
        interactive = False
    return " ".join(parts), interactive


def run(session: Session, words: tuple[str, ...], insecure: bool) -> None:
    from ollamad.config import env_bool

    prompt, interactive = read_prompt(words)
    info = show_or_pull(session.model, insecure)
    session.apply_show(info)
    capabilities = info.get("capabilities") or []
    if "embedding" in capabilities:
        _embed(session.model, prompt, session.keep_alive)
        return
    if not interactive:
        generate_once(session, prompt)
        return
    from ollamactl.history import history_path
    from ollamactl.repl import interact

    session.preload()
    print_conversation(session.loaded_messages, session.word_wrap)
    home = Path(os.path.expanduser("~"))
    interact(session, history_path(home), not env_bool(os.environ, "OLLAMA_NOHISTORY"))


def generate_once(session: Session, prompt: str) -> None:
    reply = session.reply("generate", session.generate_request(prompt),
                          plain=not sys.stdout.isatty())
    if reply is None:
        return
    if prompt:
        print("\n")
    session.summary(reply)
