"""End to end with the real default model: `qatune train` on the shipped sample, then `ask`."""

from __future__ import annotations

import json

import pytest

from test_cli_model import qatune

pytestmark = pytest.mark.slow


def test_training_on_the_sample_beats_the_untrained_model(tmp_path):
    output = tmp_path / "model"
    result = qatune("train", "--output", output, "--json")
    summary = json.loads(result.stdout)
    before, after = summary["dev_before"]["f1"], summary["dev"]["f1"]
    assert after > before + 20, (before, after)
    assert summary["counts"]["train_questions"] == 72 and summary["counts"]["dev_questions"] == 27

    context = "Apollo 11 landed on the Moon on 20 July 1969, and Neil Armstrong was the first to step out."
    answers = json.loads(qatune("ask", output, "-q", "Who was the first to step out?", "-c", context).stdout)
    assert answers and context[answers[0]["start"] : answers[0]["end"]] == answers[0]["text"]
