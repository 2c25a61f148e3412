"""Ollama's execution of a model's Go TEMPLATE over a chat (template/template.go).

Three modes, chosen per call as Ollama chooses them:

* fill-in-the-middle: a prompt and a suffix are given; the template sees Prompt and Suffix.
* messages: the template refers to ``.Messages`` and is executed once over the whole chat, with
  ``System`` (all system messages joined by a blank line), the chat with consecutive turns of
  one role merged, ``Tools`` and an empty ``Response``.
* legacy: the template is written with ``.System``/``.Prompt``/``.Response``; it is executed once
  per completed turn, and the last turn uses the template cut right after ``.Response`` so that
  the prompt ends where the model should start writing.

A template that refers to neither ``.Messages`` nor ``.Response`` gets ``{{ .Response }}``
appended, and a model without a template uses ``{{ .Prompt }}``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ollamad.prompt import gonodes as p
from ollamad.prompt.errors import TemplateError
from ollamad.prompt.gofmt import marshal
from ollamad.prompt.gofuncs import ANY, STRING, GoFunc, function_table
from ollamad.prompt.goruntime import Limits
from ollamad.prompt.gotemplate import GoTemplate
from ollamad.prompt.govalues import GoSlice
from ollamad.prompt.thinking import infer_tags
from ollamad.prompt.tools import parse_tag
from ollamad.prompt.values import Message, ToolProperty, collate, image_bytes, tools_from_api

DEFAULT_TEMPLATE = "{{ .Prompt }}"

Think = bool | str | None


def ollama_funcs(clock: Callable[[], datetime] = datetime.now) -> dict[str, GoFunc]:
    """The functions Ollama adds to text/template's builtins."""

    def to_json(value: Any) -> str:
        try:
            return marshal(value)
        except ValueError:
            return ""  # Ollama ignores the marshalling error and prints nothing

    def to_typescript(value: Any) -> str:
        if isinstance(value, ToolProperty):
            return value.to_typescript_type()
        return "any"

    # The date helpers accept a format argument but, like Ollama's, ignore it.
    return {
        "json": GoFunc(to_json, (ANY,)),
        "currentDate": GoFunc(lambda *_: clock().strftime("%Y-%m-%d"), (), STRING),
        "yesterdayDate": GoFunc(
            lambda *_: (clock() - timedelta(days=1)).strftime("%Y-%m-%d"), (), STRING),
        "toTypeScriptType": GoFunc(to_typescript, (ANY,)),
    }


# --- tree inspection ---------------------------------------------------------------------------


def identifiers(node: p.Node | None) -> list[str]:
    """Field and variable names a tree mentions, walked the way Ollama walks it."""
    if node is None:
        return []
    if isinstance(node, p.ListNode):
        return [name for child in node.nodes for name in identifiers(child)]
    if isinstance(node, p.TemplateNode):
        if node.pipe is None:
            raise TemplateError("undefined template specified")
        return identifiers(node.pipe)
    if isinstance(node, p.ActionNode):
        return identifiers(node.pipe)
    if isinstance(node, p.BranchNode):
        return identifiers(node.pipe) + identifiers(node.list) + identifiers(node.else_list)
    if isinstance(node, p.PipeNode):
        return [name for cmd in node.cmds for arg in cmd.args for name in identifiers(arg)]
    if isinstance(node, p.FieldNode | p.VariableNode):
        return list(node.ident)
    return []


def template_vars(tmpl: GoTemplate) -> list[str]:
    """Ollama's ``Vars``: the lower-cased identifiers of every tree, sorted and unique."""
    names = {n.lower() for tree in tmpl.trees.values() for n in identifiers(tree)}
    return sorted(names)


def _response_action(pos: int, line: int) -> p.ActionNode:
    field = p.FieldNode(pos, line, ("Response",))
    return p.ActionNode(pos, line, p.PipeNode(pos, line, cmds=[p.CommandNode(pos, line, [field])]))


def cut_after_response(root: p.ListNode) -> p.ListNode:
    """A copy of the tree without everything after the first ``.Response`` field.

    Mirrors Ollama's deleteNode walk: branch pipelines are not searched, a command left
    without arguments removes its whole action, and an ``else`` branch after the cut is an
    error (Ollama's walk panics there).
    """
    cut = False

    def walk(node: p.Node) -> p.Node | None:
        nonlocal cut
        if isinstance(node, p.FieldNode) and "Response" in node.ident:
            cut = True
            return node
        if cut:
            return None
        if isinstance(node, p.ListNode):
            kept = [n for n in (walk(c) for c in node.nodes) if n is not None]
            return p.ListNode(node.pos, node.line, kept)
        if isinstance(node, p.BranchNode):
            body = walk(node.list)
            orelse = walk(node.else_list) if node.else_list is not None else None
            if node.else_list is not None and orelse is None:
                raise TemplateError("template: cannot cut the template after .Response "
                                    "inside a branch that has an else")
            assert isinstance(body, p.ListNode) and (orelse is None or
                                                     isinstance(orelse, p.ListNode))
            return type(node)(node.pos, node.line, node.pipe, body, orelse)
        if isinstance(node, p.ActionNode):
            pipe = walk(node.pipe)
            return p.ActionNode(node.pos, node.line, pipe) if isinstance(pipe, p.PipeNode) else None
        if isinstance(node, p.PipeNode):
            cmds = []
            for cmd in node.cmds:
                args = [a for a in (walk(x) for x in cmd.args) if a is not None]
                if not args:
                    return None
                cmds.append(p.CommandNode(cmd.pos, cmd.line, args))
            return p.PipeNode(node.pos, node.line, node.decl, node.is_assign, cmds)
        return node

    result = walk(root)
    assert isinstance(result, p.ListNode)
    return result


# --- execution ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Values:
    """What a caller hands to :meth:`ChatTemplate.execute` (Ollama's ``template.Values``).

    ``messages`` and ``tools`` use the HTTP API's JSON shapes; ``tools=None`` means no tools
    were sent (the template sees nil), ``[]`` an empty list. ``think`` is the request's
    ``think``: None (unset), a bool, or a level ``"low"|"medium"|"high"|"max"``.
    """

    messages: Sequence[Mapping[str, Any]] = ()
    tools: Sequence[Mapping[str, Any]] | None = None
    prompt: str = ""
    suffix: str = ""
    think: Think = None


def _think_values(think: Think) -> dict[str, Any]:
    levels = ("high", "medium", "low", "max")
    if isinstance(think, str):
        enabled, level = think in levels, think
    else:
        enabled, level = think is True, "medium" if think is True else ""
    return {"Think": enabled, "ThinkLevel": level, "IsThinkSet": think is not None}


class ChatTemplate:
    """A model's Go chat template with Ollama's semantics.

    >>> t = ChatTemplate.parse("{{ range .Messages }}<{{ .Role }}>{{ .Content }}{{ end }}")
    >>> t.render([{"role": "user", "content": "hi"}])
    '<user>hi'
    """

    def __init__(self, tmpl: GoTemplate, vars_: list[str]) -> None:
        self._tmpl = tmpl
        self._vars = vars_
        self._final: GoTemplate | None = None

    @classmethod
    def parse(cls, text: str | None, *, limits: Limits | None = None,
              clock: Callable[[], datetime] = datetime.now) -> ChatTemplate:
        """Parse a TEMPLATE; None (a model without one) gives Ollama's default template."""
        if text is None:
            text = DEFAULT_TEMPLATE
        tmpl = GoTemplate.parse(text, ollama_funcs(clock), limits)
        vars_ = template_vars(tmpl)
        if "messages" not in vars_ and "response" not in vars_:
            root = tmpl.root
            nodes = [*root.nodes, _response_action(len(text), text.count("\n") + 1)]
            tmpl = tmpl.with_trees({**tmpl.trees, "": p.ListNode(root.pos, root.line, nodes)})
            vars_ = sorted({*vars_, "response"})
        return cls(tmpl, vars_)

    # inspection

    @property
    def source(self) -> str:
        return self._tmpl.source

    @property
    def go_template(self) -> GoTemplate:
        return self._tmpl

    @property
    def vars(self) -> list[str]:
        return list(self._vars)

    @property
    def uses_messages(self) -> bool:
        return "messages" in self._vars

    @property
    def uses_tools(self) -> bool:
        """Capability ``tools``: the template refers to ``.Tools``."""
        return "tools" in self._vars

    @property
    def uses_suffix(self) -> bool:
        """Capability ``insert``: the template refers to ``.Suffix``."""
        return "suffix" in self._vars

    @property
    def thinking_tags(self) -> tuple[str, str]:
        """Opening and closing thinking tags inferred from the template (empty if none)."""
        return infer_tags(self._tmpl.root)

    @property
    def uses_thinking(self) -> bool:
        """Capability ``thinking``: both thinking tags can be inferred."""
        opening, closing = self.thinking_tags
        return bool(opening and closing)

    @property
    def capabilities(self) -> list[str]:
        """The capabilities this template gives a model, in Ollama's order."""
        caps = []
        if self.uses_tools:
            caps.append("tools")
        if self.uses_suffix:
            caps.append("insert")
        if self.uses_thinking:
            caps.append("thinking")
        return caps

    @property
    def tool_call_tag(self) -> str:
        """The text a model writes before a tool call (for :class:`ToolParser`)."""
        return parse_tag(self._tmpl.root)

    # rendering

    def render(self, messages: Sequence[Mapping[str, Any]], *,
               tools: Sequence[Mapping[str, Any]] | None = None, think: Think = None) -> str:
        """The prompt for a chat (``/api/chat``), messages in the API's JSON shape.

        Truncation to the context window and ``[img-N]`` image tags are the caller's steps
        (see :func:`tag_images`), as in Ollama's chatPrompt.
        """
        return self.execute(Values(messages=messages, tools=tools, think=think))

    def render_generate(self, prompt: str, *, system: str = "", suffix: str = "",
                        history: Sequence[Mapping[str, Any]] = (),
                        images: Sequence[Any] = (), think: Think = None) -> str:
        """The prompt for ``/api/generate`` without truncation: see :func:`generate_messages`;
        with a suffix, fill-in-the-middle values instead. Images are tagged ``[img-N]``."""
        if suffix:
            return self.execute(Values(prompt=prompt, suffix=suffix, think=think))
        messages, _ = tag_images(generate_messages(prompt, system=system, history=history,
                                                   images=images))
        # Ollama renders generate requests through its chat path, with an empty tool list.
        return self.render(messages, tools=[], think=think)

    def execute(self, values: Values) -> str:
        """Ollama's ``Template.Execute``."""
        think = _think_values(values.think)
        if values.prompt and values.suffix:
            return self._tmpl.execute({"Prompt": values.prompt, "Suffix": values.suffix,
                                       "Response": "", **think})
        system, messages = collate(Message.from_api(m) for m in values.messages)
        if self.uses_messages:
            return self._tmpl.execute({
                "System": system,
                "Messages": GoSlice.of(messages, nil=not messages),
                "Tools": tools_from_api(values.tools),
                "Response": "",
                **think,
            })
        return self._legacy(messages, think)

    def _legacy(self, messages: list[Message], think: dict[str, Any]) -> str:
        parts: list[str] = []
        turn = {"System": "", "Prompt": "", "Response": ""}

        def flush() -> None:
            parts.append(self._tmpl.execute({**turn, **think}))
            turn.update(System="", Prompt="", Response="")

        for msg in messages:
            if msg.Role == "system":
                if turn["Prompt"] or turn["Response"]:
                    flush()
                turn["System"] = msg.Content
            elif msg.Role == "user":
                if turn["Response"]:
                    flush()
                turn["Prompt"] = msg.Content
            elif msg.Role == "assistant":
                turn["Response"] = msg.Content
        # Ollama runs the cut tree as a bare template: builtins only, missingkey=default.
        parts.append(self._final_template().execute({**turn, **think}, missingkey="default"))
        return "".join(parts)

    def _final_template(self) -> GoTemplate:
        if self._final is None:
            base = self._tmpl
            self._final = GoTemplate({"": cut_after_response(base.root)}, function_table(None),
                                     base.limits, base.source)
        return self._final


def generate_messages(prompt: str, *, system: str = "",
                      history: Sequence[Mapping[str, Any]] = (),
                      images: Sequence[Any] = ()) -> list[dict[str, Any]]:
    """The chat Ollama builds for ``/api/generate``: the effective system prompt (the request's,
    else the model's), the model's MESSAGE history (unless the request has ``context``), and
    the user's prompt with its images. Render it with ``tools=[]``, as Ollama does."""
    messages: list[dict[str, Any]] = []
    if system:
        messages.append({"role": "system", "content": system})
    messages.extend(dict(m) for m in history)
    messages.append({"role": "user", "content": prompt, "images": list(images)})
    return messages


def tag_images(messages: Sequence[Mapping[str, Any]],
               start: int = 0) -> tuple[list[dict[str, Any]], list[tuple[int, bytes]]]:
    """Number the images of ``messages[start:]`` across the prompt, as Ollama does.

    Each image becomes ``[img-N]`` in its message's content (replacing an ``[img]``
    placeholder, else prefixed); returns the rewritten messages and ``(N, image bytes)`` for
    the runner.
    """
    out = [dict(m) for m in messages]
    media: list[tuple[int, bytes]] = []
    for msg in out[start:]:
        prefix = ""
        content = str(msg.get("content") or "")
        for image in msg.get("images") or ():
            data = image_bytes(image)
            tag = f"[img-{len(media)}]"
            media.append((len(media), data))
            if "[img]" in content:
                content = content.replace("[img]", tag, 1)
            else:
                prefix += tag
        msg["content"] = prefix + content
    return out, media
