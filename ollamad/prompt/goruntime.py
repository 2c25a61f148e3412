"""Runtime state of Go template execution: limits, variables, output, field lookups.

Shared by the compiled closures of :mod:`ollamad.prompt.goexec` and
:mod:`ollamad.prompt.gocommands`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ollamad.prompt import gonodes as p
from ollamad.prompt.errors import TemplateError
from ollamad.prompt.gofmt import format_value
from ollamad.prompt.gofuncs import STRING, FuncError
from ollamad.prompt.govalues import GoStruct, go_type_name

if TYPE_CHECKING:
    from ollamad.prompt.goexec import Program


@dataclass(frozen=True, slots=True)
class Limits:
    """Resource limits for parsing and executing one template."""

    max_source: int = 1 << 20  # characters of template text
    max_nesting: int = 64  # nested if/range/with/parentheses
    max_output: int = 16 << 20  # characters a single execution may produce
    max_steps: int = 2_000_000  # executed nodes and loop iterations
    max_call_depth: int = 32  # nested {{template}} invocations
    max_seconds: float = 10.0  # wall clock for one Jinja render (Go templates count steps)


# Sentinels: no piped value ("final" in Go), and a missing map key under missingkey=default,
# which Go keeps as an invalid value so that further field lookups quietly give nothing.
MISSING: Any = object()
NO_ENTRY: Any = object()
ABSENT: Any = object()

class ExecFailure(Exception):
    """An execution error at a node; turned into TemplateError with Go's context prefix."""

    def __init__(self, message: str, node: p.Node | None) -> None:
        super().__init__(message)
        self.node = node


class Break(Exception):
    """{{break}}: unwinds to the innermost range."""


class Continue(Exception):
    """{{continue}}: unwinds to the innermost range, which goes on with the next element."""


class State:
    """One execution: output so far, the variable stack, and the budget spent."""

    __slots__ = ("call_depth", "limits", "out", "program", "size", "steps", "vars", "zero")

    def __init__(self, program: Program, data: Any, zero: bool) -> None:
        self.program = program
        self.limits = program.limits
        self.out: list[str] = []
        self.size = 0
        self.steps = 0
        self.call_depth = 0
        self.vars: list[list[Any]] = [["$", data]]
        self.zero = zero

    def write(self, text: str) -> None:
        self.out.append(text)
        self.size += len(text)
        if self.size > self.limits.max_output:
            raise TemplateError(
                f"template output exceeds the limit of {self.limits.max_output} characters")

    def step(self, count: int) -> None:
        self.steps += count
        if self.steps > self.limits.max_steps:
            raise TemplateError(
                f"template execution exceeds the limit of {self.limits.max_steps} steps")

    def var(self, name: str, node: p.Node) -> Any:
        stack = self.vars
        for i in range(len(stack) - 1, -1, -1):
            if stack[i][0] == name:
                return stack[i][1]
        raise ExecFailure(f"undefined variable: {name}", node)

    def set_var(self, name: str, value: Any, node: p.Node) -> None:
        stack = self.vars
        for i in range(len(stack) - 1, -1, -1):
            if stack[i][0] == name:
                stack[i][1] = value
                return
        raise ExecFailure(f"undefined variable: {name}", node)


def print_text(value: Any) -> str:
    """How an action prints its value: nil shows as ``<no value>``, as in text/template."""
    if type(value) is str:
        return value
    if value is None or value is NO_ENTRY:
        return "<no value>"
    return format_value(value)


# --- fields ------------------------------------------------------------------------------------

_struct_fields: dict[type, frozenset[str] | None] = {}


def _fields_of(cls: type) -> frozenset[str] | None:
    try:
        return _struct_fields[cls]
    except KeyError:
        names = frozenset(cls.go_field_names()) if issubclass(cls, GoStruct) else None
        _struct_fields[cls] = names
        return names


def field_step(st: State, receiver: Any, name: str, node: p.Node, args: list[Any] | None) -> Any:
    """One step of a field chain; ``args`` are call arguments when the step is a method call."""
    cls = type(receiver)
    methods = getattr(cls, "go_methods", None)
    if methods and name in methods:
        return call(getattr(receiver, methods[name]), name, args or [], node)
    if isinstance(receiver, dict):
        if args:
            raise ExecFailure(f"{name} is not a method but has arguments", node)
        value = receiver.get(name, ABSENT)
        if value is ABSENT:
            return None if st.zero else NO_ENTRY
        return value
    fields = _fields_of(cls)
    if fields is not None and name in fields:
        if args:
            raise ExecFailure(f"{name} has arguments but cannot be invoked as function", node)
        return getattr(receiver, name)
    raise ExecFailure(f"can't evaluate field {name} in type {go_type_name(receiver)}", node)


def chain(st: State, receiver: Any, idents: tuple[str, ...], node: p.Node,
           args: list[Any] | None) -> Any:
    last = len(idents) - 1
    for i, name in enumerate(idents):
        if receiver is NO_ENTRY:
            return None
        if receiver is None:
            if i == 0:
                return None  # an invalid value: Go yields nothing without complaint
            raise ExecFailure(f"nil pointer evaluating interface {{}}.{name}", node)
        receiver = field_step(st, receiver, name, node, args if i == last else None)
    return None if receiver is NO_ENTRY else receiver


def call(fn: Callable[..., Any], name: str, args: list[Any], node: p.Node) -> Any:
    try:
        return fn(*args)
    except (FuncError, ValueError, TypeError, ArithmeticError) as exc:
        raise ExecFailure(f"error calling {name}: {exc}", node) from None


def check_kind(value: Any, kind: str | None, node: p.Node) -> Any:
    if kind == STRING and not isinstance(value, str):
        if value is None:
            raise ExecFailure("invalid value; expected string", node)
        raise ExecFailure(f"wrong type for value; expected string; got {go_type_name(value)}",
                          node)
    return value
