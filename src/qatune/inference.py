"""Answering questions with a fine-tuned model: batched windows in, ranked answers out.

    >>> model = QAModel.from_pretrained("./qatune-model")          # doctest: +SKIP
    >>> model.ask("When did it open?", "The bridge opened in 1932.")  # doctest: +SKIP
    [Answer(text='1932', start=21, end=25, score=0.91)]
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from qatune.data import Example
from qatune.decoding import Answer, Decoded, best_answer, decode
from qatune.evaluation import Evaluation, evaluate_decoded, robust_null_threshold
from qatune.errors import SettingsError
from qatune.features import Windows, make_windows
from qatune.modeling import check_tokenizer_fits, load_config, load_qa_model, load_tokenizer, locate_model
from qatune.settings import QASettings, read_settings

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


DEVICE_CHOICES = "cpu, cuda or cuda:N (N: a GPU number, from 0)"


def resolve_device(device: str | None) -> torch.device:
    """The torch device for `--device` (None: cuda where available, else cpu), checked here so
    that a bad value is a SettingsError, not torch's error at the first tensor moved.

        >>> resolve_device("cpu")
        device(type='cpu')
    """
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    value = str(device)
    kind, _, number = value.partition(":")
    if not (value in ("cpu", "cuda") or (kind == "cuda" and number.isascii() and number.isdecimal())):
        raise SettingsError(f"--device: expected {DEVICE_CHOICES}, got {value!r}")
    problem = None if kind == "cpu" else _cuda_problem(int(number or 0))
    if problem:
        raise SettingsError(f"--device: expected {DEVICE_CHOICES}, got {value!r}, but {problem}")
    return torch.device(value)


def _cuda_problem(index: int) -> str | None:
    """Why CUDA device `index` cannot be used here, or None when it can."""
    if not torch.cuda.is_available():
        reason = "this PyTorch is a CPU-only build" if torch.version.cuda is None else "no CUDA GPU is visible"
        return f"CUDA is not available here ({reason}); use --device cpu"
    count = torch.cuda.device_count()
    if index >= count:
        names = "cuda:0" if count == 1 else f"cuda:0 to cuda:{count - 1}"
        return f"this machine has {count} CUDA GPU{'s' if count > 1 else ''} ({names})"
    return None


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
                max_answer_length=settings.answer_length,
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
        target = resolve_device(device)  # before any loading: a bad value fails at once
        source = locate_model(path)
        settings = read_settings(source) if Path(source).is_dir() else QASettings()
        tokenizer = load_tokenizer(source, trust_remote_code=trust_remote_code)
        if (Path(source) / ONNX_FILE).is_file():  # written by `qatune export --onnx`
            from qatune.export import load_onnx_model

            check_tokenizer_fits(tokenizer, load_config(source, trust_remote_code=trust_remote_code), source)
            return cls(load_onnx_model(source), tokenizer, settings, bf16=False)
        model = load_qa_model(source, trust_remote_code=trust_remote_code)
        check_tokenizer_fits(tokenizer, model.config, source)
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
        self,
        examples: Iterable[Example],
        *,
        batch_size: int = 16,
        top_k: int = 1,
        progress: bool = False,
        windows: Windows | None = None,
    ) -> list[Decoded]:
        """Ranked answers and the no-answer probability of every example, in order.

        `windows` are the examples' windows when the caller has them already (cut with this
        model's tokenizer and settings, e.g. from the window cache); None cuts them here.
        """
        if batch_size < 1:
            raise SettingsError(f"batch_size must be at least 1, got {batch_size}")
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise SettingsError(f"top_k must be a whole number of at least 1 (how many answers to give), got {top_k!r}")
        examples = list(examples)
        if not examples:
            return []
        if windows is None:
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

    def evaluate(
        self,
        examples: Sequence[Example],
        *,
        batch_size: int = 16,
        progress: bool = False,
        windows: Windows | None = None,
    ) -> Evaluation:
        """Answer every example with the model's null_threshold and score the answers."""
        examples = list(examples)
        decoded = self.predict(examples, batch_size=batch_size, progress=progress, windows=windows)
        return evaluate_decoded(examples, decoded, self.settings.null_threshold)

    def tune_null_threshold(
        self, examples: Sequence[Example], *, batch_size: int = 16, windows: Windows | None = None
    ) -> Evaluation:
        """Set the no-answer threshold that gives the best F1 on `examples` (dev data), then
        score them with it exactly as `evaluate` would (1.0, always answer, when no example
        is unanswerable).

        The threshold is placed midway (in log space) between two neighbouring no-answer
        probabilities, never on one, so that the float noise of another batch shape or another
        CPU cannot move a question across it.
        """
        examples = list(examples)
        self.settings = dataclasses.replace(self.settings, null_threshold=1.0)
        always_answer = self.predict(examples, batch_size=batch_size, windows=windows)
        threshold = robust_null_threshold(examples, always_answer)
        self.settings = dataclasses.replace(self.settings, null_threshold=threshold)
        if threshold == 1.0:  # nothing changes: the answers are those already computed
            return evaluate_decoded(examples, always_answer, threshold)
        return self.evaluate(examples, batch_size=batch_size, windows=windows)


def _close_call(decoded: Decoded, null_threshold: float) -> bool:
    """Whether the best answer, or the answer/no-answer decision, is within CLOSE_CALL."""
    answers = decoded.answers
    if len(answers) >= 2 and answers[1].score > 0 and math.log(answers[0].score / answers[1].score) < CLOSE_CALL:
        return True
    if null_threshold < 1.0 and decoded.null_prob > 0:
        return abs(math.log(decoded.null_prob / null_threshold)) < CLOSE_CALL
    return False


def _check_text(name: str, value: object) -> None:
    import re

    if not isinstance(value, str) or not value.strip():
        raise SettingsError(f"the {name} must be a non-empty string, got {value!r}")
    # A lone surrogate has no UTF-8 form: the tokenizer would fail with a TypeError deep inside.
    lone = re.search("[\ud800-\udfff]", value)
    if lone is None:
        return
    code, position = ord(lone.group()), lone.start()
    if 0xDC80 <= code <= 0xDCFF:  # how Python's surrogateescape holds a byte of argv that is not UTF-8
        found = (
            f"the byte 0x{code - 0xDC00:02x} at character {position}, which is not UTF-8 "
            f"(Python holds it as the lone surrogate U+{code:04X})"
        )
    else:
        found = f"the lone surrogate U+{code:04X} at character {position}, which has no UTF-8 form"
    raise SettingsError(f"the {name} must be valid UTF-8 text, found {found}; pass the {name} as UTF-8 text")


def _progress(items, enabled: bool, description: str):
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=description, unit="batch", leave=False)
