"""Turning decoded answers into the official prediction files and their SQuAD scores.

Plain Python: no torch. Used by training (dev evaluation every epoch), `qatune evaluate`
and `QAModel`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from qatune.data import Example
from qatune.decoding import Decoded, best_answer
from qatune.metrics import score


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


def evaluate_decoded(
    examples: Sequence[Example], decoded: Sequence[Decoded], null_threshold: float = 1.0, *, tune_threshold: bool = False
) -> Evaluation:
    """Score decoded answers. Data without unanswerable questions gets the SQuAD v1.1 metrics;
    data with them gets v2.0 (with the HasAns/NoAns breakdowns and best thresholds).

    With `tune_threshold`, the no-answer threshold becomes the one with the best F1 on this data
    (the official `best_f1_thresh`); use that on dev data only.
    """
    has_unanswerable = any(example.is_impossible or not example.answers for example in examples)
    if has_unanswerable and tune_threshold:
        always_answer, na_probs = official_predictions(examples, decoded, null_threshold=1.0)
        null_threshold = float(score(examples, always_answer, na_probs).metrics["best_f1_thresh"])
    predictions, na_probs = official_predictions(examples, decoded, null_threshold)
    result = score(examples, predictions, na_probs if has_unanswerable else None)
    return Evaluation(result.metrics, result.version, predictions, na_probs, null_threshold)
