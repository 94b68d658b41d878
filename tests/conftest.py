"""Shared fixtures: tiny models built from a config (no network) and tiny data."""

from __future__ import annotations

import json
import os
import re
import string
import tempfile
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
TINY_QA = DATA / "tiny_qa.json"
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

# Tokenized windows are cached per test session, never in the user's cache (subprocesses inherit it).
os.environ["QATUNE_CACHE"] = tempfile.mkdtemp(prefix="qatune-test-cache-")


def _vocabulary() -> list[str]:
    """Special tokens, every character alone and as a continuation, and the words of the tiny data."""
    characters = list(string.ascii_lowercase + string.digits + string.punctuation)
    text = json.dumps(json.loads(TINY_QA.read_text(encoding="utf-8"))).lower()
    words = sorted(set(re.findall(r"[a-z0-9]+", text)))
    tokens = SPECIAL_TOKENS + characters + ["##" + c for c in characters] + words
    return list(dict.fromkeys(tokens))


def _tokenizer(kind: str):
    from transformers import BertTokenizerFast, DistilBertTokenizerFast

    vocab = {token: index for index, token in enumerate(_vocabulary())}
    tokenizer_class = DistilBertTokenizerFast if kind == "distilbert" else BertTokenizerFast
    return tokenizer_class(vocab=vocab, do_lower_case=True, model_max_length=512)


def build_tiny_model(kind: str, folder: Path) -> Path:
    """A 2-layer encoder with hidden size 32 and a fresh QA head, saved like a hub model."""
    import torch
    from transformers import AutoModelForQuestionAnswering, BertConfig, DistilBertConfig

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = _tokenizer(kind)
    if kind == "distilbert":
        config = DistilBertConfig(
            vocab_size=len(tokenizer), dim=32, hidden_dim=64, n_layers=2, n_heads=2, max_position_embeddings=512
        )
    else:
        config = BertConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=512,
        )
    torch.manual_seed(0)
    model = AutoModelForQuestionAnswering.from_config(config)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    return build_tiny_model("bert", tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_distilbert(tmp_path_factory) -> Path:
    return build_tiny_model("distilbert", tmp_path_factory.mktemp("tiny-distilbert"))


@pytest.fixture(params=["bert", "distilbert"])
def tiny_model(request, tiny_bert, tiny_distilbert) -> Path:
    return tiny_bert if request.param == "bert" else tiny_distilbert


@pytest.fixture(scope="session")
def minilm_sized_bert(tmp_path_factory):
    """A random encoder with all-MiniLM's widths (384 hidden, 12 heads, 1536 intermediate): the
    matrix kernels a real model gets, which a 32-wide tiny model may not reach."""
    import torch
    from transformers import AutoModelForQuestionAnswering, BertConfig

    folder = tmp_path_factory.mktemp("minilm-sized")
    tokenizer = _tokenizer("bert")
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=384, intermediate_size=1536, num_hidden_layers=2,
        num_attention_heads=12, max_position_embeddings=512,
    )
    torch.manual_seed(0)
    AutoModelForQuestionAnswering.from_config(config).save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder
