"""Thinking tags: inferred from a Go template, then used to split model output (thinking/).

A template that prints ``.Thinking`` inside its range over ``.Messages`` shows how the model
wraps its reasoning; the text around that action gives the tags (``<think>``/``</think>``).
:class:`ThinkingParser` then separates streamed output into thinking and content, buffering only
while a tag may be half written.
"""

from __future__ import annotations

from collections.abc import Iterator

from ollamad.prompt import gonodes as p

# Go's unicode.IsSpace; Python's str.isspace also counts the ASCII separators \x1c-\x1f.
_GO_SPACE = "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008" \
            "\u2009\u200a\u2028\u2029\u202f\u205f\u3000"


def _children(node: p.Node) -> Iterator[p.Node]:
    if isinstance(node, p.ListNode):
        yield from node.nodes
    elif isinstance(node, p.BranchNode):
        yield node.pipe
        yield node.list
        if node.else_list is not None:
            yield node.else_list
    elif isinstance(node, p.ActionNode):
        yield node.pipe
    elif isinstance(node, p.TemplateNode):
        if node.pipe is not None:
            yield node.pipe
    elif isinstance(node, p.PipeNode):
        yield from node.cmds
    elif isinstance(node, p.CommandNode):
        yield from node.args


def _range_uses(node: p.RangeNode, name: str) -> bool:
    stack: list[p.Node] = [node.pipe]
    while stack:
        current = stack.pop()
        if isinstance(current, p.FieldNode) and current.ident[0] == name:
            return True
        stack.extend(_children(current))
    return False


def infer_tags(root: p.ListNode) -> tuple[str, str]:
    """The (opening, closing) thinking tags of a template, ``("", "")`` when it has none.

    For every ``.Thinking`` inside a range over ``.Messages``, the nearest enclosing list's
    first and last text nodes are taken as the tags; the last such place wins.
    """
    opening = closing = ""
    ancestors: list[p.Node] = []

    def visit(node: p.Node) -> None:
        nonlocal opening, closing
        ancestors.append(node)
        if isinstance(node, p.FieldNode) and node.ident and node.ident[0] == "Thinking":
            ranges = [a for a in ancestors if isinstance(a, p.RangeNode)]
            if ranges and _range_uses(ranges[-1], "Messages"):
                lists = [a for a in ancestors if isinstance(a, p.ListNode)]
                if lists and lists[-1].nodes:
                    first, last = lists[-1].nodes[0], lists[-1].nodes[-1]
                    if isinstance(first, p.TextNode):
                        opening = first.text.strip()
                    if isinstance(last, p.TextNode):
                        closing = last.text.strip()
        for child in _children(node):
            visit(child)
        ancestors.pop()

    visit(root)
    return opening, closing


def _overlap(text: str, delim: str) -> int:
    """Length of the longest suffix of ``text`` that is a prefix of ``delim``."""
    for size in range(min(len(delim), len(text)), 0, -1):
        if text.endswith(delim[:size]):
            return size
    return 0


class ThinkingParser:
    """Splits streamed output into (thinking, content) around the inferred tags."""

    _LOOKING, _EATING_START, _THINKING, _EATING_END, _DONE = range(5)

    def __init__(self, opening: str, closing: str) -> None:
        self.opening = opening
        self.closing = closing
        self._state = self._LOOKING
        self._acc = ""

    def add(self, text: str) -> tuple[str, str]:
        """Feed output; returns the thinking and the content that are certain so far."""
        self._acc += text
        thinking: list[str] = []
        content: list[str] = []
        more = True
        while more:
            think, rest, more = self._eat()
            thinking.append(think)
            content.append(rest)
        return "".join(thinking), "".join(content)

    def _eat(self) -> tuple[str, str, bool]:
        acc = self._acc
        state = self._state
        if state == self._LOOKING:
            trimmed = acc.lstrip(_GO_SPACE)
            if trimmed.startswith(self.opening):
                after = trimmed[len(self.opening):].lstrip(_GO_SPACE)
                self._acc = after
                self._state = self._THINKING if after else self._EATING_START
                return "", "", True
            if self.opening.startswith(trimmed):
                return "", "", False  # a partial tag, or only whitespace so far
            self._state = self._DONE
            self._acc = ""
            return "", acc, False
        if state == self._EATING_START:
            trimmed = acc.lstrip(_GO_SPACE)
            self._acc = ""
            if not trimmed:
                return "", "", False
            self._state = self._THINKING
            self._acc = trimmed
            return "", "", True
        if state == self._THINKING:
            if self.closing in acc:
                thinking, _, remaining = acc.partition(self.closing)
                remaining = remaining.lstrip(_GO_SPACE)
                self._acc = ""
                self._state = self._DONE if remaining else self._EATING_END
                return thinking, remaining, False
            keep = _overlap(acc, self.closing)
            self._acc = acc[len(acc) - keep:] if keep else ""
            return acc[:len(acc) - keep], "", False
        if state == self._EATING_END:
            trimmed = acc.lstrip(_GO_SPACE)
            self._acc = ""
            if trimmed:
                self._state = self._DONE
            return "", trimmed, False
        self._acc = ""
        return "", acc, False
