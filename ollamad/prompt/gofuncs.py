"""text/template's builtin functions (and, or, eq, index, printf, ...) over Python values.

Each function is described by a :class:`GoFunc` so that the executor can check arguments the way
Go's reflection-based call does: the number of arguments, and parameters declared ``string``
accept only strings. Errors raise :class:`FuncError`; the executor reports them as
``error calling NAME: ...`` like Go.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ollamad.prompt.gofmt import (
    format_value,
    html_escape,
    js_escape,
    sorted_keys,
    sprint,
    sprintln,
    urlquery_escape,
)
from ollamad.prompt.goprintf import sprintf
from ollamad.prompt.govalues import GoSlice, GoStruct, go_type_name

ANY = "any"
STRING = "string"


class FuncError(Exception):
    """A function refused its arguments; the executor adds the function's name."""


@dataclass(frozen=True, slots=True)
class GoFunc:
    """A function a template may call.

    ``params`` are the kinds (``ANY`` or ``STRING``) of the fixed parameters and ``variadic``
    the kind of the trailing ``...`` parameter, if any. Result: one value.
    """

    fn: Callable[..., Any]
    params: tuple[str, ...] = ()
    variadic: str | None = None

    @classmethod
    def wrap(cls, fn: GoFunc | Callable[..., Any]) -> GoFunc:
        # A bare Python callable accepts any number of arguments of any type.
        return fn if isinstance(fn, GoFunc) else cls(fn, (), ANY)


# --- truth and comparison ----------------------------------------------------------------------

_NIL, _BOOL, _INT, _FLOAT, _STRING, _OTHER = range(6)


def truth(value: Any) -> bool:
    """Go's notion of true: not the zero value of its type (structs are always true)."""
    if value is None:
        return False
    if value is True or value is False:
        return value
    if isinstance(value, int | float):
        return value != 0
    if isinstance(value, str | list | tuple | dict | bytes | bytearray):
        return len(value) > 0
    return True


def _kind(value: Any) -> int:
    if value is None:
        return _NIL
    if value is True or value is False:
        return _BOOL
    if isinstance(value, int):
        return _INT
    if isinstance(value, float):
        return _FLOAT
    if isinstance(value, str):
        return _STRING
    return _OTHER


def _is_nil(value: Any) -> bool:
    return value is None or bool(getattr(value, "nil", False))


def _comparable(value: Any) -> bool:
    return not isinstance(value, list | tuple | dict | bytes | bytearray)


def eq(arg1: Any, *args: Any) -> bool:
    if not args:
        raise FuncError("missing argument for comparison")
    k1 = _kind(arg1)
    for arg in args:
        k2 = _kind(arg)
        if k1 != k2:
            if k1 == _NIL or k2 == _NIL:
                # nil equals only a nil slice, map or pointer; against a number it is just false.
                if _OTHER in (k1, k2) and _is_nil(arg1) and _is_nil(arg):
                    return True
                continue
            raise FuncError("incompatible types for comparison")
        if k1 != _OTHER:
            if arg1 == arg:
                return True
            continue
        if _is_nil(arg1) or _is_nil(arg):
            if _is_nil(arg1) == _is_nil(arg):
                return True
            continue
        if type(arg1) is not type(arg) and not (_comparable(arg1) and _comparable(arg)):
            raise FuncError(f"non-comparable types {format_value(arg1)}: {go_type_name(arg1)}, "
                            f"{go_type_name(arg)}: {format_value(arg)}")
        if not _comparable(arg):
            raise FuncError(f"non-comparable type {format_value(arg)}: {go_type_name(arg)}")
        if arg1 is arg or (not isinstance(arg1, GoStruct) and arg1 == arg):
            return True
    return False


def ne(arg1: Any, arg2: Any) -> bool:
    return not eq(arg1, arg2)


def lt(arg1: Any, arg2: Any) -> bool:
    k1, k2 = _kind(arg1), _kind(arg2)
    if k1 in (_NIL, _OTHER) or k2 in (_NIL, _OTHER):
        raise FuncError("invalid type for comparison")
    if k1 != k2:
        raise FuncError("incompatible types for comparison")
    if k1 == _BOOL:
        raise FuncError("invalid type for comparison")
    return arg1 < arg2


def le(arg1: Any, arg2: Any) -> bool:
    return lt(arg1, arg2) or eq(arg1, arg2)


def gt(arg1: Any, arg2: Any) -> bool:
    return not le(arg1, arg2)


def ge(arg1: Any, arg2: Any) -> bool:
    return not lt(arg1, arg2)


def not_(arg: Any) -> bool:
    return not truth(arg)


# --- collections -------------------------------------------------------------------------------


def length(item: Any) -> int:
    if item is None:
        raise FuncError("len of nil pointer")
    if isinstance(item, str):
        return len(item.encode("utf-8", "surrogatepass"))  # Go counts bytes
    if isinstance(item, list | tuple | dict | bytes | bytearray):
        return len(item)
    raise FuncError(f"len of type {go_type_name(item)}")


def _index_arg(index: Any, cap: int) -> int:
    if index is None:
        raise FuncError("cannot index slice/array with nil")
    if index is True or index is False or not isinstance(index, int):
        raise FuncError(f"cannot index slice/array with type {go_type_name(index)}")
    if index < 0 or index > cap:
        raise FuncError(f"index out of range: {index}")
    return index


def index(item: Any, *indexes: Any) -> Any:
    if item is None:
        raise FuncError("index of untyped nil")
    for idx in indexes:
        if item is None:
            raise FuncError("index of nil pointer")
        if isinstance(item, str | bytes | bytearray | list | tuple):
            data = item.encode("utf-8", "surrogatepass") if isinstance(item, str) else item
            x = _index_arg(idx, len(data))
            if x == len(data):
                raise FuncError(f"index out of range: {x}")
            item = data[x]
        elif isinstance(item, dict):
            if idx is None:
                raise FuncError("value is nil; should be of type string")
            if not isinstance(idx, str):
                raise FuncError(f"value has type {go_type_name(idx)}; should be string")
            item = item.get(idx)
        else:
            raise FuncError(f"can't index item of type {go_type_name(item)}")
    return item


def slice_(item: Any, *indexes: Any) -> Any:
    if item is None:
        raise FuncError("slice of untyped nil")
    if len(indexes) > 3:
        raise FuncError(f"too many slice indexes: {len(indexes)}")
    if isinstance(item, str):
        if len(indexes) == 3:
            raise FuncError("cannot 3-index slice a string")
        data: Any = item.encode("utf-8", "surrogatepass")
    elif isinstance(item, list | tuple | bytes | bytearray):
        data = item
    else:
        raise FuncError(f"can't slice item of type {go_type_name(item)}")
    bounds = [0, len(data), len(data)]
    for i, idx in enumerate(indexes):
        bounds[i] = _index_arg(idx, len(data))
    if bounds[0] > bounds[1]:
        raise FuncError(f"invalid slice index: {bounds[0]} > {bounds[1]}")
    if len(indexes) == 3 and bounds[1] > bounds[2]:
        raise FuncError(f"invalid slice index: {bounds[1]} > {bounds[2]}")
    part = data[bounds[0]:bounds[1]]
    if isinstance(item, str):
        return part.decode("utf-8", "replace")
    if isinstance(item, GoSlice):
        return GoSlice.of(part)
    return part


def call(fn: Any, *args: Any) -> Any:
    # Template data never holds functions; Go reports the same for any non-function value.
    if fn is None:
        raise FuncError("call of nil")
    raise FuncError(f"non-function of type {go_type_name(fn)}")


# --- printing ----------------------------------------------------------------------------------


def _escaper_text(args: tuple[Any, ...]) -> str:
    if len(args) == 1 and isinstance(args[0], str):
        return args[0]
    return sprint(["<no value>" if a is None else a for a in args])


def printf(fmt: str, *args: Any) -> str:
    return sprintf(fmt, list(args))


BUILTINS: dict[str, GoFunc] = {
    "and": GoFunc(lambda *a: None, (ANY,), ANY),  # short-circuits: evaluated by the executor
    "or": GoFunc(lambda *a: None, (ANY,), ANY),
    "not": GoFunc(not_, (ANY,)),
    "eq": GoFunc(eq, (ANY,), ANY),
    "ne": GoFunc(ne, (ANY, ANY)),
    "lt": GoFunc(lt, (ANY, ANY)),
    "le": GoFunc(le, (ANY, ANY)),
    "gt": GoFunc(gt, (ANY, ANY)),
    "ge": GoFunc(ge, (ANY, ANY)),
    "len": GoFunc(length, (ANY,)),
    "index": GoFunc(index, (ANY,), ANY),
    "slice": GoFunc(slice_, (ANY,), ANY),
    "call": GoFunc(call, (ANY,), ANY),
    "print": GoFunc(lambda *a: sprint(list(a)), (), ANY),
    "println": GoFunc(lambda *a: sprintln(list(a)), (), ANY),
    "printf": GoFunc(printf, (STRING,), ANY),
    "html": GoFunc(lambda *a: html_escape(_escaper_text(a)), (), ANY),
    "js": GoFunc(lambda *a: js_escape(_escaper_text(a)), (), ANY),
    "urlquery": GoFunc(lambda *a: urlquery_escape(_escaper_text(a)), (), ANY),
}


def function_table(extra: Mapping[str, GoFunc | Callable[..., Any]] | None) -> dict[str, GoFunc]:
    """Builtins plus the caller's functions (which may replace a builtin, as in Go)."""
    table = dict(BUILTINS)
    for name, fn in (extra or {}).items():
        table[name] = GoFunc.wrap(fn)
    return table


def iterate(value: Any, nvars: int) -> Iterable[tuple[Any, Any]] | None:
    """(index or key, element) pairs of a range, or None when the value cannot be ranged over."""
    if value is None:
        return ()
    if isinstance(value, list | tuple | bytes | bytearray):
        return enumerate(value)
    if isinstance(value, dict):
        return ((k, value[k]) for k in sorted_keys(value))
    if isinstance(value, int) and not isinstance(value, bool):
        if nvars > 1:
            raise FuncError(f"can't use {value} to iterate over more than one variable")
        return ((i, i) for i in range(value))
    return None
