"""A Go text/template engine for the templates found in Ollama model files.

Supported: text and actions, comments, ``{{-``/``-}}`` trimming, pipelines, variables
(``$``, ``:=``, ``=``), field chains over maps and structs, ``if``/``else if``/``else``,
``with``/``else with``, ``range`` over slices, maps and integers with ``break``/``continue``,
``define``/``template``/``block``, parenthesised pipelines, Go literals, and the builtins
and or not eq ne lt le gt ge len index slice call print printf println html js urlquery.

Not supported, or different from Go:

* complex numbers, custom delimiters, ``range`` over channels or iterator functions, and method
  calls other than those a value declares in ``go_methods``;
* ``printf`` of floats with ``%x``/``%X``/``%b`` or the ``#`` flag;
* a field of a nil element inside ``range`` gives ``<no value>`` where Go reports an error;
* limits (:class:`Limits`) are much lower than Go's, which has none for output or steps.

Python data stands for Go data as described in :mod:`ollamad.prompt.govalues`. Every failure,
including a resource limit (:class:`Limits`), raises :class:`TemplateError`.

Example::

    >>> GoTemplate.parse("{{ range . }}<{{ . }}>{{ end }}").execute(["a", "b"])
    '<a><b>'
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ollamad.prompt.errors import TemplateError
from ollamad.prompt.goexec import Program
from ollamad.prompt.gofuncs import ANY, STRING, GoFunc, function_table
from ollamad.prompt.gonodes import ListNode
from ollamad.prompt.goparse import parse
from ollamad.prompt.goruntime import Limits

__all__ = ["ANY", "STRING", "GoFunc", "GoTemplate", "Limits", "TemplateError"]

FuncMap = Mapping[str, GoFunc | Callable[..., Any]]


class GoTemplate:
    """A parsed template: its named trees (``""`` is the main one) and functions."""

    def __init__(self, trees: Mapping[str, ListNode], funcs: Mapping[str, GoFunc],
                 limits: Limits, source: str) -> None:
        self._program = Program(trees, funcs, limits, source)

    @classmethod
    def parse(cls, text: str, funcs: FuncMap | None = None,
              limits: Limits | None = None) -> GoTemplate:
        limits = limits or Limits()
        if len(text) > limits.max_source:
            raise TemplateError(f"template is longer than {limits.max_source} characters")
        table = function_table(funcs)
        try:
            trees = parse(text, table, limits.max_nesting)
        except RecursionError:
            raise TemplateError("template nested too deeply to parse") from None
        return cls(trees, table, limits, text)

    @property
    def trees(self) -> dict[str, ListNode]:
        """The parse trees by name. Treat them as read-only; use :meth:`with_trees` to rewrite."""
        return self._program.trees

    @property
    def root(self) -> ListNode:
        return self._program.trees[""]

    @property
    def source(self) -> str:
        return self._program.source

    @property
    def limits(self) -> Limits:
        return self._program.limits

    def with_trees(self, trees: Mapping[str, ListNode]) -> GoTemplate:
        """Another template over rewritten trees, with the same functions and limits."""
        program = self._program
        return GoTemplate(trees, program.funcs, program.limits, program.source)

    def execute(self, data: Any, *, missingkey: str = "zero", name: str = "") -> str:
        """Render the template named ``name`` with ``data`` as dot.

        ``missingkey`` is Go's option: ``"zero"`` or ``"default"``. Both print a missing map
        key as ``<no value>``; they differ when a field is looked up on the missing value
        (``"zero"`` reports an error, like Go).
        """
        if missingkey not in ("zero", "default"):
            raise ValueError(f"unsupported missingkey option {missingkey!r}")
        return self._program.execute(data, zero=missingkey == "zero", name=name)
