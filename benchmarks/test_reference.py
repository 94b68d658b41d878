"""Checks of the benchmark's reference side: data split, labels, decoding, SQuAD v1.1 scores.

    python -m pytest benchmarks/test_reference.py -q
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import prepare_data
import reference_trainer as rt
from squad_v1 import agreement, exact_match, f1, normalize_answer, read_squad, score


# --- official SQuAD v1.1 definitions -----------------------------------------------------
def test_normalize_drops_case_punctuation_articles_and_extra_spaces():
    assert normalize_answer("  The  Eiffel-Tower, in an  hour!") == "eiffeltower in hour"


def test_exact_match_and_f1_follow_the_normalized_tokens():
    assert exact_match("the Broncos", "Broncos") == 1.0
    assert exact_match("Denver Broncos", "Broncos") == 0.0
    assert f1("Denver Broncos", "Broncos") == pytest.approx(2 / 3)
    assert f1("a", "the") == 0.0  # both normalize to nothing: v1.1 gives 0


def test_score_takes_the_best_gold_answer_and_counts_missing_as_zero():
    questions = [
        {"id": "a", "answers": [{"text": "Paris"}, {"text": "in Paris"}]},
        {"id": "b", "answers": [{"text": "1999"}]},
    ]
    result = score({"a": "in Paris"}, questions)
    assert result == {"exact_match": 50.0, "f1": 50.0, "questions": 2, "missing": 1}


def test_agreement_compares_only_shared_ids():
    result = agreement({"a": "Paris", "b": "x"}, {"a": "paris.", "c": "y"})
    assert result == {"exact_match": 100.0, "f1": 100.0, "questions": 1}


# --- data preparation --------------------------------------------------------------------
def squad_v2(articles: int) -> dict:
    """`articles` articles; each has one answerable question with two answers, one impossible."""
    data = []
    for n in range(articles):
        qas = [
            {"id": f"q{n}", "question": f"Who {n}?", "is_impossible": False,
             "answers": [{"text": "Ada", "answer_start": 0}, {"text": "Ada L", "answer_start": 0}]},
            {"id": f"x{n}", "question": "Why?", "is_impossible": True, "answers": [],
             "plausible_answers": [{"text": "Ada", "answer_start": 0}]},
        ]
        data.append({"title": f"T{n}", "paragraphs": [{"context": "Ada L wrote it.", "qas": qas}]})
    return {"version": "v2.0", "data": data}


def test_prepare_data_splits_articles_and_keeps_answerable_questions(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / prepare_data.SOURCE_NAME).write_text(json.dumps(squad_v2(10)))
    out = tmp_path / "out"
    assert prepare_data.main(["--shared", str(shared), "--out", str(out),
                              "--train-questions", "5"]) == 0
    train, dev = read_squad(out / "train.json"), read_squad(out / "dev.json")
    assert [q["id"] for q in train] == ["q0", "q1", "q2", "q3", "q4"]
    assert all(len(q["answers"]) == 1 for q in train)
    assert [q["id"] for q in dev] == ["q8", "q9"]
    assert all(len(q["answers"]) == 2 for q in dev)
    assert "is_impossible" not in (out / "dev.json").read_text()


def test_prepare_data_refuses_a_file_with_too_few_articles(tmp_path, capsys):
    (tmp_path / prepare_data.SOURCE_NAME).write_text(json.dumps(squad_v2(8)))
    assert prepare_data.main(["--shared", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "has 8 articles; expected more than 8" in capsys.readouterr().err


# --- run_qa-style labels -----------------------------------------------------------------
@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(rt.default_model_dir())


def long_question(answer: str = "zanzibar") -> dict:
    """A context that needs several windows, its answer near the end."""
    context = " ".join(f"word{i}" for i in range(600)) + f" the answer is {answer} ."
    start = context.index(answer)
    return {"id": "q", "question": "  what is the answer?", "context": context,
            "answers": [{"text": answer, "answer_start": start}]}


def test_labels_point_at_the_answer_or_at_cls_when_the_window_lacks_it(tokenizer):
    question = long_question()
    rows, labelled_cls = rt.training_windows(tokenizer, [question])
    assert len(rows) > 1 and labelled_cls == len(rows) - 1
    assert rows[0]["start_positions"] == rows[0]["end_positions"] == 0  # CLS
    last = rows[-1]
    span = last["input_ids"][last["start_positions"] : last["end_positions"] + 1]
    assert tokenizer.decode(span) == "zanzibar"
    assert all(len(row["input_ids"]) == rt.MAX_LENGTH for row in rows)


def test_prediction_windows_mask_offsets_outside_the_context(tokenizer):
    question = long_question()
    inputs, meta = rt.prediction_windows(tokenizer, [question])
    assert len(inputs) == len(meta) > 1
    offsets = meta[0]["offsets"]
    assert offsets[0] is None  # CLS
    first_context = next(o for o in offsets if o is not None)
    assert question["context"][first_context[0] : first_context[1]] == "word"  # word ##0


# --- run_qa-style decoding ---------------------------------------------------------------
def test_postprocess_picks_the_best_valid_span_across_windows():
    context = "Ada Lovelace wrote the first program."
    question = {"id": "q", "context": context}
    offsets = [None, (0, 3), (4, 12), (13, 18), None]
    start = np.array([9.0, 1.0, 0.5, 0.0, 9.0])  # the None positions must be ignored
    end = np.array([9.0, 0.0, 2.0, 0.1, 9.0])
    weak_start = np.full(5, -5.0)
    meta = [{"id": "q", "offsets": offsets}, {"id": "q", "offsets": offsets}]
    predictions = rt.postprocess([question], meta, [start, weak_start], [end, end])
    assert predictions == {"q": "Ada Lovelace"}


def test_postprocess_skips_reversed_and_too_long_spans():
    words = [f"w{i}" for i in range(40)]
    context = " ".join(words)
    offsets, position = [], 0
    for word in words:
        offsets.append((position, position + len(word)))
        position += len(word) + 1
    start, end = np.full(40, -100.0), np.full(40, -100.0)
    start[2], start[20] = 10.0, 6.0
    end[35], end[1] = 10.0, 9.0
    # (2, 35) scores 20 but spans 34 tokens; (2, 1) scores 19 but ends before it starts.
    predictions = rt.postprocess([{"id": "q", "context": context}],
                                 [{"id": "q", "offsets": offsets}], [start], [end])
    assert predictions == {"q": " ".join(words[20:36])}


def test_postprocess_answers_empty_when_no_span_is_valid():
    meta = [{"id": "q", "offsets": [None, None]}]
    predictions = rt.postprocess([{"id": "q", "context": "abc"}], meta,
                                 [np.zeros(2)], [np.zeros(2)])
    assert predictions == {"q": "empty"}


# --- the reference environment ---------------------------------------------------------------
def test_reference_env_refuses_a_python_without_torch(tmp_path):
    """The environment shares torch with the python that runs the script: one without torch
    is refused at once, with a message that says which python to use (nothing is created)."""
    import subprocess
    from pathlib import Path

    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\nexit 1\n")
    fake.chmod(0o755)
    script = Path(__file__).resolve().parent / "setup_reference_env.sh"
    venv = tmp_path / "venv"
    done = subprocess.run(["bash", str(script)], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "PYTHON": str(fake), "QATUNE_REFERENCE_VENV": str(venv)})
    assert done.returncode == 1
    assert f"error: {fake} ({fake}) cannot import torch;" in done.stderr
    assert "PYTHON=/path/to/venv/bin/python" in done.stderr
    assert not venv.exists()
