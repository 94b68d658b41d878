"""qatune.evaluation.robust_null_threshold: the threshold it picks reaches the best F1 that any
threshold in [0, 1] reaches, checked against every threshold that can give a different result."""

from __future__ import annotations

import itertools

import pytest

from qatune.data import Example, GoldAnswer
from qatune.decoding import Answer, Decoded
from qatune.evaluation import evaluate_decoded, robust_null_threshold

CONTEXT = "Ada wrote it in 1843."


def _question(index: int, answerable: bool, right: bool, null_prob: float) -> tuple[Example, Decoded]:
    gold = (GoldAnswer("Ada", 0),) if answerable else ()
    answer = Answer("Ada", 0, 3, 0.9) if right else Answer("1843", 16, 20, 0.9)
    return Example(f"q{index}", "Who?", CONTEXT, gold), Decoded([answer], null_prob)


def _f1(examples: list[Example], decoded: list[Decoded], threshold: float) -> float:
    return evaluate_decoded(examples, decoded, threshold).metrics["f1"]


def _best_reachable_f1(examples: list[Example], decoded: list[Decoded]) -> float:
    """Every decision a threshold can make: at each probability (answer it and those below), just
    below each (refuse it), and the ends of [0, 1]."""
    levels = sorted({result.null_prob for result in decoded})
    candidates = {0.0, 1.0, *levels, *(level * (1 - 1e-9) for level in levels)}
    return max(_f1(examples, decoded, threshold) for threshold in candidates)


def test_answering_nothing_cannot_be_chosen_when_the_lowest_probability_is_zero():
    # Both questions are unanswerable, so answering nothing would be best; but a no-answer
    # probability of exactly 0.0 is answered by every threshold in [0, 1]. The best reachable
    # choice refuses the other question, which the threshold must still do.
    examples, decoded = zip(_question(0, False, False, 0.0), _question(1, False, False, 0.3))
    threshold = robust_null_threshold(list(examples), list(decoded))
    assert 0.0 <= threshold < 0.3
    assert _f1(list(examples), list(decoded), threshold) == pytest.approx(50.0)


# Three questions, each answerable or not, answered rightly or not, at one of three no-answer
# probabilities (an underflow to 0.0 among them): every combination, ties included.
QUESTION_KINDS = list(itertools.product([True, False], [True, False], [0.0, 0.2, 0.7]))


@pytest.mark.parametrize("first", QUESTION_KINDS, ids=str)
def test_the_threshold_reaches_the_best_f1_of_any_threshold(first):
    for second, third in itertools.product(QUESTION_KINDS, QUESTION_KINDS):
        pairs = [_question(index, *kind) for index, kind in enumerate((first, second, third))]
        examples, decoded = (list(side) for side in zip(*pairs))
        threshold = robust_null_threshold(examples, decoded)
        assert 0.0 <= threshold <= 1.0
        assert _f1(examples, decoded, threshold) == pytest.approx(_best_reachable_f1(examples, decoded)), pairs
