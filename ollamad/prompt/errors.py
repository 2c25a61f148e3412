"""The one exception type of the prompt package."""

from __future__ import annotations


class TemplateError(ValueError):
    """A chat template failed to parse or to execute (Go or Jinja), or hit a resource limit.

    Model files come from the internet, so callers treat this as a bad-model error, never as a
    crash of the daemon: every failure inside ``ollamad.prompt`` surfaces as this type.
    """
