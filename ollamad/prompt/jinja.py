"""GGUF chat templates (``tokenizer.chat_template``, Jinja) for models without a Go TEMPLATE.

Rendered the way Hugging Face's ``apply_chat_template`` renders them (trim_blocks,
lstrip_blocks, loop controls, a ``tojson`` that does not escape HTML, ``raise_exception``,
``strftime_now``) inside Jinja's immutable sandbox, which keeps a template from reaching Python
internals. The sandbox does not bound time or memory, so this module adds a budget: every loop
item, call, attribute lookup and filter costs a step, and operations that could build huge
values (``*``, ``+``, ``~``, ``%``, size arguments of filters and string methods) are checked
before they run. A template from a model file can therefore fail, but not hang or exhaust memory.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from datetime import datetime
from typing import Any, ClassVar

import jinja2
from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.ext import Extension, loopcontrols
from jinja2.runtime import Namespace
from jinja2.sandbox import ImmutableSandboxedEnvironment

from ollamad.prompt.errors import TemplateError
from ollamad.prompt.goruntime import Limits
from ollamad.prompt.values import as_array, as_object

_THINK_LEVELS = ("high", "medium", "low", "max")
# A run of this many digits in a format string is a width or precision nobody needs.
_HUGE_FORMAT_NUMBER = re.compile(r"\d{7,}")


def jinja_capabilities(chat_template: str) -> list[str]:
    """Capabilities Ollama reads from a GGUF chat template's text (server/images.go)."""
    caps = []
    if "tools" in chat_template or "tool_call" in chat_template:
        caps.append("tools")
    thinking = "<think>" in chat_template and "</think>" in chat_template
    if not thinking:
        thinking = (("content.split('</think>')" in chat_template
                     or 'content.split("</think>")' in chat_template)
                    and "reasoning_content" not in chat_template
                    and "<SPECIAL_12>" not in chat_template)
    if thinking:
        caps.append("thinking")
    return caps


class _Budget:
    """Steps, a deadline and a size limit for one render."""

    __slots__ = ("deadline", "max_size", "max_steps", "steps")

    def __init__(self, limits: Limits) -> None:
        self.steps = 0
        self.max_steps = limits.max_steps
        self.max_size = limits.max_output
        self.deadline = time.monotonic() + limits.max_seconds

    def tick(self, cost: int = 1) -> None:
        self.steps += cost
        if self.steps > self.max_steps:
            raise TemplateError(f"chat template exceeds the limit of {self.max_steps} steps")
        if self.steps & 1023 == 0 and time.monotonic() > self.deadline:
            raise TemplateError("chat template took too long to render")

    def size(self, value: Any) -> Any:
        if isinstance(value, str | bytes | list | tuple | dict) and len(value) > self.max_size:
            raise TemplateError(f"chat template built a value larger than {self.max_size}")
        return value

    def allow(self, length: int) -> None:
        if length > self.max_size:
            raise TemplateError(f"chat template built a value larger than {self.max_size}")


_budget: ContextVar[_Budget] = ContextVar("ollamad_jinja_budget")


def _active() -> _Budget:
    try:
        return _budget.get()
    except LookupError:
        raise TemplateError("chat template used outside of a render") from None


def _check_sized_args(budget: _Budget, args: Iterable[Any]) -> None:
    for arg in args:
        if isinstance(arg, int) and not isinstance(arg, bool) and abs(arg) > budget.max_size:
            raise TemplateError("chat template passed an oversized count or width")


def _check_str_method(budget: _Budget, func: Any, args: tuple[Any, ...]) -> None:
    owner = getattr(func, "__self__", None)
    if not isinstance(owner, str):
        return
    name = getattr(func, "__name__", "")
    if name == "replace" and len(args) >= 2:
        old, new = str(args[0]), str(args[1])
        count = owner.count(old) if old else len(owner) + 1
        budget.allow(len(owner) + count * max(len(new) - len(old), 0))
    elif name == "join" and args and isinstance(args[0], list | tuple):
        budget.allow(sum(len(str(a)) for a in args[0]) + len(owner) * len(args[0]))
    elif name in ("format", "format_map") and _HUGE_FORMAT_NUMBER.search(owner):
        raise TemplateError("chat template used an oversized format width")


class _GuardedCodeGenerator(CodeGenerator):
    """Routes ``~`` and every ``for`` loop through the budget."""

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.guarded_concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")

    def visit_For(self, node: nodes.For, frame: Frame) -> None:
        if not getattr(node, "_guarded", False):
            node.iter = nodes.Call(nodes.EnvironmentAttribute("guarded_iter"), [node.iter], [],
                                   None, None, lineno=node.lineno)
            node._guarded = True  # type: ignore[attr-defined]
        super().visit_For(node, frame)


class _GenerationBlock(Extension):
    """Accepts Hugging Face's ``{% generation %}`` marker block and renders its body."""

    tags: ClassVar[set[str]] = {"generation"}

    def parse(self, parser: Any) -> list[nodes.Node]:
        next(parser.stream)
        return parser.parse_statements(("name:endgeneration",), drop_needle=True)


class _Namespace(Namespace):
    """``namespace()`` whose attributes may not grow past the size limit."""

    def __setitem__(self, name: str, value: Any) -> None:
        _active().size(value)
        super().__setitem__(name, value)


class _Environment(ImmutableSandboxedEnvironment):
    code_generator_class = _GuardedCodeGenerator
    intercepted_binops = frozenset({"*", "**", "+", "%", "//"})

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        budget = _active()
        budget.tick()
        # The sandbox hands out str.format wrapped; look through to the bound method.
        method = getattr(__obj, "__wrapped__", __obj)
        if isinstance(getattr(method, "__self__", None), str | list | tuple | bytes):
            # str.center(10**9) and friends allocate their size argument up front.
            _check_sized_args(budget, args)
            _check_sized_args(budget, kwargs.values())
            _check_str_method(budget, method, args)
        return budget.size(super().call(__context, __obj, *args, **kwargs))

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        budget = _active()
        budget.tick()
        if operator == "*":
            for seq, count in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and isinstance(count, int):
                    budget.allow(len(seq) * max(count, 0))
            if isinstance(left, int) and isinstance(right, int):
                # Squaring a number in a loop grows it exponentially too.
                budget.allow((left.bit_length() + right.bit_length()) // 8)
        elif operator == "+" and isinstance(left, str | list | tuple):
            if isinstance(right, str | list | tuple):
                budget.allow(len(left) + len(right))
        elif operator == "**" and isinstance(left, int) and isinstance(right, int):
            if right > 0 and abs(left) > 1 and right * abs(left).bit_length() > 4096:
                raise TemplateError("chat template computed an oversized power")
        elif operator == "%" and isinstance(left, str):
            if _HUGE_FORMAT_NUMBER.search(left):
                raise TemplateError("chat template used an oversized format width")
            _check_sized_args(budget, right if isinstance(right, tuple) else (right,))
        return budget.size(super().call_binop(context, operator, left, right))

    def getattr(self, obj: Any, attribute: str) -> Any:
        _active().tick()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        _active().tick()
        return super().getitem(obj, argument)

    def guarded_concat(self, parts: Sequence[Any]) -> str:
        budget = _active()
        pieces = []
        total = 0
        for part in parts:
            text = str(part)
            total += len(text)
            budget.allow(total)
            pieces.append(text)
        return "".join(pieces)

    def guarded_iter(self, iterable: Any) -> Iterator[Any]:
        budget = _active()
        if isinstance(iterable, jinja2.Undefined):
            yield from iterable
            return
        for item in iterable:
            budget.tick()
            yield item


# Filters whose numeric arguments are sizes they allocate (widths, padding, batch sizes).
_SIZED_FILTERS = frozenset({"batch", "center", "format", "indent", "slice", "tojson",
                            "truncate", "wordwrap"})


def _guard_filter(fn: Callable[..., Any], name: str) -> Callable[..., Any]:
    def guarded(*args: Any, **kwargs: Any) -> Any:
        budget = _active()
        budget.tick()
        if name in _SIZED_FILTERS:
            _check_sized_args(budget, args[1:])
            _check_sized_args(budget, kwargs.values())
        if name == "replace" and len(args) >= 3:
            _check_str_method(budget, str(args[0]).replace, (args[1], args[2]))
        elif name == "format" and args and _HUGE_FORMAT_NUMBER.search(str(args[0])):
            raise TemplateError("chat template used an oversized format width")
        elif name == "indent" and len(args) >= 2 and isinstance(args[1], int):
            # Every line gets the indent: lines times width can dwarf both.
            text = str(args[0])
            budget.allow(len(text) + (text.count("\n") + 1) * max(args[1], 0))
        return budget.size(fn(*args, **kwargs))

    # Keep Jinja's pass_context/pass_environment markers so it passes the same arguments.
    for marker in ("jinja_pass_arg",):
        if hasattr(fn, marker):
            setattr(guarded, marker, getattr(fn, marker))
    return guarded


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None,
            separators: tuple[str, str] | None = None, sort_keys: bool = False) -> str:
    # Hugging Face's tojson: plain json.dumps, no HTML escaping (unlike Jinja's own).
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


def _raise_exception(message: str) -> None:
    raise TemplateError(f"chat template raised: {message}")


def _make_environment(clock: Callable[[], datetime]) -> _Environment:
    env = _Environment(trim_blocks=True, lstrip_blocks=True,
                       extensions=[loopcontrols, _GenerationBlock])
    env.filters["tojson"] = _tojson
    env.filters = {name: _guard_filter(fn, name) for name, fn in env.filters.items()}
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = lambda fmt: clock().strftime(str(fmt))
    env.globals["namespace"] = _Namespace
    # lipsum(n) writes n paragraphs in one call; no chat template needs it.
    env.globals.pop("lipsum", None)
    return env


def hf_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Ollama API messages in the shape Hugging Face chat templates expect."""
    out = []
    for msg in messages:
        item: dict[str, Any] = {"role": str(msg.get("role") or "").lower(),
                                "content": str(msg.get("content") or "")}
        if msg.get("thinking"):
            item["reasoning_content"] = msg["thinking"]
        if msg.get("tool_calls"):
            calls = []
            for call in as_array(msg["tool_calls"]):
                call = as_object(call)
                fn = as_object(call.get("function"))
                args = fn.get("arguments")
                if isinstance(args, str):
                    with contextlib.suppress(ValueError):
                        args = json.loads(args)
                entry: dict[str, Any] = {"type": "function",
                                         "function": {"name": fn.get("name", ""),
                                                      "arguments": args if args is not None
                                                      else {}}}
                if call.get("id"):
                    entry["id"] = call["id"]
                calls.append(entry)
            item["tool_calls"] = calls
        if msg.get("tool_name"):
            item["name"] = msg["tool_name"]
        if msg.get("tool_call_id"):
            item["tool_call_id"] = msg["tool_call_id"]
        out.append(item)
    return out


class JinjaChatTemplate:
    """A GGUF ``tokenizer.chat_template``, compiled once and rendered per request."""

    def __init__(self, source: str, template: jinja2.Template, limits: Limits,
                 bos_token: str, eos_token: str) -> None:
        self.source = source
        self._template = template
        self._limits = limits
        self.bos_token = bos_token
        self.eos_token = eos_token

    @classmethod
    def parse(cls, source: str, *, bos_token: str = "", eos_token: str = "",
              limits: Limits | None = None,
              clock: Callable[[], datetime] = datetime.now) -> JinjaChatTemplate:
        limits = limits or Limits()
        if len(source) > limits.max_source:
            raise TemplateError(f"chat template is longer than {limits.max_source} characters")
        env = _make_environment(clock)
        try:
            template = env.from_string(source)
        except RecursionError:
            raise TemplateError("chat template nested too deeply to parse") from None
        except jinja2.TemplateError as exc:
            raise TemplateError(f"chat template: {exc}") from None
        return cls(source, template, limits, bos_token, eos_token)

    @property
    def capabilities(self) -> list[str]:
        return jinja_capabilities(self.source)

    @property
    def uses_tools(self) -> bool:
        return "tools" in self.capabilities

    @property
    def uses_thinking(self) -> bool:
        return "thinking" in self.capabilities

    def render(self, messages: Sequence[Mapping[str, Any]], *,
               tools: Sequence[Mapping[str, Any]] | None = None,
               think: bool | str | None = None, add_generation_prompt: bool = True,
               **extra: Any) -> str:
        """The prompt for a chat, with the variables Hugging Face templates read."""
        variables: dict[str, Any] = {
            "messages": hf_messages(messages),
            "tools": [dict(as_object(t)) for t in tools] if tools else None,
            "add_generation_prompt": add_generation_prompt,
            "bos_token": self.bos_token,
            "eos_token": self.eos_token,
        }
        if think is not None:
            variables["enable_thinking"] = think is True or think in _THINK_LEVELS
            if isinstance(think, str):
                variables["reasoning_effort"] = think
        variables.update(extra)
        budget = _Budget(self._limits)
        token = _budget.set(budget)
        try:
            pieces = []
            total = 0
            for piece in self._template.generate(variables):
                total += len(piece)
                budget.allow(total)
                pieces.append(piece)
            return "".join(pieces)
        except TemplateError:
            raise
        except RecursionError:
            raise TemplateError("chat template recursed too deeply") from None
        except Exception as exc:  # a broken model file must not take the daemon down
            raise TemplateError(f"chat template failed: {type(exc).__name__}: {exc}") from None
        finally:
            _budget.reset(token)
