"""How Python values stand for Go values inside the template engine.

The engine sees plain Python data the way Go's text/template sees ``map[string]any`` data:

* ``dict`` is a Go map with string keys: ``.Key`` looks a key up, a missing key is nil, ``range``
  visits keys in sorted order, ``%v`` prints ``map[k:v]`` and JSON sorts the keys.
* ``list``/``tuple`` is a slice, ``str`` a string, ``int`` an int, ``float`` a float64, ``bool``
  a bool, ``None`` nil, ``bytes`` a ``[]byte``.
* A subclass of :class:`GoStruct` (a dataclass) is a Go struct: ``.Field`` reads an exported
  (capitalised) field and a missing field is an execution error, as in Go.

Ollama's template values have Go types with a ``String()`` method (tool calls' arguments print as
JSON) or custom JSON encodings; :class:`GoSlice`, :class:`GoMap` and the ``go_string``/``go_json``
hooks reproduce those without the engine knowing about Ollama.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar


class JSONObject(dict):
    """A JSON object whose keys keep their insertion order (a Go struct or ordered map).

    A plain ``dict`` is a Go map and is encoded with sorted keys, as ``encoding/json`` does.
    """

    __slots__ = ()


class GoStruct:
    """Base of dataclasses exposed to templates as Go structs.

    ``go_type`` names the type in error messages and ``%T``. Override ``go_string`` to give the
    type a ``String()`` method and ``go_json`` to change how ``json`` encodes it.
    """

    __slots__ = ()

    go_type: ClassVar[str] = "struct"
    _go_fields: ClassVar[tuple[str, ...] | None] = None

    @classmethod
    def go_field_names(cls) -> tuple[str, ...]:
        # Cached per class: field access is on the hot path of every template execution.
        names = cls.__dict__.get("_go_fields")
        if names is None:
            names = tuple(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]
            cls._go_fields = names
        return names

    def go_string(self) -> str | None:
        return None

    def go_json(self) -> Any:
        return JSONObject((name, getattr(self, name)) for name in self.go_field_names())


class _Nillable:
    """A Go slice or map, which may be nil: empty, but JSON ``null`` rather than empty."""

    nil: bool = False

    @classmethod
    def of(cls, items: Any = (), *, nil: bool = False) -> Any:
        value = cls(items)  # type: ignore[call-arg]
        if nil:
            value.nil = True
        return value

    def go_string(self) -> str | None:
        return None

    def go_json(self) -> Any:
        return None if self.nil else self._plain()

    def _plain(self) -> Any:
        raise NotImplementedError


class GoSlice(_Nillable, tuple):
    """An immutable Go slice."""

    go_type: ClassVar[str] = "[]interface {}"

    def _plain(self) -> Any:
        return list(self)


class GoMap(_Nillable, dict):
    """A Go map with string keys."""

    go_type: ClassVar[str] = "map[string]interface {}"

    def _plain(self) -> Any:
        return dict(self)


def go_type_name(value: Any) -> str:
    """The Go type name Go would print for ``value`` (``%T`` and error messages)."""
    if value is None:
        return "<nil>"
    if value is True or value is False:
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float64"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bytes | bytearray):
        return "[]uint8"
    name = getattr(type(value), "go_type", None)
    if name is not None:
        return name
    if isinstance(value, list | tuple):
        return "[]interface {}"
    if isinstance(value, dict):
        return "map[string]interface {}"
    return type(value).__name__
