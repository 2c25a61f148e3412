"""Prompts for a stored model: which template renders them, and how a chat is fitted to the context.

The template engines live in :mod:`ollamad.prompt` (pure); this module chooses among them for a
model and does the one step that needs a runner: counting tokens to drop the oldest messages of a
chat that would not fit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from ollamad.errors import BadRequest
from ollamad.model import Model
from ollamad.prompt import ChatTemplate, JinjaChatTemplate, TemplateError, ToolParser

Message = Mapping[str, Any]
Template = ChatTemplate | JinjaChatTemplate
_CACHE_SIZE = 32
_templates: dict[tuple[str, str], Template] = {}


class Tokenizer(Protocol):
    async def tokenize(self, text: str) -> list[int]: ...


def _cached(kind: str, source: str, build: Any) -> Template:
    key = (kind, source)
    if key not in _templates:
        if len(_templates) >= _CACHE_SIZE:
            _templates.pop(next(iter(_templates)))
        _templates[key] = build()
    return _templates[key]


def parse_template(text: str | None) -> ChatTemplate:
    """A Go TEMPLATE (None: Ollama's default); a broken one is the caller's 400."""
    try:
        return _cached("go", text or "", lambda: ChatTemplate.parse(text))  # type: ignore[return-value]
    except TemplateError as exc:
        raise BadRequest(f"template error: {exc}") from None


def check_template(text: str) -> None:
    parse_template(text)


def template_for(model: Model) -> Template:
    """The model's Go TEMPLATE; or, without one, the GGUF's own Jinja chat template."""
    if model.native:
        bos, eos = model.special_tokens
        try:
            return _cached("jinja", model.chat_template, lambda: JinjaChatTemplate.parse(
                model.chat_template, bos_token=bos, eos_token=eos))
        except TemplateError as exc:
            raise BadRequest(f"template error: {exc}") from None
    return parse_template(model.layers.template)


def model_messages(model: Model) -> list[dict[str, Any]]:
    return [{"role": role, "content": content} for role, content in model.layers.messages]


def render_generate(model: Model, *, prompt: str, system: str, template: str, suffix: str,
                    think: bool | str | None, with_history: bool) -> str:
    """``generate``'s prompt: the request's (or the model's) system, MESSAGE history, prompt."""
    chosen = parse_template(template) if template else template_for(model)
    system = system or model.layers.system
    history = model_messages(model) if with_history else []
    try:
        if isinstance(chosen, ChatTemplate):
            return chosen.render_generate(prompt, system=system, suffix=suffix,
                                          history=history, think=think)
        messages = ([{"role": "system", "content": system}] if system else []) + history
        return chosen.render([*messages, {"role": "user", "content": prompt}], think=think)
    except TemplateError as exc:
        raise BadRequest(f"template error: {exc}") from None


def with_model_history(model: Model, messages: Sequence[Message]) -> list[Message]:
    """The model's MESSAGE history, then the request's; the model's SYSTEM first unless the
    request begins with its own system message."""
    history: list[Message] = [*model_messages(model), *messages]
    if model.layers.system and (not messages or messages[0].get("role") != "system"):
        history.insert(0, {"role": "system", "content": model.layers.system})
    return history


def render_chat(model: Model, messages: Sequence[Message], tools: Sequence[Message] | None,
                think: bool | str | None) -> str:
    try:
        return template_for(model).render(messages, tools=tools or None, think=think)
    except TemplateError as exc:
        raise BadRequest(f"template error: {exc}") from None


async def fit_chat(model: Model, messages: Sequence[Message], tools: Sequence[Message] | None,
                   think: bool | str | None, tokenizer: Tokenizer, num_ctx: float) -> str:
    """Render the chat, dropping its oldest messages until the prompt fits ``num_ctx`` tokens.

    System messages and the last message are always kept (Ollama's chatPrompt).
    """
    last = len(messages) - 1
    start = 0
    if math.isfinite(num_ctx):
        for start in range(last + 1):
            kept = [m for m in messages[:start] if m.get("role") == "system"]
            prompt = render_chat(model, [*kept, *messages[start:]], tools, think)
            if len(await tokenizer.tokenize(prompt)) <= num_ctx:
                return prompt
    kept = [m for m in messages[:start] if m.get("role") == "system"]
    return render_chat(model, [*kept, *messages[start:]], tools, think)


class ToolCallParser:
    """Splits streamed output into content and tool calls, with the template's call tag."""

    def __init__(self, model: Model, tools: Sequence[Message]) -> None:
        template = template_for(model)
        if isinstance(template, ChatTemplate):
            tag = template.tool_call_tag
        else:
            tag = "<tool_call>" if "<tool_call>" in template.source else "{"
        self._parser = ToolParser(tools, tag or "{")

    def feed(self, text: str, final: bool) -> tuple[str, list[dict[str, Any]]]:
        calls, content = self._parser.add(text)
        if final:
            content += self._parser.content()
        return content, calls
