"""The values qatune.data hands out: an Example (one question) and its GoldAnswers.

    >>> gold = GoldAnswer("France", 24)
    >>> gold.end, "Paris is the capital of France."[gold.start:gold.end]
    (30, 'France')
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Union

PathLike = Union[str, os.PathLike]  # a data file as users name it


@dataclass(frozen=True)
class GoldAnswer:
    """A gold answer: `context[start:end] == text`, with `end = start + len(text)`."""

    text: str
    start: int

    @property
    def end(self) -> int:
        return self.start + len(self.text)


@dataclass(frozen=True)
class Example:
    """One question about one context, with every gold answer (empty when unanswerable)."""

    id: str
    question: str
    context: str
    answers: tuple[GoldAnswer, ...] = ()
    is_impossible: bool = False
    title: str | None = None
    place: str = ""  # where in the file it came from, e.g. "data[3].paragraphs[1].qas[0]"

    @property
    def unanswerable(self) -> bool:
        """SQuAD 2.0: marked impossible, or without any gold answer."""
        return self.is_impossible or not self.answers
