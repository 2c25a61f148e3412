"""Compilation of pipelines, commands and arguments into closures (see goexec)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ollamad.prompt import gonodes as p
from ollamad.prompt.errors import TemplateError
from ollamad.prompt.gofuncs import STRING, GoFunc, truth
from ollamad.prompt.goruntime import (
    ABSENT,
    MISSING,
    ExecFailure,
    State,
    call,
    chain,
    check_kind,
)

Eval = Callable[[State, Any], Any]
Cmd = Callable[[State, Any, Any], Any]


class CommandCompiler:
    """Turns pipelines and their commands into closures ``(state, dot[, final]) -> value``."""

    def __init__(self, funcs: Mapping[str, GoFunc]) -> None:
        self.funcs = funcs

    def pipeline(self, pipe: p.PipeNode, declare: bool = True) -> Eval:
        cmds = [self.command(c) for c in pipe.cmds]
        names = [v.ident[0] for v in pipe.decl] if declare else []
        is_assign = pipe.is_assign
        if len(cmds) == 1 and not names:
            only = cmds[0]

            def run_one(st: State, dot: Any) -> Any:
                return only(st, dot, MISSING)

            return run_one

        def run(st: State, dot: Any) -> Any:
            value = MISSING
            for cmd in cmds:
                value = cmd(st, dot, value)
            for name in names:
                if is_assign:
                    st.set_var(name, value, pipe)
                else:
                    st.vars.append([name, value])
            return value

        return run

    def command(self, cmd: p.CommandNode) -> Cmd:
        first = cmd.args[0]
        rest = cmd.args[1:]
        if isinstance(first, p.FieldNode):
            return self.field_command(first, rest)
        if isinstance(first, p.VariableNode):
            return self.variable_command(first, rest)
        if isinstance(first, p.ChainNode):
            return self.chain_command(first, rest)
        if isinstance(first, p.IdentifierNode):
            return self.function(first, rest, cmd)
        if isinstance(first, p.NilNode):
            def run_nil(st: State, dot: Any, final: Any) -> Any:
                raise ExecFailure("nil is not a command", first)

            return run_nil
        value = self.arg(first, None)
        has_args = bool(rest)

        def run(st: State, dot: Any, final: Any) -> Any:
            if has_args or final is not MISSING:
                raise ExecFailure(f"can't give argument to non-function {first}", first)
            return value(st, dot)

        return run

    def _call_args(self, rest: list[p.Node]) -> Callable[[State, Any, Any], list[Any] | None]:
        evals = [self.arg(a, None) for a in rest]

        def collect(st: State, dot: Any, final: Any) -> list[Any] | None:
            if not evals and final is MISSING:
                return None
            args = [e(st, dot) for e in evals]
            if final is not MISSING:
                args.append(final)
            return args

        return collect

    def field_command(self, node: p.FieldNode, rest: list[p.Node]) -> Cmd:
        idents = node.ident
        collect = self._call_args(rest)
        if len(idents) == 1 and not rest:
            name = idents[0]

            def run_simple(st: State, dot: Any, final: Any) -> Any:
                if type(dot) is dict and final is MISSING:
                    value = dot.get(name, ABSENT)
                    if value is ABSENT:
                        return None
                    return value
                args = None if final is MISSING else [final]
                return chain(st, dot, idents, node, args)

            return run_simple

        def run(st: State, dot: Any, final: Any) -> Any:
            return chain(st, dot, idents, node, collect(st, dot, final))

        return run

    def variable_command(self, node: p.VariableNode, rest: list[p.Node]) -> Cmd:
        name = node.ident[0]
        idents = node.ident[1:]
        collect = self._call_args(rest)

        def run(st: State, dot: Any, final: Any) -> Any:
            value = st.vars[0][1] if name == "$" else st.var(name, node)
            if not idents:
                if rest or final is not MISSING:
                    raise ExecFailure(f"can't give argument to non-function {node}", node)
                return value
            return chain(st, value, idents, node, collect(st, dot, final))

        return run

    def chain_command(self, node: p.ChainNode, rest: list[p.Node]) -> Cmd:
        if isinstance(node.node, p.NilNode):
            def run_nil(st: State, dot: Any, final: Any) -> Any:
                raise ExecFailure(f"indirection through explicit nil in {node}", node)

            return run_nil
        receiver = self.arg(node.node, None)
        collect = self._call_args(rest)
        fields = node.fields

        def run(st: State, dot: Any, final: Any) -> Any:
            return chain(st, receiver(st, dot), fields, node, collect(st, dot, final))

        return run

    def function(self, node: p.IdentifierNode, rest: list[p.Node],
                 context: p.Node | None = None) -> Cmd:
        name = node.name
        where = context or node
        fn = self.funcs.get(name)
        if fn is None:
            def run_undefined(st: State, dot: Any, final: Any) -> Any:
                raise ExecFailure(f'"{name}" is not a defined function', node)

            return run_undefined
        fixed = fn.params
        kinds = [fixed[i] if i < len(fixed) else fn.variadic for i in range(len(rest))]
        evals = [self.arg(a, k) for a, k in zip(rest, kinds, strict=True)]
        if name in ("and", "or"):
            return self.logic(node, evals, name == "or")
        target = fn.fn
        variadic = fn.variadic is not None
        nfixed = len(fixed)
        final_kind = None
        if nfixed and not variadic:
            final_kind = fixed[-1]
        elif variadic:
            final_kind = fn.variadic

        def run(st: State, dot: Any, final: Any) -> Any:
            args = [e(st, dot) for e in evals]
            if final is not MISSING:
                kind = fixed[len(args)] if len(args) < nfixed else final_kind
                args.append(check_kind(final, kind, node))
            count = len(args)
            if variadic:
                if count < nfixed:
                    raise ExecFailure(f"wrong number of args for {name}: want at least "
                                      f"{nfixed} got {count}", node)
            elif count != nfixed:
                raise ExecFailure(f"wrong number of args for {name}: want {nfixed} got {count}",
                                  node)
            result = call(target, name, args, where)
            if type(result) is str and len(result) > st.limits.max_output:
                raise ExecFailure(f"{name} built a string longer than the output limit", where)
            return result

        return run

    def logic(self, node: p.IdentifierNode, evals: list[Eval], is_or: bool) -> Cmd:
        name = node.name

        def run(st: State, dot: Any, final: Any) -> Any:
            if not evals and final is MISSING:
                raise ExecFailure(f"wrong number of args for {name}: want at least 1 got 0",
                                  node)
            value = None
            for ev in evals:
                value = ev(st, dot)
                if truth(value) == is_or:
                    return value
            if final is not MISSING:
                value = final
            return value

        return run

    def arg(self, node: p.Node, kind: str | None) -> Eval:
        """An evaluator for a command argument; ``kind`` is the parameter's type, if known."""
        if isinstance(node, p.NumberNode | p.BoolNode | p.StringNode | p.NilNode):
            return self.literal(node, kind)
        if isinstance(node, p.DotNode):
            value: Eval = lambda st, dot: dot  # noqa: E731
        elif isinstance(node, p.FieldNode):
            value = self._no_final(self.field_command(node, []))
        elif isinstance(node, p.VariableNode):
            value = self._no_final(self.variable_command(node, []))
        elif isinstance(node, p.ChainNode):
            value = self._no_final(self.chain_command(node, []))
        elif isinstance(node, p.IdentifierNode):
            value = self._no_final(self.function(node, []))
        elif isinstance(node, p.PipeNode):
            value = self.pipeline(node)
        else:
            raise TemplateError(f"can't handle {node} as an argument")
        if kind != STRING:
            return value

        def checked(st: State, dot: Any) -> Any:
            return check_kind(value(st, dot), kind, node)

        return checked

    @staticmethod
    def _no_final(cmd: Cmd) -> Eval:
        def run(st: State, dot: Any) -> Any:
            return cmd(st, dot, MISSING)

        return run

    @staticmethod
    def literal(node: p.Node, kind: str | None) -> Eval:
        if kind == STRING and not isinstance(node, p.StringNode):
            message = (f"cannot assign nil to {kind}" if isinstance(node, p.NilNode)
                       else f"expected string; found {node}")

            def fail(st: State, dot: Any) -> Any:
                raise ExecFailure(message, node)

            return fail
        if isinstance(node, p.NumberNode) and node.value is None:
            def overflow(st: State, dot: Any) -> Any:
                raise ExecFailure(f"{node.text} overflows int", node)

            return overflow
        if isinstance(node, p.NumberNode | p.BoolNode):
            constant: Any = node.value
        elif isinstance(node, p.StringNode):
            constant = node.text
        else:
            constant = None
        return lambda st, dot: constant
