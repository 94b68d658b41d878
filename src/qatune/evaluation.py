"""Turning decoded answers into the official prediction files and their SQuAD scores.

Plain Python: no torch. Used by `QAModel.evaluate` and `QAModel.tune_null_threshold`, which
answer `qatune evaluate` and the dev evaluations during training alike, and by `qatune predict`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import groupby
from typing import Sequence

from qatune.data import Example
from qatune.decoding import Decoded, best_answer
from qatune.metrics import gold_texts, raw_scores_v2, score


@dataclass
class Evaluation:
    """Official-format predictions (id -> text, "" for no answer), no-answer probabilities,
    their metrics (official keys), and the no-answer threshold they were made with."""

    metrics: dict
    version: str
    predictions: dict[str, str]
    na_probs: dict[str, float]
    null_threshold: float


def official_predictions(
    examples: Sequence[Example], decoded: Sequence[Decoded], null_threshold: float = 1.0
) -> tuple[dict[str, str], dict[str, float]]:
    """Question id -> answer text ("" for no answer), and question id -> no-answer probability,
    in the formats the official SQuAD evaluation scripts read."""
    predictions, na_probs = {}, {}
    for example, result in zip(examples, decoded):
        answer = best_answer(result, null_threshold)
        predictions[example.id] = answer.text if answer is not None else ""
        na_probs[example.id] = float(result.null_prob)
    return predictions, na_probs


def evaluate_decoded(examples: Sequence[Example], decoded: Sequence[Decoded], null_threshold: float = 1.0) -> Evaluation:
    """Score decoded answers. Data without unanswerable questions gets the SQuAD v1.1 metrics;
    data with them gets v2.0 (with the HasAns/NoAns breakdowns and best thresholds)."""
    predictions, na_probs = official_predictions(examples, decoded, null_threshold)
    result = score(examples, predictions, na_probs)
    return Evaluation(result.metrics, result.version, predictions, na_probs, null_threshold)


def robust_null_threshold(examples: Sequence[Example], decoded: Sequence[Decoded]) -> float:
    """The no-answer threshold with the best F1 on these examples, placed where float noise
    cannot flip a decision: midway, in log space, between the highest no-answer probability
    still answered and the next higher one (1.0, always answer, when answering every question
    is best or no question is unanswerable).

    Questions with the same no-answer probability fall on the same side together (the
    official walk in `best_f1_thresh` may stop inside such a tie, which no threshold can
    reproduce).

        >>> from qatune.data import Example, GoldAnswer
        >>> from qatune.decoding import Answer
        >>> yes = Example("a", "Who?", "Ada wrote it.", (GoldAnswer("Ada", 0),))
        >>> no = Example("b", "When?", "Ada wrote it.")
        >>> decoded = [Decoded([Answer("Ada", 0, 3, 0.9)], 0.01), Decoded([Answer("it", 10, 12, 0.2)], 0.04)]
        >>> round(robust_null_threshold([yes, no], decoded), 6)
        0.02
    """
    if not any(example.unanswerable for example in examples):
        return 1.0
    answered, na_probs = official_predictions(examples, decoded, null_threshold=1.0)
    _, f1_if_answered = raw_scores_v2(gold_texts(examples), answered)
    f1_if_not = {example.id: float(not example.answers) for example in examples}
    # Walk up the distinct no-answer probabilities, answering everything at or below each.
    order = sorted(na_probs, key=na_probs.__getitem__)
    current = sum(f1_if_not.values())
    # Answering nothing needs a threshold below the lowest probability, which no threshold in
    # [0, 1] is when that probability is 0.0 (an underflow): then it is not a choice at all.
    best = current if na_probs[order[0]] > 0 else -math.inf
    best_index, levels = -1, []
    for index, (level, group) in enumerate(groupby(order, key=na_probs.__getitem__)):
        current += sum(f1_if_answered[qid] - f1_if_not[qid] for qid in group)
        levels.append(level)
        if current > best:
            best, best_index = current, index
    if best_index == len(levels) - 1:
        return 1.0
    above = levels[best_index + 1]
    if best_index < 0:  # answering nothing is best: stay below the lowest probability
        return above / 2
    below = levels[best_index]
    middle = math.sqrt(below * above) if below > 0 else above / 2
    return middle if below < middle < above else below  # neighbours too close to part
