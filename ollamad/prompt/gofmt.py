"""Go's value printing (fmt's ``%v``, Sprint, Sprintln) and ``encoding/json`` for template values.

Prompts must come out byte for byte as Ollama's Go code writes them, so numbers, maps and
nested values print the way Go prints them, not the way Python does (``1e+06`` not ``1000000.0``,
``map[a:1]`` not ``{'a': 1}``). See :mod:`ollamad.prompt.govalues` for the type mapping.
"""

from __future__ import annotations

import base64
import json
import math
from contextvars import ContextVar
from typing import Any

from ollamad.prompt.govalues import JSONObject, go_type_name

# The largest string the printing functions may build; the executor sets it from its limits so
# that "printf" over many copies of a big string fails before it allocates the result.
OUTPUT_LIMIT: ContextVar[int] = ContextVar("ollamad_output_limit", default=1 << 62)


def check_size(size: int) -> None:
    if size > OUTPUT_LIMIT.get():
        raise ValueError(f"result longer than the limit of {OUTPUT_LIMIT.get()} characters")


# --- floats ------------------------------------------------------------------------------------


def shortest_digits(value: float) -> tuple[str, int]:
    """Shortest round-trip decimal digits of ``abs(value)`` and the decimal point position.

    The value is ``0.<digits> * 10**dp``. Python's repr and Go's strconv both produce the
    shortest string that reads back to the same float, so the digits agree.
    """
    text = repr(abs(value))
    mantissa, _, exponent = text.partition("e")
    whole, _, frac = mantissa.partition(".")
    digits = (whole + frac).lstrip("0")
    if not digits:
        return "0", 1
    # Position of the point relative to the first significant digit.
    leading_zeros = len(whole + frac) - len((whole + frac).lstrip("0"))
    dp = len(whole) - leading_zeros + (int(exponent) if exponent else 0)
    return digits.rstrip("0") or "0", dp


def _exp_form(digits: str, dp: int, upper: bool = False) -> str:
    exp = dp - 1 if digits != "0" else 0
    body = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    sign = "-" if exp < 0 else "+"
    return f"{body}{'E' if upper else 'e'}{sign}{abs(exp):02d}"


def _fixed_form(digits: str, dp: int) -> str:
    if digits == "0":
        return "0"
    if dp <= 0:
        return "0." + "0" * -dp + digits
    if dp >= len(digits):
        return digits + "0" * (dp - len(digits))
    return digits[:dp] + "." + digits[dp:]


def _special(value: float) -> str | None:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return None


def format_float(value: float, verb: str = "g", prec: int = -1) -> str:
    """``strconv.FormatFloat(value, verb, prec, 64)`` for verbs e E f F g G (prec -1: shortest)."""
    special = _special(value)
    if special is not None:
        return special
    sign = "-" if math.copysign(1.0, value) < 0 else ""
    lower = verb.lower()
    if prec >= 0:
        if lower == "g" and prec == 0:
            prec = 1
        text = format(abs(value), f".{prec}{lower}")
        if lower == "e" or lower == "g":
            text = _go_exponent(text)
        return sign + (text.upper() if verb in "EG" else text)
    digits, dp = shortest_digits(value)
    if lower == "e":
        text = _exp_form(digits, dp)
    elif lower == "f":
        text = _fixed_form(digits, dp)
    else:
        # Go's %v/%g switches to exponent form from 1e+21 only in JSON; fmt uses 6 digits' worth.
        exp = dp - 1
        text = _exp_form(digits, dp) if (exp < -4 or exp >= 6) and digits != "0" else _fixed_form(
            digits, dp)
    return sign + (text.upper() if verb in "EG" else text)


def _go_exponent(text: str) -> str:
    # Python writes at least two exponent digits too, but make sure of the sign form Go uses.
    mantissa, sep, exponent = text.partition("e")
    if not sep:
        return text
    sign = exponent[0] if exponent[0] in "+-" else "+"
    digits = exponent.lstrip("+-")
    return f"{mantissa}e{sign}{int(digits):02d}"


def json_float(value: float) -> str:
    """A float64 as ``encoding/json`` writes it (ES6 number formatting)."""
    if math.isnan(value) or math.isinf(value):
        raise ValueError(f"json: unsupported value: {format_float(value)}")
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    sign = "-" if value < 0 else ""
    digits, dp = shortest_digits(value)
    magnitude = abs(value)
    if magnitude < 1e-6 or magnitude >= 1e21:
        text = _exp_form(digits, dp)
        mantissa, _, exponent = text.partition("e")
        # Go trims the exponent to its significant digits: 1e-07 becomes 1e-7.
        text = f"{mantissa}e{exponent[0]}{int(exponent[1:])}"
    else:
        text = _fixed_form(digits, dp)
    return sign + text


# --- %v ----------------------------------------------------------------------------------------


def stringer(value: Any) -> str | None:
    """The result of the value's Go ``String()`` method, or None when it has none."""
    method = getattr(type(value), "go_string", None)
    if method is None:
        return None
    return method(value)


def format_value(value: Any) -> str:
    """``fmt.Sprint(value)`` for one value: Go's ``%v``."""
    if isinstance(value, str):
        return value
    if value is None:
        return "<nil>"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return format_float(value)
    text = stringer(value)
    if text is not None:
        return text
    if isinstance(value, bytes | bytearray):
        return "[" + " ".join(str(b) for b in value) + "]"
    if isinstance(value, list | tuple):
        return "[" + " ".join(format_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "map[" + " ".join(
            f"{format_value(k)}:{format_value(value[k])}" for k in sorted_keys(value)) + "]"
    fields = getattr(type(value), "go_field_names", None)
    if fields is not None:
        return "{" + " ".join(format_value(getattr(value, f)) for f in fields()) + "}"
    return str(value)


def sorted_keys(mapping: dict) -> list:
    """Map keys in the order Go's fmt and text/template visit them (``internal/fmtsort``)."""
    try:
        return sorted(mapping)
    except TypeError:
        # Mixed key types never come from JSON; fall back to a stable textual order.
        return sorted(mapping, key=lambda k: (go_type_name(k), format_value(k)))


def sprint(args: list[Any]) -> str:
    """``fmt.Sprint``: a space between operands when neither side is a string."""
    parts: list[str] = []
    size = 0
    prev_string = False
    for i, arg in enumerate(args):
        is_string = isinstance(arg, str)
        if i > 0 and not is_string and not prev_string:
            parts.append(" ")
        text = format_value(arg)
        size += len(text) + 1
        check_size(size)
        parts.append(text)
        prev_string = is_string
    return "".join(parts)


def sprintln(args: list[Any]) -> str:
    """``fmt.Sprintln``: operands always separated by a space, then a newline."""
    texts = [format_value(a) for a in args]
    check_size(sum(len(t) + 1 for t in texts))
    return " ".join(texts) + "\n"


# --- encoding/json -----------------------------------------------------------------------------

# Go escapes these inside JSON strings (HTML safety and JavaScript line terminators).
_JSON_ESCAPES = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026",
                               "\u2028": "\\u2028", "\u2029": "\\u2029"})


def json_string(text: str) -> str:
    return json.dumps(text, ensure_ascii=False).translate(_JSON_ESCAPES)


def marshal(value: Any) -> str:
    """``json.Marshal(value)``: compact, map keys sorted, Go's escaping and number format.

    Raises ValueError for what Go refuses (NaN, infinities, unsupported types).
    """
    parts: list[str] = []
    _marshal_into(value, parts, 0)
    return "".join(parts)


_MAX_JSON_DEPTH = 200


def _marshal_into(value: Any, out: list[str], depth: int) -> None:
    if depth > _MAX_JSON_DEPTH:
        raise ValueError("json: value nested too deeply")
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, str):
        out.append(json_string(value))
    elif isinstance(value, int):
        out.append(str(value))
    elif isinstance(value, float):
        out.append(json_float(value))
    elif hasattr(type(value), "go_json"):
        _marshal_into(value.go_json(), out, depth + 1)
    elif isinstance(value, bytes | bytearray):
        out.append('"' + base64.b64encode(bytes(value)).decode("ascii") + '"')
    elif isinstance(value, dict):
        keys = list(value) if isinstance(value, JSONObject) else sorted_keys(value)
        out.append("{")
        for i, key in enumerate(keys):
            if i:
                out.append(",")
            out.append(json_string(key if isinstance(key, str) else format_value(key)))
            out.append(":")
            _marshal_into(value[key], out, depth + 1)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _marshal_into(item, out, depth + 1)
        out.append("]")
    else:
        raise ValueError(f"json: unsupported type: {go_type_name(value)}")


# --- text/template's escapers --------------------------------------------------------------------

_HTML_ESCAPES = str.maketrans({'"': "&#34;", "'": "&#39;", "&": "&amp;", "<": "&lt;",
                               ">": "&gt;", "\0": "\ufffd"})

_JS_SPECIAL = {"\\": "\\\\", "'": "\\'", '"': '\\"', "<": "\\u003C", ">": "\\u003E",
               "&": "\\u0026", "=": "\\u003D"}


def html_escape(text: str) -> str:
    return text.translate(_HTML_ESCAPES)


def js_escape(text: str) -> str:
    out: list[str] = []
    for ch in text:
        special = _JS_SPECIAL.get(ch)
        if special is not None:
            out.append(special)
        elif ch < " " or (ch >= "\x80" and not ch.isprintable()):
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return "".join(out)


def urlquery_escape(text: str) -> str:
    from urllib.parse import quote_plus

    return quote_plus(text, safe="")
