"""Fine-tuning: a training loop that reads top to bottom.

    >>> from qatune import load_examples, train, TrainingArguments
    >>> result = train(load_examples("train.json"), load_examples("dev.json"),
    ...                TrainingArguments(output_dir="my-model", epochs=3))   # doctest: +SKIP
    >>> result.dev_metrics["f1"]                                          # doctest: +SKIP
    71.4

AdamW with linear warm-up and decay, gradient clipping and accumulation; batches of windows
of similar length, each padded to its own longest window; bf16 autocast where the hardware
has fast bf16 units; every step's loss and every evaluation appended to `metrics.jsonl`; a dev
evaluation every epoch, the best model by dev F1 kept, early stopping; checkpoints written
atomically every `save_every` epochs, from which `resume` continues exactly.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from qatune import checkpoints
from qatune.data import Example
from qatune.errors import SettingsError
from qatune.features import TrainingItems, Windows, cached_windows, default_cache_dir, label_windows
from qatune.evaluation import evaluate_decoded
from qatune.inference import bf16_supported, decode_examples, pad_batch, window_logits
from qatune.modeling import load_qa_model, load_tokenizer, resolve_model_name
from qatune.settings import QASettings, write_model_card

# Measured on ../shared/data with the default model (see BENCHMARKS.md): a small encoder
# fine-tuned on a few thousand questions wants a learning rate well above the 3e-5 to 5e-5
# usual for BERT-base, and attention-probability dropout costs ~40% of a CPU step for no F1.
# Hidden-state dropout is kept: without it 1,007 SQuAD questions trained faster and scored
# higher, but the 72-question sample over 20 epochs overfitted (BENCHMARKS.md).
DEFAULT_LEARNING_RATE = 2e-4
# With epochs=None, train for at least this many optimizer steps (and at least 2 epochs),
# so that a few dozen questions get enough updates and a few thousand get 2 epochs.
AUTO_MIN_STEPS = 100
AUTO_MAX_EPOCHS = 60


@dataclass
class TrainingArguments:
    """Everything that decides a training run. Checked on creation; bad values name the field.

    epochs=None chooses the number of epochs from the data size (at least 2 epochs and at least
    AUTO_MIN_STEPS optimizer steps). bf16=None uses bf16 autocast where the hardware supports it.
    """

    output_dir: str = "qatune-model"
    model: str | None = None
    epochs: int | None = None
    batch_size: int = 16
    learning_rate: float = DEFAULT_LEARNING_RATE
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0
    gradient_accumulation_steps: int = 1
    seed: int = 42
    bf16: bool | None = None
    attention_dropout: float | None = 0.0  # None: the model's own configuration
    hidden_dropout: float | None = None  # 0 trains ~20% faster; kept: it helps on small data
    save_every: int = 1
    patience: int | None = None
    resume: bool = False
    overwrite: bool = False
    eval_batch_size: int = 16
    cache_dir: str | None = None  # tokenized windows are kept here; None: the default, "": no cache
    trust_remote_code: bool = False
    settings: QASettings = field(default_factory=QASettings)

    def __post_init__(self) -> None:
        _positive_int(self, "batch_size", "gradient_accumulation_steps", "eval_batch_size")
        if self.epochs is not None:
            _positive_int(self, "epochs")
        if self.patience is not None:
            _positive_int(self, "patience")
        if not isinstance(self.save_every, int) or self.save_every < 0:
            raise SettingsError(f"save_every must be 0 (never) or a whole number of epochs, got {self.save_every!r}")
        if not 0 < self.learning_rate < 1:
            raise SettingsError(f"learning_rate must be between 0 and 1 (e.g. 2e-4), got {self.learning_rate!r}")
        if not 0 <= self.warmup_ratio < 1:
            raise SettingsError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio!r}")
        if self.weight_decay < 0 or self.max_grad_norm <= 0:
            raise SettingsError(
                f"weight_decay must be >= 0 and max_grad_norm > 0, got {self.weight_decay!r} and {self.max_grad_norm!r}"
            )
        for name in ("attention_dropout", "hidden_dropout"):
            value = getattr(self, name)
            if value is not None and not 0 <= value < 1:
                raise SettingsError(f"{name} must be in [0, 1), or None for the model's own, got {value!r}")
        if isinstance(self.settings, dict):
            self.settings = QASettings.from_dict(self.settings)

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["settings"] = self.settings.to_dict()
        return values


@dataclass
class TrainResult:
    output_dir: Path
    epochs_run: int
    best_epoch: int | None
    dev_metrics: dict[str, float] | None
    train_seconds: float
    counts: dict[str, int]
    history: list[dict[str, Any]]


def train(
    train_examples: Sequence[Example],
    dev_examples: Sequence[Example] | None = None,
    args: TrainingArguments | None = None,
    *,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> TrainResult:
    """Fine-tune `args.model` on `train_examples`; write the model to `args.output_dir`."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    args = args or TrainingArguments()
    log = log or (lambda message: None)
    output_dir = Path(args.output_dir)
    if not train_examples:
        raise SettingsError("there are no training examples: check the training file (qatune validate FILE)")

    # --- Model, data, windows -------------------------------------------------------------
    set_seed(args.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    use_bf16 = bf16_supported(device) if args.bf16 is None else args.bf16
    # accelerate places the model and wraps its forward pass in bf16 autocast.
    accelerator = Accelerator(mixed_precision="bf16" if use_bf16 else "no")
    tokenizer = load_tokenizer(args.model, trust_remote_code=args.trust_remote_code)
    model = load_qa_model(
        args.model,
        attention_dropout=args.attention_dropout,
        hidden_dropout=args.hidden_dropout,
        # On CPUs the plain attention trains ~8% faster than SDPA, whose backward pass is slow there.
        attention="eager" if device.type == "cpu" else None,
        trust_remote_code=args.trust_remote_code,
    )
    cache = None if args.cache_dir == "" else Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    windows = cached_windows(train_examples, tokenizer, args.settings, cache)
    items = label_windows(train_examples, windows)
    counts = _counts(train_examples, windows, items, dev_examples)
    log(_describe_data(counts, items))
    if len(items) == 0:
        raise SettingsError("no training item is left: every answer falls outside every window")
    dev_windows = cached_windows(dev_examples, tokenizer, args.settings, cache) if dev_examples else None

    batches_per_epoch = math.ceil(len(items) / args.batch_size)
    steps_per_epoch = math.ceil(batches_per_epoch / args.gradient_accumulation_steps)
    epochs = args.epochs or auto_epochs(steps_per_epoch)
    total_steps = epochs * steps_per_epoch
    warmup_steps = int(args.warmup_ratio * total_steps)

    # --- Optimizer and schedule -------------------------------------------------------------
    model.to(accelerator.device)
    optimizer = torch.optim.AdamW(
        _parameter_groups(model, args.weight_decay), lr=args.learning_rate, fused=_fused_adamw_available()
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _linear_warmup_decay(step, warmup_steps, total_steps))
    model, optimizer = accelerator.prepare(model, optimizer)

    state = checkpoints.TrainingState()
    if args.resume:
        state = checkpoints.load_latest(output_dir, args.to_dict(), accelerator.unwrap_model(model), optimizer, schedule)
        log(f"resumed from the checkpoint after epoch {state.epoch}")
    else:
        checkpoints.start_fresh(output_dir, args.overwrite)
    metrics_log = _MetricsLog(output_dir / "metrics.jsonl", keep_through_epoch=state.epoch)

    # --- The loop ------------------------------------------------------------------------
    pad_id = tokenizer.pad_token_id or 0
    for epoch in range(state.epoch + 1, epochs + 1):
        if state.stopped_early:
            break
        epoch_started = time.perf_counter()
        model.train()
        batches = length_grouped_batches(windows.lengths[items.window], args.batch_size, seed=(args.seed, epoch))
        bar = _bar(batches, progress, f"epoch {epoch}/{epochs}")
        running_loss = None
        for batch_number, batch in enumerate(bar, start=1):
            inputs = pad_batch(windows, items.window[batch].tolist(), pad_id, accelerator.device)
            labels = {
                "start_positions": torch.from_numpy(items.start[batch]).to(accelerator.device),
                "end_positions": torch.from_numpy(items.end[batch]).to(accelerator.device),
            }
            loss = model(**inputs, **labels).loss
            accelerator.backward(loss / args.gradient_accumulation_steps)
            if batch_number % args.gradient_accumulation_steps == 0 or batch_number == len(batches):
                accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                optimizer.step()
                schedule.step()
                optimizer.zero_grad(set_to_none=True)
                state.step += 1
            value = float(loss.detach())
            running_loss = value if running_loss is None else 0.9 * running_loss + 0.1 * value
            metrics_log.write(type="step", epoch=epoch, step=state.step, loss=value, lr=schedule.get_last_lr()[0])
            if progress:
                bar.set_postfix(loss=f"{running_loss:.3f}")
        state.epoch = epoch
        state.train_seconds += time.perf_counter() - epoch_started

        if dev_examples:
            dev_metrics, null_threshold = evaluate_windows(
                accelerator.unwrap_model(model), tokenizer, dev_examples, dev_windows, args, use_bf16
            )
            metrics_log.write(type="eval", epoch=epoch, step=state.step, **dev_metrics)
            log(f"epoch {epoch}: dev " + ", ".join(f"{k} {v:.2f}" for k, v in dev_metrics.items() if k in ("exact_match", "exact", "f1")))
            state.record_evaluation(epoch, dev_metrics, null_threshold, args.patience)
            if state.best_epoch == epoch:
                checkpoints.save_best(output_dir, accelerator.unwrap_model(model))
        if args.save_every and (epoch % args.save_every == 0 or epoch == epochs):
            checkpoints.save(output_dir, accelerator.unwrap_model(model), optimizer, schedule, state, args.to_dict())
    metrics_log.close()

    # --- The model directory ----------------------------------------------------------------
    final_model = accelerator.unwrap_model(model)
    if state.best_epoch is not None:
        checkpoints.load_best(output_dir, final_model)
    settings = dataclasses.replace(args.settings, null_threshold=state.null_threshold)
    final_model.save_pretrained(output_dir, safe_serialization=True)
    tokenizer.save_pretrained(output_dir)
    write_model_card(
        output_dir,
        settings,
        base_model=resolve_model_name(args.model),
        training_arguments=args.to_dict() | {"epochs": epochs},
        data=counts | {"train_sha256": examples_digest(train_examples)}
        | ({"dev_sha256": examples_digest(dev_examples)} if dev_examples else {}),
        best_epoch=state.best_epoch,
        dev_metrics=state.best_metrics,
        train_seconds=round(state.train_seconds, 2),
    )
    return TrainResult(
        output_dir=output_dir,
        epochs_run=state.epoch,
        best_epoch=state.best_epoch,
        dev_metrics=state.best_metrics,
        train_seconds=state.train_seconds,
        counts=counts,
        history=state.history,
    )


def evaluate_windows(model, tokenizer, examples, windows: Windows, args: TrainingArguments, bf16: bool):
    """Dev metrics of the model as it is, with the no-answer threshold tuned on the dev data
    (1.0, always answer, when it has no unanswerable question)."""
    starts, ends = window_logits(model, windows, pad_token_id=tokenizer.pad_token_id or 0, batch_size=args.eval_batch_size, bf16=bf16)
    decoded = decode_examples(examples, windows, starts, ends, args.settings)
    evaluation = evaluate_decoded(examples, decoded, tune_threshold=True)
    return evaluation.metrics, evaluation.null_threshold


def auto_epochs(steps_per_epoch: int) -> int:
    """Epochs for at least AUTO_MIN_STEPS optimizer steps, at least 2, at most AUTO_MAX_EPOCHS."""
    return max(2, min(AUTO_MAX_EPOCHS, math.ceil(AUTO_MIN_STEPS / steps_per_epoch)))


def length_grouped_batches(lengths: np.ndarray, batch_size: int, *, seed) -> list[np.ndarray]:
    """Shuffled batches of items of similar length, so dynamic padding pads little.

    Items are shuffled, cut into groups of 50 batches, each group sorted by length and cut into
    batches, and the batches shuffled. The order depends only on `seed` (for exact resumes).
    """
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(lengths))
    group = batch_size * 50
    batches = []
    for begin in range(0, len(order), group):
        chunk = order[begin : begin + group]
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def examples_digest(examples: Sequence[Example]) -> str:
    """A hash of the data's content, saved with the model to tell which data trained it."""
    digest = hashlib.sha256()
    for example in examples:
        record = [example.id, example.question, example.context, [[a.text, a.start] for a in example.answers]]
        digest.update(json.dumps(record, ensure_ascii=False).encode("utf-8"))
    return digest.hexdigest()


def _linear_warmup_decay(step: int, warmup_steps: int, total_steps: int) -> float:
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))


def _parameter_groups(model, weight_decay: float) -> list[dict]:
    """No weight decay on biases and layer norms."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            (no_decay if parameter.ndim < 2 else decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _fused_adamw_available() -> bool | None:
    """Fused AdamW is several times faster per step on CPU and GPU where torch has it."""
    try:
        torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], fused=True)
        return True
    except (RuntimeError, TypeError, ValueError):
        return None


def _counts(train_examples, windows: Windows, items: TrainingItems, dev_examples) -> dict[str, int]:
    return {
        "train_questions": len(train_examples),
        "train_unanswerable": sum(example.is_impossible or not example.answers for example in train_examples),
        "train_windows": len(windows),
        "train_items": len(items),
        "answers_outside_windows": items.answers_outside,
        "truncated_questions": windows.truncated_questions,
        "dev_questions": len(dev_examples or ()),
    }


def _describe_data(counts: dict[str, int], items: TrainingItems) -> str:
    text = (
        f"{counts['train_questions']} questions -> {counts['train_windows']} windows, "
        f"{counts['train_items']} training items"
    )
    if counts["truncated_questions"]:
        text += f"; {counts['truncated_questions']} questions cut to max_question_length"
    if items.answers_outside:
        text += (
            f"; {items.answers_outside} answers fall outside every window and are not trained on "
            f"(e.g. {', '.join(items.answer_places[:3])}; raise --max-seq-length or --doc-stride)"
        )
    return text


def _positive_int(args, *names: str) -> None:
    for name in names:
        value = getattr(args, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise SettingsError(f"{name} must be a whole number of at least 1, got {value!r}")


class _MetricsLog:
    """Appends one JSON object per line. A resumed run first drops the records of epochs after
    its checkpoint (they are trained again), then appends to the same file."""

    def __init__(self, path: Path, keep_through_epoch: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            kept = [line for line in path.read_text(encoding="utf-8").splitlines()
                    if line.strip() and json.loads(line).get("epoch", 0) <= keep_through_epoch]
            path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        self._file = path.open("a", encoding="utf-8")

    def close(self) -> None:
        self._file.close()

    def write(self, **record: Any) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()


def _bar(batches, enabled: bool, description: str):
    if not enabled:
        return batches
    from tqdm.auto import tqdm

    return tqdm(batches, desc=description, unit="batch", leave=False)
