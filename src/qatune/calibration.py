"""Do the scores mean what they say? Reliability, calibration error, separation, and the one
temperature that makes an answer's score match how often such answers are right.

Plain numpy: no torch. A score is the probability decoding gives the best answer; it is
"right" when that answer is an exact match (official SQuAD normalization) of a gold answer.

    >>> round(expected_calibration_error([0.9, 0.9, 0.3, 0.3], [True, False, False, False]), 3)
    0.35
    >>> roc_auc([0.9, 0.8, 0.1], [True, True, False])
    1.0
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from qatune.data import Example
from qatune.decoding import AnswerLogits
from qatune.metrics import exact_match

# Equal-width score bins of the reliability plot and of the expected calibration error.
SCORE_BINS = 10
# Temperatures tried: a geometric grid, then a golden-section search around its best point.
TEMPERATURE_RANGE = (0.05, 20.0)
TEMPERATURE_GRID = 81
# At most this many dev questions are kept for the fit (evenly spread over the data), so that
# the memory it takes does not grow with the dev data.
FIT_MAX_QUESTIONS = 5000


@dataclass(frozen=True)
class ScoreBin:
    """Answers whose score falls in [low, high): how many, their mean score, how many were right."""

    low: float
    high: float
    count: int
    mean_score: float | None
    accuracy: float | None


def reliability_bins(scores: Sequence[float], correct: Sequence[bool], bins: int = SCORE_BINS) -> list[ScoreBin]:
    """Equal-width bins over [0, 1] (the last one closed): per bin, the count, mean score and
    share right (None for an empty bin).

        >>> [(b.count, b.accuracy) for b in reliability_bins([0.05, 0.95, 1.0], [False, True, False], bins=2)]
        [(1, 0.0), (2, 0.5)]
    """
    scores, correct = _as_arrays(scores, correct)
    index = np.minimum((scores * bins).astype(np.int64), bins - 1)
    result = []
    for number in range(bins):
        inside = index == number
        count = int(inside.sum())
        result.append(
            ScoreBin(
                low=number / bins,
                high=(number + 1) / bins,
                count=count,
                mean_score=float(scores[inside].mean()) if count else None,
                accuracy=float(correct[inside].mean()) if count else None,
            )
        )
    return result


def expected_calibration_error(scores: Sequence[float], correct: Sequence[bool], bins: int = SCORE_BINS) -> float:
    """The gap between score and accuracy, bin by bin, weighted by the bins' counts (0 is
    perfect; 0.1 means scores are off by 10 points on average). 0.0 for no answers."""
    scores_array, _ = _as_arrays(scores, correct)
    if scores_array.size == 0:
        return 0.0
    total = 0.0
    for entry in reliability_bins(scores, correct, bins):
        if entry.count:
            total += entry.count * abs(entry.mean_score - entry.accuracy)
    return total / scores_array.size


def roc_auc(scores: Sequence[float], positive: Sequence[bool]) -> float | None:
    """The chance that a random positive scores above a random negative (ties count half):
    how well `scores` separate the two. None when either side is empty."""
    scores_array, positive_array = _as_arrays(scores, positive)
    positives = int(positive_array.sum())
    negatives = positive_array.size - positives
    if positives == 0 or negatives == 0:
        return None
    ranks = _average_ranks(scores_array)
    rank_sum = float(ranks[positive_array].sum())
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, tied values sharing the mean of their ranks."""
    order = np.argsort(values, kind="stable")
    ranks = np.empty(values.size, dtype=np.float64)
    sorted_values = values[order]
    first = 0
    while first < values.size:
        last = first
        while last + 1 < values.size and sorted_values[last + 1] == sorted_values[first]:
            last += 1
        ranks[order[first : last + 1]] = (first + last) / 2 + 1
        first = last + 1
    return ranks


def _as_arrays(scores: Sequence[float], flags: Sequence[bool]) -> tuple[np.ndarray, np.ndarray]:
    scores_array = np.asarray(scores, dtype=np.float64).reshape(-1)
    flags_array = np.asarray(flags, dtype=bool).reshape(-1)
    if scores_array.size != flags_array.size:
        raise ValueError(f"{scores_array.size} scores but {flags_array.size} labels: pass one label per score")
    return np.clip(scores_array, 0.0, 1.0), flags_array


# --- fitting the temperature ------------------------------------------------------------------


@dataclass(frozen=True)
class Calibration:
    """The temperature fitted on dev data, and the calibration error of the best answers'
    scores before (temperature 1) and after it, on the same questions."""

    temperature: float
    ece_before: float
    ece_after: float
    questions: int

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        """What training prints: the fit, and a caveat when the binned error rose.

            >>> print(Calibration(2.367, 0.385, 0.111, 27).describe())
            scores calibrated on 27 dev questions: temperature 2.367, calibration error 38.5 -> 11.1 points
        """
        questions = f"{self.questions} dev question" + ("" if self.questions == 1 else "s")
        line = (
            f"scores calibrated on {questions}: temperature {self.temperature:.3f}, "
            f"calibration error {100 * self.ece_before:.1f} -> {100 * self.ece_after:.1f} points"
        )
        if any(math.isclose(self.temperature, end, rel_tol=1e-6) for end in TEMPERATURE_RANGE):
            low, high = TEMPERATURE_RANGE
            line += (
                f"\nnote: the temperature is at an end of the range searched ({low} to {high}): on these dev "
                "questions the scores hardly tell right answers from wrong ones (a model that has learned "
                "little, or few dev questions); read scores as a ranking"
            )
        if self.ece_after > self.ece_before:  # the fit minimizes log loss; binned error is coarse on few questions
            line += (
                "\nnote: this temperature gives the lowest log loss, but the binned calibration error rose; "
                "more dev questions would measure it better: read scores as a ranking until then"
            )
        return line


class TemperatureFit:
    """Collects what decoding scores each dev question from, then finds the temperature T that
    makes the scores honest: the answers' logits (and the null answer's) divided by T before
    the softmax (`decode(..., temperature=T)`: the answers and their order stay as they are),
    T chosen to minimize the log loss of

    - the best answer's score against whether that answer is an exact match, and
    - (when some questions are unanswerable) the no-answer probability against whether the
      question is unanswerable.

    A hundred temperatures cost a fraction of a second: the logits are collected once and
    re-scored together for every question.
    """

    def __init__(self, max_questions: int = FIT_MAX_QUESTIONS) -> None:
        self.max_questions = max_questions
        self._logits: list[np.ndarray] = []
        self._null_logits: list[float] = []
        self._best_right: list[bool] = []
        self._unanswerable: list[bool] = []
        self.seen = 0

    def add(self, example: Example, answers: AnswerLogits) -> None:
        """One question, and its answers' logits (`qatune.decoding.answer_logits`)."""
        self.seen += 1
        if len(self._null_logits) >= self.max_questions:
            return
        gold = [answer.text for answer in example.answers]
        best = answers.best_text
        self._logits.append(np.asarray(answers.logits, dtype=np.float64))
        self._null_logits.append(float(answers.null_logit))
        self._best_right.append(best is not None and any(exact_match(best, text) for text in gold))
        self._unanswerable.append(not example.answers)

    def best_answers(self, temperature: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per collected question, at this temperature: the best answer's score (0 without an
        answer), whether it is an exact match, and the no-answer probability."""
        return _Scorer(self).best_answers(temperature)

    def fit(self) -> Calibration:
        """The temperature with the lowest log loss, and the calibration error at 1 and at it."""
        if not self._null_logits:
            return Calibration(1.0, 0.0, 0.0, 0)
        scorer = _Scorer(self)
        low, high = (math.log(value) for value in TEMPERATURE_RANGE)
        grid = np.linspace(low, high, TEMPERATURE_GRID)
        losses = [scorer.log_loss(math.exp(point)) for point in grid]
        best = int(np.argmin(losses))
        step = grid[1] - grid[0]
        around = max(low, grid[best] - step), min(high, grid[best] + step)
        log_t = _golden_minimum(lambda x: scorer.log_loss(math.exp(x)), *around)
        if scorer.log_loss(math.exp(log_t)) > losses[best]:
            log_t = grid[best]
        temperature = float(math.exp(log_t))
        if scorer.log_loss(1.0) <= scorer.log_loss(temperature):
            temperature = 1.0  # no better than leaving the scores alone
        return Calibration(temperature, scorer.ece(1.0), scorer.ece(temperature), scorer.questions)


class _Scorer:
    """Every collected question's logits in flat arrays, scored per temperature at once."""

    def __init__(self, fit: TemperatureFit) -> None:
        counts = np.array([logits.size for logits in fit._logits], dtype=np.int64)
        self.questions = counts.size
        self.logits = np.concatenate(fit._logits) if fit._logits else np.zeros(0)
        self.question = np.repeat(np.arange(self.questions), counts)
        self.has_answer = counts > 0
        # answers come best first: a question's first logit is its best answer's
        first = np.cumsum(counts) - counts
        self.best = np.full(self.questions, -np.inf)
        self.best[self.has_answer] = self.logits[first[self.has_answer]]
        self.null_logits = np.asarray(fit._null_logits, dtype=np.float64)
        self.best_right = np.asarray(fit._best_right, dtype=bool)
        self.unanswerable = np.asarray(fit._unanswerable, dtype=bool)

    def best_answers(self, temperature: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        scaled = self.logits / temperature
        null = self.null_logits / temperature
        peak = null.copy()
        np.maximum.at(peak, self.question, scaled)
        total = np.exp(null - peak)
        np.add.at(total, self.question, np.exp(scaled - peak[self.question]))
        normalizer = peak + np.log(total)
        scores = np.where(self.has_answer, np.exp(self.best / temperature - normalizer), 0.0)
        return scores, self.best_right.copy(), np.exp(null - normalizer)

    def log_loss(self, temperature: float) -> float:
        scores, right, null_probs = self.best_answers(temperature)
        loss = _binary_log_loss(scores[self.has_answer], right[self.has_answer])
        if self.unanswerable.any():
            loss += _binary_log_loss(null_probs, self.unanswerable)
        return loss

    def ece(self, temperature: float) -> float:
        scores, right, _ = self.best_answers(temperature)
        return expected_calibration_error(scores[self.has_answer], right[self.has_answer])


def _binary_log_loss(probabilities: np.ndarray, outcomes: np.ndarray) -> float:
    tiny = 1e-12
    p = np.clip(probabilities, tiny, 1 - tiny)
    return float(-np.sum(np.where(outcomes, np.log(p), np.log1p(-p))))


def _golden_minimum(function, low: float, high: float, iterations: int = 40) -> float:
    """The minimum of a function with one valley on [low, high]."""
    ratio = (math.sqrt(5) - 1) / 2
    a, b = low, high
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = function(c), function(d)
    for _ in range(iterations):
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = function(c)
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = function(d)
    return (a + b) / 2


__all__ = [
    "Calibration",
    "ScoreBin",
    "TemperatureFit",
    "expected_calibration_error",
    "reliability_bins",
    "roc_auc",
]
