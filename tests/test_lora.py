"""--lora: adapters trained, merged on save into a plain transformers model."""

from __future__ import annotations

import json

import pytest
import torch

from qatune import TrainingArguments, train
from qatune.data import load_examples
from qatune.lora import merged, trainable_share, with_lora
from qatune.modeling import load_qa_model
from qatune.settings import QASettings

from conftest import TINY_QA

pytest.importorskip("peft")


@pytest.mark.parametrize("kind", ["bert", "distilbert"])
def test_the_merged_model_gives_the_adapter_models_logits(kind, tiny_bert, tiny_distilbert):
    torch.manual_seed(3)
    adapted = with_lora(load_qa_model(str(tiny_bert if kind == "bert" else tiny_distilbert)), rank=4)
    for name, parameter in adapted.named_parameters():
        if "lora_B" in name:  # trained adapters: B starts at zero, which would merge nothing
            torch.nn.init.normal_(parameter, std=0.5)
    adapted.eval()
    inputs = {"input_ids": torch.randint(5, 60, (3, 17)), "attention_mask": torch.ones(3, 17, dtype=torch.long)}
    with torch.no_grad():
        before = adapted(**inputs)
        plain = merged(adapted)
        after = plain(**inputs)
    assert not any("lora" in name for name, _ in plain.named_parameters())
    assert type(plain).__module__.startswith("transformers.")
    torch.testing.assert_close(after.start_logits, before.start_logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(after.end_logits, before.end_logits, atol=1e-5, rtol=1e-5)
    # the adapters did change the logits: merging kept something
    with torch.no_grad():
        original = load_qa_model(str(tiny_bert if kind == "bert" else tiny_distilbert)).eval()(**inputs)
    assert not torch.allclose(original.start_logits, after.start_logits, atol=1e-3)


def test_training_with_lora_trains_adapters_and_writes_a_plain_model(tiny_bert, tmp_path):
    from transformers import AutoModelForQuestionAnswering

    lines = []
    arguments = TrainingArguments(
        output_dir=str(tmp_path / "model"), model=str(tiny_bert), epochs=2, batch_size=4, learning_rate=3e-3, bf16=False,
        seed=7, lora=True, lora_rank=4, settings=QASettings(max_seq_length=48, doc_stride=8, max_question_length=12),
    )
    examples = load_examples(TINY_QA)
    result = train(examples, examples, arguments, progress=False, log=lines.append)
    assert any(line.startswith("LoRA rank 4: training ") and line.endswith("merged on save") for line in lines)
    saved = AutoModelForQuestionAnswering.from_pretrained(tmp_path / "model")
    assert not any("lora" in name for name in saved.state_dict())
    base = load_qa_model(str(tiny_bert)).state_dict()
    changed = [name for name, value in saved.state_dict().items() if not torch.equal(value, base[name])]
    # the adapted projections and the head moved; embeddings and layer norms (frozen) did not
    assert any(".query." in name or ".value." in name for name in changed) and any("qa_outputs" in name for name in changed)
    assert not any("embeddings" in name or "LayerNorm" in name for name in changed)
    card = json.loads((tmp_path / "model" / "qatune.json").read_text())
    assert card["training_arguments"]["lora"] is True and result.dev_metrics is not None


def test_only_adapters_and_the_head_train(tiny_bert):
    adapted = with_lora(load_qa_model(str(tiny_bert)), rank=2)
    trainable, total = trainable_share(adapted)
    names = [name for name, p in adapted.named_parameters() if p.requires_grad]
    assert all("lora_" in name or "qa_outputs" in name for name in names)
    assert 0 < trainable < total / 5
