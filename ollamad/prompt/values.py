"""The values Ollama hands to a model's Go template, built from API messages and tools.

Ollama converts ``api.Message``/``api.Tool`` into template-specific Go structs whose printing
matters: tool-call arguments and tool lists print as JSON, a property's type prints as ``string``
or ``[string null]``. These dataclasses reproduce those types; the ``from_api`` helpers accept
the JSON shapes of Ollama's HTTP API (``{"role", "content", "images", "tool_calls", ...}``).

Numbers inside free-form JSON (arguments, enums, ``items``) become floats, as Go decodes them
into ``any`` as float64; that is visible in templates (``eq $v 1`` fails, ``1e+06`` prints).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ollamad.prompt.gofmt import marshal
from ollamad.prompt.govalues import GoMap, GoSlice, GoStruct, JSONObject


def go_any(value: Any) -> Any:
    """A JSON value as Go's decoder produces it for ``any``: every number is a float64."""
    if isinstance(value, bool) or value is None or isinstance(value, str | float):
        return value
    if isinstance(value, int):
        return float(value)
    if isinstance(value, Mapping):
        return {str(k): go_any(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [go_any(v) for v in value]
    return value


def as_object(value: Any) -> Mapping[str, Any]:
    """``value`` if it is a JSON object, else an empty one: requests come from clients, and a
    field of the wrong shape (a null tool, a number for tool_calls) must not crash the render."""
    return value if isinstance(value, Mapping) else {}


def as_array(value: Any) -> Sequence[Any]:
    """``value`` if it is a JSON array, else an empty one (see :func:`as_object`)."""
    return value if isinstance(value, list | tuple) else ()


# Fields declared ``any`` in Go: omitempty drops them only when nil, not when an empty map.
_ANY_FIELDS = frozenset({"$defs", "items"})


def _omit_empty(pairs: Iterable[tuple[str, Any]]) -> JSONObject:
    """``omitempty``: drop nil, empty strings, empty slices and maps."""
    obj = JSONObject()
    for key, value in pairs:
        if value is None or getattr(value, "nil", False):
            continue
        if key not in _ANY_FIELDS and isinstance(value, str | list | tuple | dict) and not value:
            continue
        obj[key] = value
    return obj


# --- tools -------------------------------------------------------------------------------------


class PropertyType(GoSlice):
    """``api.PropertyType``: one JSON Schema type name or several."""

    go_type = "api.PropertyType"

    def go_string(self) -> str | None:
        if not self:
            return ""
        if len(self) == 1:
            return self[0]
        return "[" + " ".join(self) + "]"

    def go_json(self) -> Any:
        return self[0] if len(self) == 1 else list(self)


_TS_TYPES = {"string": "string", "number": "number", "integer": "number", "boolean": "boolean",
             "array": "any[]", "object": "Record<string, any>", "null": "null"}


@dataclass(slots=True, eq=False)
class ToolProperty(GoStruct):
    """``api.ToolProperty``; nested ``Properties`` is an ordered map (a dict here)."""

    AnyOf: GoSlice = field(default_factory=GoSlice)
    Type: PropertyType = field(default_factory=PropertyType)
    Items: Any = None
    Description: str = ""
    Enum: GoSlice = field(default_factory=GoSlice)
    Properties: GoMap | None = None
    Required: GoSlice = field(default_factory=GoSlice)

    go_type: ClassVar[str] = "api.ToolProperty"
    go_methods: ClassVar[dict[str, str]] = {"ToTypeScriptType": "to_typescript_type"}

    @classmethod
    def from_api(cls, raw: Any) -> ToolProperty:
        raw = as_object(raw)
        kind = raw.get("type")
        types = [kind] if isinstance(kind, str) else [t for t in as_array(kind)
                                                      if isinstance(t, str)]
        props = raw.get("properties")
        return cls(
            AnyOf=GoSlice.of(cls.from_api(p) for p in as_array(raw.get("anyOf"))),
            Type=PropertyType.of(types),
            Items=go_any(raw.get("items")),
            Description=str(raw.get("description") or ""),
            Enum=GoSlice.of(go_any(list(as_array(raw.get("enum"))))),
            Properties=(JSONObject((str(k), cls.from_api(v)) for k, v in props.items())
                        if isinstance(props, Mapping) else None),
            Required=GoSlice.of(str(r) for r in as_array(raw.get("required"))),
        )

    def to_typescript_type(self) -> str:
        if self.AnyOf:
            return " | ".join(p.to_typescript_type() for p in self.AnyOf)
        if not self.Type:
            return "any"
        return " | ".join(_TS_TYPES.get(t, "any") for t in self.Type)

    def go_json(self) -> Any:
        return _omit_empty([("anyOf", self.AnyOf), ("type", self.Type), ("items", self.Items),
                            ("description", self.Description), ("enum", self.Enum),
                            ("properties", self.Properties), ("required", self.Required)])


class JSONStringMap(GoMap):
    """A Go map type whose ``String()`` is its JSON (Ollama's templateArgs/templateProperties)."""

    def go_string(self) -> str | None:
        return "{}" if self.nil else marshal(dict(self))


@dataclass(slots=True, eq=False)
class ToolParameters(GoStruct):
    Type: str = ""
    Defs: Any = None
    Items: Any = None
    Required: GoSlice = field(default_factory=GoSlice)
    Properties: JSONStringMap = field(default_factory=lambda: JSONStringMap.of(nil=True))
    # The properties in the order the request gave them, for the API's own JSON form.
    ordered: JSONObject | None = None

    go_type: ClassVar[str] = "template.templateToolFunctionParameters"

    @classmethod
    def go_field_names(cls) -> tuple[str, ...]:
        return ("Type", "Defs", "Items", "Required", "Properties")

    def go_json(self) -> Any:
        return self._json(self.Properties)

    def api_json(self) -> JSONObject:
        """The request's own form (api.ToolFunctionParameters): properties in given order."""
        return self._json(self.ordered)

    def _json(self, properties: Any) -> JSONObject:
        obj = JSONObject(type=self.Type)
        obj.update(_omit_empty([("$defs", self.Defs), ("items", self.Items),
                                ("required", self.Required)]))
        obj["properties"] = properties
        return obj

    def go_string(self) -> str | None:
        return marshal(self.api_json())


@dataclass(slots=True, eq=False)
class ToolFunction(GoStruct):
    Name: str = ""
    Description: str = ""
    Parameters: ToolParameters = field(default_factory=ToolParameters)

    go_type: ClassVar[str] = "template.templateToolFunction"

    def go_json(self) -> Any:
        return JSONObject(name=self.Name, description=self.Description,
                          parameters=self.Parameters)

    def go_string(self) -> str | None:
        # Ollama's Go struct here has no String(); classic Ollama printed api.ToolFunction as
        # JSON, which is what templates writing "{{ .Function }}" expect, so keep that.
        obj = JSONObject(name=self.Name)
        obj.update(_omit_empty([("description", self.Description)]))
        obj["parameters"] = self.Parameters.api_json()
        return marshal(obj)


@dataclass(slots=True, eq=False)
class Tool(GoStruct):
    Type: str = ""
    Items: Any = None
    Function: ToolFunction = field(default_factory=ToolFunction)

    go_type: ClassVar[str] = "template.templateTool"

    @classmethod
    def from_api(cls, raw: Mapping[str, Any]) -> Tool:
        raw = as_object(raw)
        fn = as_object(raw.get("function"))
        params = as_object(fn.get("parameters"))
        props = params.get("properties")
        ordered = (JSONObject((str(k), ToolProperty.from_api(v)) for k, v in props.items())
                   if isinstance(props, Mapping) else None)
        return cls(
            Type=str(raw.get("type") or ""),
            Items=go_any(raw.get("items")),
            Function=ToolFunction(
                Name=str(fn.get("name") or ""),
                Description=str(fn.get("description") or ""),
                Parameters=ToolParameters(
                    Type=str(params.get("type") or ""),
                    Defs=go_any(params.get("$defs")),
                    Items=go_any(params.get("items")),
                    Required=GoSlice.of((str(r) for r in as_array(params.get("required"))),
                                        nil=params.get("required") is None),
                    Properties=JSONStringMap.of(ordered or {}, nil=ordered is None),
                    ordered=ordered,
                ),
            ),
        )

    def go_json(self) -> Any:
        obj = JSONObject(type=self.Type)
        obj.update(_omit_empty([("items", self.Items)]))
        obj["function"] = self.Function
        return obj

    def go_string(self) -> str | None:
        return marshal(self)


class ToolList(GoSlice):
    """Ollama's templateTools: a slice whose ``String()`` is its JSON."""

    go_type = "template.templateTools"

    def go_string(self) -> str | None:
        return marshal(self)


def tools_from_api(tools: Sequence[Mapping[str, Any]] | None) -> ToolList:
    if tools is None:
        return ToolList.of(nil=True)
    return ToolList.of(Tool.from_api(t) for t in tools)


# --- messages ----------------------------------------------------------------------------------


@dataclass(slots=True, eq=False)
class ToolCallFunction(GoStruct):
    Index: int = 0
    Name: str = ""
    Arguments: JSONStringMap = field(default_factory=lambda: JSONStringMap.of(nil=True))

    go_type: ClassVar[str] = "template.templateToolCallFunction"


@dataclass(slots=True, eq=False)
class ToolCall(GoStruct):
    ID: str = ""
    Function: ToolCallFunction = field(default_factory=ToolCallFunction)

    go_type: ClassVar[str] = "template.templateToolCall"

    @classmethod
    def from_api(cls, raw: Mapping[str, Any]) -> ToolCall:
        raw = as_object(raw)
        fn = as_object(raw.get("function"))
        args = fn.get("arguments")
        if isinstance(args, str):  # OpenAI clients send arguments as a JSON string
            try:
                args = json.loads(args)
            except ValueError:
                args = None
        index = fn.get("index", 0)
        return cls(
            ID=str(raw.get("id") or ""),
            Function=ToolCallFunction(
                Index=index if isinstance(index, int) and not isinstance(index, bool) else 0,
                Name=str(fn.get("name") or ""),
                Arguments=JSONStringMap.of(go_any(args) if isinstance(args, Mapping) else {},
                                           nil=not isinstance(args, Mapping)),
            ),
        )


def image_bytes(image: Any) -> bytes:
    """An image as raw bytes: given as bytes, or base64 as the HTTP API sends it."""
    if isinstance(image, bytes | bytearray):
        return bytes(image)
    text = str(image)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return text.encode("utf-8", "surrogatepass")


@dataclass(slots=True, eq=False)
class Message(GoStruct):
    Role: str = ""
    Content: str = ""
    Thinking: str = ""
    Images: GoSlice = field(default_factory=lambda: GoSlice.of(nil=True))
    ToolCalls: GoSlice = field(default_factory=lambda: GoSlice.of(nil=True))
    ToolName: str = ""
    ToolCallID: str = ""

    go_type: ClassVar[str] = "*template.templateMessage"

    @classmethod
    def from_api(cls, raw: Mapping[str, Any]) -> Message:
        images = as_array(raw.get("images"))
        calls = as_array(raw.get("tool_calls"))
        return cls(
            Role=str(raw.get("role") or "").lower(),
            Content=str(raw.get("content") or ""),
            Thinking=str(raw.get("thinking") or ""),
            Images=GoSlice.of((image_bytes(i) for i in images), nil=not images),
            ToolCalls=GoSlice.of((ToolCall.from_api(c) for c in calls), nil=not calls),
            ToolName=str(raw.get("tool_name") or ""),
            ToolCallID=str(raw.get("tool_call_id") or ""),
        )


def collate(messages: Iterable[Message]) -> tuple[str, list[Message]]:
    """All system contents joined, and the messages with consecutive same-role turns merged.

    Tool results stay separate because each carries its own tool name and call id.
    """
    system: list[str] = []
    merged: list[Message] = []
    for msg in messages:
        if msg.Role == "system":
            system.append(msg.Content)
        if merged and merged[-1].Role == msg.Role and msg.Role != "tool":
            last = merged[-1]
            merged[-1] = Message(last.Role, last.Content + "\n\n" + msg.Content, last.Thinking,
                                 last.Images, last.ToolCalls, last.ToolName, last.ToolCallID)
        else:
            merged.append(msg)
    return "\n\n".join(system), merged
