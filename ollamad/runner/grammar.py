"""A request's ``format`` (Ollama's structured output) → a llama.cpp GBNF grammar.

``"json"`` selects llama.cpp's own JSON grammar, which, unlike the one Ollama's classic runner
used, bounds the whitespace between tokens, so a small model cannot pad an answer with newlines
until it runs out of tokens. A JSON-Schema object is converted by llama-cpp-python's port of
llama.cpp's schema converter, as Ollama's classic runner did with ``SchemaToGrammar``.
"""

from __future__ import annotations

import json
from typing import Any

from llama_cpp.llama_grammar import JSON_GBNF, json_schema_to_gbnf

from ollamad.errors import BadRequest


def grammar_for(format_: Any) -> str | None:
    """The grammar for ``format_``, None for no constraint. Raises :class:`BadRequest`."""
    if format_ is None or format_ == "":
        return None
    if format_ == "json":
        return JSON_GBNF
    if isinstance(format_, dict):
        try:
            return json_schema_to_gbnf(json.dumps(format_))
        except Exception as exc:  # the converter raises bare Exceptions, KeyErrors, ...
            raise BadRequest(f"invalid JSON schema in format: {exc}") from exc
    raise BadRequest(f'invalid format: {json.dumps(format_)}; expected "json" or a valid JSON '
                     "Schema object")
