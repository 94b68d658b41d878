"""Checks of single fields (question, context, answer text and start, is_impossible),
the repair of a misplaced answer, and generated ids.

Each check returns the message for a Problem (what was expected, what was found, how to
fix it), or None when the value is fine.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from qatune.data.examples import GoldAnswer
from qatune.data.messages import _describe
from qatune.data.text import code_points, has_visible_character

_SURROGATE = re.compile("[\ud800-\udfff]")

_QUESTION_FIX = "write the question text, or remove this question"
_CONTEXT_FIX = 'put the passage the answers come from in "context"'
_TEXT_FIX = "copy the answer text from the context, or remove this answer"
_START_FIX = "set it to the character index where the answer begins in the context (0 is the first)"


def _text_problem(value: Any, what: str, fix: str) -> str | None:
    """A message when `value` is not a usable non-empty string, else None."""
    if not isinstance(value, str) or not value.strip():
        return f"expected {what}, found {_describe(value)}; {fix}"
    bad = _SURROGATE.search(value)
    if bad:
        return (
            f"expected {what}, found text with an unpaired surrogate "
            f"(\\u{ord(bad.group()):04x}) at index {bad.start()}; {fix}"
        )
    if not has_visible_character(value):
        return f"expected {what}, found text with no visible character ({code_points(value)}); {fix}"
    return None


def _impossible_problem(value: Any, answers: int) -> str | None:
    if not isinstance(value, bool):
        return f'expected "is_impossible" to be true or false, found {_describe(value)}; write true or false'
    if value and answers:
        return (
            f'expected no answers for a question marked "is_impossible": true, found {answers} answers; '
            'remove the answers or set "is_impossible" to false'
        )
    return None


def _start_problem(start: Any) -> str | None:
    """What makes `start` no offset at all. A start past the context's end is only a wrong
    offset (byte offsets of non-ASCII text are the usual cause): repaired like any other."""
    if isinstance(start, bool) or not isinstance(start, int):
        what = 'an integer "answer_start" (the character index where the answer begins in the context)'
        return f"expected {what}, found {_describe(start)}; {_START_FIX}"
    if start < 0:
        return f'expected "answer_start" >= 0, found {start}; {_START_FIX}'
    return None


def _repair(text: str, start: int, context: str) -> tuple[str, GoldAnswer] | None:
    """("whitespace" | "reanchored", repaired answer) for a misplaced answer, or None.

    >>> _repair("Paris ", 4, "The Paris, summit")
    ('whitespace', GoldAnswer(text='Paris', start=4))
    >>> _repair(" Paris", 4, "The Paris, summit")
    ('whitespace', GoldAnswer(text='Paris', start=4))
    >>> _repair("Paris", 0, "The Paris summit")
    ('reanchored', GoldAnswer(text='Paris', start=4))
    >>> _repair("Öl", 8, "Çà é Öl, Öl")  # 8: the byte offset of the first "Öl", nearer the second
    ('reanchored', GoldAnswer(text='Öl', start=5))
    """
    stripped = text.strip()
    if stripped != text:
        lead = len(text) - len(text.lstrip())
        # the stripped text where the text's leading whitespace puts it (start + lead), or where the
        # start already points past some or all of that whitespace (start + lead - 1, ..., start)
        for position in range(start + lead, start - 1, -1):
            if context.startswith(stripped, position):
                return "whitespace", GoldAnswer(stripped, position)
    occurrences = []
    position = context.find(stripped)
    while position != -1:
        occurrences.append(position)
        position = context.find(stripped, position + 1)
    if not occurrences:
        return None
    # a start that is the UTF-8 byte offset of an occurrence (offsets counted in bytes, as some
    # tools do, of text with accents) names that occurrence, although a later one may be nearer
    in_bytes = [p for p in occurrences if start > p and len(context[:p].encode("utf-8", "surrogatepass")) == start]
    nearest = min(in_bytes or occurrences, key=lambda p: (abs(p - start), p))  # on a tie, the earlier one
    return "reanchored", GoldAnswer(stripped, nearest)


def _generated_id(question: str, context: str, taken: dict[str, str]) -> str:
    """A stable id: a short sha1 of question and context, "-2", "-3", ... for repeats."""
    text = f"{question}\n{context}".encode("utf-8", "surrogatepass")
    base = hashlib.sha1(text).hexdigest()[:12]
    candidate, n = base, 1
    while candidate in taken:
        n += 1
        candidate = f"{base}-{n}"
    return candidate
