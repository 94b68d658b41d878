"""Answering questions with a fine-tuned model: batched windows in, ranked answers out.

    >>> model = QAModel.from_pretrained("./qatune-model")          # doctest: +SKIP
    >>> model.ask("When did it open?", "The bridge opened in 1932.")  # doctest: +SKIP
    [Answer(text='1932', start=21, end=25, score=0.91)]
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from qatune.data import Example
from qatune.decoding import Answer, Decoded, best_answer, decode
from qatune.evaluation import Evaluation, evaluate_decoded
from qatune.errors import SettingsError
from qatune.features import Windows, make_windows
from qatune.modeling import load_qa_model, load_tokenizer
from qatune.settings import QASettings, read_model_card

ONNX_FILE = "model.onnx"
# Answers whose probabilities are within this log-ratio (about 5%) of each other are close
# calls: bf16 rounding can swap them, so `predict` recomputes them in float32.
CLOSE_CALL = 0.05


def bf16_supported(device: torch.device) -> bool:
    """Whether bf16 autocast runs on fast bf16 units of this device."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def pad_batch(windows: Windows, indices: Sequence[int], pad_token_id: int, device: torch.device) -> dict:
    """Model inputs for some windows, padded to the longest of them (dynamic padding)."""
    length = max(len(windows.input_ids[i]) for i in indices)
    input_ids = np.full((len(indices), length), pad_token_id, dtype=np.int64)
    attention_mask = np.zeros((len(indices), length), dtype=np.int64)
    token_types = np.zeros((len(indices), length), dtype=np.int64) if windows.token_type_ids is not None else None
    for row, window in enumerate(indices):
        ids = windows.input_ids[window]
        input_ids[row, : len(ids)] = ids
        attention_mask[row, : len(ids)] = 1
        if token_types is not None:
            token_types[row, : len(ids)] = windows.token_type_ids[window]
    batch = {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(attention_mask)}
    if token_types is not None:
        batch["token_type_ids"] = torch.from_numpy(token_types)
    return {key: value.to(device) for key, value in batch.items()}


@torch.inference_mode()
def window_logits(
    model,
    windows: Windows,
    *,
    pad_token_id: int,
    batch_size: int = 16,
    bf16: bool = False,
    progress: bool = False,
    only: Sequence[int] | None = None,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Start and end logits of every window (float32, unpadded), in window order.

    Windows are batched by length, so a batch holds windows of similar length and little padding.
    `only` restricts the work to some windows; the others get empty arrays.
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    head_hook = _float32_qa_head(model) if bf16 else None
    wanted = np.arange(len(windows)) if only is None else np.asarray(only, dtype=np.int64)
    order = wanted[np.argsort(windows.lengths[wanted], kind="stable")]
    starts: list[np.ndarray] = [np.empty(0)] * len(windows)
    ends: list[np.ndarray] = [np.empty(0)] * len(windows)
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    try:
        for indices in _progress(batches, progress, "answering"):
            inputs = pad_batch(windows, indices, pad_token_id, device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                output = model(**inputs)
            start_batch = output.start_logits.float().cpu().numpy()
            end_batch = output.end_logits.float().cpu().numpy()
            for row, window in enumerate(indices):
                length = len(windows.input_ids[window])
                starts[window] = start_batch[row, :length]
                ends[window] = end_batch[row, :length]
    finally:
        model.train(was_training)
        if head_hook is not None:
            head_hook.remove()
    return starts, ends


def _float32_qa_head(model):
    """Compute the QA head (hidden size -> 2 logits) in float32 under bf16 autocast.

    The encoder's last layer norm gives float32 hidden states; a bf16 head would round the
    logits to 8 bits of mantissa (steps of 1/64 near 3) and flip close answers. The head is
    a sliver of the work. Returns the hook's handle, or None for a model without `qa_outputs`.
    """
    head = getattr(model, "qa_outputs", None)
    if not isinstance(head, torch.nn.Linear):
        return None

    def float32_output(module, inputs, output):
        bias = None if module.bias is None else module.bias.float()
        with torch.autocast(output.device.type, enabled=False):
            return torch.nn.functional.linear(inputs[0].float(), module.weight.float(), bias)

    return head.register_forward_hook(float32_output)


def decode_examples(
    examples: Sequence[Example],
    windows: Windows,
    start_logits: Sequence[np.ndarray],
    end_logits: Sequence[np.ndarray],
    settings: QASettings,
    top_k: int = 1,
) -> list[Decoded]:
    """Gather each example's windows and decode its ranked answers."""
    spans = windows.word_offsets if settings.align_to_words else windows.offsets
    decoded = []
    for example, group in zip(examples, windows.of_example()):
        decoded.append(
            decode(
                example.context,
                [start_logits[w] for w in group],
                [end_logits[w] for w in group],
                [spans[w] for w in group],
                n_best=settings.n_best,
                max_answer_length=settings.max_answer_length,
                top_k=top_k,
            )
        )
    return decoded


@dataclass
class QAModel:
    """A question-answering model with its tokenizer and the settings it was trained with."""

    model: object
    tokenizer: object
    settings: QASettings
    bf16: bool = False

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        device: str | None = None,
        bf16: bool | None = None,
        trust_remote_code: bool = False,
    ) -> "QAModel":
        """Load a model directory written by qatune (or any QA model: default settings then).

        bf16=None uses bf16 autocast where the device has fast bf16 units; False keeps float32.
        """
        card = read_model_card(path) if Path(path).is_dir() else {"settings": {}}
        settings = QASettings.from_dict(card.get("settings", {}))
        tokenizer = load_tokenizer(path, trust_remote_code=trust_remote_code)
        if (Path(path) / ONNX_FILE).is_file():  # written by `qatune export --onnx`
            from qatune.export import load_onnx_model

            return cls(load_onnx_model(path), tokenizer, settings, bf16=False)
        model = load_qa_model(path, trust_remote_code=trust_remote_code)
        target = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        model.to(target).eval()
        return cls(model, tokenizer, settings, bf16=bf16_supported(target) if bf16 is None else bf16)

    def ask(self, question: str, context: str, top_k: int = 1) -> list[Answer]:
        """The `top_k` best answers to one question, best first.

        An empty list means "no answer": the no-answer probability exceeds the model's
        null_threshold (only models trained on data with unanswerable questions say so).
        """
        _check_text("question", question)
        _check_text("context", context)
        example = Example(id="question", question=question, context=context)
        decoded = self.predict([example], top_k=top_k)[0]
        if best_answer(decoded, self.settings.null_threshold) is None:
            return []
        return decoded.answers

    def predict(
        self, examples: Iterable[Example], *, batch_size: int = 16, top_k: int = 1, progress: bool = False
    ) -> list[Decoded]:
        """Ranked answers and the no-answer probability of every example, in order."""
        if batch_size < 1:
            raise SettingsError(f"batch_size must be at least 1, got {batch_size}")
        examples = list(examples)
        if not examples:
            return []
        windows = make_windows(examples, self.tokenizer, self.settings)
        logits = partial(
            window_logits, self.model, windows, pad_token_id=self.tokenizer.pad_token_id or 0, batch_size=batch_size
        )
        starts, ends = logits(bf16=self.bf16, progress=progress)
        ranked = max(top_k, 2)  # the runner-up tells a close call
        decoded = decode_examples(examples, windows, starts, ends, self.settings, top_k=ranked)
        close = [i for i, d in enumerate(decoded) if _close_call(d, self.settings.null_threshold)] if self.bf16 else []
        if close:
            # bf16 moves logits by a few hundredths: where that could flip the answer, ask again in float32.
            redo = np.flatnonzero(np.isin(windows.example_index, close))
            exact_starts, exact_ends = logits(bf16=False, only=redo)
            for window in redo:
                starts[window], ends[window] = exact_starts[window], exact_ends[window]
            decoded = decode_examples(examples, windows, starts, ends, self.settings, top_k=ranked)
        return [Decoded(d.answers[:top_k], d.null_prob) for d in decoded]

    def evaluate(self, examples: Sequence[Example], *, batch_size: int = 16, progress: bool = False) -> Evaluation:
        """Answer every example with the model's null_threshold and score the answers."""
        examples = list(examples)
        decoded = self.predict(examples, batch_size=batch_size, progress=progress)
        return evaluate_decoded(examples, decoded, self.settings.null_threshold)


def _close_call(decoded: Decoded, null_threshold: float) -> bool:
    """Whether the best answer, or the answer/no-answer decision, is within CLOSE_CALL."""
    answers = decoded.answers
    if len(answers) >= 2 and answers[1].score > 0 and math.log(answers[0].score / answers[1].score) < CLOSE_CALL:
        return True
    if null_threshold < 1.0 and decoded.null_prob > 0:
        return abs(math.log(decoded.null_prob / null_threshold)) < CLOSE_CALL
    return False


def _check_text(name: str, value: object) -> None:
    if not isinstance(value, str) or not value.strip():
        raise SettingsError(f"the {name} must be a non-empty string, got {value!r}")


def _progress(items, enabled: bool, description: str):
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=description, unit="batch", leave=False)
