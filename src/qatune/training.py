"""Fine-tuning: a training loop that reads top to bottom.

    >>> from qatune import load_examples, train, TrainingArguments
    >>> result = train(load_examples("train.json"), load_examples("dev.json"),
    ...                TrainingArguments(output_dir="my-model", epochs=3))   # doctest: +SKIP
    >>> result.dev_metrics["f1"]                                          # doctest: +SKIP
    71.4

AdamW with linear warm-up and decay, gradient clipping and accumulation; batches of windows
of similar length, each padded to its longest window rounded up to a multiple of 32 tokens; bf16 autocast where the hardware
has fast bf16 units; every step's loss and every evaluation appended to `metrics.jsonl`; dev
evaluations with PyTorch on the weights in place, the best model by dev F1 kept and scored once
more exactly as `qatune evaluate` answers it, early stopping; checkpoints written atomically (every 10 minutes of training by default), from
which `resume` continues exactly, removed when the run finishes unless kept.
"""

from __future__ import annotations

import ctypes
import dataclasses
import hashlib
import json
import math
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from qatune import checkpoints
from qatune.data import Example
from qatune.data.examples import as_examples, check_unique_ids
from qatune.errors import ArgumentTypeError, SettingsError
from qatune.calibration import Calibration
from qatune.distillation import (
    check_distillation_settings,
    check_same_tokenizer,
    check_same_width,
    distillation_loss,
    gold_losses,
    hidden_layer_map,
    hidden_state_loss,
    teacher_logits,
)
from qatune.features import (
    TrainingItems, Windows, cached_windows, concat_windows, default_cache_dir, label_coverage, label_windows,
    with_token_types,
)
from qatune.files import with_default_permissions
from qatune.batching import as_tensors, pad_windows
from qatune.engines import engine_for_model, load_engine
from qatune.engines.torch_engine import TorchEngine, bf16_supported
from qatune.inference import QAModel
from qatune.metrics import exact_of
from qatune.modeling import (
    base_model_name,
    check_tokenizer_fits,
    load_qa_model,
    load_tokenizer,
    locate_model,
    resolve_model_name,
)
from qatune.lora import merged, trainable_share, with_lora
from qatune.wording import counted
from qatune.parallel import WAIT_FOR_OTHERS, Processes
from qatune.runlog import MetricsLog, NoLog, RunProgress
from qatune.modelcard import machine_description, validation_summary, write_readme
from qatune.settings import DEFAULT_MAX_ANSWER_LENGTH, QASettings, write_model_card

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
# With save_every=None, a checkpoint after the first epoch that ends this long (in training
# time) after the last one: small data writes few checkpoints, long runs lose little.
CHECKPOINT_SECONDS = 600
# With eval_every=None, at most this many dev evaluations in a run (every epoch below that).
MAX_EVALUATIONS = 20
# With max_answer_length=None, the longest answer considered is this share more than the
# 99th percentile of the training answers' lengths in tokens (at least the default).
ANSWER_LENGTH_PERCENTILE = 99
ANSWER_LENGTH_MARGIN = 1.2
# Training batches are padded to a multiple of this many tokens (never past max_seq_length).
# Every new batch shape makes oneDNN build and cache kernels and leaves the allocator holding
# blocks of new sizes: padded to their own longest window only, batches of 1,007 SQuAD questions
# took RSS from 1.4 GB to a 4.1 GB peak in one epoch (~70 MB per new length), more with more data.
PAD_TO_MULTIPLE = 32


@dataclass
class TrainingArguments:
    """Everything that decides a training run. Checked on creation; bad values name the field.

    epochs=None chooses the number of epochs from the data size (at least 2 epochs and at least
    AUTO_MIN_STEPS optimizer steps). bf16=None uses bf16 autocast where the hardware supports it.
    save_every=None writes a checkpoint every CHECKPOINT_SECONDS of training, 0 never, K every K
    epochs; a finished run removes them unless keep_checkpoints. eval_every=None evaluates on the
    dev data every epoch, or every few epochs so that a run has at most MAX_EVALUATIONS; the last
    epoch is always evaluated. settings.max_answer_length=None chooses it from the training answers.
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
    save_every: int | None = None
    keep_checkpoints: bool = False
    eval_every: int | None = None
    patience: int | None = None
    resume: bool = False
    overwrite: bool = False
    eval_batch_size: int = 8
    evaluate_untrained: bool = False  # dev scores before training too (the report's before/after)
    teacher: str | None = None  # distill from this model (same tokenizer): its start/end distributions
    distill_alpha: float = 0.5  # weight of the gold answers' loss; 1 - alpha: the teacher's
    distill_temperature: float = 2.0
    distill_hidden: float = 0.0  # weight of the hidden-state loss (1 - cos per token); > 0 runs the teacher on every batch
    lora: bool = False  # train LoRA adapters (and the QA head) only; merged into the weights on save
    lora_rank: int = 8
    cache_dir: str | None = None  # tokenized windows are kept here; None: the default, "": no cache
    trust_remote_code: bool = False
    settings: QASettings = dataclasses.field(default_factory=QASettings)

    def __post_init__(self) -> None:
        _positive_int(self, "batch_size", "gradient_accumulation_steps", "eval_batch_size")
        for name in ("epochs", "patience", "eval_every"):
            if getattr(self, name) is not None:
                _positive_int(self, name)
        if self.save_every is not None and (
            not isinstance(self.save_every, int) or isinstance(self.save_every, bool) or self.save_every < 0
        ):
            raise SettingsError(
                f"save_every must be None (every {CHECKPOINT_SECONDS // 60} minutes of training), 0 (never) "
                f"or a whole number of epochs, got {self.save_every!r}"
            )
        _number_in(self, "learning_rate", "between 0 and 1 (e.g. 2e-4)", lambda x: 0 < x < 1)
        _number_in(self, "warmup_ratio", "in [0, 1)", lambda x: 0 <= x < 1)
        _number_in(self, "weight_decay", "a number >= 0 (e.g. 0.01)", lambda x: 0 <= x < math.inf)
        _number_in(self, "max_grad_norm", "a number > 0 (e.g. 1.0)", lambda x: 0 < x < math.inf)
        for name in ("attention_dropout", "hidden_dropout"):
            if getattr(self, name) is not None:
                _number_in(self, name, "in [0, 1), or None for the model's own", lambda x: 0 <= x < 1)
        # numpy's generators, which the seed also seeds, take 0 to 2**32 - 1
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or not 0 <= self.seed < 2**32:
            raise SettingsError(f"seed must be a whole number from 0 to 2**32 - 1, got {self.seed!r}")
        _positive_int(self, "lora_rank")
        for name in ("resume", "overwrite", "keep_checkpoints", "evaluate_untrained", "lora", "trust_remote_code"):
            if not isinstance(getattr(self, name), bool):
                raise SettingsError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.bf16 is not None and not isinstance(self.bf16, bool):
            raise SettingsError(f"bf16 must be True, False or None (where the machine supports it), got {self.bf16!r}")
        if not isinstance(self.output_dir, (str, os.PathLike)) or not str(self.output_dir).strip():
            raise SettingsError(f"output_dir must be a folder path, got {self.output_dir!r}")
        if self.resume and self.overwrite:
            raise SettingsError(
                "resume and overwrite exclude each other: resume continues the run in output_dir, "
                "overwrite starts a new one there; choose one"
            )
        if isinstance(self.settings, dict):
            unknown = sorted(set(self.settings) - {field.name for field in dataclasses.fields(QASettings)})
            if unknown:
                raise SettingsError(
                    f"settings: unknown keys {', '.join(map(repr, unknown))}; expected those of QASettings "
                    f"({', '.join(field.name for field in dataclasses.fields(QASettings))})"
                )
            self.settings = QASettings.from_dict(self.settings)
        if not isinstance(self.settings, QASettings):
            raise SettingsError(f"settings must be a QASettings (or a dict of its fields), got {self.settings!r}")
        check_distillation_settings(self.distill_alpha, self.distill_temperature, self.distill_hidden)
        if self.distill_hidden > 0 and not self.teacher:
            raise SettingsError("distill_hidden learns a teacher's hidden states: name the teacher too (teacher / --teacher)")

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
    settings: QASettings
    calibration: Calibration | None = None  # the temperature fitted on the dev data
    untrained_metrics: dict[str, float] | None = None  # dev scores before training (evaluate_untrained)
    processes: int = 1
    effective_batch_size: int | None = None  # items per optimizer step: batch x processes x accumulation


def train(
    train_examples: Sequence[Example],
    dev_examples: Sequence[Example] | None = None,
    args: TrainingArguments | None = None,
    *,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    options: checkpoints.OptionNames = checkpoints.PYTHON_OPTIONS,
    data_reports: dict[str, Any] | None = None,
    transfer_examples: Sequence[Example] | None = None,
) -> TrainResult:
    """Fine-tune `args.model` on `train_examples`; write the model to `args.output_dir`.

    `transfer_examples` (with `args.teacher`): more questions, whose answers are not read; the
    teacher answers them and the student learns its distributions there (a transfer set).

    `log` receives one line for each thing worth telling (the data, the plan, each dev
    evaluation, warnings); `options` names the options in messages (the CLI passes its flags).
    `data_reports` ({"train": ValidationReport, "dev": ...}, optional) are summarized in
    `qatune.json` and the model card: what reading the data repaired and skipped.
    """
    from accelerate import Accelerator
    from accelerate.utils import InitProcessGroupKwargs, set_seed

    if args is not None and not isinstance(args, TrainingArguments):
        raise ArgumentTypeError(
            f"args must be a qatune.training.TrainingArguments (TrainingArguments(output_dir=..., epochs=...)), "
            f"got {type(args).__name__}"
        )
    args = args or TrainingArguments()
    log = log or (lambda message: None)
    output_dir = Path(args.output_dir)
    train_examples = as_examples("train_examples", train_examples)
    dev_examples = as_examples("dev_examples", dev_examples) if dev_examples is not None else None
    transfer_examples = as_examples("transfer_examples", transfer_examples) if transfer_examples is not None else None
    if not train_examples:
        raise SettingsError("there are no training examples: check the training file (qatune validate FILE)")
    # before any work: a repeated dev id would otherwise stop the run at its first evaluation
    for name, examples in (("train_examples", train_examples), ("dev_examples", dev_examples), ("transfer_examples", transfer_examples)):
        if examples:
            check_unique_ids(examples, name)
    _check_transfer(transfer_examples, args, options)
    # Refusals that cost nothing come before loading the model and tokenizing.
    checkpoints.check_output_dir(
        output_dir, resume=args.resume, overwrite=args.overwrite, options=options, arguments=args.to_dict()
    )

    # --- Model, data, windows -------------------------------------------------------------
    set_seed(args.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    use_bf16 = bf16_supported(device) if args.bf16 is None else args.bf16
    # Autocast is applied in the loop, not by accelerate, so that the model itself stays plain
    # and the kept model is scored exactly as `qatune evaluate` scores it.
    # cpu=True on a machine without a GPU: several processes there use gloo (accelerate otherwise sees none)
    accelerator = Accelerator(
        mixed_precision="no", cpu=device.type == "cpu", kwargs_handlers=[InitProcessGroupKwargs(timeout=WAIT_FOR_OTHERS)]
    )
    processes = Processes.joined(accelerator)
    if not processes.is_main:  # one voice: the main process tells, evaluates and writes
        log, progress = (lambda message: None), False
    tokenizer = load_tokenizer(args.model, trust_remote_code=args.trust_remote_code)
    model = load_qa_model(
        args.model,
        attention_dropout=args.attention_dropout,
        hidden_dropout=args.hidden_dropout,
        trust_remote_code=args.trust_remote_code,
    )
    check_tokenizer_fits(tokenizer, model.config, resolve_model_name(args.model))
    answering_attention = model.config._attn_implementation  # what `QAModel.from_pretrained` gets
    # On CPUs the plain attention trains ~8% faster than SDPA, whose backward pass is slow there.
    training_attention = "eager" if device.type == "cpu" else answering_attention
    _set_attention(model, training_attention)
    if args.lora:
        model = with_lora(model, rank=args.lora_rank)
        trainable, total = trainable_share(model)
        log(f"LoRA rank {args.lora_rank}: training {trainable:,} of {total:,} parameters ({100 * trainable / total:.2f}%); merged on save")
    cache = None if args.cache_dir == "" else Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    windows = cached_windows(train_examples, tokenizer, args.settings, cache)
    items = label_windows(train_examples, windows)
    settings, too_long = _with_answer_length(args.settings, items, log, options)
    counts = _counts(train_examples, windows, items, dev_examples) | {"answers_longer_than_max_answer_length": too_long}
    coverage = label_coverage(windows, items)
    log(_describe_data(counts, items))
    if len(items) == 0:
        raise SettingsError("no training item is left: every answer falls outside every window")
    if transfer_examples:
        transfer_windows = cached_windows(transfer_examples, tokenizer, args.settings, cache)
        items = items.with_teacher_only(np.arange(len(windows), len(windows) + len(transfer_windows)))
        windows = concat_windows([windows, transfer_windows], [len(train_examples), len(transfer_examples)])
        counts |= {"transfer_questions": len(transfer_examples), "transfer_windows": len(transfer_windows)}
        log(
            f"transfer set: {len(transfer_examples)} questions -> {len(transfer_windows)} windows, "
            "learned from the teacher's answers alone (their own answers are not read)"
        )
    dev_windows = cached_windows(dev_examples, tokenizer, args.settings, cache) if dev_examples else None
    windows = _token_ids_only(windows)
    teacher, states_teacher, layer_map, typed_windows = _teacher(args, model, tokenizer, windows, settings, device, processes, log)
    _release_free_memory()

    global_batch = args.batch_size * processes.count  # dealt out among the processes
    batches_per_epoch = math.ceil(len(items) / global_batch)
    steps_per_epoch = math.ceil(batches_per_epoch / args.gradient_accumulation_steps)
    # a resume keeps its run's plan unless it asks for more
    epochs = args.epochs or (checkpoints.planned_epochs(output_dir) if args.resume else None) or auto_epochs(steps_per_epoch)
    eval_every = args.eval_every or math.ceil(epochs / MAX_EVALUATIONS)
    total_steps = epochs * steps_per_epoch
    warmup_steps = int(args.warmup_ratio * total_steps)
    log(_describe_plan(args, epochs, steps_per_epoch, eval_every if dev_examples else None))
    effective_batch = global_batch * args.gradient_accumulation_steps
    log(
        f"effective batch: {effective_batch} items (batch {args.batch_size} x {processes.count} "
        f"process{'es' if processes.count > 1 else ''} x {args.gradient_accumulation_steps} accumulation "
        f"step{'s' if args.gradient_accumulation_steps > 1 else ''})"
    )

    # --- Optimizer and schedule -------------------------------------------------------------
    model.to(accelerator.device)
    optimizer = torch.optim.AdamW(
        _parameter_groups(model, args.weight_decay), lr=args.learning_rate, fused=_fused_adamw_available()
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _linear_warmup_decay(step, warmup_steps, total_steps))
    model, optimizer = accelerator.prepare(model, optimizer)
    plain_model = accelerator.unwrap_model(model)

    arguments = args.to_dict() | {
        "model": checkpoints.model_identity(args.model), "teacher": checkpoints.model_identity(args.teacher),
        "teacher_sha256": checkpoints.model_digest(args.teacher),  # a teacher changed in place is another teacher
        "epochs": epochs, "settings": settings.to_dict(),
        "processes": processes.count, "effective_batch_size": effective_batch,
    }
    # a resume with other data is another run
    arguments |= {
        "train_sha256": examples_digest(train_examples),
        "dev_sha256": examples_digest(dev_examples) if dev_examples else None,
    }
    if transfer_examples:  # the transfer set's questions and contexts: its answers are never read
        arguments["transfer_sha256"] = examples_digest(transfer_examples, answers=False)
    state, best_weights = checkpoints.TrainingState(), None
    if args.resume:
        state, best_weights = checkpoints.load_latest(
            output_dir, arguments, plain_model, optimizer, schedule, options, rank=processes.rank
        )
        log(f"resumed from the checkpoint after epoch {state.epoch}; training to epoch {epochs}")
    elif processes.is_main:
        checkpoints.start_fresh(output_dir, args.overwrite)
    resumed_from = state.epoch  # 0 for a new run
    processes.wait()
    if processes.is_main:
        metrics_log = MetricsLog(output_dir / checkpoints.METRICS_LOG, keep_through_epoch=state.epoch, log=log)
    else:
        metrics_log = NoLog()
    bar = RunProgress(epochs * batches_per_epoch, state.epoch * batches_per_epoch, progress, log)
    checkpointed_at = state.train_seconds
    untrained = None
    if args.evaluate_untrained and dev_examples and state.epoch == 0 and processes.is_main:
        with _attention(plain_model, answering_attention, training_attention):
            untrained = _evaluate(TorchEngine(plain_model, bf16=use_bf16), tokenizer, settings, args, dev_examples, dev_windows).metrics
        metrics_log.write(type="baseline", epoch=0, step=0, **untrained)
        bar.write("before training: dev " + metrics_text(untrained))

    # --- The loop ------------------------------------------------------------------------
    try:
        pad_id = tokenizer.pad_token_id or 0
        item_lengths = windows.lengths[items.window]  # tokens of each item's window
        for epoch in range(state.epoch + 1, epochs + 1):
            if state.stopped_early:
                break
            epoch_started = time.perf_counter()
            model.train()
            bar.epoch(epoch, epochs)
            batches = length_grouped_batches(item_lengths, global_batch, seed=(args.seed, epoch))
            running_loss = None
            for batch_number, whole_batch in enumerate(batches, start=1):
                batch, weight = processes.share(whole_batch)
                # every share padded as the whole batch is: the models' loss counts the padding's
                # logits, so N processes train as one only if each window sees the same padding
                longest = int(item_lengths[whole_batch].max())
                padded = pad_windows(windows, items.window[batch].tolist(), pad_id, PAD_TO_MULTIPLE, settings.max_seq_length, longest)
                inputs = as_tensors(padded, accelerator.device)
                labels = {
                    "start_positions": torch.from_numpy(items.start[batch]).to(accelerator.device),
                    "end_positions": torch.from_numpy(items.end[batch]).to(accelerator.device),
                }
                # with a teacher the loss is formed below from each window's gold loss: the model's own
                # batch loss (computed when it is given the labels) would be work thrown away
                given_labels = labels if teacher is None else {}
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                    outputs = model(**inputs, **given_labels, output_hidden_states=states_teacher is not None)
                loss = outputs.loss
                if teacher is not None:
                    teacher_start, teacher_end = teacher.batch(items.window[batch], inputs["input_ids"].shape[1], accelerator.device)
                    labelled = torch.from_numpy(items.labelled(batch)).to(accelerator.device) if items.teacher_only else None
                    loss = distillation_loss(
                        gold_losses(outputs.start_logits, outputs.end_logits, labels["start_positions"], labels["end_positions"]),
                        outputs.start_logits, outputs.end_logits, teacher_start, teacher_end,
                        inputs["attention_mask"], args.distill_alpha, args.distill_temperature, labelled,
                    )
                if states_teacher is not None:
                    teacher_inputs = inputs if typed_windows is None else as_tensors(  # with the token types it reads
                        pad_windows(typed_windows, items.window[batch].tolist(), pad_id, PAD_TO_MULTIPLE, settings.max_seq_length, longest),
                        accelerator.device,
                    )
                    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                        teacher_states = states_teacher(**teacher_inputs, output_hidden_states=True).hidden_states
                share_loss = loss * weight  # the share's part of the whole batch's mean over windows
                if states_teacher is not None:
                    # a mean over the share's real tokens: weighted by its part of the batch's tokens
                    token_weight = float(weight * item_lengths[batch].mean() / item_lengths[whole_batch].mean())
                    hidden = hidden_state_loss(outputs.hidden_states, teacher_states, inputs["attention_mask"], layer_map)
                    share_loss = share_loss + args.distill_hidden * token_weight * hidden
                accelerator.backward(share_loss / _accumulated(batch_number, len(batches), args.gradient_accumulation_steps))
                if batch_number % args.gradient_accumulation_steps == 0 or batch_number == len(batches):
                    accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                    optimizer.step()
                    schedule.step()
                    optimizer.zero_grad(set_to_none=True)
                    state.step += 1
                value = processes.batch_mean(share_loss.detach())  # the whole batch's, not this share's
                running_loss = value if running_loss is None else 0.9 * running_loss + 0.1 * value
                metrics_log.write(type="step", epoch=epoch, step=state.step, loss=value, lr=schedule.get_last_lr()[0])
                bar.advance(running_loss)
            state.epoch = epoch
            state.train_seconds += time.perf_counter() - epoch_started

            if dev_examples and (epoch % eval_every == 0 or epoch == epochs) and processes.is_main:
                with _attention(plain_model, answering_attention, training_attention):
                    # PyTorch on the weights in place: converting to the answering engine costs
                    # seconds per evaluation; the kept model is scored with that engine at the end
                    evaluation = _evaluate(TorchEngine(plain_model, bf16=use_bf16), tokenizer, settings, args, dev_examples, dev_windows)
                metrics_log.write(type="eval", epoch=epoch, step=state.step, **evaluation.metrics)
                bar.write(f"epoch {epoch}: dev " + metrics_text(evaluation.metrics))
                if state.record_evaluation(epoch, evaluation.metrics, evaluation.null_threshold, args.patience):
                    best_weights = checkpoints.copy_weights(plain_model)
            state.stopped_early = processes.from_main(state.stopped_early)
            finished = epoch == epochs or state.stopped_early
            # the main process's clock decides, so that every process waits at the same place
            if processes.from_main(_checkpoint_due(args, epoch, finished, state.train_seconds - checkpointed_at)):
                rng_states = processes.gather(checkpoints.rng_state())  # each process draws its own dropout
                if processes.is_main:
                    checkpoints.save(output_dir, plain_model, optimizer, schedule, state, arguments, best_weights, rng_states)
                checkpointed_at = state.train_seconds
                processes.wait()
        if best_weights is not None and processes.is_main:
            plain_model.load_state_dict(best_weights)
        plain_model = merged(plain_model)  # LoRA adapters folded in: a plain transformers model from here on
        _set_attention(plain_model, answering_attention)
        calibration = None
        if state.best_epoch is not None and processes.is_main:
            # The saved model's temperature, dev scores and null threshold are those `qatune
            # evaluate` gives: the kept weights answered by the engine it picks, scores
            # calibrated on the dev data, then the threshold tuned on the calibrated scores.
            engine = engine_for_model(plain_model, tokenizer, bf16=args.bf16)
            answerer = QAModel(engine, tokenizer, settings)
            calibration = answerer.fit_temperature(dev_examples, batch_size=args.eval_batch_size, windows=dev_windows)
            evaluation = answerer.tune_null_threshold(dev_examples, batch_size=args.eval_batch_size, windows=dev_windows)
            settings = answerer.settings
            state.best_metrics, state.null_threshold = dict(evaluation.metrics), evaluation.null_threshold
            metrics_log.write(
                type="kept", epoch=state.best_epoch, step=state.step, engine=engine.describe(),
                temperature=calibration.temperature, **evaluation.metrics,
            )
            bar.write(calibration.describe())
            bar.write(f"kept epoch {state.best_epoch}, answered with {engine.describe()}: dev " + metrics_text(evaluation.metrics))
            del engine, answerer  # the engine's compiled copy of the weights
    finally:  # an interrupted run still leaves a whole log and a clean terminal
        bar.close()
        metrics_log.close()

    # --- The model directory ----------------------------------------------------------------
    settings = dataclasses.replace(settings, null_threshold=state.null_threshold)
    if not processes.is_main:
        processes.wait()  # until the main process has written the model
        return TrainResult(output_dir, state.epoch, None, None, state.train_seconds, counts, [], settings,
                           processes=processes.count, effective_batch_size=effective_batch)
    plain_model.save_pretrained(output_dir, safe_serialization=True)
    with_default_permissions(*output_dir.glob("*.safetensors"))
    tokenizer.save_pretrained(output_dir)
    data = counts | {"train_sha256": arguments["train_sha256"], "train_coverage": coverage}
    if dev_examples:
        data |= {"dev_sha256": arguments["dev_sha256"], "dev_unanswerable": sum(e.unanswerable for e in dev_examples)}
    if transfer_examples:
        data["transfer_sha256"] = arguments["transfer_sha256"]
    if data_reports:
        data["validation"] = {name: validation_summary(report) for name, report in data_reports.items() if report is not None}
    write_model_card(
        output_dir,
        settings,
        base_model=base_model_name(args.model),
        training_arguments=arguments,
        data=data,
        best_epoch=state.best_epoch,
        dev_metrics=state.best_metrics,
        calibration=calibration.to_dict() if calibration is not None else None,
        train_seconds=round(state.train_seconds, 2),
        machine=machine_description(device, use_bf16),
    )
    write_readme(output_dir)
    # a resume that had nothing left to train keeps the checkpoints it found: they were kept on
    # purpose, and removing them would stop a later resume with more epochs
    if not args.keep_checkpoints and state.epoch > resumed_from:
        checkpoints.remove(output_dir)
    for warning in _no_answer_warnings(counts, dev_examples, options):
        log(warning)
    processes.wait()
    return TrainResult(
        output_dir=output_dir,
        epochs_run=state.epoch,
        best_epoch=state.best_epoch,
        dev_metrics=state.best_metrics,
        train_seconds=state.train_seconds,
        counts=counts,
        history=state.history,
        settings=settings,
        calibration=calibration,
        untrained_metrics=untrained,
        processes=processes.count,
        effective_batch_size=effective_batch,
    )


def _checkpoint_due(args: TrainingArguments, epoch: int, finished: bool, seconds_since_last: float) -> bool:
    """Whether to write a checkpoint after this epoch. The last epoch gets one only when the
    checkpoints are kept (a finished run removes them)."""
    if args.save_every == 0:
        return False
    if finished:
        return args.keep_checkpoints
    if args.save_every is None:
        return seconds_since_last >= CHECKPOINT_SECONDS
    return epoch % args.save_every == 0


def _check_transfer(transfer_examples, args: TrainingArguments, options: checkpoints.OptionNames) -> None:
    """Transfer questions are taught by a teacher only, and a given transfer set must hold some."""
    if transfer_examples is None:
        return
    if not args.teacher:
        raise SettingsError(
            f"transfer questions ({options.transfer}) have no gold answers: only a teacher can teach them; "
            f"name one ({options.teacher}) or leave the transfer questions out"
        )
    if not transfer_examples:
        raise SettingsError(f"the transfer set ({options.transfer}) has no questions: check its file (qatune validate FILE)")


def _token_ids_only(windows: Windows) -> Windows:
    """The windows as training reads them: token ids (and types) only, as views into one array
    each, in the smallest unsigned integer type that holds them (uint16 for vocabularies up to
    65,536 tokens, uint8 for token types). make_windows keeps 4 int64 arrays per window (42,834
    questions: 175,000 arrays, 224 MB) for the whole run; the offsets served labelling only.
    Here: 23 MB for 40,280 questions (61 MB as int32), so that the training peak hardly grows
    with the data."""
    borders = np.cumsum(windows.lengths)[:-1]

    def packed(arrays: list[np.ndarray]) -> list[np.ndarray]:
        values = np.concatenate(arrays)  # token ids and types are never negative
        return np.split(values.astype(np.min_scalar_type(values.max(initial=0))), borders)

    types = windows.token_type_ids
    return Windows(
        input_ids=packed(windows.input_ids),
        token_type_ids=packed(types) if types is not None else None,
        offsets=[],
        word_offsets=[],
        example_index=windows.example_index,
        truncated_questions=windows.truncated_questions,
    )


def _release_free_memory() -> None:
    """Hand the heap's free pages back to the system (glibc only; elsewhere nothing): once, after
    windowing, whose many small arrays and lists were freed but would stay in RSS all the run."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _teacher(
    args: TrainingArguments, student, tokenizer, windows: Windows, settings: QASettings, device, processes: Processes, log
):
    """With a teacher: its logits of every training window (computed once, before training) and,
    for hidden-state distillation, the teacher itself, kept to give its states batch by batch,
    with the teacher layer each student layer learns, and the windows with the token types the
    teacher reads where the student's have none (else None). All None without a teacher."""
    if not args.teacher:
        return None, None, None, None
    started = time.perf_counter()
    student_name, teacher_name = resolve_model_name(args.model), resolve_model_name(args.teacher)
    teacher_tokenizer = load_tokenizer(args.teacher, trust_remote_code=args.trust_remote_code)
    check_same_tokenizer(tokenizer, teacher_tokenizer, student_name, teacher_name)
    _check_teacher_length(args.teacher, teacher_name, settings, args.trust_remote_code)
    states = args.distill_hidden > 0
    if states:  # refused before the teacher's logits cost anything
        teacher = load_qa_model(args.teacher, trust_remote_code=args.trust_remote_code)
        check_same_width(student.config, teacher.config, student_name, teacher_name)
        layer_map = hidden_layer_map(student.config.num_hidden_layers, teacher.config.num_hidden_layers)
    engine = load_engine(  # --no-bf16 (args.bf16 False) keeps the teacher in float32 too
        locate_model(args.teacher), teacher_tokenizer, device=str(device), bf16=args.bf16,
        trust_remote_code=args.trust_remote_code,
    )
    typed_windows = None
    if "token_type_ids" in engine.input_names and windows.token_type_ids is None:
        # the teacher reads segments the student's windows have none of
        windows = typed_windows = with_token_types(windows, tokenizer.sep_token_id)
    # each process computes its part of the windows, then all of them are exchanged
    mine = processes.own_part(len(windows))
    logits = teacher_logits(
        engine, windows, pad_token_id=tokenizer.pad_token_id or 0, max_length=settings.max_seq_length, only=mine
    )
    processes.fill_from_all(logits.starts, mine)
    processes.fill_from_all(logits.ends, mine)
    shared = f", shared by {processes.count} processes" if processes.count > 1 else ""
    log(
        f"distilling from {args.teacher}: its logits of {len(windows)} training windows computed in "
        f"{time.perf_counter() - started:.1f} s ({engine.name} {engine.precision}{shared}); loss = {args.distill_alpha:g} * gold + "
        f"{1 - args.distill_alpha:g} * {args.distill_temperature:g}^2 * KL(teacher || student) at temperature "
        f"{args.distill_temperature:g}"
    )
    del engine  # its memory is the student's now
    if not states:
        return logits, None, None, None
    teacher.to(device).eval().requires_grad_(False)
    log(
        f"hidden-state distillation (weight {args.distill_hidden:g}): student layers 1-{len(layer_map)} learn the "
        f"outputs of teacher layers {', '.join(map(str, layer_map))} (1 - cosine per token)"
    )
    return logits, teacher, layer_map, typed_windows


def _check_teacher_length(teacher: str, name: str, settings: QASettings, trust_remote_code: bool) -> None:
    """The teacher answers the student's windows: it must take windows of max_seq_length tokens."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(locate_model(teacher), trust_remote_code=trust_remote_code)
    positions = getattr(config, "max_position_embeddings", None)
    if positions is not None and settings.max_seq_length > positions:
        raise SettingsError(
            f"the teacher {name} takes at most {positions} tokens per window, but the student's windows are "
            f"max_seq_length {settings.max_seq_length}; train the student with max_seq_length {positions} or less"
        )


def _evaluate(engine, tokenizer, settings: QASettings, args, dev_examples, dev_windows):
    """Dev scores with the no-answer threshold tuned on them, as `qatune evaluate` computes them."""
    answerer = QAModel(engine, tokenizer, settings)
    return answerer.tune_null_threshold(dev_examples, batch_size=args.eval_batch_size, windows=dev_windows)


def _set_attention(model, implementation: str) -> None:
    """Switch the attention implementation in place. A transformers too old to switch keeps the
    one it loaded (its default), for training and evaluation alike."""
    switch = getattr(model, "set_attn_implementation", None)
    if switch is not None and model.config._attn_implementation != implementation:
        switch(implementation)


@contextmanager
def _attention(model, during: str, after: str):
    """Run a block with another attention implementation (the one answering uses)."""
    _set_attention(model, during)
    try:
        yield
    finally:
        _set_attention(model, after)


def _with_answer_length(
    settings: QASettings, items: TrainingItems, log: Callable[[str], None], options: checkpoints.OptionNames
) -> tuple[QASettings, int]:
    """The settings with `max_answer_length` chosen from the training answers when it is None,
    and the number of training answers longer than it (the model can never give those)."""
    lengths = items.answer_lengths
    chosen = settings.max_answer_length
    if chosen is None:
        percentile = float(np.percentile(lengths, ANSWER_LENGTH_PERCENTILE)) if lengths.size else 0.0
        chosen = max(DEFAULT_MAX_ANSWER_LENGTH, math.ceil(ANSWER_LENGTH_MARGIN * percentile))
        chosen = min(chosen, settings.context_room)
        bounds = f"at least {DEFAULT_MAX_ANSWER_LENGTH}"
        if chosen == settings.context_room < DEFAULT_MAX_ANSWER_LENGTH:
            bounds = f"at most the {chosen} tokens a window has for its context"
        log(
            f"max_answer_length: {chosen} tokens (chosen from the training answers: {ANSWER_LENGTH_PERCENTILE}% "
            f"of them have at most {math.ceil(percentile)} tokens; {bounds})"
        )
    too_long = int(np.count_nonzero(lengths > chosen))
    if too_long:
        log(
            f"{too_long} training answers are longer than max_answer_length ({chosen} tokens): the model "
            f"cannot give them; raise {options.max_answer_length} to let it"
        )
    return dataclasses.replace(settings, max_answer_length=chosen), too_long


def _accumulated(batch_number: int, batches: int, accumulation: int) -> int:
    """How many batches the optimizer step of batch `batch_number` (from 1) adds up: `accumulation`,
    fewer in the epoch's last step when the batches do not divide evenly (its gradient is their mean too).

        >>> [_accumulated(n, 5, 2) for n in range(1, 6)]
        [2, 2, 2, 2, 1]
    """
    first_of_step = (batch_number - 1) // accumulation * accumulation
    return min(accumulation, batches - first_of_step)


def _describe_plan(args: TrainingArguments, epochs: int, steps_per_epoch: int, eval_every: int | None) -> str:
    """One line: how many epochs and why, how often it evaluates and checkpoints."""
    if args.epochs:
        why = "as asked"
    elif args.resume:
        why = "as the resumed run planned"
    else:
        why = (
            f"chosen from the data size: at least 2 epochs and {AUTO_MIN_STEPS} optimizer steps, at most "
            f"{AUTO_MAX_EPOCHS} epochs, at {steps_per_epoch} step{'s' if steps_per_epoch > 1 else ''} an epoch"
        )
    text = f"training {counted(epochs, 'epoch')} ({why})"
    if eval_every is not None:
        text += "; dev evaluation every epoch" if eval_every == 1 else f"; dev evaluation every {eval_every} epochs and after the last"
    if args.save_every == 0:
        text += "; no checkpoints"
    elif args.save_every is None:
        text += f"; a checkpoint every {CHECKPOINT_SECONDS // 60} minutes of training"
    else:
        text += f"; a checkpoint every {args.save_every} epochs"
    return text


def _no_answer_warnings(
    counts: dict[str, int], dev_examples: Sequence[Example] | None, options: checkpoints.OptionNames
) -> list[str]:
    """When the model learned to say "no answer" but nothing tuned when it should."""
    unanswerable = counts["train_unanswerable"]
    dev_unanswerable = sum(example.unanswerable for example in dev_examples or ())
    if not unanswerable or dev_unanswerable:
        return []
    where = "no dev data" if not dev_examples else "the dev data has no unanswerable question"
    return [
        f"warning: {unanswerable} training questions are unanswerable, but {where} to tune the no-answer "
        f"threshold on, so it stays at 1.0 and the model always answers. Give {options.dev} with unanswerable "
        f"questions (for example, move a tenth of the training file's questions, unanswerable ones "
        f"included, into a dev file) and train again"
    ]


def metrics_text(metrics: dict) -> str:
    return f"EM {exact_of(metrics):.2f}, F1 {metrics['f1']:.2f}"


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


def examples_digest(examples: Sequence[Example], answers: bool = True) -> str:
    """A hash of the data's content, saved with the model to tell which data trained it;
    answers=False leaves the answers out (a transfer set's: never read, so free to change)."""
    digest = hashlib.sha256()
    for example in examples:
        golds = [[a.text, a.start] for a in example.answers] if answers else []  # [] as a question without any
        record = [example.id, example.question, example.context, golds]
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
        "train_unanswerable": sum(example.unanswerable for example in train_examples),
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


def _number_in(args, name: str, expected: str, holds) -> None:
    """A SettingsError naming the field unless it is a number (not a bool, not NaN) for which `holds`."""
    value = getattr(args, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not holds(value):  # NaN holds nothing
        raise SettingsError(f"{name} must be {expected}, got {value!r}")


def _positive_int(args, *names: str) -> None:
    for name in names:
        value = getattr(args, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise SettingsError(f"{name} must be a whole number of at least 1, got {value!r}")
