"""Every question of the report: the model's answer, its official EM/F1, the gold answer it
came closest to, and the group it falls in; the calibration and no-answer numbers built on them.

Plain Python and numpy: no torch, no matplotlib.

    >>> from qatune.data import Example, GoldAnswer
    >>> from qatune.decoding import Answer, Decoded
    >>> ex = Example("q1", "Who won?", "The Broncos won.", (GoldAnswer("Broncos", 4),))
    >>> [row] = question_results([ex], [Decoded([Answer("Broncos won", 4, 15, 0.7)], 0.1)], null_threshold=1.0)
    >>> row.group, row.exact, round(row.f1, 3), row.gold.text
    ('partial', 0, 0.667, 'Broncos')
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from qatune.calibration import ScoreBin, expected_calibration_error, reliability_bins, roc_auc
from qatune.data import Example, GoldAnswer
from qatune.decoding import Answer, Decoded, best_answer
from qatune.metrics import exact_match, f1, normalize_answer

# The groups, in the order the page lists them.
GROUPS = ("correct", "partial", "wrong", "answered-unanswerable", "unanswered-answerable")
GROUP_MEANINGS = {
    "correct": "exact match of a gold answer (a question without an answer left unanswered counts here)",
    "partial": "answered, some words shared with a gold answer (0 < F1 < 1)",
    "wrong": "answered, no word shared with any gold answer",
    "answered-unanswerable": "answered, but the question has no answer in its context",
    "unanswered-answerable": "said \"no answer\", but the question has one",
}


@dataclass(frozen=True)
class QuestionResult:
    """One question as the report shows it.

    `answer` is the model's decision (None: "no answer"); `best_span` the best span decoding
    found, answered or not (what calibration scores); `exact`/`f1` the official SQuAD scores
    of the decision (max over the gold answers); `gold` the gold answer that matched it best
    (None for an unanswerable question)."""

    example: Example
    answer: Answer | None
    best_span: Answer | None
    null_prob: float
    exact: int
    f1: float
    gold: GoldAnswer | None
    group: str

    @property
    def answered(self) -> bool:
        return self.answer is not None

    @property
    def confidence(self) -> float:
        """How sure the model was of its decision: the answer's score, or the no-answer probability."""
        return self.answer.score if self.answer is not None else self.null_prob


def data_version(examples: Sequence[Example]) -> str:
    """The SQuAD metrics version the data is scored with, as `qatune evaluate` picks it."""
    return "v2.0" if any(example.unanswerable for example in examples) else "v1.1"


def score_text(prediction: str, example: Example, version: str) -> tuple[int, float, GoldAnswer | None]:
    """EM and F1 of `prediction` against the example's gold answers (the official rules of
    `version`: in v2.0 a gold answer that normalizes to nothing does not count, and no gold
    answer left means "" is the answer), and the gold answer that scored best (first on ties)."""
    if version == "v2.0":
        golds = [answer for answer in example.answers if normalize_answer(answer.text)]
        if not golds:
            return exact_match(prediction, ""), float(f1(prediction, "")), None
    else:
        golds = list(example.answers)
    scored = [
        (exact_match(prediction, gold.text, version=version), float(f1(prediction, gold.text, version=version)), gold)
        for gold in golds
    ]
    exact = max(entry[0] for entry in scored)
    best_f1 = max(entry[1] for entry in scored)
    gold = max(scored, key=lambda entry: (entry[1], entry[0]))[2]  # max keeps the first of equals
    return exact, best_f1, gold


def group_of(exact: int, f1_score: float, answered: bool, unanswerable: bool) -> str:
    """The group of one question: an exact match is `correct` (the official score decides,
    also for "no answer" to a question without one); else a question without an answer that
    got one is `answered-unanswerable`, one left unanswered that has an answer is
    `unanswered-answerable`, and an answered one is `partial` (0 < F1) or `wrong` (F1 0).

        >>> group_of(0, 0.0, answered=False, unanswerable=False)
        'unanswered-answerable'
    """
    if exact:
        return "correct"
    if unanswerable:
        return "answered-unanswerable"
    if not answered:
        return "unanswered-answerable"
    return "partial" if f1_score > 0 else "wrong"


def question_results(
    examples: Sequence[Example], decoded: Sequence[Decoded], null_threshold: float
) -> list[QuestionResult]:
    """One QuestionResult per example, in the examples' order."""
    if len(examples) != len(decoded):
        raise ValueError(f"{len(examples)} examples but {len(decoded)} decoded answers: pass one per example")
    version = data_version(examples)
    results = []
    for example, result in zip(examples, decoded):
        answer = best_answer(result, null_threshold)
        exact, f1_score, gold = score_text(answer.text if answer else "", example, version)
        best_span = result.answers[0] if result.answers else None
        group = group_of(exact, f1_score, answer is not None, example.unanswerable)
        results.append(QuestionResult(example, answer, best_span, float(result.null_prob), exact, f1_score, gold, group))
    return results


def group_counts(results: Sequence[QuestionResult]) -> dict[str, int]:
    """How many questions fall in each group (every group named, in GROUPS order)."""
    counts = dict.fromkeys(GROUPS, 0)
    for row in results:
        counts[row.group] += 1
    return counts


def worst_first(results: Sequence[QuestionResult]) -> list[QuestionResult]:
    """Lowest F1 first; among equals, the most confident first (confident mistakes on top)."""
    return sorted(results, key=lambda row: (row.f1, -row.confidence))


# --- calibration and the no-answer threshold ---------------------------------------------------


@dataclass(frozen=True)
class CalibrationStats:
    """The best spans' scores against whether they are right, and the no-answer numbers."""

    scores: list[float]
    correct: list[bool]
    bins: list[ScoreBin]
    ece: float
    no_answer_auc: float | None  # how well the no-answer probability separates unanswerable questions
    threshold_curve: list[tuple[float, float]] | None  # (threshold, overall F1 in percent), data with unanswerable only
    f1_at_saved: float | None  # overall F1 at the model's own null_threshold


def calibration_stats(results: Sequence[QuestionResult], null_threshold: float) -> CalibrationStats:
    """For every question with a best span: its score, and whether it is an exact match of a
    gold answer (never, for an unanswerable question); their reliability bins and ECE; for
    data with unanswerable questions, F1 against the no-answer threshold and the ROC AUC of
    the no-answer probability."""
    version = data_version([row.example for row in results])
    scores, correct = [], []
    for row in results:
        if row.best_span is None:
            continue
        scores.append(row.best_span.score)
        right = not row.example.unanswerable and score_text(row.best_span.text, row.example, version)[0] == 1
        correct.append(bool(right))
    bins = reliability_bins(scores, correct)
    ece = expected_calibration_error(scores, correct)
    if version != "v2.0" or not results:
        return CalibrationStats(scores, correct, bins, ece, None, None, None)
    unanswerable = [row.example.unanswerable for row in results]
    auc = roc_auc([row.null_prob for row in results], unanswerable)
    curve, at_saved = threshold_curve(results, null_threshold)
    return CalibrationStats(scores, correct, bins, ece, auc, curve, at_saved)


def threshold_curve(results: Sequence[QuestionResult], saved: float) -> tuple[list[tuple[float, float]], float]:
    """Overall F1 (percent, SQuAD v2.0) for each candidate no-answer threshold t (a question is
    unanswered when its no-answer probability is above t): 0, every distinct no-answer
    probability, and 1; and the F1 at `saved`."""
    if_answered = np.array(
        [score_text(row.best_span.text if row.best_span else "", row.example, "v2.0")[1] for row in results]
    )
    if_not = np.array([score_text("", row.example, "v2.0")[1] for row in results])
    null_probs = np.array([row.null_prob for row in results])

    # Sorted by no-answer probability, the questions answered at threshold t are a prefix:
    # F1 = (answered F1 of the prefix + unanswered F1 of the rest) / n, for every t at once.
    order = np.argsort(null_probs, kind="stable")
    sorted_probs = null_probs[order]
    answered_sums = np.concatenate([[0.0], np.cumsum(if_answered[order])])
    unanswered_rest = np.concatenate([[0.0], np.cumsum(if_not[order])])
    unanswered_rest = unanswered_rest[-1] - unanswered_rest
    thresholds = np.array(sorted({0.0, 1.0, *null_probs.tolist(), float(saved)}))
    answered = np.searchsorted(sorted_probs, thresholds, side="right")  # null_prob <= t: answered
    overall = 100.0 * (answered_sums[answered] + unanswered_rest[answered]) / len(results)
    curve = [(float(t), float(value)) for t, value in zip(thresholds, overall)]
    return curve, curve[int(np.searchsorted(thresholds, saved))][1]


def cutoff_table(scores: Sequence[float], correct: Sequence[bool], bins: Sequence[ScoreBin]) -> list[tuple[float, int, float | None]]:
    """For each bin's lower edge c: how many best spans score at least c, and the share of them right."""
    scores_array = np.asarray(scores, dtype=np.float64)
    correct_array = np.asarray(correct, dtype=bool)
    rows = []
    for entry in bins:
        kept = scores_array >= entry.low
        count = int(kept.sum())
        rows.append((entry.low, count, float(correct_array[kept].mean()) if count else None))
    return rows


# --- the context around the spans ----------------------------------------------------------------

EXCERPT_MARGIN = 300  # characters shown either side of a span
EXCERPT_JOIN = 60  # excerpts closer than this are shown as one


@dataclass(frozen=True)
class Excerpt:
    """A piece of the context, `context[start:end]`, cut into segments at every span border:
    (text, classes), where classes name the spans covering that segment (e.g. ("pred", "gold"))."""

    start: int
    end: int
    segments: list[tuple[str, tuple[str, ...]]]


def excerpts(
    context: str, spans: dict[str, tuple[int, int] | None], margin: int = EXCERPT_MARGIN, join: int = EXCERPT_JOIN
) -> list[Excerpt]:
    """The parts of `context` worth showing: `margin` characters either side of each span (all
    of the context when it is short), close parts merged, each cut at every span border.

    Offsets are code-point indices (`context[start:end]`); the segments of the excerpts that
    carry a class add up to exactly that span's text.

        >>> [e.segments for e in excerpts("Ada wrote it.", {"pred": (0, 9), "gold": (4, 12)})]
        [[('Ada ', ('pred',)), ('wrote', ('pred', 'gold')), (' it', ('gold',)), ('.', ())]]
    """
    present = {name: span for name, span in spans.items() if span is not None}
    for name, (start, end) in present.items():
        if not 0 <= start <= end <= len(context):
            raise ValueError(f"span {name!r} ({start}, {end}) is not inside a context of {len(context)} characters")
    if not present:
        ranges = [(0, min(len(context), 2 * margin))]
    else:
        ranges = sorted((max(0, start - margin), min(len(context), end + margin)) for start, end in present.values())
    merged: list[list[int]] = []
    for start, end in ranges:
        if merged and start - merged[-1][1] <= join:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [Excerpt(start, end, _segments(context, start, end, present)) for start, end in merged]


def _segments(context: str, start: int, end: int, spans: dict[str, tuple[int, int]]) -> list[tuple[str, tuple[str, ...]]]:
    borders = {start, end}
    for span_start, span_end in spans.values():
        borders.update(b for b in (span_start, span_end) if start <= b <= end)
    ordered = sorted(borders)
    segments = []
    for left, right in zip(ordered, ordered[1:]):
        classes = tuple(name for name, (s, e) in spans.items() if s <= left and right <= e)
        segments.append((context[left:right], classes))
    return segments
