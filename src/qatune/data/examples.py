"""The values qatune.data hands out: an Example (one question) and its GoldAnswers.

    >>> gold = GoldAnswer("France", 24)
    >>> gold.end, "Paris is the capital of France."[gold.start:gold.end]
    (30, 'France')
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence, Union

from qatune.data.text import code_points, has_visible_character
from qatune.errors import ArgumentTypeError, DataError

PathLike = Union[str, os.PathLike]  # a data file as users name it


@dataclass(frozen=True)
class GoldAnswer:
    """A gold answer: `context[start:end] == text`, with `end = start + len(text)`."""

    text: str
    start: int

    def __post_init__(self) -> None:
        if not isinstance(self.text, str) or not self.text:
            raise ArgumentTypeError(f"GoldAnswer text must be a non-empty str, got {self.text!r}")
        if isinstance(self.start, bool) or not isinstance(self.start, int) or self.start < 0:
            raise ArgumentTypeError(
                f"GoldAnswer start must be a character offset (a whole number, 0 or more), got {self.start!r}"
            )

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

    def __post_init__(self) -> None:
        # Files are checked (and repaired) as they are read; an Example built in Python is
        # checked here, so that no answer is trained on or scored at characters it is not at.
        where = f"example {self.id!r}" + (f" ({self.place})" if self.place else "")
        if not isinstance(self.id, str):
            raise ArgumentTypeError(f"{where}: id must be a str, got {type(self.id).__name__} (pass str(id))")
        for name in ("question", "context"):
            value = getattr(self, name)
            if not isinstance(value, str):
                raise ArgumentTypeError(f"{where}: {name} must be a str, got {type(value).__name__}")
            if not has_visible_character(value):  # as reading a file refuses it
                raise DataError(f"{where}: the {name} is blank ({code_points(value) or 'empty'}); write the {name}")
        if isinstance(self.answers, list):
            object.__setattr__(self, "answers", tuple(self.answers))
        if not isinstance(self.answers, tuple) or not all(isinstance(a, GoldAnswer) for a in self.answers):
            raise ArgumentTypeError(
                f"{where}: answers must be a tuple of GoldAnswer(text, start), got {self.answers!r}"
            )
        for answer in self.answers:
            found = self.context[answer.start : answer.end]
            if found != answer.text:
                raise DataError(
                    f"{where}: the answer {answer.text!r} is not at character {answer.start} of its context "
                    f"(found {found!r}); fix its start, or read the data with qatune.data.load_examples, "
                    f"which finds misplaced answers and says what it repaired"
                )

    @property
    def unanswerable(self) -> bool:
        """SQuAD 2.0: marked impossible, or without any gold answer."""
        return self.is_impossible or not self.answers


def as_examples(name: str, examples: object) -> list[Example]:
    """`examples` as a list, checked to hold Examples: a file's name, a single Example or a dict
    passed in their place is an ArgumentTypeError that names the argument `name` and the fix."""
    if isinstance(examples, (str, bytes, os.PathLike)):
        raise ArgumentTypeError(
            f"{name} must be examples (a list of qatune.data.Example), got the path {examples!r}: "
            f"read the file first, with qatune.data.load_examples({str(examples)!r})"
        )
    if isinstance(examples, (Example, dict)):
        raise ArgumentTypeError(f"{name} must be a list of qatune.data.Example, got one {type(examples).__name__}: pass [it]")
    try:
        listed = list(examples)  # type: ignore[call-overload]
    except TypeError:
        raise ArgumentTypeError(f"{name} must be a list of qatune.data.Example, got {type(examples).__name__}") from None
    for index, example in enumerate(listed):
        if not isinstance(example, Example):
            raise ArgumentTypeError(
                f"{name}[{index}] must be a qatune.data.Example (Example(id, question, context, answers)), "
                f"got {type(example).__name__}"
            )
    return listed


def check_unique_ids(examples: Sequence[Example], name: str = "examples") -> None:
    """A DataError naming the first question id that appears twice, and both its places (where
    in the file, or the positions in `name`)."""
    seen: dict[str, int] = {}
    for index, example in enumerate(examples):
        if example.id in seen:
            first = examples[seen[example.id]]
            raise DataError(
                f"question id {example.id!r} appears twice, at {first.place or f'{name}[{seen[example.id]}]'} "
                f"and at {example.place or f'{name}[{index}]'}; expected each question id once; give one "
                "of them a new id"
            )
        seen[example.id] = index
