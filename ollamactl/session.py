"""What an ``ollamactl run`` session knows, and the requests it makes from it."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

from ollamactl import render
from ollamactl.client import Client
from ollamactl.create import save_request
from ollamactl.display import Reply, ReplyPrinter, stream_reply
from ollamactl.progress import spinner

Message = dict[str, Any]


@dataclass
class Session:
    model: str
    # From the model's ``show``: its parent and the conversation stored in it (MESSAGE lines).
    parent_model: str = ""
    loaded_messages: list[Message] = field(default_factory=list)
    # This session's own messages, sent with every chat (the daemon prepends the stored ones).
    messages: list[Message] = field(default_factory=list)
    system: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    format: str = ""
    keep_alive: str | None = None
    think: bool | str | None = None
    hide_thinking: bool = False
    word_wrap: bool = True
    verbose: bool = False

    def apply_show(self, info: dict[str, Any]) -> None:
        self.parent_model = (info.get("details") or {}).get("parent_model", "")
        self.loaded_messages = list(info.get("messages") or [])

    def _common(self, request: dict[str, Any]) -> dict[str, Any]:
        # Unset fields stay out, as Ollama's omitempty leaves them out of its JSON.
        for key, value in (("format", self.format), ("options", self.options),
                           ("keep_alive", self.keep_alive), ("think", self.think)):
            if value not in (None, "", {}):
                request[key] = value
        return request

    def chat_request(self) -> dict[str, Any]:
        return self._common({"model": self.model, "messages": self.messages})

    def generate_request(self, prompt: str) -> dict[str, Any]:
        request = {"model": self.model, "prompt": prompt}
        if self.system:
            request["system"] = self.system
        return self._common(request)

    def save_request(self, name: str) -> dict[str, Any]:
        """A new model: this one, with the session's system, parameters and whole conversation."""
        return save_request(name, self.model, self.loaded_messages + self.messages, self.system,
                            self.options)

    def printer(self, plain: bool = False) -> ReplyPrinter:
        return ReplyPrinter(word_wrap=self.word_wrap, hide_thinking=self.hide_thinking,
                            plain=plain)

    def preload(self) -> None:
        """Load the model now, so that the first answer does not wait for it."""
        request: dict[str, Any] = {"model": self.model}
        if self.keep_alive is not None:
            request["keep_alive"] = self.keep_alive
        if self.think is not None:
            request["think"] = self.think
        waiting = spinner()
        try:
            with Client() as client:
                client.call("generate", request)
        finally:
            waiting.stop(clear=True)

    def reply(self, op: str, request: dict[str, Any], plain: bool = False) -> Reply | None:
        """Stream one answer to stdout; None if the user stopped it."""
        printer = self.printer(plain)
        # A connection per answer: one cancelled mid-frame cannot confuse the next.
        with Client() as client:
            reply = stream_reply(client.stream(op, request), printer)
        if reply is None:
            if printer.reply.content or printer.reply.thinking:
                sys.stdout.write("\n")
            sys.stdout.flush()
            return None
        return reply

    def summary(self, reply: Reply) -> None:
        if self.verbose and reply.final.get("done"):
            sys.stderr.write(render.metrics_summary(reply.final))
            sys.stderr.flush()


def print_conversation(messages: list[Message], word_wrap: bool) -> None:
    """A stored conversation, as ``ollama run`` replays it before the first prompt."""
    for message in messages:
        if message.get("role") == "user":
            print(f">>> {message.get('content', '')}")
        elif message.get("role") == "assistant":
            ReplyPrinter(word_wrap=word_wrap).text(message.get("content", ""))
            print("\n")
