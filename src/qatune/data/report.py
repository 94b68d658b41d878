"""What reading a data file found: each Problem at its place, and the ValidationReport."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from qatune.errors import DataError


@dataclass
class Problem:
    """Something wrong (or repaired, or skipped) at one place in a data file.

    >>> str(Problem("data[0].paragraphs[0].qas[1].question", "expected ..., found ...; fix ..."))
    'data[0].paragraphs[0].qas[1].question: expected ..., found ...; fix ...'
    """

    place: str
    message: str  # says what was expected, what was found and how to fix it

    def __str__(self) -> str:
        return f"{self.place}: {self.message}"


@dataclass
class ValidationReport:
    """What reading one data file found: counts, repairs, skips and errors.

    `questions` and `answers` count what was read (valid or not); `unanswerable` counts the
    unanswerable questions kept; `kept_questions` is the number of examples returned.
    `articles` is the number of articles of a squad-layout file (None in the other layouts,
    which have none); `titles` counts distinct titles in every layout.
    """

    path: str
    layout: str
    articles: int | None = None
    titles: int = 0
    contexts: int = 0
    questions: int = 0
    answers: int = 0
    unanswerable: int = 0
    repaired: dict[str, int] = field(default_factory=lambda: {"whitespace": 0, "reanchored": 0})
    max_shift: int = 0
    skipped_questions: int = 0
    skipped_answers: int = 0
    duplicate_ids: int = 0
    generated_ids: int = 0  # kept questions that had no id
    errors: list[Problem] = field(default_factory=list)
    on_error: str = "repair"
    kept_questions: int = 0
    repairs: list[Problem] = field(default_factory=list)  # one note per repaired answer
    skips: list[Problem] = field(default_factory=list)  # why each skipped thing was dropped
    unskippable_errors: int = 0  # errors in the structure above the questions, which skip cannot drop

    @property
    def ok(self) -> bool:
        """True when the file has no errors under the chosen policy."""
        return not self.errors

    @property
    def skip_would_help(self) -> bool:
        """Whether --on-error skip (not chosen) could drop every error: all are in questions,
        answers or contexts, none in the file's structure."""
        return self.on_error != "skip" and bool(self.errors) and self.unskippable_errors == 0

    def raise_for_errors(self) -> None:
        """Raise DataError with the first error (and how many more) when the file is unusable."""
        if not self.errors:
            return
        message = f"{self.path}: {self.errors[0]}"
        if len(self.errors) > 1:
            message += (
                f" (and {len(self.errors) - 1} more problems; "
                f"run `qatune validate {self.path}` to see them all)"
            )
        raise DataError(message)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy of the report (what `qatune validate --json` prints)."""

        def notes(problems: list[Problem]) -> list[dict[str, str]]:
            return [{"place": p.place, "message": p.message} for p in problems]

        return {
            "path": self.path,
            "layout": self.layout,
            "on_error": self.on_error,
            "ok": self.ok,
            "articles": self.articles,
            "titles": self.titles,
            "contexts": self.contexts,
            "questions": self.questions,
            "answers": self.answers,
            "unanswerable": self.unanswerable,
            "kept_questions": self.kept_questions,
            "repaired": dict(self.repaired),
            "max_shift": self.max_shift,
            "skipped": {"questions": self.skipped_questions, "answers": self.skipped_answers},
            "duplicate_ids": self.duplicate_ids,
            "generated_ids": self.generated_ids,
            "errors": notes(self.errors),
            "repairs": notes(self.repairs),
            "skips": notes(self.skips),
        }

    def summary(self, max_problems: int = 10) -> str:
        """The text `qatune validate` prints: counts, the first problems, a verdict."""
        lines = [
            f"{self.path} ({self.layout} layout, --on-error {self.on_error})",
            f"  {self._groups()}, {self.contexts} contexts, {self.questions} questions, "
            f"{self.answers} answers, {self.unanswerable} unanswerable",
            f"  repaired: {self._repaired_kinds()}",
            f"  skipped: {self._skipped_counts()}",
            f"  duplicate ids: {self.duplicate_ids}",
        ]
        lines += self.problem_lines(max_problems)
        lines.append(f"  verdict: {self._verdict()}")
        return "\n".join(lines)

    def repair_line(self) -> str:
        """One line of what was repaired and skipped, in the words of `summary()`.

        >>> from qatune.data import read_dataset
        >>> _, report = read_dataset("tests/data/data_needs_repair.json")
        >>> report.repair_line()
        '3 answers repaired: 2 whitespace, 1 re-anchored (largest shift 9 characters); skipped: 0 questions, 0 answers'
        """
        repaired = sum(self.repaired.values())
        return f"{repaired} answers repaired: {self._repaired_kinds()}; skipped: {self._skipped_counts()}"

    def _groups(self) -> str:
        """Articles in the squad layout; the other layouts have none, only (maybe) titles."""
        if self.articles is not None:
            return f"{self.articles} articles"
        return f"{self.titles} titles" if self.titles else "no titles"

    def _repaired_kinds(self) -> str:
        return (
            f"{self.repaired['whitespace']} whitespace, {self.repaired['reanchored']} re-anchored "
            f"(largest shift {self.max_shift} characters)"
        )

    def _skipped_counts(self) -> str:
        return f"{self.skipped_questions} questions, {self.skipped_answers} answers"

    def problem_lines(self, limit: int) -> list[str]:
        """The first `limit` problems, errors first, each with its place (summary's lines)."""
        labelled = (
            [("error", p) for p in self.errors]
            + [("skipped", p) for p in self.skips]
            + [("repaired", p) for p in self.repairs]
        )
        if not labelled:
            return []
        shown = labelled[:limit]
        lines = [f"  problems (first {len(shown)} of {len(labelled)}):"]
        lines += [f"    {label}: {problem}" for label, problem in shown]
        if len(labelled) > len(shown):
            lines.append(f"    ... and {len(labelled) - len(shown)} more (see --max-problems)")
        return lines

    def _verdict(self) -> str:
        if self.ok:
            return (
                f"OK: {self.kept_questions} questions ready to use "
                f"({self.unanswerable} unanswerable)"
            )
        hint = "fix them"
        if self.skip_would_help:
            hint += ", or run with --on-error skip to drop what cannot be used"
        return f"NOT USABLE: {len(self.errors)} errors under --on-error {self.on_error}; {hint}"
