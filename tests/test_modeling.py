"""Loading models and tokenizers: the bundled default, and clear errors for unusable ones."""

from __future__ import annotations

import shutil

import pytest

from qatune import modeling
from qatune.errors import ModelError
from qatune.inference import QAModel


def test_the_default_model_is_the_bundled_offline_one():
    path = modeling.default_model_path()
    assert (path / "config.json").is_file() and (path / "model.safetensors").is_file()
    assert modeling.resolve_model_name(None) == str(path)
    assert modeling.resolve_model_name("distilbert-base-cased") == "distilbert-base-cased"


def test_a_tokenizer_without_offsets_is_refused(tiny_bert, monkeypatch):
    import transformers

    class SlowTokenizer:
        is_fast = False

    monkeypatch.setattr(modeling, "_named_tokenizer_class", lambda source: None)  # through AutoTokenizer
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: SlowTokenizer())
    with pytest.raises(ModelError) as error:
        modeling.load_tokenizer(tiny_bert)
    assert str(error.value) == (
        f"the tokenizer of {str(tiny_bert)!r} (SlowTokenizer) cannot give character offsets: qatune needs "
        f"a fast (Rust) tokenizer to map answers to tokens exactly; use a model that ships a tokenizer.json, "
        f"or convert the tokenizer with transformers first"
    )


def test_weights_that_are_not_safetensors_are_refused(tiny_bert, tmp_path):
    folder = tmp_path / "pickled"
    shutil.copytree(tiny_bert, folder)
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    with pytest.raises(ModelError, match=r"expected model weights in safetensors format \(model.safetensors\), found none"):
        modeling.load_qa_model(folder)


def test_a_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(ModelError) as error:
        QAModel.from_pretrained(tmp_path / "nowhere")
    assert str(error.value) == f"no such model folder: {tmp_path / 'nowhere'}; check the path"


def test_a_model_without_qatune_json_uses_the_default_settings(tiny_bert):
    model = QAModel.from_pretrained(tiny_bert, bf16=False)
    assert model.settings.max_seq_length == 384 and model.settings.null_threshold == 1.0
    answers = model.ask("Who won?", "Riverside Athletic won the cup final.", top_k=3)
    assert 1 <= len(answers) <= 3
    for answer in answers:
        assert "Riverside Athletic won the cup final."[answer.start : answer.end] == answer.text


def test_dropout_overrides_reach_every_dropout_of_bert_and_distilbert(tiny_bert, tiny_distilbert):
    import torch

    for folder in (tiny_bert, tiny_distilbert):
        as_configured = modeling.load_qa_model(folder)
        assert any(m.p > 0 for m in as_configured.modules() if isinstance(m, torch.nn.Dropout))
        model = modeling.load_qa_model(folder, attention_dropout=0.0, hidden_dropout=0.0)
        rates = [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)]
        config_rates = [getattr(model.config, k) for k in ("attention_probs_dropout_prob", "hidden_dropout_prob",
                        "dropout", "attention_dropout", "qa_dropout") if hasattr(model.config, k)]
        assert set(rates) <= {0.0} and set(config_rates) == {0.0}


def test_the_tokenizer_is_the_class_autotokenizer_picks(tiny_model):
    """qatune reads the class from tokenizer_config.json (AutoTokenizer's first choice) so that
    answering needs no transformers config, whose loading imports torch."""
    from transformers import AutoTokenizer

    ours, theirs = modeling.load_tokenizer(tiny_model), AutoTokenizer.from_pretrained(tiny_model)
    assert type(ours) is type(theirs) and ours.model_input_names == theirs.model_input_names
    pair = ("Who wrote it?", "Ada Lovelace wrote it in 1843.")
    assert ours(*pair, return_offsets_mapping=True) == theirs(*pair, return_offsets_mapping=True)
