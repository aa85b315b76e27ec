"""Pipeline templates: JSON values in which a string starting with ``$.`` is a reference.

A reference reads ``$.input``, ``$.steps.<id>.output`` or, in a ``for_each`` step, ``$.item`` and
``$.index``, optionally followed by a path (``.key``, ``.0`` or ``[0]``); everything else is literal.
Pure functions: resolving never fails (a missing path is ``null``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

PREFIX = "$."
ROOTS = ("input", "steps", "item", "index")
_INDEX = re.compile(r"\[(\d+)\]")


def is_reference(value: Any) -> bool:
    return value.__class__ is str and value.startswith(PREFIX)


def split_path(reference: str) -> list[str]:
    """``$.steps.t.output[0].text`` -> ``["steps", "t", "output", "0", "text"]``."""
    return [p for p in _INDEX.sub(r".\1", reference[len(PREFIX) :]).split(".") if p != ""]


def references(template: Any) -> Iterator[tuple[str, str]]:
    """Every reference in ``template`` as ``(json path inside the template, reference)``."""
    if is_reference(template):
        yield "", template
    elif isinstance(template, dict):
        for key, value in template.items():
            for where, ref in references(value):
                yield f".{key}{where}", ref
    elif isinstance(template, list):
        for i, value in enumerate(template):
            for where, ref in references(value):
                yield f"[{i}]{where}", ref


def reference_problem(reference: str, step_ids: set[str], in_for_each: bool) -> str | None:
    """Why ``reference`` can never resolve (unknown root or step, misuse of ``item``), or None."""
    parts = split_path(reference)
    if not parts or parts[0] not in ROOTS:
        return f"unknown reference {reference!r}: it must start with $.input, $.steps.<id>.output, $.item or $.index"
    root = parts[0]
    if root == "steps":
        if len(parts) < 3 or parts[2] != "output":
            return f"unknown reference {reference!r}: a step is read as $.steps.<id>.output"
        if parts[1] not in step_ids:
            return f"unknown reference {reference!r}: no step {parts[1]!r}"
    elif root in ("item", "index") and not in_for_each:
        return f"unknown reference {reference!r}: $.{root} exists only in a for_each step"
    return None


def referenced_steps(template: Any) -> set[str]:
    """The ids of the steps whose outputs ``template`` reads."""
    out = set()
    for _, ref in references(template):
        parts = split_path(ref)
        if len(parts) >= 2 and parts[0] == "steps":
            out.add(parts[1])
    return out


def lookup(value: Any, path: list[str]) -> Any:
    for key in path:
        if isinstance(value, dict):
            value = value.get(key)
        elif isinstance(value, list) and key.isdigit():
            i = int(key)
            value = value[i] if i < len(value) else None
        else:
            return None
    return value


def resolve(template: Any, context: dict[str, Any]) -> Any:
    """``template`` with every reference replaced by what it reads in ``context``.

    ``context`` is ``{"input": ..., "steps": {<id>: {"output": ...}}, "item"?: ..., "index"?: ...}``.
    """
    if template.__class__ is str:
        if template.startswith(PREFIX):
            return lookup(context, split_path(template))
        return template
    if isinstance(template, dict):
        return {key: resolve(value, context) for key, value in template.items()}
    if isinstance(template, list):
        return [resolve(value, context) for value in template]
    return template
