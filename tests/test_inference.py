"""Answering with bf16: float32 logits from the QA head, and close calls re-checked in float32."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qatune import inference
from qatune.data import load_examples
from qatune.features import make_windows
from qatune.inference import CLOSE_CALL, QAModel, window_logits

from conftest import TINY_QA


@pytest.fixture(scope="module")
def examples():
    return load_examples(TINY_QA)


def test_bf16_logits_are_not_rounded_to_bf16(tiny_bert, examples):
    model = QAModel.from_pretrained(tiny_bert, bf16=True)
    windows = make_windows(examples, model.tokenizer, model.settings)
    starts, ends = window_logits(model.model, windows, pad_token_id=0, bf16=True)
    values = torch.from_numpy(np.concatenate(starts + ends))
    # A bf16 head would give values that survive a round trip through bf16 unchanged.
    assert (values.to(torch.bfloat16).float() != values).float().mean() > 0.9
    assert not model.model.qa_outputs._forward_hooks  # the float32 head is only on while answering


def test_bf16_answers_equal_float32_answers_and_only_close_calls_are_recomputed(tiny_bert, examples, monkeypatch):
    exact = QAModel.from_pretrained(tiny_bert, bf16=False).predict(examples, top_k=2)
    calls = []

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return window_logits(*args, **kwargs)

    monkeypatch.setattr(inference, "window_logits", spy)
    model = QAModel.from_pretrained(tiny_bert, bf16=True)
    fast = model.predict(examples, top_k=2)

    assert [[a.text for a in d.answers] for d in fast] == [[a.text for a in d.answers] for d in exact]
    close = {i for i, d in enumerate(exact) if np.log(d.answers[0].score / d.answers[1].score) < CLOSE_CALL}
    assert close, "the tiny random model should have close calls to re-check"
    assert [call["bf16"] for call in calls] == [True, False]
    windows = make_windows(examples, model.tokenizer, model.settings)
    rechecked = {int(windows.example_index[w]) for w in calls[1]["only"]}
    # Every close call was re-checked; far from the margin bf16 cannot flip the answer.
    assert close <= rechecked
    assert len(rechecked) < len(examples)
