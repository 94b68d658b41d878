"""The model commands as a user runs them: `qatune train/evaluate/predict/ask` in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import TINY_QA

WINDOW_FLAGS = ["--max-seq-length", "48", "--doc-stride", "8", "--max-question-length", "12"]


def qatune(*arguments: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "qatune", *map(str, arguments)], capture_output=True, text=True, timeout=600
    )
    if check and result.returncode != 0:
        raise AssertionError(f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}")
    return result


@pytest.fixture(scope="module")
def trained(tiny_bert, tmp_path_factory):
    output = tmp_path_factory.mktemp("cli") / "model"
    result = qatune(
        "train", TINY_QA, "--dev", TINY_QA, "--model", tiny_bert, "--output", output, "--epochs", "60",
        "--batch-size", "2", "--lr", "1e-3", "--warmup-ratio", "0", "--no-bf16", "--save-every", "0",
        *WINDOW_FLAGS, "--json",
    )
    return output, json.loads(result.stdout)


def test_train_prints_one_json_summary_and_writes_the_model(trained):
    output, summary = trained
    assert summary["output"] == str(output)
    assert summary["epochs"] == 60
    assert summary["counts"]["train_questions"] == 12
    assert summary["dev"]["f1"] > 80
    for name in ("config.json", "model.safetensors", "tokenizer.json", "qatune.json", "metrics.jsonl"):
        assert (output / name).is_file(), name


def test_evaluate_json_has_the_same_keys_as_score(trained, tmp_path):
    output, summary = trained
    evaluated = qatune("evaluate", output, TINY_QA, "--output", tmp_path, "--json", "--no-bf16")
    metrics = json.loads(evaluated.stdout)
    assert metrics.pop("engine") == {"name": "openvino", "precision": "float32", "recheck_close_calls": False}
    assert metrics == summary["dev"]  # the same model and data give the same scores in train and evaluate
    scored = qatune(
        "score", TINY_QA, tmp_path / "predictions.json", "--na-probs", tmp_path / "na_probs.json", "--json"
    )
    assert json.loads(scored.stdout) == metrics
    assert list(metrics) == [
        "exact", "f1", "total", "HasAns_exact", "HasAns_f1", "HasAns_total", "NoAns_exact", "NoAns_f1",
        "NoAns_total", "best_exact", "best_exact_thresh", "best_f1", "best_f1_thresh",
    ]


def test_evaluate_prints_text_by_default(trained):
    output, summary = trained
    result = qatune("evaluate", output, TINY_QA, "--no-bf16")
    assert "12 questions, SQuAD v2.0 metrics" in result.stdout
    printed = dict(line.split(": ", 1) for line in result.stdout.splitlines()[1:])
    assert float(printed["f1"]) == pytest.approx(summary["dev"]["f1"], abs=5e-5)
    # thresholds as they are: rounded, they would decide some questions otherwise
    for key in ("best_exact_thresh", "best_f1_thresh"):
        assert float(printed[key]) == summary["dev"][key]


def test_evaluate_report_answers_each_question_once(trained, tmp_path, monkeypatch):
    from qatune.cli import main
    from qatune.inference import QAModel

    output, _ = trained
    calls = []
    answer = QAModel.predict

    def counted(self, examples, **options):
        examples = list(examples)
        calls.append((len(examples), options.get("batch_size")))
        return answer(self, examples, **options)

    monkeypatch.setattr(QAModel, "predict", counted)
    report = tmp_path / "report.html"
    assert main(["evaluate", str(output), str(TINY_QA), "--report", str(report), "--batch-size", "3", "--no-bf16"]) == 0
    assert [call for call in calls if call[0] > 1] == [(12, 3)]  # besides the one-question warm-up at load
    assert "tiny-00" in report.read_text(encoding="utf-8")


def test_predict_writes_official_predictions(trained, tmp_path):
    output, _ = trained
    predictions = tmp_path / "predictions.json"
    details = tmp_path / "details.json"
    result = qatune("predict", output, TINY_QA, "-o", predictions, "--details", details, "--top-k", "2", "--no-bf16")
    written = json.loads(predictions.read_text())
    assert len(written) == 12 and all(isinstance(text, str) for text in written.values())
    assert "wrote 12 predictions" in result.stderr
    top = json.loads(details.read_text())["tiny-00"]["answers"]
    assert 1 <= len(top) <= 2 and set(top[0]) == {"text", "start", "end", "score"}


def test_ask_prints_the_answer_with_offsets(trained):
    output, _ = trained
    context = "Riverside Athletic won the cup final 3-0 in 1998 at Hampden Park."
    result = qatune("ask", output, "-q", "What was the score of the cup final?", "-c", context, "--top-k", "3", "--no-bf16")
    answers = json.loads(result.stdout)
    assert answers[0]["text"] == "3-0"
    for answer in answers:
        assert context[answer["start"] : answer["end"]] == answer["text"]
        assert 0 <= answer["score"] <= 1


def test_missing_data_file_is_a_clear_error(tmp_path):
    result = qatune("train", tmp_path / "nope.json", check=False)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ")
    assert "nope.json" in result.stderr and "Traceback" not in result.stderr


def test_bad_window_settings_are_a_clear_error(tmp_path):
    result = qatune("train", TINY_QA, "--doc-stride", "400", "--output", tmp_path / "m", check=False)
    assert result.returncode == 2
    assert result.stderr.startswith("error: --doc-stride (400) must be smaller than the room left for the context")
    # the other settings it names are flags too
    assert "(317 tokens = --max-seq-length 384 - --max-question-length 64 - 3 special tokens); use a --doc-stride below" in result.stderr


def test_missing_model_directory_is_a_clear_error(tmp_path):
    result = qatune("ask", tmp_path / "no-model", "-q", "Who?", "-c", "Ada wrote it.", check=False)
    assert result.returncode == 2
    assert result.stderr == f"error: no such model folder: {tmp_path / 'no-model'}; check the path\n"
    assert "Traceback" not in result.stderr


def test_empty_question_is_a_clear_error(trained):
    output, _ = trained
    result = qatune("ask", output, "-q", "  ", "-c", "Ada wrote it.", check=False)
    assert result.returncode == 2
    assert "error: the question must be a non-empty string, got '  '" in result.stderr


def test_resume_without_checkpoint_is_a_clear_error(tiny_bert, tmp_path):
    result = qatune("train", TINY_QA, "--model", tiny_bert, "--output", tmp_path / "m", "--resume", *WINDOW_FLAGS, check=False)
    assert result.returncode == 2
    assert "has no checkpoint to resume from" in result.stderr
