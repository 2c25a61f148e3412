"""Printing a streamed reply (generate or chat) as ``ollama run`` prints it.

Word wrap follows Ollama's rule: break before the word that would reach five columns from the
right edge, by moving back over the word already printed, clearing it and printing it again on a
new line. It needs a terminal, so it applies only when stdout is one.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

from ollamactl.progress import spinner

GREY, BOLD, DEFAULT = "\033[38;5;245m", "\033[1m", "\033[0m"


def char_width(char: str) -> int:
    """Terminal columns of one character (0 for combining and control, 2 for wide)."""
    if unicodedata.combining(char) or unicodedata.category(char) in ("Cc", "Cf", "Me", "Mn"):
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def text_width(text: str) -> int:
    return sum(char_width(char) for char in text)


@dataclass
class WordWrap:
    """The wrapping state of one reply: columns used on this line, the word being printed."""

    line_length: int = 0
    word: str = ""

    def render(self, text: str, width: int) -> str:
        """What to print for ``text`` on a terminal ``width`` columns wide (< 10: no wrapping)."""
        if width < 10:
            return text
        out = []
        for char in text:
            size = char_width(char)
            if self.line_length + 1 > width - 5:
                if text_width(self.word) > width - 10:
                    # A word longer than a line cannot move; the terminal breaks it.
                    out.append(char)
                    self.word, self.line_length = "", 0
                    continue
                if back := text_width(self.word):
                    out.append(f"\033[{back}D")
                out.append("\033[K\n" + self.word + char)
                self.line_length = back + size
            else:
                out.append(char)
                self.line_length += size
                if char in "\n\r":
                    self.line_length = 0
            self._track(char, size)
        return "".join(out)

    def _track(self, char: str, size: int) -> None:
        if size >= 2 or char in " \t\n\r":
            self.word = ""
        else:
            self.word += char


def _go_json(value: Any) -> str:
    # Go's json.Marshal: compact, and <, >, & escaped for HTML safety.
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def tool_calls_text(calls: list[dict[str, Any]], plain: bool) -> str:
    """The CLI registers no tools, so any call the model makes is reported, not run."""
    explain, values = ("", "") if plain else (GREY + BOLD, DEFAULT)
    lines = []
    for call in calls:
        function = call.get("function") or {}
        lines.append(f"  Model called a non-existent function "
                     f"'{values}{function.get('name', '')}(){explain}' with arguments: "
                     f"{values}{_go_json(function.get('arguments') or {})}{explain}")
    text = "\n".join(lines)
    return text if plain else explain + text + DEFAULT


@dataclass
class Reply:
    """What a finished reply leaves behind."""

    content: str = ""
    thinking: str = ""
    role: str = "assistant"
    final: dict[str, Any] = field(default_factory=dict)


class ReplyPrinter:
    """Streams thinking, content and tool calls to ``out``, wrapping words on a terminal."""

    def __init__(self, out: TextIO | None = None, *, word_wrap: bool = True,
                 hide_thinking: bool = False, plain: bool = False) -> None:
        self.out = out or sys.stdout
        self.word_wrap = word_wrap and self.out.isatty()
        self.hide_thinking = hide_thinking
        self.plain = plain
        self.wrap = WordWrap()
        self.thinking_open = False
        self.reply = Reply()

    def _width(self) -> int:
        if not self.word_wrap:
            return 0
        try:
            return os.get_terminal_size(self.out.fileno()).columns
        except (OSError, ValueError):
            return 0

    def text(self, text: str) -> None:
        self.out.write(self.wrap.render(text, self._width()))
        self.out.flush()

    def feed(self, content: str, thinking: str, tool_calls: list[dict[str, Any]]) -> None:
        if thinking and not self.hide_thinking:
            if not self.thinking_open:
                self.out.write("Thinking...\n" if self.plain
                               else GREY + BOLD + "Thinking...\n" + DEFAULT + GREY)
                self.thinking_open = True
            self.reply.thinking += thinking
            self.text(thinking)
        if self.thinking_open and (content or tool_calls):
            if not self.reply.thinking.endswith("\n"):
                self.out.write("\n")
            self.out.write("...done thinking.\n\n" if self.plain
                           else GREY + BOLD + "...done thinking.\n\n" + DEFAULT)
            self.thinking_open = False
            self.wrap = WordWrap()
        self.reply.content += content
        self.text(content)
        if tool_calls:
            self.out.write(tool_calls_text(tool_calls, self.plain))
            self.out.flush()


def _parts(event: dict[str, Any]) -> tuple[str, str, list[dict[str, Any]], str | None]:
    """(content, thinking, tool calls, role) of a generate or a chat event."""
    if "message" in event:
        message = event["message"] or {}
        return (message.get("content", ""), message.get("thinking", ""),
                message.get("tool_calls") or [], message.get("role"))
    return event.get("response", ""), event.get("thinking", ""), event.get("tool_calls") or [], None


def stream_reply(events: Iterator[dict[str, Any]], printer: ReplyPrinter) -> Reply | None:
    """Print a reply as it streams; None if the user stopped it with Ctrl-C.

    Stopping closes ``events``, which tells the daemon to cancel the request.
    """
    waiting = spinner()
    try:
        with contextlib.closing(events):
            for event in events:
                content, thinking, tool_calls, role = _parts(event)
                if content or not printer.hide_thinking:
                    waiting.stop(clear=True)
                printer.feed(content, thinking, tool_calls)
                printer.reply.role = role or printer.reply.role
                printer.reply.final = event
    except KeyboardInterrupt:
        return None
    finally:
        waiting.stop(clear=True)
    return printer.reply
