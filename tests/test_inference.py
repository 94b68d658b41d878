"""Answering below float32 (bf16): float32 logits from the QA head, close calls re-checked in
float32; and answering in chunks, so that memory does not grow with the number of questions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qatune import inference
from qatune.batching import pad_windows
from qatune.data import load_examples
from qatune.engines.torch_engine import TorchEngine
from qatune.features import make_windows
from qatune.inference import QAModel, window_logits

from conftest import TINY_QA


@pytest.fixture(scope="module")
def examples():
    return load_examples(TINY_QA)


@pytest.mark.parametrize("engine", ["torch", "openvino"])
def test_bf16_logits_are_not_rounded_to_bf16(engine, tiny_bert, examples):
    model = QAModel.from_pretrained(tiny_bert, engine=engine, bf16=True)
    assert model.engine.precision == "bf16"
    windows = make_windows(examples, model.tokenizer, model.settings)
    starts, ends = window_logits(model.engine, windows, pad_token_id=0)
    values = torch.from_numpy(np.concatenate(starts + ends))
    # A bf16 head would give values that survive a round trip through bf16 unchanged.
    assert (values.to(torch.bfloat16).float() != values).float().mean() > 0.9
    if engine == "torch":
        assert not model.engine.model.qa_outputs._forward_hooks  # the float32 head is only on while answering


@pytest.mark.parametrize("engine", ["torch", "openvino"])
def test_bf16_answers_equal_float32_answers_and_only_close_calls_are_recomputed(engine, tiny_bert, examples, monkeypatch):
    exact = QAModel.from_pretrained(tiny_bert, engine=engine, bf16=False).predict(examples, top_k=2)
    model = QAModel.from_pretrained(tiny_bert, engine=engine, bf16=True)
    calls = []

    def spy(answering, *args, **kwargs):
        calls.append((answering.precision, kwargs))
        return window_logits(answering, *args, **kwargs)

    monkeypatch.setattr(inference, "window_logits", spy)
    fast = model.predict(examples, top_k=2)

    assert [[a.text for a in d.answers] for d in fast] == [[a.text for a in d.answers] for d in exact]
    margin = model.engine.recheck_margin
    close = {i for i, d in enumerate(exact) if np.log(d.answers[0].score / d.answers[1].score) < margin}
    assert close, "the tiny random model should have close calls to re-check"
    assert [precision for precision, _ in calls] == ["bf16", "float32"]
    windows = make_windows(examples, model.tokenizer, model.settings)
    rechecked = {int(windows.example_index[w]) for w in calls[1][1]["only"]}
    # Every close call was re-checked; far from the margin bf16 cannot flip the answer.
    assert close <= rechecked
    assert len(rechecked) < len(examples)


def test_float32_answers_are_never_asked_twice(tiny_bert, examples, monkeypatch):
    model = QAModel.from_pretrained(tiny_bert, engine="torch", bf16=False)
    calls = []
    monkeypatch.setattr(inference, "window_logits", lambda *a, **k: calls.append(k) or window_logits(*a, **k))

    model.predict(examples)

    assert len(calls) == 1 and calls[0].get("only") is None


def test_answers_in_chunks_equal_answers_in_one_go(tiny_bert, examples, monkeypatch):
    model = QAModel.from_pretrained(tiny_bert, engine="torch", bf16=False)
    whole = model.predict(examples, top_k=3)
    windows = make_windows(examples, model.tokenizer, model.settings)
    sizes = []
    monkeypatch.setattr(inference, "CHUNK_EXAMPLES", 5)
    monkeypatch.setattr(inference, "window_logits", lambda e, w, **k: sizes.append(len(w)) or window_logits(e, w, **k))

    cut_here = model.predict(examples, top_k=3)
    given = model.predict(examples, top_k=3, windows=windows)

    # other chunks batch other windows together: texts and places are the same, scores within float noise
    for answered in (cut_here, given):
        assert [[(a.text, a.start, a.end) for a in d.answers] for d in answered] == [
            [(a.text, a.start, a.end) for a in d.answers] for d in whole
        ]
        scores = [[a.score for a in d.answers] + [d.null_prob] for d in answered]
        assert np.allclose(np.concatenate(scores), np.concatenate([[a.score for a in d.answers] + [d.null_prob] for d in whole]), rtol=1e-5)
    assert len(sizes) == 2 * -(-len(examples) // 5)  # one call per chunk of 5 questions, each run
    assert sum(sizes) == 2 * len(windows)


def test_work_in_flight_does_not_grow_with_the_number_of_questions(tiny_bert, examples, monkeypatch):
    """Ten times the questions: the same largest chunk of windows alive at once."""
    model = QAModel.from_pretrained(tiny_bert, engine="torch", bf16=False)
    monkeypatch.setattr(inference, "CHUNK_EXAMPLES", 8)
    largest = []
    for copies in (1, 10):
        sizes = []
        monkeypatch.setattr(inference, "window_logits", lambda e, w, **k: sizes.append(len(w)) or window_logits(e, w, **k))
        model.predict(examples * copies)
        largest.append(max(sizes))
    assert largest[0] == largest[1]


def test_a_chunk_ends_at_its_characters_of_context(tiny_bert, examples, monkeypatch):
    monkeypatch.setattr(inference, "CHUNK_CHARACTERS", len(examples[0].context) + len(examples[1].context))
    chunks = list(inference._chunks(examples[:4]))
    assert chunks[0] == (0, 2) and chunks[-1][1] == 4
    monkeypatch.setattr(inference, "CHUNK_CHARACTERS", 1)  # an example longer than a chunk is a chunk alone
    assert list(inference._chunks(examples[:3])) == [(0, 1), (1, 2), (2, 3)]


def test_the_torch_engine_leaves_a_training_model_in_training_mode(tiny_bert, examples):
    model = QAModel.from_pretrained(tiny_bert, engine="torch", bf16=False)
    windows = make_windows(examples[:2], model.tokenizer, model.settings)
    torch_model = model.engine.model.train()
    start, _ = TorchEngine(torch_model).logits(pad_windows(windows, [0, 1], 0))
    assert torch_model.training and start.dtype == np.float32
