"""LoRA for large encoders (through peft): low-rank adapters on the attention's query and value
projections are trained, with the question-answering head, while the encoder's own weights stay
frozen; at the end the adapters are merged into the weights, so the model folder is a plain
transformers model (no peft needed to load or answer it).

    >>> model = with_lora(load_qa_model("bert-large-cased"), rank=8)     # doctest: +SKIP
    >>> plain = merged(model)                                             # doctest: +SKIP
"""

from __future__ import annotations

import warnings

from qatune.errors import ModelError, SettingsError

# Attention projections that get adapters, by the names BERT-family encoders give them.
TARGET_NAMES = ("query", "value", "q_lin", "v_lin", "q_proj", "v_proj")
HEAD_NAMES = ("qa_outputs",)


def with_lora(model, *, rank: int = 8, alpha: int = 16, dropout: float = 0.05):
    """The model with LoRA adapters of `rank` on its query and value projections; only they
    and the QA head train."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise SettingsError('--lora needs the peft package: install it with `pip install "qatune[lora]"`') from None
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise SettingsError(f"lora_rank must be a whole number of at least 1, got {rank!r}")
    targets = sorted({name.rsplit(".", 1)[-1] for name, _ in model.named_modules()} & set(TARGET_NAMES))
    if not targets:
        raise ModelError(
            f"found no attention projections named {', '.join(TARGET_NAMES)} in this {type(model).__name__}: "
            "--lora handles BERT-family encoders; train without it"
        )
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, modules_to_save=list(HEAD_NAMES))
    with warnings.catch_warnings():
        # peft asks the model a question transformers has renamed: its deprecation notice is
        # about peft's code, nothing a user of qatune can act on
        warnings.filterwarnings("ignore", message=r".*is_gradient_checkpointing.*", category=FutureWarning)
        return get_peft_model(model, config)


def merged(model):
    """The plain model with the adapters folded into its weights (a model without adapters as it is)."""
    merge = getattr(model, "merge_and_unload", None)
    return merge() if merge is not None else model


def trainable_share(model) -> tuple[int, int]:
    """(trainable parameters, all parameters)."""
    parameters = list(model.parameters())
    return sum(p.numel() for p in parameters if p.requires_grad), sum(p.numel() for p in parameters)


__all__ = ["merged", "trainable_share", "with_lora"]
