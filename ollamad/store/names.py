"""Model names: ``[scheme://][host/][namespace/]model[:tag]`` with Ollama's defaults and grammar.

A :class:`ModelName` can only be built by :func:`ModelName.parse` (or from parts that pass the same
checks), so every instance is safe to turn into a path: no part is empty, ``.``, ``..`` or holds a
``/`` or NUL.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from ollamad.errors import InvalidName

DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"

# First character alphanumeric or underscore; then also '-' and '.', except that a namespace has
# no dots and only a host may carry a ':port'.
_PART = {
    "host": re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]{0,349}"),
    "namespace": re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,79}"),
    "model": re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,79}"),
    "tag": re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,79}"),
}


@dataclass(frozen=True)
class ModelName:
    host: str
    namespace: str
    model: str
    tag: str
    scheme: str = field(default="https", compare=False)
    # The spelling the user typed, for messages: Ollama's errors quote the name as sent.
    original: str = field(default="", compare=False, repr=False)

    @classmethod
    def parse(cls, text: object) -> ModelName:
        """Parse a user's name, fill in the defaults, and check every part. Raises InvalidName."""
        if not isinstance(text, str) or not text:
            raise InvalidName()
        original, scheme = text, "https"
        for prefix in ("http://", "https://"):
            if text.startswith(prefix):
                scheme, text = prefix[:-3], text[len(prefix):]
                break
        tag = DEFAULT_TAG
        colon, slash = text.rfind(":"), text.rfind("/")
        if colon > slash:
            text, tag = text[:colon], text[colon + 1:]
        pieces = text.split("/")
        if len(pieces) > 3:
            raise InvalidName()
        model = pieces[-1]
        namespace = pieces[-2] if len(pieces) >= 2 else DEFAULT_NAMESPACE
        host = pieces[-3] if len(pieces) == 3 else DEFAULT_HOST
        return cls.from_parts(host, namespace, model, tag, scheme, original)

    @classmethod
    def from_parts(cls, host: str, namespace: str, model: str, tag: str,
                   scheme: str = "https", original: str = "") -> ModelName:
        for kind, value in (("host", host), ("namespace", namespace), ("model", model),
                            ("tag", tag)):
            if not _PART[kind].fullmatch(value):
                raise InvalidName()
        name = cls(host, namespace, model, tag, scheme, original)
        return name if original else replace(name, original=name.display_shortest())

    @property
    def parts(self) -> tuple[str, str, str, str]:
        """The four parts that make the manifest path ``host/namespace/model/tag``."""
        return (self.host, self.namespace, self.model, self.tag)

    @property
    def key(self) -> tuple[str, str, str, str]:
        """Case-insensitive identity: two names with the same key are the same model."""
        return tuple(p.lower() for p in self.parts)  # type: ignore[return-value]

    @property
    def repository(self) -> str:
        """The registry repository path, ``namespace/model``."""
        return f"{self.namespace}/{self.model}"

    def display_shortest(self) -> str:
        """Ollama's short form: drop the default host, then the default namespace; keep the tag."""
        if self.host.lower() != DEFAULT_HOST:
            return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"
        if self.namespace.lower() != DEFAULT_NAMESPACE:
            return f"{self.namespace}/{self.model}:{self.tag}"
        return f"{self.model}:{self.tag}"

    def __str__(self) -> str:
        return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"
