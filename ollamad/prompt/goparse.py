"""Parser of Go's text/template syntax into the nodes of :mod:`ollamad.prompt.gonodes`.

It follows text/template/parse: the same grammar, the same parse-time checks (functions and
variables must be defined, ``break``/``continue`` only inside ``range``) and error messages.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from ollamad.prompt.errors import TemplateError
from ollamad.prompt.golex import T, Token, lex
from ollamad.prompt.gonodes import (
    ActionNode,
    BoolNode,
    BranchNode,
    BreakNode,
    ChainNode,
    CommandNode,
    ContinueNode,
    DotNode,
    FieldNode,
    IdentifierNode,
    IfNode,
    ListNode,
    NilNode,
    Node,
    NumberNode,
    PipeNode,
    RangeNode,
    StringNode,
    TemplateNode,
    TextNode,
    VariableNode,
    WithNode,
    is_empty_tree,
)

# {{end}} and {{else}} only delimit lists while parsing; they never reach a tree.


@dataclass(slots=True, eq=False)
class _EndNode(Node):
    def __str__(self) -> str:
        return "{{end}}"


@dataclass(slots=True, eq=False)
class _ElseNode(Node):
    def __str__(self) -> str:
        return "{{else}}"


# --- literals ----------------------------------------------------------------------------------

_SIMPLE_ESCAPES = {"a": 7, "b": 8, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11, "\\": 92}
_OCTAL_INT = re.compile(r"0[0-7_]+")
_INT64_MIN, _INT64_MAX, _UINT64_MAX = -(2**63), 2**63 - 1, 2**64 - 1


def go_unquote(quoted: str) -> str:
    """``strconv.Unquote`` for the string and character literals a template may contain."""
    if quoted.startswith("`"):
        # Go drops carriage returns from raw strings.
        return quoted[1:-1].replace("\r", "")
    quote = quoted[0]
    body = quoted[1:-1]
    out = bytearray()
    i = 0
    n = len(body)
    while i < n:
        ch = body[i]
        if ch != "\\":
            if ch == quote:
                raise ValueError("invalid syntax")
            out += ch.encode("utf-8", "surrogatepass")
            i += 1
            continue
        if i + 1 >= n:
            raise ValueError("invalid syntax")
        esc = body[i + 1]
        i += 2
        if esc in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[esc])
        elif esc == quote:
            out += esc.encode()
        elif esc in "xuU":
            size = {"x": 2, "u": 4, "U": 8}[esc]
            digits = body[i:i + size]
            if len(digits) != size or not all(c in "0123456789abcdefABCDEF" for c in digits):
                raise ValueError("invalid syntax")
            value = int(digits, 16)
            i += size
            if esc == "x":
                out.append(value)
            else:
                if value > 0x10FFFF or 0xD800 <= value <= 0xDFFF:
                    raise ValueError("invalid syntax")
                out += chr(value).encode()
        elif esc in "01234567":
            digits = body[i - 1:i + 2]
            if len(digits) != 3 or not all(c in "01234567" for c in digits) or int(digits, 8) > 255:
                raise ValueError("invalid syntax")
            out.append(int(digits, 8))
            i += 2
        else:
            raise ValueError("invalid syntax")
    return out.decode("utf-8", "replace")


def parse_number(text: str) -> int | float | None:
    """A numeric literal's value with Go's typing of untyped constants.

    Returns a float only when the text looks like one, and None for an integer that does not
    fit Go's int (text/template reports that when it executes the constant).
    """
    if text.startswith("'"):
        value = go_unquote(text)
        if len(value) != 1:
            raise ValueError(f"malformed character constant: {text}")
        return ord(value)
    sign = -1 if text.startswith("-") else 1
    body = text.lstrip("+-")
    as_int: int | None = None
    try:
        if _OCTAL_INT.fullmatch(body):
            as_int = sign * int(body, 8)
        elif "." not in body and not any(c in body for c in "pP") and (
                body[:2].lower() in ("0x", "0o", "0b") or "e" not in body.lower()):
            as_int = sign * int(body, 0)
    except ValueError:
        as_int = None
    lowered = body.lower()
    is_hex_int = lowered.startswith("0x") and "p" not in lowered
    if as_int is not None:
        if _INT64_MIN <= as_int <= _INT64_MAX:
            return as_int
        if as_int <= _UINT64_MAX:
            return None
    try:
        as_float = sign * (float.fromhex(body) if lowered.startswith("0x") else float(body))
    except ValueError:
        raise ValueError(f"illegal number syntax: {text!r}") from None
    if not any(c in text for c in ".eEpP") or is_hex_int:
        raise ValueError(f"integer overflow: {text!r}")
    return as_float


# --- parser ------------------------------------------------------------------------------------

_OPERAND_START = frozenset({T.BOOL, T.CHAR_CONSTANT, T.DOT, T.FIELD, T.IDENTIFIER, T.NUMBER,
                            T.NIL, T.RAW_STRING, T.STRING, T.VARIABLE, T.LEFT_PAREN})


class _Parser:
    def __init__(self, text: str, funcs: Iterable[str], max_depth: int) -> None:
        self.tokens = lex(text)
        self.last = len(self.tokens) - 1
        self.i = 0
        self.funcs = frozenset(funcs)
        self.vars: list[str] = ["$"]
        self.trees: dict[str, ListNode] = {}
        self.range_depth = 0
        self.depth = 0
        self.max_depth = max_depth
        self.current: Token = self.tokens[0]

    # token stream
    def next(self) -> Token:
        token = self.tokens[min(self.i, self.last)]
        self.i += 1
        self.current = token
        return token

    def backup(self) -> None:
        self.i -= 1

    def peek(self) -> Token:
        return self.tokens[min(self.i, self.last)]

    def next_non_space(self) -> Token:
        token = self.next()
        while token.typ == T.SPACE:
            token = self.next()
        return token

    def peek_non_space(self) -> Token:
        token = self.next_non_space()
        self.backup()
        return token

    # errors
    def error(self, message: str) -> TemplateError:
        return TemplateError(f"template: :{self.current.line}: {message}")

    def unexpected(self, token: Token, context: str) -> TemplateError:
        return self.error(f"unexpected {token.describe()} in {context}")

    def expect(self, typ: T, context: str) -> Token:
        token = self.next_non_space()
        if token.typ != typ:
            raise self.unexpected(token, context)
        return token

    def enter(self) -> None:
        self.depth += 1
        if self.depth > self.max_depth:
            raise self.error(f"template nested deeper than {self.max_depth} levels")

    # structure
    def parse(self) -> dict[str, ListNode]:
        root = ListNode(self.peek().pos, self.peek().line)
        while self.peek().typ != T.EOF:
            if self.peek().typ == T.LEFT_DELIM:
                save = self.i
                self.next()
                if self.next_non_space().typ == T.DEFINE:
                    self.parse_definition()
                    continue
                self.i = save
            node = self.text_or_action()
            if isinstance(node, _EndNode | _ElseNode):
                raise self.error(f"unexpected {node}")
            root.nodes.append(node)
        self.add("", root)
        return self.trees

    def add(self, name: str, root: ListNode) -> None:
        existing = self.trees.get(name)
        if existing is None or is_empty_tree(existing):
            self.trees[name] = root
        elif not is_empty_tree(root):
            raise self.error(f"template: multiple definition of template {name!r}")

    def sub_tree(self, context: str) -> ListNode:
        """The body of a define or block: its own variables, no enclosing range."""
        saved_vars, saved_range = self.vars, self.range_depth
        self.vars, self.range_depth = ["$"], 0
        self.enter()
        body, end = self.item_list()
        self.depth -= 1
        self.vars, self.range_depth = saved_vars, saved_range
        if not isinstance(end, _EndNode):
            raise self.error(f"unexpected {end} in {context}")
        return body

    def parse_definition(self) -> None:
        context = "define clause"
        token = self.next_non_space()
        if token.typ not in (T.STRING, T.RAW_STRING):
            raise self.unexpected(token, context)
        name = self.unquote(token.val)
        self.expect(T.RIGHT_DELIM, context)
        self.add(name, self.sub_tree(context))

    def item_list(self) -> tuple[ListNode, Node]:
        start = self.peek_non_space()
        nodes = ListNode(start.pos, start.line)
        while self.peek_non_space().typ != T.EOF:
            node = self.text_or_action()
            if isinstance(node, _EndNode | _ElseNode):
                return nodes, node
            nodes.nodes.append(node)
        raise self.error("unexpected EOF")

    def text_or_action(self) -> Node:
        token = self.next_non_space()
        if token.typ == T.TEXT:
            return TextNode(token.pos, token.line, token.val)
        if token.typ == T.LEFT_DELIM:
            return self.action()
        raise self.unexpected(token, "input")

    def action(self) -> Node:
        token = self.next_non_space()
        typ = token.typ
        if typ == T.BLOCK:
            return self.block_control()
        if typ in (T.BREAK, T.CONTINUE):
            word = token.val
            after = self.next_non_space()
            if after.typ != T.RIGHT_DELIM:
                raise self.unexpected(after, "{{" + word + "}}")
            if self.range_depth == 0:
                raise self.error("{{" + word + "}} outside {{range}}")
            cls = BreakNode if typ == T.BREAK else ContinueNode
            return cls(token.pos, token.line)
        if typ == T.ELSE:
            peek = self.peek_non_space()
            if peek.typ in (T.IF, T.WITH):
                return _ElseNode(peek.pos, peek.line)
            end = self.expect(T.RIGHT_DELIM, "else")
            return _ElseNode(end.pos, end.line)
        if typ == T.END:
            end = self.expect(T.RIGHT_DELIM, "end")
            return _EndNode(end.pos, end.line)
        if typ in (T.IF, T.RANGE, T.WITH):
            return self.control(token)
        if typ == T.TEMPLATE:
            return self.template_control()
        self.backup()
        start = self.peek()
        return ActionNode(start.pos, start.line, self.pipeline("command", T.RIGHT_DELIM))

    def control(self, token: Token) -> BranchNode:
        context = token.val
        self.enter()
        mark = len(self.vars)
        pipe = self.pipeline(context, T.RIGHT_DELIM)
        if context == "range":
            self.range_depth += 1
        body, nxt = self.item_list()
        if context == "range":
            self.range_depth -= 1
        else_list = None
        if isinstance(nxt, _ElseNode):
            chained = self.peek()
            if (context, chained.typ) in (("if", T.IF), ("with", T.WITH)):
                # "{{else if x}}" is "{{else}}{{if x}}...{{end}}" whose {{end}} is shared.
                self.next()
                else_list = ListNode(nxt.pos, nxt.line, [self.control(chained)])
            else:
                else_list, end = self.item_list()
                if not isinstance(end, _EndNode):
                    raise self.error(f"expected end; found {end}")
        del self.vars[mark:]
        self.depth -= 1
        cls = {"if": IfNode, "range": RangeNode, "with": WithNode}[context]
        return cls(pipe.pos, pipe.line, pipe, body, else_list)

    def block_control(self) -> TemplateNode:
        context = "block clause"
        token = self.next_non_space()
        name = self.template_name(token, context)
        pipe = self.pipeline(context, T.RIGHT_DELIM)
        self.add(name, self.sub_tree(context))
        return TemplateNode(token.pos, token.line, name, pipe)

    def template_control(self) -> TemplateNode:
        context = "template clause"
        token = self.next_non_space()
        name = self.template_name(token, context)
        pipe = None
        if self.next_non_space().typ != T.RIGHT_DELIM:
            self.backup()
            pipe = self.pipeline(context, T.RIGHT_DELIM)
        return TemplateNode(token.pos, token.line, name, pipe)

    def template_name(self, token: Token, context: str) -> str:
        if token.typ not in (T.STRING, T.RAW_STRING):
            raise self.unexpected(token, context)
        return self.unquote(token.val)

    def unquote(self, quoted: str) -> str:
        try:
            return go_unquote(quoted)
        except ValueError as exc:
            raise self.error(str(exc)) from None

    # pipelines
    def pipeline(self, context: str, end: T) -> PipeNode:
        start = self.peek_non_space()
        pipe = PipeNode(start.pos, start.line)
        while True:  # declarations: "$x :=", "$x =", "$i, $v :=" (range only)
            var = self.peek_non_space()
            if var.typ != T.VARIABLE:
                break
            save = self.i
            self.next()
            nxt = self.peek_non_space()
            if nxt.typ in (T.ASSIGN, T.DECLARE):
                pipe.is_assign = nxt.typ == T.ASSIGN
                self.next_non_space()
                pipe.decl.append(VariableNode(var.pos, var.line, (var.val,)))
                self.vars.append(var.val)
                break
            if nxt.typ == T.CHAR and nxt.val == ",":
                self.next_non_space()
                pipe.decl.append(VariableNode(var.pos, var.line, (var.val,)))
                self.vars.append(var.val)
                if context == "range" and len(pipe.decl) < 2:
                    if self.peek_non_space().typ in (T.VARIABLE, T.RIGHT_DELIM, T.RIGHT_PAREN):
                        continue
                    raise self.error("range can only initialize variables")
                raise self.error(f"too many declarations in {context}")
            self.i = save
            break
        while True:
            token = self.next_non_space()
            if token.typ == end:
                self.check_pipeline(pipe, context)
                return pipe
            if token.typ in _OPERAND_START:
                self.backup()
                pipe.cmds.append(self.command())
            else:
                raise self.unexpected(token, context)

    def check_pipeline(self, pipe: PipeNode, context: str) -> None:
        if not pipe.cmds:
            raise self.error(f"missing value for {context}")
        for i, cmd in enumerate(pipe.cmds[1:]):
            if isinstance(cmd.args[0], BoolNode | DotNode | NilNode | NumberNode | StringNode):
                raise self.error(f"non executable command in pipeline stage {i + 2}")

    def command(self) -> CommandNode:
        start = self.peek_non_space()
        cmd = CommandNode(start.pos, start.line)
        while True:
            self.peek_non_space()
            operand = self.operand()
            if operand is not None:
                cmd.args.append(operand)
            token = self.next()
            if token.typ == T.SPACE:
                continue
            if token.typ in (T.RIGHT_DELIM, T.RIGHT_PAREN):
                self.backup()
            elif token.typ != T.PIPE:
                raise self.unexpected(token, "operand")
            break
        if not cmd.args:
            raise self.error("empty command")
        return cmd

    def operand(self) -> Node | None:
        node = self.term()
        if node is None or self.peek().typ != T.FIELD:
            return node
        # Like Go, the combined node is positioned at its first chained field.
        pos, line = self.peek().pos, self.peek().line
        fields: list[str] = []
        while self.peek().typ == T.FIELD:
            fields.append(self.next().val[1:])
        if isinstance(node, FieldNode):
            return FieldNode(pos, line, node.ident + tuple(fields))
        if isinstance(node, VariableNode):
            return VariableNode(pos, line, node.ident + tuple(fields))
        if isinstance(node, BoolNode | StringNode | NumberNode | NilNode | DotNode):
            raise self.error(f"unexpected . after term {str(node)!r}")
        return ChainNode(pos, line, node, tuple(fields))

    def term(self) -> Node | None:
        token = self.next_non_space()
        typ = token.typ
        if typ == T.IDENTIFIER:
            if token.val not in self.funcs:
                raise self.error(f'function "{token.val}" not defined')
            return IdentifierNode(token.pos, token.line, token.val)
        if typ == T.DOT:
            return DotNode(token.pos, token.line)
        if typ == T.NIL:
            return NilNode(token.pos, token.line)
        if typ == T.VARIABLE:
            if token.val not in self.vars:
                raise self.error(f'undefined variable "{token.val}"')
            return VariableNode(token.pos, token.line, (token.val,))
        if typ == T.FIELD:
            return FieldNode(token.pos, token.line, (token.val[1:],))
        if typ == T.BOOL:
            return BoolNode(token.pos, token.line, token.val == "true")
        if typ in (T.NUMBER, T.CHAR_CONSTANT):
            try:
                value = parse_number(token.val)
            except ValueError as exc:
                raise self.error(str(exc)) from None
            return NumberNode(token.pos, token.line, value, token.val)
        if typ == T.LEFT_PAREN:
            self.enter()
            pipe = self.pipeline("parenthesized pipeline", T.RIGHT_PAREN)
            self.depth -= 1
            return pipe
        if typ in (T.STRING, T.RAW_STRING):
            return StringNode(token.pos, token.line, token.val, self.unquote(token.val))
        self.backup()
        return None


def parse(text: str, funcs: Iterable[str], max_depth: int = 100) -> dict[str, ListNode]:
    """Parse a template into its named trees; the main template is named ``""``.

    ``funcs`` names every function the template may call (Go checks them when parsing).
    """
    return _Parser(text, funcs, max_depth).parse()
