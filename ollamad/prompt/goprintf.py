"""``fmt.Sprintf`` for template values: the verbs, flags and error forms Go writes.

Templates use ``printf`` mostly as ``printf "%s\\n\\n%s" $a $b``, but a model file may use any
verb, so the common ones follow Go exactly, including ``%!d(string=x)``-style complaints,
``%!s(MISSING)`` and ``%!(EXTRA ...)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ollamad.prompt.gofmt import check_size, format_float, format_value, sorted_keys, stringer
from ollamad.prompt.govalues import go_type_name

# Go refuses widths and precisions above this (fmt's tooLarge) instead of allocating them.
_MAX_WIDTH = 1_000_000


@dataclass(slots=True)
class _Spec:
    verb: str = "v"
    minus: bool = False
    plus: bool = False
    sharp: bool = False
    space: bool = False
    zero: bool = False
    width: int | None = None
    prec: int | None = None
    plus_v: bool = False


def sprintf(fmt: str, args: list[Any]) -> str:
    out: list[str] = []
    size = 0
    n = len(fmt)
    i = 0
    argnum = 0
    reordered = False
    while i < n:
        j = fmt.find("%", i)
        if j < 0:
            out.append(fmt[i:])
            break
        out.append(fmt[i:j])
        i = j + 1
        spec = _Spec()
        while i < n and fmt[i] in "+-# 0":
            flag = fmt[i]
            if flag == "+":
                spec.plus = True
            elif flag == "-":
                spec.minus = True
                spec.zero = False
            elif flag == "#":
                spec.sharp = True
            elif flag == " ":
                spec.space = True
            else:
                spec.zero = not spec.minus
            i += 1
        argnum, i, good, moved = _arg_index(fmt, i, argnum, len(args))
        reordered = reordered or moved
        width, i, argnum, ok = _size(fmt, i, args, argnum)
        if not ok:
            out.append("%!(BADWIDTH)")
        elif width is not None:
            if width < 0:  # a negative '*' width means left-justify
                spec.minus, spec.zero, width = True, False, -width
            spec.width = width
        if i < n and fmt[i] == ".":
            argnum, i, good2, moved = _arg_index(fmt, i + 1, argnum, len(args))
            good = good and good2
            reordered = reordered or moved
            prec, i, argnum, ok = _size(fmt, i, args, argnum)
            if not ok:
                out.append("%!(BADPREC)")
            elif prec is None and fmt[i - 1:i] != "*":
                spec.prec = 0  # "%.f": an empty precision is zero
            elif prec is not None and prec >= 0:
                spec.prec = prec
        argnum, i, good3, moved = _arg_index(fmt, i, argnum, len(args))
        good = good and good3
        reordered = reordered or moved
        if i >= n:
            out.append("%!(NOVERB)")
            break
        verb = fmt[i]
        i += 1
        spec.verb = verb
        if verb == "%":
            out.append("%")
        elif not good:
            out.append(f"%!{verb}(BADINDEX)")
        elif argnum >= len(args):
            out.append(f"%!{verb}(MISSING)")
        else:
            text = format_arg(args[argnum], spec)
            size += len(text) + i
            check_size(size)
            out.append(text)
            argnum += 1
    if not reordered and argnum < len(args):
        extras = []
        for arg in args[argnum:]:
            extras.append("<nil>" if arg is None else f"{go_type_name(arg)}={format_value(arg)}")
        out.append("%!(EXTRA " + ", ".join(extras) + ")")
    return "".join(out)


def _arg_index(fmt: str, i: int, argnum: int, nargs: int) -> tuple[int, int, bool, bool]:
    """Parse an optional ``[n]``; returns (argnum, position, ok, whether an index was given)."""
    if i >= len(fmt) or fmt[i] != "[":
        return argnum, i, True, False
    end = fmt.find("]", i)
    if end < 0:
        return argnum, i + 1, False, True
    text = fmt[i + 1:end]
    if not text.isdigit() or not text.isascii() or not 1 <= int(text) <= nargs:
        return argnum, end + 1, False, True
    return int(text) - 1, end + 1, True, True


def _size(fmt: str, i: int, args: list[Any], argnum: int) -> tuple[int | None, int, int, bool]:
    """A width or precision: digits, or ``*`` taking an int argument.

    Returns (value or None when absent, position, argnum, ok).
    """
    if fmt[i:i + 1] == "*":
        if argnum >= len(args):
            return None, i + 1, argnum, False
        value = args[argnum]
        if isinstance(value, bool) or not isinstance(value, int) or abs(value) > _MAX_WIDTH:
            return None, i + 1, argnum + 1, False
        return value, i + 1, argnum + 1, True
    value = None
    while i < len(fmt) and "0" <= fmt[i] <= "9":
        if value is not None and value > _MAX_WIDTH:
            # Go gives up on an absurd number and swallows the rest of the format.
            return None, len(fmt), argnum, True
        value = (value or 0) * 10 + ord(fmt[i]) - 48
        i += 1
    return value, i, argnum, True


def _pad(text: str, spec: _Spec, zero_ok: bool = True, numeric: bool = False) -> str:
    """Pad to the width; Go pads with zeros on the left (after the sign of a number)."""
    width = spec.width
    if width is None or len(text) >= width:
        return text
    fill = width - len(text)
    if spec.minus:
        return text + " " * fill
    if spec.zero and zero_ok:
        if numeric and text[:1] in "+- ":
            return text[0] + "0" * fill + text[1:]
        return "0" * fill + text
    return " " * fill + text


def _bad_verb(value: Any, spec: _Spec) -> str:
    if value is None:
        return f"%!{spec.verb}(<nil>)"
    inner = _Spec(verb="v", minus=spec.minus, plus=spec.plus, sharp=spec.sharp,
                  space=spec.space, zero=spec.zero, width=spec.width, prec=spec.prec)
    return f"%!{spec.verb}({go_type_name(value)}={_format(value, inner)})"


def format_arg(value: Any, spec: _Spec) -> str:
    """One operand formatted under one verb, as fmt's printArg/printValue do."""
    verb = spec.verb
    if verb == "v" and (spec.plus or spec.sharp):
        # %+v and %#v are struct-field and Go-syntax forms, not sign or prefix flags.
        spec = _Spec(verb="v", minus=spec.minus, space=spec.space, zero=spec.zero,
                     width=spec.width, prec=spec.prec, plus_v=spec.plus)
    return _format(value, spec)


def _format(value: Any, spec: _Spec) -> str:
    verb = spec.verb
    if verb == "T" and value is None:
        return _pad("<nil>", spec)
    if verb == "T":
        return _format_string(go_type_name(value), _Spec(
            verb="s", minus=spec.minus, zero=spec.zero, width=spec.width, prec=spec.prec))
    if verb == "p":
        return _bad_verb(value, spec)
    if value is None:
        return _pad("<nil>", spec) if verb == "v" else _bad_verb(value, spec)
    if value is True or value is False:
        if verb in "tv":
            return _pad("true" if value else "false", spec)
        return _bad_verb(value, spec)
    if isinstance(value, int):
        return _format_int(value, spec)
    if isinstance(value, float):
        return _format_float(value, spec)
    if isinstance(value, str):
        return _format_string(value, spec)
    text = stringer(value)
    if text is not None and verb in "vsxXq":
        return _format_string(text, spec)
    if isinstance(value, bytes | bytearray):
        if verb in "sxXq":
            return _format_string(bytes(value).decode("utf-8", "replace"), spec)
        return "[" + " ".join(_format_int(b, spec) for b in value) + "]"
    if isinstance(value, list | tuple):
        return "[" + " ".join(_format(v, spec) for v in value) + "]"
    if isinstance(value, dict):
        return "map[" + " ".join(f"{_format(k, spec)}:{_format(value[k], spec)}"
                                 for k in sorted_keys(value)) + "]"
    fields = getattr(type(value), "go_field_names", None)
    if fields is not None:
        parts = []
        for name in fields():
            item = _format(getattr(value, name), spec)
            parts.append(f"{name}:{item}" if spec.plus_v else item)
        return "{" + " ".join(parts) + "}"
    return _bad_verb(value, spec)


def _format_int(value: int, spec: _Spec) -> str:
    verb = spec.verb
    if verb == "c":
        return _pad(_rune(value), spec)
    if verb == "q":
        return _pad(_quote_rune(value, ascii_only=spec.plus), spec)
    if verb == "U":
        text = f"U+{value:04X}" if value >= 0 else f"U+{value & 0xFFFFFFFFFFFFFFFF:04X}"
        if spec.sharp and 0 <= value <= 0x10FFFF and chr(value).isprintable():
            text += f" '{chr(value)}'"
        return _pad(text, spec, zero_ok=False)
    bases = {"d": 10, "v": 10, "b": 2, "o": 8, "O": 8, "x": 16, "X": 16}
    if verb not in bases:
        return _bad_verb(value, spec)
    if spec.prec == 0 and value == 0:
        return " " * (spec.width or 0)  # Go prints nothing but the padding
    digits = _digits(abs(value), bases[verb], upper=verb == "X")
    if spec.prec is not None:
        digits = digits.rjust(spec.prec, "0")
    elif spec.zero and spec.width is not None and not spec.minus:
        # Go turns zero padding into a minimum digit count that leaves room for sign and prefix.
        room = spec.width - (1 if value < 0 or spec.plus or spec.space else 0)
        digits = digits.rjust(room, "0")
    prefix = ""
    if verb == "O":
        prefix = "0o"
    elif spec.sharp:
        prefix = {"b": "0b", "o": "0", "x": "0x", "X": "0X"}.get(verb, "")
        if verb == "o" and digits.startswith("0"):
            prefix = ""
    sign = "-" if value < 0 else "+" if spec.plus else " " if spec.space else ""
    return _pad(sign + prefix + digits, spec, zero_ok=False)


def _digits(value: int, base: int, upper: bool) -> str:
    if base == 10:
        return str(value)
    text = format(value, {2: "b", 8: "o", 16: "x"}[base])
    return text.upper() if upper else text


def _rune(value: int) -> str:
    return chr(value) if 0 <= value <= 0x10FFFF and not 0xD800 <= value <= 0xDFFF else "\ufffd"


def _format_float(value: float, spec: _Spec) -> str:
    verb = spec.verb
    if verb == "v":
        verb = "g"
    if verb not in "eEfFgG":
        return _bad_verb(value, spec)
    if verb == "F":
        verb = "f"
    prec = spec.prec if spec.prec is not None else (-1 if verb in "gG" else 6)
    text = format_float(value, verb, prec)
    if not text.startswith(("-", "+")):
        if spec.plus:
            text = "+" + text
        elif spec.space:
            text = " " + text
    elif text == "+Inf" and spec.space and not spec.plus:
        text = " Inf"
    finite = not (math.isinf(value) or math.isnan(value))
    return _pad(text, spec, zero_ok=finite, numeric=True)


def _format_string(text: str, spec: _Spec) -> str:
    verb = spec.verb
    if spec.prec is not None and verb in "vsq":
        text = text[:spec.prec]
    if verb in "vs":
        return _pad(text, spec)
    if verb == "q":
        if spec.sharp and "`" not in text and all(c == "\t" or c.isprintable() for c in text):
            return _pad("`" + text + "`", spec)
        return _pad(go_quote(text, ascii_only=spec.plus), spec)
    if verb in "xX":
        data = text.encode("utf-8", "surrogatepass")
        if spec.prec is not None:
            data = data[:spec.prec]
        hexdigits = "0123456789ABCDEF" if verb == "X" else "0123456789abcdef"
        prefix = ("0X" if verb == "X" else "0x") if spec.sharp else ""
        pieces = [hexdigits[b >> 4] + hexdigits[b & 15] for b in data]
        if spec.space:
            joined = " ".join(prefix + p for p in pieces)
        else:
            joined = prefix + "".join(pieces) if pieces else ""
        return _pad(joined, spec)
    return _bad_verb(text, spec)


_QUOTE_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t",
                  "\v": "\\v", "\\": "\\\\", '"': '\\"'}


def go_quote(text: str, ascii_only: bool = False) -> str:
    """``strconv.Quote`` (or QuoteToASCII): Go escapes, printable Unicode kept."""
    out = ['"']
    for ch in text:
        esc = _QUOTE_ESCAPES.get(ch)
        if esc is not None:
            out.append(esc)
        elif ch < " " or ch == "\x7f":
            out.append(f"\\x{ord(ch):02x}")
        elif (ascii_only and ch > "\x7e") or not ch.isprintable():
            code = ord(ch)
            out.append(f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _quote_rune(value: int, ascii_only: bool = False) -> str:
    ch = _rune(value)
    if ch == "'":
        return "'\\''"
    if ch == '"':
        return "'\"'"
    return "'" + go_quote(ch, ascii_only)[1:-1] + "'"
