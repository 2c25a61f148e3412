"""Model names: Ollama's grammar, defaults and display forms; nothing unsafe reaches a path."""

from __future__ import annotations

import pytest

from ollamad.errors import InvalidName
from ollamad.store import ModelName


@pytest.mark.parametrize(("text", "parts", "short"), [
    ("llama3.2", ("registry.ollama.ai", "library", "llama3.2", "latest"), "llama3.2:latest"),
    ("llama3.2:1b", ("registry.ollama.ai", "library", "llama3.2", "1b"), "llama3.2:1b"),
    ("jmorgan/foo", ("registry.ollama.ai", "jmorgan", "foo", "latest"), "jmorgan/foo:latest"),
    ("example.com:5000/ns/m:v1", ("example.com:5000", "ns", "m", "v1"),
     "example.com:5000/ns/m:v1"),
    ("localhost:5000/ns/m", ("localhost:5000", "ns", "m", "latest"), "localhost:5000/ns/m:latest"),
    ("https://example.com/ns/m", ("example.com", "ns", "m", "latest"), "example.com/ns/m:latest"),
    ("REGISTRY.OLLAMA.AI/Library/Model:TAG", ("REGISTRY.OLLAMA.AI", "Library", "Model", "TAG"),
     "Model:TAG"),
    ("_a.b-c_:1.0-rc_1", ("registry.ollama.ai", "library", "_a.b-c_", "1.0-rc_1"),
     "_a.b-c_:1.0-rc_1"),
])
def test_parse_fills_defaults(text: str, parts: tuple[str, ...], short: str) -> None:
    name = ModelName.parse(text)
    assert name.parts == parts
    assert name.display_shortest() == short
    assert name.original == text


def test_scheme_is_kept_for_insecure_pulls() -> None:
    assert ModelName.parse("http://localhost:5000/ns/m").scheme == "http"
    assert ModelName.parse("ns/m").scheme == "https"


@pytest.mark.parametrize("text", [
    "", ".", "..", "../x", "a/../b", "a/./b", "/abs", "a//b", "a/", ":tag", "a:", "a::b",
    "a\x00b", "a b", "a\nb", "ns.dot/m", "h/n/m/extra", "-lead", ".lead", "m:-t", "m:.t",
    "x" * 81, "m:" + "t" * 81, "n" * 81 + "/m", "h" * 351 + "/n/m", "ns:1/m", "m@sha256-00",
    "é", "m:t/x", "\\x",
])
def test_invalid_names_are_refused(text: str) -> None:
    with pytest.raises(InvalidName, match="invalid model name"):
        ModelName.parse(text)


def test_longest_valid_parts() -> None:
    name = ModelName.parse(f"{'h' * 350}/{'n' * 80}/{'m' * 80}:{'t' * 80}")
    assert [len(p) for p in name.parts] == [350, 80, 80, 80]


def test_case_insensitive_identity_keeps_spelling() -> None:
    a, b = ModelName.parse("Foo/Bar:Baz"), ModelName.parse("foo/bar:baz")
    assert a.key == b.key
    assert a != b
    assert str(a) == "registry.ollama.ai/Foo/Bar:Baz"


@pytest.mark.parametrize("text", ["a", "ns/m:t", "h.io:80/ns/m:t"])
def test_every_valid_part_is_a_safe_path_component(text: str) -> None:
    for part in ModelName.parse(text).parts:
        assert part not in ("", ".", "..") and "/" not in part and "\0" not in part
