"""``ollamactl create`` and the saving of a chat session as a model (``/save``, ``save``).

The Modelfile is read here, on the client, as Ollama's CLI reads it: the files FROM and ADAPTER
name are opened by this process and handed to the daemon as blobs, which never opens a path a
client names.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path, PurePosixPath
from typing import Any

from ollamactl.client import Client, RequestFailed
from ollamactl.progress import Progress


class CreateError(Exception):
    """The Modelfile or a file it names cannot be used; the message is for the user."""


def read_modelfile(path: Path | None) -> tuple[bytes, Path]:
    """The Modelfile's bytes and the folder its relative paths start from.

    Without ``-f`` and without ``./Modelfile``, Ollama builds from the current folder (FROM .).
    """
    if path is None:
        path = Path("Modelfile")
        if not path.exists():
            return b"FROM .\n", Path.cwd()
    try:
        return path.read_bytes(), path.resolve().parent
    except FileNotFoundError:
        raise CreateError("specified Modelfile wasn't found") from None


def weights_file(path: Path) -> Path:
    """The file to send for a FROM or ADAPTER path: itself, or the one GGUF in a folder."""
    if not path.is_dir():
        return path
    found = sorted(path.glob("*.gguf")) or sorted(path.glob("*.bin"))
    if len(found) == 1:
        return found[0]
    if found:
        raise CreateError(f"{path} holds several weight files; name one in the Modelfile")
    if any(path.glob("*.safetensors")):
        raise CreateError(f"{path} holds safetensors weights; ollamad imports GGUF files only")
    raise CreateError("no Modelfile or safetensors files found")


def send_blob(client: Client, path: Path) -> str:
    """Hand the daemon an open file to store as a blob; its digest."""
    fd = os.open(os.path.realpath(path), os.O_RDONLY | os.O_CLOEXEC)
    try:
        return client.call("blob", {}, files=[fd])["digest"]
    finally:
        os.close(fd)


class _Sender:
    """``resolve_file`` for the Modelfile translation: sends each local file once."""

    def __init__(self, client: Client, progress: Progress, base: Path) -> None:
        self.client, self.progress, self.base = client, progress, base
        self.sent: dict[str, Path] = {}  # Modelfile text -> the file sent for it

    def __call__(self, text: str) -> str | None:
        from ollamad.store.modelfile import expand_path

        path = expand_path(text, self.base, Path(os.path.expanduser("~")))
        if not path.exists():
            return None
        file = weights_file(path)
        self.progress.status(f"copying file {file.name}")
        digest = send_blob(self.client, file)
        self.progress.relabel(f"copying file {digest} 100%")
        self.sent[text] = file
        return digest

    def rename(self, request: dict[str, Any]) -> None:
        """Name a folder's file by its own name, not the folder's (``FROM .`` sends x.gguf)."""
        for field in ("files", "adapters", "draft_files"):
            files = request.get(field) or {}
            for text, file in self.sent.items():
                # The translation keys a file by the base name of its Modelfile text.
                key = PurePosixPath(text).name or text
                if file.name != key and key in files:
                    files[file.name] = files.pop(key)


class _Warnings(logging.Handler):
    # The translation logs deprecated parameters; Ollama's CLI prints them on stdout.
    def emit(self, record: logging.LogRecord) -> None:
        print(f"warning: {record.getMessage()}")


def create_model(name: str, modelfile: Path | None, quantize: str | None) -> None:
    """Raises CreateError, ClientError, or the parser's ModelfileError (an OllamadError)."""
    from ollamad.errors import InvalidName
    from ollamad.store import modelfile as modelfiles
    from ollamad.store.names import ModelName

    # Checked first, as Ollama does, so that no file is copied for a create that cannot succeed.
    try:
        ModelName.parse(name)
    except InvalidName:
        raise CreateError(f"invalid model name: {name}") from None
    data, base = read_modelfile(modelfile)
    commands = modelfiles.parse(data)
    translation_log = logging.getLogger(modelfiles.__name__)
    translation_log.addHandler(_Warnings())
    translation_log.propagate = False
    with Progress() as progress, Client() as client:
        progress.status("gathering model components")
        sender = _Sender(client, progress, base)
        request: dict[str, Any] = {"model": name,
                                   **modelfiles.to_create_request(commands, resolve_file=sender)}
        sender.rename(request)
        if quantize:
            request["quantize"] = quantize
        for event in client.stream("create", request):
            progress.create_event(event)


def save_request(name: str, source: str, messages: list[dict[str, Any]], system: str = "",
                 parameters: dict[str, Any] | None = None) -> dict[str, Any]:
    """What ``save`` takes: the new name, the model it starts from, and what to add."""
    request: dict[str, Any] = {"model": name, "from": source}
    if system:
        request["system"] = system
    if parameters:
        request["parameters"] = parameters
    if messages:
        request["messages"] = messages
    return request


def save_model(request: dict[str, Any]) -> None:
    """Create a model from another plus a conversation; raises ClientError."""
    with Client() as client:
        try:
            client.call("save", request)
        except RequestFailed as exc:
            # An ollamad without ``save`` still has Ollama's create, which takes the same fields.
            if not exc.unsupported:
                raise
            client.call("create", request)

