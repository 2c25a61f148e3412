"""Ollama's own template test data: every folder of the shared conformance set, every case.

The folder is found beside the repository (``../shared/conformance/ollama-templates``) or at
``$OLLAMAD_CONFORMANCE_DIR``. CI always has it, so a missing folder fails instead of skipping.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from ollamad.prompt import ChatTemplate


def _conformance_dir() -> Path:
    override = os.environ.get("OLLAMAD_CONFORMANCE_DIR")
    if override:
        return Path(override)
    return (Path(__file__).resolve().parents[1].parent / "shared" / "conformance"
            / "ollama-templates")


CONFORMANCE = _conformance_dir()

# Ollama's test drops one trailing space for these templates; the README names them too.
_TRAILING_SPACE_DEFAULT = {"chatqa", "llama2-chat", "mistral-instruct", "openchat", "vicuna"}


def _trailing_space_templates() -> set[str]:
    names = set(_TRAILING_SPACE_DEFAULT)
    readme = CONFORMANCE / "README.md"
    if readme.is_file():
        text = " ".join(readme.read_text(encoding="utf-8").split())
        match = re.search(r"For (.+?), a single trailing space", text)
        if match:
            names.update(n.strip() for n in re.split(r",|\band\b", match.group(1)) if n.strip())
    return names


def _cases() -> list[tuple[str, str]]:
    if not CONFORMANCE.is_dir():
        return []
    cases = []
    for folder in sorted(p for p in CONFORMANCE.iterdir() if (p / "template.gotmpl").is_file()):
        for case in sorted(folder.glob("*.json")):
            if case.name != "parameters.json":
                cases.append((folder.name, case.stem))
    return cases


CASES = _cases()


def test_conformance_set_is_present() -> None:
    assert CONFORMANCE.is_dir(), f"conformance templates not found at {CONFORMANCE}"
    assert CASES, f"no template cases found in {CONFORMANCE}"


@pytest.mark.parametrize(("template", "case"), CASES, ids=[f"{t}/{c}" for t, c in CASES])
def test_template_case(template: str, case: str) -> None:
    folder = CONFORMANCE / template
    tmpl = ChatTemplate.parse((folder / "template.gotmpl").read_text(encoding="utf-8"))
    messages = json.loads((folder / f"{case}.json").read_text(encoding="utf-8"))["messages"]
    rendered = tmpl.render(messages).encode("utf-8")
    if template in _trailing_space_templates() and rendered.endswith(b" "):
        rendered = rendered[:-1]
    assert rendered == (folder / f"{case}.expected").read_bytes()

