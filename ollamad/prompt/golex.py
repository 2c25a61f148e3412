"""Lexer for Go's text/template syntax with the default ``{{``/``}}`` delimiters.

It follows text/template/parse's rules closely because whitespace trimming (``{{-``, ``-}}``,
which need a space beside the dash) and what counts as a token boundary decide the exact bytes
of a prompt.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from enum import IntEnum

from ollamad.prompt.errors import TemplateError


class T(IntEnum):
    """Token types."""

    BOOL = 1
    CHAR = 2  # printable ASCII punctuation such as ','
    CHAR_CONSTANT = 3
    ASSIGN = 4
    DECLARE = 5
    EOF = 6
    FIELD = 7
    IDENTIFIER = 8
    LEFT_DELIM = 9
    LEFT_PAREN = 10
    NUMBER = 11
    PIPE = 12
    RAW_STRING = 13
    RIGHT_DELIM = 14
    RIGHT_PAREN = 15
    SPACE = 16
    STRING = 17
    TEXT = 18
    VARIABLE = 19
    # keywords
    BLOCK = 20
    BREAK = 21
    CONTINUE = 22
    DOT = 23
    DEFINE = 24
    ELSE = 25
    END = 26
    IF = 27
    NIL = 28
    RANGE = 29
    TEMPLATE = 30
    WITH = 31


KEYWORDS = {"block": T.BLOCK, "break": T.BREAK, "continue": T.CONTINUE, "define": T.DEFINE,
            "else": T.ELSE, "end": T.END, "if": T.IF, "nil": T.NIL, "range": T.RANGE,
            "template": T.TEMPLATE, "with": T.WITH}

SPACE_CHARS = " \t\r\n"
_TERMINATORS = frozenset(" \t\r\n.,|:()")


@dataclass(slots=True)
class Token:
    typ: T
    val: str
    pos: int
    line: int

    def describe(self) -> str:
        if self.typ == T.EOF:
            return "EOF"
        if self.typ >= T.BLOCK:
            return f"<{self.val}>"
        if len(self.val) > 10:
            return '"' + self.val[:10] + '"...'
        return '"' + self.val + '"'


def is_alnum(ch: str) -> bool:
    if ch == "_" or ch.isalpha():
        return True
    return ch.isdigit() and unicodedata.category(ch) == "Nd"


def _has_right_trim(text: str, pos: int) -> bool:
    """`` -}}`` at pos: a space, the trim marker, then the right delimiter."""
    return (pos + 1 < len(text) and text[pos] in SPACE_CHARS and text[pos + 1] == "-"
            and text.startswith("}}", pos + 2))


def _skip_space(text: str, pos: int) -> int:
    n = len(text)
    while pos < n and text[pos] in SPACE_CHARS:
        pos += 1
    return pos


class _Lexer:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens: list[Token] = []
        self.line = 1

    def error(self, pos: int, message: str) -> TemplateError:
        line = self.text.count("\n", 0, pos) + 1
        return TemplateError(f"template: :{line}: {message}")

    def emit(self, typ: T, start: int, end: int) -> None:
        val = self.text[start:end]
        self.tokens.append(Token(typ, val, start, self.line))
        self.line += val.count("\n")

    def advance_line(self, start: int, end: int) -> None:
        self.line += self.text.count("\n", start, end)

    def run(self) -> list[Token]:
        text = self.text
        pos = 0
        while True:
            left = text.find("{{", pos)
            if left < 0:
                if pos < len(text):
                    self.emit(T.TEXT, pos, len(text))
                self.tokens.append(Token(T.EOF, "", len(text), self.line))
                return self.tokens
            inner = left + 2
            trim_left = (text.startswith("-", inner) and inner + 1 < len(text)
                         and text[inner + 1] in SPACE_CHARS)
            end_text = left
            if trim_left:
                end_text = pos + len(text[pos:left].rstrip(SPACE_CHARS))
            if end_text > pos:
                self.emit(T.TEXT, pos, end_text)
            self.advance_line(end_text, left)
            if trim_left:
                inner += 2
            if text.startswith("/*", inner):
                pos = self.comment(left, inner)
                continue
            self.tokens.append(Token(T.LEFT_DELIM, "{{", left, self.line))
            self.advance_line(left, inner)
            pos = self.action(inner)

    def comment(self, left: int, pos: int) -> int:
        text = self.text
        close = text.find("*/", pos + 2)
        if close < 0:
            raise self.error(left, "unclosed comment")
        pos = close + 2
        if _has_right_trim(text, pos):
            end = _skip_space(text, pos + 4)
        elif text.startswith("}}", pos):
            end = pos + 2
        else:
            raise self.error(left, "comment ends before closing delimiter")
        self.advance_line(left, end)
        return end

    def at_terminator(self, pos: int) -> bool:
        text = self.text
        return pos >= len(text) or text[pos] in _TERMINATORS or text.startswith("}}", pos)

    def action(self, pos: int) -> int:
        text = self.text
        n = len(text)
        paren_depth = 0
        while True:
            trim = _has_right_trim(text, pos)
            if trim or text.startswith("}}", pos):
                if paren_depth:
                    raise self.error(pos, "unclosed left paren")
                start = pos + (2 if trim else 0)
                self.advance_line(pos, start)
                self.emit(T.RIGHT_DELIM, start, start + 2)
                end = start + 2
                if trim:
                    new_end = _skip_space(text, end)
                    self.advance_line(end, new_end)
                    end = new_end
                return end
            if pos >= n:
                raise self.error(pos, "unclosed action")
            ch = text[pos]
            if ch in SPACE_CHARS:
                end = _skip_space(text, pos)
                # The last space before "-}}" belongs to the trim marker.
                if _has_right_trim(text, end - 1):
                    end -= 1
                if end > pos:
                    self.emit(T.SPACE, pos, end)
                pos = end
            elif ch == "=":
                self.emit(T.ASSIGN, pos, pos + 1)
                pos += 1
            elif ch == ":":
                if not text.startswith(":=", pos):
                    raise self.error(pos, "expected :=")
                self.emit(T.DECLARE, pos, pos + 2)
                pos += 2
            elif ch == "|":
                self.emit(T.PIPE, pos, pos + 1)
                pos += 1
            elif ch == '"':
                end = self.quoted(pos, '"', "unterminated quoted string")
                self.emit(T.STRING, pos, end)
                pos = end
            elif ch == "`":
                close = text.find("`", pos + 1)
                if close < 0:
                    raise self.error(pos, "unterminated raw quoted string")
                self.emit(T.RAW_STRING, pos, close + 1)
                pos = close + 1
            elif ch == "'":
                end = self.quoted(pos, "'", "unterminated character constant")
                self.emit(T.CHAR_CONSTANT, pos, end)
                pos = end
            elif ch == "$":
                pos = self.field_or_variable(pos, T.VARIABLE)
            elif ch == "." and pos + 1 < n and not ("0" <= text[pos + 1] <= "9"):
                pos = self.field_or_variable(pos, T.FIELD)
            elif ch in "+-." or "0" <= ch <= "9":
                pos = self.number(pos)
            elif is_alnum(ch):
                pos = self.identifier(pos)
            elif ch == "(":
                self.emit(T.LEFT_PAREN, pos, pos + 1)
                paren_depth += 1
                pos += 1
            elif ch == ")":
                paren_depth -= 1
                if paren_depth < 0:
                    raise self.error(pos, "unexpected right paren U+0029 ')'")
                self.emit(T.RIGHT_PAREN, pos, pos + 1)
                pos += 1
            elif ch <= "\x7f" and ch.isprintable():
                self.emit(T.CHAR, pos, pos + 1)
                pos += 1
            else:
                raise self.error(pos, f"unrecognized character in action: {_rune_name(ch)}")

    def quoted(self, pos: int, quote: str, message: str) -> int:
        text = self.text
        n = len(text)
        i = pos + 1
        while True:
            if i >= n or text[i] == "\n":
                raise self.error(pos, message)
            ch = text[i]
            if ch == "\\":
                if i + 1 >= n or text[i + 1] == "\n":
                    raise self.error(pos, message)
                i += 2
                continue
            i += 1
            if ch == quote:
                return i

    def field_or_variable(self, pos: int, typ: T) -> int:
        text = self.text
        i = pos + 1
        if self.at_terminator(i):
            self.emit(T.VARIABLE if typ == T.VARIABLE else T.DOT, pos, i)
            return i
        n = len(text)
        while i < n and is_alnum(text[i]):
            i += 1
        if not self.at_terminator(i):
            raise self.error(pos, f"bad character {_rune_name(text[i])}")
        self.emit(typ, pos, i)
        return i

    def identifier(self, pos: int) -> int:
        text = self.text
        n = len(text)
        i = pos
        while i < n and is_alnum(text[i]):
            i += 1
        if not self.at_terminator(i):
            raise self.error(pos, f"bad character {_rune_name(text[i])}")
        word = text[pos:i]
        keyword = KEYWORDS.get(word)
        if keyword is not None:
            self.emit(keyword, pos, i)
        elif word in ("true", "false"):
            self.emit(T.BOOL, pos, i)
        else:
            self.emit(T.IDENTIFIER, pos, i)
        return i

    def number(self, pos: int) -> int:
        end = self.scan_number(pos)
        if end < len(self.text) and self.text[end] in "+-":
            raise self.error(pos, "complex numbers are not supported")
        self.emit(T.NUMBER, pos, end)
        return end

    def scan_number(self, pos: int) -> int:
        text = self.text
        n = len(text)
        i = pos

        def accept(chars: str) -> bool:
            nonlocal i
            if i < n and text[i] in chars:
                i += 1
                return True
            return False

        def accept_run(chars: str) -> None:
            nonlocal i
            while i < n and text[i] in chars:
                i += 1

        accept("+-")
        digits = "0123456789_"
        if accept("0"):
            if accept("xX"):
                digits = "0123456789abcdefABCDEF_"
            elif accept("oO"):
                digits = "01234567_"
            elif accept("bB"):
                digits = "01_"
        accept_run(digits)
        if accept("."):
            accept_run(digits)
        if len(digits) == 11 and accept("eE"):
            accept("+-")
            accept_run("0123456789_")
        if len(digits) == 23 and accept("pP"):
            accept("+-")
            accept_run("0123456789_")
        if accept("i"):
            raise self.error(pos, "complex numbers are not supported")
        if i < n and is_alnum(text[i]):
            raise self.error(pos, f"bad number syntax: {text[pos:i + 1]!r}")
        return i


def _rune_name(ch: str) -> str:
    return f"U+{ord(ch):04X} {ch!r}" if ch.isprintable() else f"U+{ord(ch):04X}"


def lex(text: str) -> list[Token]:
    """All tokens of a template, ending with EOF; raises TemplateError on a lexical error."""
    return _Lexer(text).run()
