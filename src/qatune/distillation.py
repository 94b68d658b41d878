"""Distillation: a student learns from the gold answers and from a teacher's start and end
distributions (DistilBERT's recipe for fine-tuning):

    loss = alpha * CE(gold) + (1 - alpha) * T^2 * KL(teacher_T || student_T)

where `_T` is a softmax at temperature T over the window's tokens (padding left out), and the
KL term is the start and end distributions' KL, averaged; the loss is the mean over the batch's
windows. The teacher answers every training window once, without gradients, before training
starts (with the engine `qatune ask` would use); its logits are kept (float32, one array per
window) for the whole run.

A transfer set (TinyBERT's name) adds questions nobody answered: the teacher answers them, and
their windows learn from its distributions alone (alpha 0 for them). The student then learns the
teacher's answers on more text than the gold answers cover.

With a hidden-state weight H > 0 the student also learns what the teacher's layers compute
(DistilBERT's cosine loss, with TinyBERT's uniform map from student to teacher layers):

    loss += H * mean over mapped layers and real tokens of (1 - cos(student state, teacher state))

The teacher then runs beside the student on every batch (its states are too big to keep).

    >>> logits = teacher_logits(load_engine("my-model", tokenizer), windows, pad_token_id=0, max_length=384)  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from qatune.errors import SettingsError

# Masked positions get this logit: finite, so that 0 * log(0) terms stay 0 instead of NaN.
MASKED_LOGIT = -1e9
# Texts both tokenizers must cut the same way (besides having the same vocabulary).
PROBE_TEXTS = ("When did Apollo 11 land on the Moon?", "Der Flughafen München öffnete 1992 — «naïve» café 東京 3-0!")


@dataclass
class TeacherLogits:
    """The teacher's start and end logits of every training window (unpadded, float32)."""

    starts: list[np.ndarray]
    ends: list[np.ndarray]

    def batch(self, windows: np.ndarray, length: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        """The logits of these windows padded to `length` tokens (padding: MASKED_LOGIT)."""
        start = np.full((len(windows), length), MASKED_LOGIT, dtype=np.float32)
        end = np.full((len(windows), length), MASKED_LOGIT, dtype=np.float32)
        for row, window in enumerate(windows):
            size = min(length, self.starts[window].size)
            start[row, :size] = self.starts[window][:size]
            end[row, :size] = self.ends[window][:size]
        return torch.from_numpy(start).to(device), torch.from_numpy(end).to(device)


def distillation_loss(
    gold: torch.Tensor,
    student_start: torch.Tensor,
    student_end: torch.Tensor,
    teacher_start: torch.Tensor,
    teacher_end: torch.Tensor,
    attention_mask: torch.Tensor,
    alpha: float,
    temperature: float,
    labelled: torch.Tensor | None = None,
) -> torch.Tensor:
    """The mean over the batch's windows of alpha * gold + (1 - alpha) * T^2 * (KL_start + KL_end) / 2,
    the KLs of the teacher's distributions from the student's at temperature T over the unmasked
    tokens. `gold`: each window's gold loss (or one value for all); windows whose `labelled`
    is False (transfer questions, which have no gold answer) take alpha 0: the teacher's term alone."""
    kl = (
        _kl(teacher_start, student_start, attention_mask, temperature)
        + _kl(teacher_end, student_end, attention_mask, temperature)
    ) / 2
    weights = torch.full_like(kl, alpha)
    if labelled is not None:
        labelled = labelled.bool()
        weights = torch.where(labelled, weights, 0.0)
        gold = torch.where(labelled, gold, 0.0)  # a window without a gold answer: its value means nothing
    return (weights * gold + (1 - weights) * temperature**2 * kl).mean()


def gold_losses(start_logits: torch.Tensor, end_logits: torch.Tensor, starts: torch.Tensor, ends: torch.Tensor) -> torch.Tensor:
    """Each window's loss on its gold answer, (CE(start) + CE(end)) / 2, as the QA models' own
    loss computes it before averaging over the batch."""
    cross_entropy = torch.nn.functional.cross_entropy
    return (cross_entropy(start_logits.float(), starts, reduction="none") + cross_entropy(end_logits.float(), ends, reduction="none")) / 2


def _kl(teacher: torch.Tensor, student: torch.Tensor, mask: torch.Tensor, temperature: float) -> torch.Tensor:
    """Each window's KL(teacher || student) at the temperature, summed over its tokens."""
    keep = mask.bool()
    teacher = teacher.float().masked_fill(~keep, MASKED_LOGIT) / temperature
    student = student.float().masked_fill(~keep, MASKED_LOGIT) / temperature
    target = torch.softmax(teacher, dim=-1)
    log_student = torch.log_softmax(student, dim=-1)
    return torch.nn.functional.kl_div(log_student, target, reduction="none").sum(dim=-1)


def hidden_layer_map(student_layers: int, teacher_layers: int) -> list[int]:
    """The teacher layer whose output each student layer learns: layer j of the student's S
    (1-based) -> layer j * T / S of the teacher's T, rounded half up, so the last maps to the last.

        >>> hidden_layer_map(3, 6), hidden_layer_map(4, 6), hidden_layer_map(6, 6)
        ([2, 4, 6], [2, 3, 5, 6], [1, 2, 3, 4, 5, 6])
    """
    if not 1 <= student_layers <= teacher_layers:
        raise SettingsError(
            f"hidden-state distillation maps each student layer to a teacher layer: the student has "
            f"{student_layers} layers, the teacher {teacher_layers}; use a student with at most the teacher's layers"
        )
    return [int(np.floor(j * teacher_layers / student_layers + 0.5)) for j in range(1, student_layers + 1)]


def hidden_state_loss(
    student_states: tuple[torch.Tensor, ...],
    teacher_states: tuple[torch.Tensor, ...],
    attention_mask: torch.Tensor,
    layer_map: list[int],
) -> torch.Tensor:
    """Mean of 1 - cos(student, teacher) over the mapped layers and the real tokens.

    The states are the models' `hidden_states` (index 0: the embeddings); student layer j
    (1-based) is compared with teacher layer layer_map[j - 1]."""
    keep = attention_mask.bool()
    losses = [
        1 - torch.nn.functional.cosine_similarity(student_states[j + 1].float()[keep], teacher_states[t].float()[keep], dim=-1).mean()
        for j, t in enumerate(layer_map)
    ]
    return torch.stack(losses).mean()


def check_same_width(student_config, teacher_config, student_name: str, teacher_name: str) -> None:
    """A SettingsError unless the student's hidden states have the teacher's size (hidden-state
    distillation compares them directly)."""
    student_width, teacher_width = student_config.hidden_size, teacher_config.hidden_size
    if student_width != teacher_width:
        raise SettingsError(
            f"hidden-state distillation compares the student's states with the teacher's, but the student "
            f"{student_name} has {student_width} dimensions and the teacher {teacher_name} {teacher_width}; "
            "use a student made from the teacher (`qatune shrink`) or distill the answers alone (distill_hidden 0)"
        )


def check_same_tokenizer(student_tokenizer, teacher_tokenizer, student_name: str, teacher_name: str) -> None:
    """A SettingsError naming both models unless the two tokenizers cut text into the same ids:
    the teacher's distributions are over its tokens, which must be the student's."""
    same_vocabulary = student_tokenizer.get_vocab() == teacher_tokenizer.get_vocab()
    same_cuts = same_vocabulary and all(
        student_tokenizer(text)["input_ids"] == teacher_tokenizer(text)["input_ids"] for text in PROBE_TEXTS
    )
    if not same_cuts:
        what = "vocabularies" if not same_vocabulary else "ways of cutting text into tokens"
        raise SettingsError(
            f"the teacher {teacher_name} and the student {student_name} have different {what} "
            f"({type(teacher_tokenizer).__name__}, {len(teacher_tokenizer)} tokens against "
            f"{type(student_tokenizer).__name__}, {len(student_tokenizer)} tokens): distillation needs the "
            "same tokenizer; use a student made from the teacher (`qatune shrink TEACHER --layers K -o STUDENT`) "
            "or a teacher of the student's family"
        )


def teacher_logits(engine, windows, *, pad_token_id: int, max_length: int, only=None) -> TeacherLogits:
    """The teacher's logits of every window, computed once by an answering engine
    (`qatune.engines.load_engine`: on a CPU, OpenVINO, in bf16 where the CPU has bf16 units).

    bf16 moves a logit by at most ~0.15 against float32 (SQuAD and TyDi QA dev windows); at
    temperature 2 the targets move by half that, and the logits of 3,967 SQuAD windows took 38 s
    instead of 84-103 s with PyTorch float32 (BENCHMARKS.md, Distillation). `only`: the windows
    to compute (the others' arrays are left empty), for processes that share the work."""
    from qatune.inference import window_logits

    starts, ends = window_logits(engine, windows, pad_token_id=pad_token_id, max_length=max_length, only=only)
    return TeacherLogits(starts, ends)


def check_distillation_settings(alpha: float, temperature: float, hidden: float = 0.0) -> None:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
        raise SettingsError(f"distill_alpha must be between 0 and 1 (the weight of the gold answers' loss), got {alpha!r}")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0.0 < temperature < float("inf"):
        raise SettingsError(f"distill_temperature must be a positive number (e.g. 2.0), got {temperature!r}")
    if isinstance(hidden, bool) or not isinstance(hidden, (int, float)) or not 0.0 <= hidden < float("inf"):
        raise SettingsError(
            f"distill_hidden must be 0 (off) or a positive weight of the hidden-state loss (e.g. 1.0), got {hidden!r}"
        )


__all__ = [
    "TeacherLogits", "check_distillation_settings", "check_same_tokenizer", "check_same_width", "distillation_loss",
    "gold_losses", "hidden_layer_map", "hidden_state_loss", "teacher_logits",
]
