"""`qatune score`, run the way a user runs it: in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from qatune.metrics import squad_v1, squad_v2

CONTEXT_1 = "The Denver Broncos defeated the Carolina Panthers 24–10."
CONTEXT_2 = "The game was played at Levi's Stadium in Santa Clara, California."
# question id -> (context, question, gold answer texts); no answer: unanswerable
QUESTIONS = {
    "q1": (CONTEXT_1, "Who won?", ["Denver Broncos", "Broncos"]),
    "q2": (CONTEXT_2, "Where was it played?", ["Levi's Stadium", "Santa Clara"]),
    "q3": (CONTEXT_1, "Who won Super Bowl 51?", []),
    "q4": (CONTEXT_2, "When was the roof built?", []),
}
GOLD = {qid: answers for qid, (_, _, answers) in QUESTIONS.items()}


def qatune(*args: object) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "qatune", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def write_squad(path: Path, questions: dict) -> Path:
    """SQuAD v2.0 layout, one paragraph per context, in the order the questions come."""
    paragraphs: dict[str, list] = {}
    for qid, (context, question, answers) in questions.items():
        paragraphs.setdefault(context, []).append({
            "id": qid,
            "question": question,
            "answers": [{"text": a, "answer_start": context.index(a)} for a in answers],
            "is_impossible": not answers,
        })
    data = [{"title": "Games", "paragraphs": [
        {"context": context, "qas": qas} for context, qas in paragraphs.items()
    ]}]
    path.write_text(json.dumps({"version": "v2.0", "data": data}), encoding="utf-8")
    return path


def write_json(path: Path, value: object) -> Path:
    path.write_text(json.dumps(value), encoding="utf-8")
    return path


@pytest.fixture
def data(tmp_path) -> Path:
    return write_squad(tmp_path / "dev.json", QUESTIONS)


def test_human_output_reports_missing_and_unknown_ids(tmp_path, data):
    # q1 right, q2 half right, q3 wrongly answered, q4 has no prediction; zz is no question
    predictions = {"q1": "the Broncos", "q2": "Levi's", "q3": "Panthers", "zz": "x"}
    result = qatune("score", data, write_json(tmp_path / "p.json", predictions))
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        "warning: 1 question without a prediction, scored as wrong (EM 0, F1 0): q4",
        "warning: 1 prediction for ids not in the data, ignored: zz",
    ]
    half = 2 * 1.0 * 0.5 / 1.5  # "levis" against "levis stadium"
    assert result.stdout.splitlines() == [
        "official SQuAD v2.0 metrics, 4 questions",
        "exact              25.00",
        f"f1                 {100 * (1 + half) / 4:.2f}",
        "total              4",
        "HasAns_exact       50.00",
        f"HasAns_f1          {100 * (1 + half) / 2:.2f}",
        "HasAns_total       2",
        "NoAns_exact        0.00",
        "NoAns_f1           0.00",
        "NoAns_total        2",
    ]


def test_json_output_has_the_official_keys_and_numbers(tmp_path, data):
    predictions = {"q1": "Denver", "q2": "Santa Clara", "q3": "Panthers", "q4": ""}
    na_probs = {"q1": 0.25, "q2": 0.5, "q3": 0.75, "q4": 0.5}
    result = qatune(
        "score", data, write_json(tmp_path / "p.json", predictions),
        "--na-probs", write_json(tmp_path / "na.json", na_probs),
        "--na-prob-thresh", "0.6", "--json",
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    metrics = json.loads(result.stdout)
    assert list(metrics) == [
        "exact", "f1", "total", "HasAns_exact", "HasAns_f1", "HasAns_total",
        "NoAns_exact", "NoAns_f1", "NoAns_total",
        "best_exact", "best_exact_thresh", "best_f1", "best_f1_thresh",
    ]
    assert metrics == squad_v2(GOLD, predictions, na_probs, 0.6)
    # q3 is above 0.6, so answered "no answer": right; q1 "Denver" is partly right
    assert metrics["exact"] == 75.0
    assert (metrics["best_exact"], metrics["best_exact_thresh"]) == (75.0, 0.5)


def test_data_without_unanswerable_questions_gets_v1_metrics(tmp_path):
    answerable = {qid: q for qid, q in QUESTIONS.items() if q[2]}
    data = write_squad(tmp_path / "dev.json", answerable)
    predictions = {"q1": "Broncos", "q2": "in Santa Clara"}
    result = qatune("score", data, write_json(tmp_path / "p.json", predictions), "--json")
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)
    assert list(metrics) == ["exact_match", "f1"]
    assert metrics == squad_v1({qid: GOLD[qid] for qid in answerable}, predictions)
    assert metrics["exact_match"] == 50.0


def test_na_probs_on_data_without_unanswerable_questions_keep_the_v1_metrics(tmp_path):
    # evaluate writes na_probs.json for every data: scoring its two files gives evaluate's keys
    answerable = {qid: q for qid, q in QUESTIONS.items() if q[2]}
    data = write_squad(tmp_path / "dev.json", answerable)
    predictions = {"q1": "Broncos", "q2": "in Santa Clara"}
    result = qatune(
        "score", data, write_json(tmp_path / "p.json", predictions),
        "--na-probs", write_json(tmp_path / "na.json", {"q1": 0.9, "q2": 0.1}), "--json",
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == squad_v1({qid: GOLD[qid] for qid in answerable}, predictions)
    assert result.stderr.startswith(f"warning: --na-probs: {data} has no unanswerable questions")


def test_threshold_without_na_probs_warns(tmp_path, data):
    predictions = {qid: "" for qid in QUESTIONS}
    predictions_file = write_json(tmp_path / "p.json", predictions)
    result = qatune("score", data, predictions_file, "--na-prob-thresh", "0.5")
    assert result.returncode == 0, result.stderr
    assert result.stderr == "warning: --na-prob-thresh has no effect without --na-probs\n"


def expect_error(result: subprocess.CompletedProcess, message: str) -> None:
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == f"error: {message}\n"


def test_a_prediction_that_is_not_a_string(tmp_path, data):
    predictions = write_json(tmp_path / "p.json", {"q1": "Broncos", "q2": None})
    expect_error(
        qatune("score", data, predictions),
        f'{predictions}, key "q2": expected the predicted answer text (a string, "" for no '
        "answer), found null (null); fix that value",
    )


def test_a_data_file_given_as_the_predictions(data):
    expect_error(
        qatune("score", data, data),
        f'{data}: this looks like a SQuAD data file (it has a "data" list); expected a JSON '
        "object that maps question ids to predicted answer texts; check the order of the files",
    )


def test_a_no_answer_probability_out_of_range(tmp_path, data):
    predictions = write_json(tmp_path / "p.json", {"q1": "Broncos"})
    na_probs = write_json(tmp_path / "na.json", {"q1": 3.2})
    expect_error(
        qatune("score", data, predictions, "--na-probs", na_probs),
        f'{na_probs}, key "q1": expected the probability that the question has no answer (a '
        "number from 0 to 1), found a number (3.2); if these are scores or logits, turn them "
        "into probabilities (e.g. with a sigmoid) first",
    )


def test_no_answer_probabilities_missing_for_predicted_questions(tmp_path, data):
    predictions = write_json(tmp_path / "p.json", {qid: "" for qid in QUESTIONS})
    na_probs = write_json(tmp_path / "na.json", {"q1": 0.5, "q3": 0.5})
    expect_error(
        qatune("score", data, predictions, "--na-probs", na_probs),
        f"{na_probs}: no no-answer probability for 2 predicted questions (q2, q4); expected one "
        "for every question that has a prediction; write the probabilities and the "
        "predictions from the same run",
    )


def test_a_threshold_out_of_range(tmp_path, data):
    predictions = write_json(tmp_path / "p.json", {"q1": "Broncos"})
    expect_error(
        qatune("score", data, predictions, "--na-prob-thresh", "1.5"),
        "--na-prob-thresh: expected a number from 0 to 1, found 1.5; a question counts as "
        "unanswered when its no-answer probability is above it",
    )


def test_a_missing_predictions_file(tmp_path, data):
    missing = tmp_path / "nope.json"
    expect_error(
        qatune("score", data, missing),
        f"{missing}: no such file; give the path of a JSON file that maps question ids to "
        "predicted answer texts",
    )


def test_a_missing_data_file_is_an_error_not_a_traceback(tmp_path):
    predictions = write_json(tmp_path / "p.json", {"q1": "Broncos"})
    result = qatune("score", tmp_path / "nope.json", predictions)
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {tmp_path / 'nope.json'}")
    assert "Traceback" not in result.stderr


def unreadable_json_reason(text: str) -> str:
    """What Python's json says about JSON it cannot read (its words differ between versions)."""
    try:
        json.loads(text)
    except (RecursionError, ValueError) as error:
        return str(error)
    raise AssertionError("this JSON can be read")


def test_predictions_nested_too_deeply(tmp_path, data):
    predictions = tmp_path / "p.json"
    predictions.write_text("[" * 100_000 + "]" * 100_000, encoding="utf-8")
    expect_error(
        qatune("score", data, predictions),
        f"{predictions}: expected a JSON object that maps question ids to predicted answer "
        "texts, found JSON nested too deeply to read; write it as one flat object: "
        '{"question id": value, ...}',
    )


def test_a_5000_digit_number_in_the_na_probs(tmp_path, data):
    predictions = write_json(tmp_path / "p.json", {"q1": "Broncos"})
    text = '{"q1": ' + "1" * 5000 + "}"
    na_probs = tmp_path / "na.json"
    na_probs.write_text(text, encoding="utf-8")
    expect_error(
        qatune("score", data, predictions, "--na-probs", na_probs),
        f"{na_probs}: expected a JSON object that maps question ids to no-answer probabilities, "
        f"found JSON that cannot be read ({unreadable_json_reason(text)}); write each value as "
        "a short string or number",
    )


def test_a_byte_order_mark_is_accepted_in_predictions_as_in_data(tmp_path, data):
    predictions = {"q1": "Broncos", "q2": "Santa Clara", "q3": "", "q4": ""}
    plain = write_json(tmp_path / "plain.json", predictions)
    with_bom = tmp_path / "bom.json"
    with_bom.write_text(json.dumps(predictions), encoding="utf-8-sig")
    result = qatune("score", data, with_bom, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == json.loads(qatune("score", data, plain, "--json").stdout)


def test_format_names_the_layout_of_the_data(tmp_path, data):
    predictions = write_json(tmp_path / "p.json", {"q1": "Broncos"})
    expect_error(
        qatune("score", data, predictions, "--format", "paragraphs"),
        f"{data}: expected a JSON list of paragraphs for the paragraphs layout, found a JSON "
        'object with keys "version", "data"; check --format (format= in Python), or leave it out to '
        "detect the layout",
    )


def test_on_error_strict_refuses_an_answer_that_needs_repair(tmp_path):
    context = "The Denver Broncos defeated the Carolina Panthers."
    record = {"id": "q1", "question": "Who won?", "context": context,
              "answers": {"text": ["Denver Broncos"], "answer_start": [0]}}  # really at 4
    data = tmp_path / "dev.jsonl"
    data.write_text(json.dumps(record) + "\n", encoding="utf-8")
    predictions = write_json(tmp_path / "p.json", {"q1": "Denver Broncos"})
    assert qatune("score", data, predictions, "--json").returncode == 0  # repaired by default
    expect_error(
        qatune("score", data, predictions, "--on-error", "strict"),
        f'{data}: line 1: answers.text[0]: expected the context at [0:14] to read "Denver '
        'Broncos", found "The Denver Bro"; fix the answer ("Denver Broncos" occurs at 4), or let '
        "qatune repair it with --on-error repair",
    )


def test_score_never_imports_torch(tmp_path, data):
    predictions = write_json(tmp_path / "p.json", {"q1": "Broncos"})
    script = (
        "import sys; from qatune.cli import main; "
        f"code = main(['score', {str(data)!r}, {str(predictions)!r}, '--format', 'squad']); "
        "assert 'torch' not in sys.modules, 'torch imported'; sys.exit(code)"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_on_error_skip_says_how_many_questions_left_the_total(tmp_path):
    context = "The Denver Broncos won."
    records = [
        {"id": "q1", "question": "Who won?", "context": context,
         "answers": {"text": ["Denver Broncos"], "answer_start": [4]}},
        {"id": "q2", "question": "Who lost?", "context": context,  # not in the context: skipped
         "answers": {"text": ["Panthers"], "answer_start": [0]}},
    ]
    data = tmp_path / "dev.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    predictions = write_json(tmp_path / "p.json", {"q1": "Denver Broncos"})
    result = qatune("score", data, predictions, "--on-error", "skip", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"exact_match": 100.0, "f1": 100.0}
    assert result.stderr == (
        f"warning: {data}: 1 questions (0 unanswerable); 0 answers repaired: 0 whitespace, "
        "0 re-anchored (largest shift 0 characters); skipped: 1 questions, 1 answers\n"
    )


def test_on_error_skip_that_skips_nothing_warns_of_nothing(tmp_path):
    data = tmp_path / "dev.jsonl"
    data.write_text(json.dumps({"id": "q1", "question": "Who won?", "context": "The Denver Broncos won.",
                                "answers": {"text": ["Denver Broncos"], "answer_start": [4]}}) + "\n", encoding="utf-8")
    predictions = write_json(tmp_path / "p.json", {"q1": "Denver Broncos"})
    result = qatune("score", data, predictions, "--on-error", "skip", "--json")
    assert result.returncode == 0 and json.loads(result.stdout) == {"exact_match": 100.0, "f1": 100.0}
    assert result.stderr == ""
