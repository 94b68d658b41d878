"""Describing values in messages: quoting text, naming what was found, naming places.

    >>> _describe(" "), _describe(_MISSING), _at("line 3", "context")
    ('a string of only whitespace (" ")', 'nothing (the field is missing)', 'line 3: context')
"""

from __future__ import annotations

import json
from typing import Any

_MISSING: Any = object()  # a field that is not there at all (distinct from null)


def _quote(text: str, limit: int = 60) -> str:
    """Quote text for a message: JSON style, shortened, unpaired surrogates escaped."""
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    quoted = json.dumps(text, ensure_ascii=False)
    return quoted.encode("utf-8", "backslashreplace").decode("utf-8")


def _describe(value: Any) -> str:
    if value is _MISSING:
        return "nothing (the field is missing)"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    if isinstance(value, str):
        if not value:
            return "an empty string"
        if not value.strip():
            return f"a string of only whitespace ({_quote(value)})"
        return f"the string {_quote(value)}"
    if isinstance(value, list):
        return f"a list of {len(value)} items"
    return "an object"


def _describe_top(value: Any) -> str:
    if isinstance(value, dict):
        keys = ", ".join(_quote(str(k), 30) for k in list(value)[:6])
        return f"a JSON object with keys {keys}" if keys else "an empty JSON object"
    if isinstance(value, list):
        if not value:
            return "an empty JSON list"
        first = value[0]
        if isinstance(first, dict):
            keys = ", ".join(_quote(str(k), 30) for k in list(first)[:6])
            return f"a JSON list whose first item has keys {keys or '(none)'}"
        return f"a JSON list whose first item is {_describe(first)}"
    return f"JSON {_describe(value)}"


def _at(place: str, name: str) -> str:
    """The place of field `name` inside `place` ("data[0].context", "line 3: context")."""
    return f"{place}: {name}" if place.startswith("line ") else f"{place}.{name}"


def _not_an_object(kind: str, keys: str, value: Any) -> str:
    """E.g. 'expected a paragraph object {"context", "qas"}, found ...; write each paragraph ...'."""
    noun = kind.split()[-1]
    return f"expected {kind} object {keys}, found {_describe(value)}; write each {noun} as such an object"
