"""Calibration: reliability bins, calibration error, ROC AUC, and the fitted temperature."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest

from qatune.calibration import Calibration, TemperatureFit, expected_calibration_error, reliability_bins, roc_auc
from qatune.data import Example, GoldAnswer
from qatune.decoding import answer_logits, decode
from qatune.errors import SettingsError
from qatune.metrics import exact_match

WORDS = [f"w{i}" for i in range(40)]
CONTEXT = " ".join(WORDS)
QUESTION_TOKENS = 4


def word_offsets(first: int, last: int) -> np.ndarray:
    """CLS, question tokens (outside the context), the words first..last-1, a final SEP."""
    rows = [[-1, -1]] * (1 + QUESTION_TOKENS)
    for index in range(first, last):
        start = sum(len(word) + 1 for word in WORDS[:index])
        rows.append([start, start + len(WORDS[index])])
    return np.array(rows + [[-1, -1]])


# two overlapping windows over the same context: spans seen twice count once
OFFSETS = [word_offsets(0, 24), word_offsets(16, 40)]


def random_question(rng: np.random.Generator, scale: float):
    starts = [rng.normal(size=len(o)) * scale for o in OFFSETS]
    ends = [rng.normal(size=len(o)) * scale for o in OFFSETS]
    return starts, ends


def test_reliability_bins_and_calibration_error_by_hand():
    scores = [0.05, 0.15, 0.95, 0.91, 1.0]
    right = [False, True, True, False, True]
    bins = reliability_bins(scores, right, bins=10)
    assert [b.count for b in bins] == [1, 1, 0, 0, 0, 0, 0, 0, 0, 3]
    assert bins[9].mean_score == pytest.approx((0.95 + 0.91 + 1.0) / 3) and bins[9].accuracy == pytest.approx(2 / 3)
    assert bins[2].mean_score is None and bins[2].accuracy is None
    expected = (abs(0.05 - 0) + abs(0.15 - 1) + 3 * abs((0.95 + 0.91 + 1.0) / 3 - 2 / 3)) / 5
    assert expected_calibration_error(scores, right) == pytest.approx(expected)
    assert expected_calibration_error([], []) == 0.0
    with pytest.raises(ValueError, match="2 scores but 1 labels"):
        expected_calibration_error([0.1, 0.2], [True])


def test_roc_auc_counts_pairs_with_ties_as_half():
    rng = np.random.default_rng(3)
    scores = rng.integers(0, 5, size=60) / 4  # many ties
    positive = rng.random(60) < 0.4
    pairs = [
        1.0 if p > n else 0.5 if p == n else 0.0
        for p in scores[positive] for n in scores[~positive]
    ]
    assert roc_auc(scores, positive) == pytest.approx(sum(pairs) / len(pairs))
    assert roc_auc([0.1, 0.2], [True, True]) is None
    assert roc_auc([0.9, 0.1], [False, True]) == 0.0


@pytest.mark.parametrize("temperature", [0.3, 1.0, 1.7, 6.0])
def test_the_fit_scores_answers_exactly_as_decode_does(temperature):
    rng = np.random.default_rng(11)
    fit, expected = TemperatureFit(), []
    for number in range(40):
        starts, ends = random_question(rng, scale=3.0)
        best = decode(CONTEXT, starts, ends, OFFSETS, n_best=6, max_answer_length=5, temperature=temperature)
        gold = best.answers[0].text if number % 3 == 0 else WORDS[number % len(WORDS)]
        example = Example(f"q{number}", "Which?", CONTEXT, (GoldAnswer(gold, CONTEXT.index(gold)),) if number % 5 else ())
        fit.add(example, answer_logits(CONTEXT, starts, ends, OFFSETS, n_best=6, max_answer_length=5))
        right = bool(example.answers) and exact_match(best.answers[0].text, example.answers[0].text) == 1
        expected.append((best.answers[0].score, right, best.null_prob))
    scores, right, null_probs = fit.best_answers(temperature)
    assert scores == pytest.approx([e[0] for e in expected], rel=1e-9)
    assert right.tolist() == [e[1] for e in expected]
    assert null_probs == pytest.approx([e[2] for e in expected], rel=1e-9)


def test_decode_divides_every_logit_by_the_temperature():
    offsets = [np.array([[-1, -1], [0, 1], [2, 3]])]
    start, end = [np.array([0.0, 2.0, 0.0])], [np.array([0.0, 0.0, 2.0])]
    for temperature in (1.0, 2.0):
        decoded = decode("a b", start, end, offsets, n_best=2, max_answer_length=2, top_k=3, temperature=temperature)
        # spans: "a" (2+0), "a b" (2+2), "b" (0+2); null 0+0
        logits = np.array([4.0, 2.0, 2.0, 0.0]) / temperature
        probabilities = np.exp(logits) / np.exp(logits).sum()
        assert [a.text for a in decoded.answers] == ["a b", "a", "b"]
        assert [a.score for a in decoded.answers] == pytest.approx(probabilities[:3])
        assert decoded.null_prob == pytest.approx(probabilities[3])
    with pytest.raises(SettingsError, match="temperature must be a positive number, got 0"):
        decode("a b", start, end, offsets, temperature=0)


def sample_questions(rng, count: int, true_temperature: float, scale: float):
    """Questions whose gold answer is drawn from the answers' probabilities at `true_temperature`."""
    fit = TemperatureFit()
    for number in range(count):
        starts, ends = random_question(rng, scale)
        truth = decode(CONTEXT, starts, ends, OFFSETS, n_best=6, max_answer_length=5, top_k=1000, temperature=true_temperature)
        probabilities = [a.score for a in truth.answers] + [truth.null_prob]
        pick = rng.choice(len(probabilities), p=np.array(probabilities) / sum(probabilities))
        answers = () if pick == len(truth.answers) else (GoldAnswer(truth.answers[pick].text, truth.answers[pick].start),)
        fit.add(Example(f"q{number}", "Which?", CONTEXT, answers), answer_logits(CONTEXT, starts, ends, OFFSETS, n_best=6, max_answer_length=5))
    return fit


def test_the_fit_finds_the_temperature_the_data_were_drawn_with():
    # a model twice as confident as it should be: its honest temperature is 2
    fit = sample_questions(np.random.default_rng(5), 1500, true_temperature=2.0, scale=2.5)
    calibration = fit.fit()
    assert calibration.questions == 1500
    assert 1.7 < calibration.temperature < 2.35
    assert calibration.ece_after < calibration.ece_before / 2


def test_an_honest_model_keeps_a_temperature_near_one():
    fit = sample_questions(np.random.default_rng(6), 1500, true_temperature=1.0, scale=2.5)
    calibration = fit.fit()
    assert 0.85 < calibration.temperature < 1.15


def test_no_questions_fit_nothing():
    calibration = TemperatureFit().fit()
    assert (calibration.temperature, calibration.questions) == (1.0, 0)


def test_the_fit_keeps_at_most_its_share_of_questions():
    rng = np.random.default_rng(1)
    fit = TemperatureFit(max_questions=5)
    for number in range(9):
        starts, ends = random_question(rng, 1.0)
        fit.add(Example(f"q{number}", "Which?", CONTEXT, ()), answer_logits(CONTEXT, starts, ends, OFFSETS))
    assert fit.seen == 9 and fit.fit().questions == 5


def test_training_fits_a_temperature_that_lowers_the_calibration_error(tiny_bert, tmp_path):
    from qatune import QAModel, TrainingArguments, train
    from qatune.data import load_examples
    from qatune.settings import QASettings

    from conftest import TINY_QA

    examples = load_examples(TINY_QA)
    # trained long on a few questions and tested on others: overconfident, as small fine-tunes are
    arguments = TrainingArguments(
        output_dir=str(tmp_path / "model"), model=str(tiny_bert), epochs=20, batch_size=4, learning_rate=3e-3,
        warmup_ratio=0.0, bf16=False, seed=7, settings=QASettings(max_seq_length=48, doc_stride=8, max_question_length=12),
    )
    dev = examples[8:] + examples[:4]
    result = train(examples[:8], dev, arguments, progress=False)
    calibration = result.calibration
    assert calibration.questions == len(dev)
    assert calibration.temperature != 1.0
    assert calibration.ece_after < calibration.ece_before

    card = json.loads((tmp_path / "model" / "qatune.json").read_text())
    assert card["settings"]["temperature"] == calibration.temperature
    assert card["calibration"]["ece_after"] == pytest.approx(calibration.ece_after, abs=1e-6)
    # the saved model answers with it: its scores are the re-scored ones
    model = QAModel.from_pretrained(tmp_path / "model", bf16=False)
    assert model.settings.temperature == calibration.temperature
    assert model.evaluate(dev).metrics == result.dev_metrics
    # and the error measured from the model's own answers is the fit's "after"
    decoded = model.predict(dev)
    scored = [(d.answers[0].score, any(exact_match(d.answers[0].text, g.text) for g in e.answers))
              for e, d in zip(dev, decoded) if d.answers]
    assert expected_calibration_error(*zip(*scored)) == pytest.approx(calibration.ece_after, abs=1e-6)
    assert not math.isnan(calibration.temperature)


def test_a_temperature_changes_the_scores_never_the_answers():
    rng = np.random.default_rng(21)
    for _ in range(30):
        starts, ends = random_question(rng, scale=4.0)
        plain = decode(CONTEXT, starts, ends, OFFSETS, n_best=8, max_answer_length=6, top_k=50)
        for temperature in (0.2, 3.0, 12.0):
            scaled = decode(CONTEXT, starts, ends, OFFSETS, n_best=8, max_answer_length=6, top_k=50, temperature=temperature)
            assert [(a.text, a.start, a.end) for a in scaled.answers] == [(a.text, a.start, a.end) for a in plain.answers]
            assert [a.score for a in scaled.answers] == sorted((a.score for a in scaled.answers), reverse=True)
            # the scaled scores are the plain ones raised to 1/T and renormalized
            powered = np.array([a.score for a in plain.answers] + [plain.null_prob]) ** (1 / temperature)
            assert [a.score for a in scaled.answers] == pytest.approx(powered[:-1] / powered.sum(), rel=1e-6, abs=1e-300)


def test_scores_that_carry_no_information_stop_at_the_highest_temperature():
    from qatune.calibration import TEMPERATURE_RANGE
    from qatune.decoding import AnswerLogits

    fit = TemperatureFit()
    for number in range(50):  # the most confident answer is always wrong
        fit.add(Example(f"q{number}", "Which?", CONTEXT, (GoldAnswer("w1", 3),)),
                AnswerLogits("w0", np.array([9.0, 0.0, -1.0]), -5.0))
    assert fit.fit().temperature == pytest.approx(TEMPERATURE_RANGE[1])


def test_the_saved_temperature_scores_the_answers_of_ask_and_of_the_server(tiny_bert, tmp_path):
    import shutil

    from fastapi.testclient import TestClient

    from qatune import QAModel
    from qatune.serving import create_app
    from qatune.settings import QASettings, write_model_card

    warm = tmp_path / "warm"
    shutil.copytree(tiny_bert, warm)
    write_model_card(warm, QASettings(temperature=3.0))
    question, context = "who sat?", "the cat sat on the mat while the dog slept"
    plain = QAModel.from_pretrained(tiny_bert, bf16=False).ask(question, context, top_k=3)
    scaled = QAModel.from_pretrained(warm, bf16=False).ask(question, context, top_k=3)
    assert [(a.text, a.start, a.end) for a in scaled] == [(a.text, a.start, a.end) for a in plain]
    assert scaled[0].score < plain[0].score  # a higher temperature: less sure of the best answer
    with TestClient(create_app(warm, bf16=False)) as client:
        deadline = time.monotonic() + 120  # a bound, never a measure
        while client.get("/v1/health").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        served = client.post("/v1/answer", json={"question": question, "context": context, "top_k": 3}).json()
    assert [(a["text"], a["score"]) for a in served["answers"]] == [(a.text, a.score) for a in scaled]


def test_training_says_when_the_temperature_raised_the_binned_error():
    better = Calibration(2.367, 0.385, 0.111, 27).describe()
    assert better == "scores calibrated on 27 dev questions: temperature 2.367, calibration error 38.5 -> 11.1 points"
    worse = Calibration(1.4, 0.066, 0.070, 27).describe().splitlines()
    assert worse[0].endswith("calibration error 6.6 -> 7.0 points")
    assert worse[1].startswith("note: ") and "binned calibration error rose" in worse[1]
