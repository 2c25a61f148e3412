"""Tool calls in model output, found the way Ollama finds them (tools/).

The template tells how a model writes a call: the text that opens the ``{{ if .ToolCalls }}``
block (``<tool_call>``, ``[TOOL_CALLS]``), or ``{`` when there is none. :class:`ToolParser` reads
the streamed output: text before the tag passes through as content; from the tag on, output is
buffered and every JSON object naming one of the request's tools becomes a call.
"""

from __future__ import annotations

import json
import random
import string
from collections.abc import Mapping, Sequence
from typing import Any

from ollamad.prompt import gonodes as p
from ollamad.prompt.values import as_object


def _is_tool_calls_if(node: p.IfNode) -> bool:
    return any(isinstance(arg, p.FieldNode) and "ToolCalls" in arg.ident
               for cmd in node.pipe.cmds for arg in cmd.args)


def _find_tool_calls_if(nodes: Sequence[p.Node]) -> p.IfNode | None:
    for node in nodes:
        if isinstance(node, p.IfNode) and _is_tool_calls_if(node):
            return node
        lists: list[p.ListNode | None] = []
        if isinstance(node, p.BranchNode):
            lists = [node.list, node.else_list]
        elif isinstance(node, p.ListNode):
            lists = [node]
        for branch in lists:
            if branch is not None:
                found = _find_tool_calls_if(branch.nodes)
                if found is not None:
                    return found
    return None


def _first_text(nodes: Sequence[p.Node]) -> p.TextNode | None:
    """The first non-blank text, not looking past the first action or nested block."""
    for node in nodes:
        if isinstance(node, p.TextNode):
            if node.text.strip():
                return node
        elif isinstance(node, p.BranchNode):
            for branch in (node.list, node.else_list):
                if branch is not None:
                    found = _first_text(branch.nodes)
                    if found is not None:
                        return found
            return None
        elif isinstance(node, p.ListNode):
            found = _first_text(node.nodes)
            if found is not None:
                return found
        elif isinstance(node, p.ActionNode):
            return None
    return None


def parse_tag(root: p.ListNode | None) -> str:
    """The tool-call tag of a template: text before the first ``{`` in its ToolCalls block."""
    block = _find_tool_calls_if(root.nodes) if root is not None else None
    text = _first_text(block.list.nodes) if block is not None else None
    if text is None:
        return "{"
    tag = text.text.replace("\r\n", "\n").split("{", 1)[0].strip()
    return tag or "{"


_ID_CHARS = string.ascii_lowercase + string.digits


def tool_call_id(rng: random.Random | None = None) -> str:
    """A fresh id as Ollama makes them: ``call_`` and eight characters of ``[a-z0-9]``."""
    choose = (rng or random).choices
    return "call_" + "".join(choose(_ID_CHARS, k=8))


def _reject_constant(name: str) -> Any:
    raise ValueError(f"invalid JSON constant {name}")


def _json_object(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _find_map(name: str, obj: Mapping[str, Any]) -> tuple[dict[str, Any] | None, bool]:
    value = obj.get(name)
    if isinstance(value, dict):
        return value, True
    if isinstance(value, str):
        try:
            decoded = json.loads(value, parse_constant=_reject_constant)
        except ValueError:
            return None, False
        if decoded is None or isinstance(decoded, dict):
            return decoded, True
    return None, False


def _find_object(obj: Mapping[str, Any], tool: str) -> tuple[dict[str, Any] | None, bool]:
    if "name" in obj:
        for key in ("arguments", "parameters"):
            args, found = _find_map(key, obj)
            if found:
                return args, True
        return None, True
    args, found = _find_map(tool, obj)
    if found:
        return args, True
    for value in obj.values():
        children = [value] if isinstance(value, dict) else value if isinstance(value, list) else []
        for child in children:
            if isinstance(child, dict):
                args, found = _find_object(child, tool)
                if found:
                    return args, True
    return None, False


def _find_arguments(tool: str, buffer: str) -> tuple[dict[str, Any] | None, int]:
    """The first JSON object in the buffer that holds the tool's arguments, and where it ends."""
    start = -1
    braces = 0
    in_string = escaped = False
    for i, ch in enumerate(buffer):
        if escaped:
            escaped = False
            continue
        if ch == "\\":
            escaped = True
            continue
        if ch == '"':
            in_string = not in_string
            continue
        if in_string:
            continue
        if ch == "{":
            if braces == 0:
                start = i
            braces += 1
        elif ch == "}":
            braces -= 1
            if braces == 0 and start != -1:
                data = _json_object(buffer[start:i + 1])
                if data is None:
                    start = -1
                    continue
                args, found = _find_object(data, tool)
                return (args if found else data), i
            braces = max(braces, 0)
    return None, 0


class ToolParser:
    """Streaming extraction of tool calls from model output.

    >>> parser = ToolParser([{"function": {"name": "add"}}], "<tool_call>")
    >>> calls, content = parser.add('Sure.<tool_call>{"name": "add", "arguments": {"a": 1}}')
    >>> content, calls[0]["function"]
    ('Sure.', {'index': 0, 'name': 'add', 'arguments': {'a': 1}})
    """

    def __init__(self, tools: Sequence[Mapping[str, Any]], tag: str = "{", *,
                 rng: random.Random | None = None) -> None:
        self.tag = tag
        self._names = [str(as_object(as_object(t).get("function")).get("name") or "")
                       for t in tools]
        self._names = [n for n in self._names if n]
        self._longest = max((len(n) for n in self._names), default=0)
        self._state = "looking"
        self._buffer = ""
        self._count = 0
        self._rng = rng

    @property
    def buffer(self) -> str:
        return self._buffer

    def add(self, text: str) -> tuple[list[dict[str, Any]], str]:
        """Feed model output; returns the calls completed and the content to pass on now."""
        if self._state == "done":
            return [], text
        self._buffer += text
        content = ""
        if self._state == "looking":
            index, found = self._find_tag()
            if index == -1:
                content, self._buffer = self._buffer, ""
            else:
                content, self._buffer = self._buffer[:index], self._buffer[index:]
            # With a bare "{" or "[" as tag, only output that starts with JSON is a call.
            if self.tag in ("{", "[") and content.strip():
                self._state = "done"
                rest, self._buffer = self._buffer, ""
                return [], content + rest
            if not found:
                return [], content
            self._state = "calling"
        calls = []
        while (call := self._parse_call()) is not None:
            calls.append(call)
        if self._closed():
            self._state = "done"
            content, self._buffer = self._buffer, ""
        return calls, content

    def content(self) -> str:
        """What remains to send as content when the output ends."""
        if self._count > 0:
            return ""
        return self._buffer if self.tag in ("{", "[") else ""

    def _find_tag(self) -> tuple[int, bool]:
        index = self._buffer.find(self.tag)
        if index >= 0:
            return index, True
        for size in range(min(len(self._buffer), len(self.tag)), 0, -1):
            if self._buffer.endswith(self.tag[:size]):
                return len(self._buffer) - size, False
        return -1, False

    def _find_tool(self) -> tuple[str | None, int]:
        buf = self._buffer
        if not buf:
            return None, 0
        # Wait while the output ends in what may be the start of a longer tool name.
        for size in range(1, min(len(buf), self._longest) + 1):
            tail = buf[-size:]
            if any(len(tail) < len(n) and n.startswith(tail) for n in self._names):
                return None, 0
        best: str | None = None
        start = end = -1
        for name in self._names:
            pos = buf.find(name)
            if pos == -1:
                continue
            if best is not None and (pos > start or (pos == start and len(name) <= len(best))):
                continue
            best, start, end = name, pos, pos + len(name)
        return best, end

    def _parse_call(self) -> dict[str, Any] | None:
        name, end = self._find_tool()
        if name is None:
            return None
        args, last = _find_arguments(name, self._buffer)
        if args is None:
            return None
        # Ollama keeps the closing brace in the buffer (it slices at its index); so do we.
        self._buffer = self._buffer[max(end, last):]
        call = {"id": tool_call_id(self._rng),
                "function": {"index": self._count, "name": name, "arguments": args}}
        self._count += 1
        return call

    def _closed(self) -> bool:
        if self.tag not in ("{", "["):
            return False
        opener, closer = ("{", "}") if self.tag == "{" else ("[", "]")
        depth = 0
        in_string = escaped = False
        for ch in self._buffer:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = not in_string
            elif in_string:
                continue
            elif ch == opener:
                depth += 1
            elif ch == closer:
                depth -= 1
                if depth == 0:
                    return True
        return False
