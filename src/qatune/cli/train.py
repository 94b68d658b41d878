"""`qatune train [TRAIN] [--dev DEV] ...`: fine-tune a model.

With no TRAIN, trains on the sample dataset shipped with qatune and evaluates on its dev
part before and after training, to show what fine-tuning does. `--report [FILE]` writes the
training report (learning curves, every dev question, calibration) at the end.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from qatune.cli import argtypes, options
from qatune.errors import SettingsError
from qatune.wording import counted
from qatune.files import check_distinct_paths, check_output_folder, check_report_file


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("train", nargs="?", help="training data (default: the sample dataset shipped with qatune)")
    parser.add_argument("--dev", help="dev data: evaluated every epoch; the best epoch by F1 is kept")
    parser.add_argument("--model", help="hub id or local directory (default: the bundled all-MiniLM-L6-v2)")
    parser.add_argument("--output", default="qatune-model", help="model directory to write (default: qatune-model)")
    parser.add_argument("--epochs", type=int, help="epochs (default: chosen from the data size, at least 2)")
    parser.add_argument("--batch-size", type=int, default=16, help="training items per batch (default: 16)")
    parser.add_argument("--lr", type=float, default=None, help="peak learning rate (default: 2e-4)")
    parser.add_argument("--warmup-ratio", type=float, default=0.1, help="share of steps warming up (default: 0.1)")
    parser.add_argument("--grad-accum", type=int, default=1, help="batches per optimizer step (default: 1)")
    parser.add_argument("--save-every", type=argtypes.whole_number_from_zero, metavar="K",
                        help="checkpoint every K epochs; 0: never (default: every 10 minutes of training)")
    parser.add_argument("--keep-checkpoints", action="store_true",
                        help="keep the checkpoints when the run finishes (to --resume it later with more --epochs)")
    parser.add_argument("--eval-every", type=argtypes.whole_number_from_one, metavar="K",
                        help="evaluate on --dev every K epochs (default: every epoch, at most 20 times a run)")
    parser.add_argument("--patience", type=argtypes.whole_number_from_one, metavar="P",
                        help="stop after P dev evaluations without a better dev F1")
    earlier_run = parser.add_mutually_exclusive_group()
    earlier_run.add_argument("--resume", action="store_true",
                             help="continue the run in --output from its last checkpoint (a higher --epochs trains it longer)")
    earlier_run.add_argument("--overwrite", action="store_true", help="replace an earlier run in --output")
    parser.add_argument("--seed", type=int, default=42, help="random seed (default: 42)")
    parser.add_argument("--no-bf16", action="store_true", help="train in float32 even where bf16 is fast")
    parser.add_argument("--max-seq-length", type=int, default=384, help="tokens per window (default: 384)")
    parser.add_argument("--doc-stride", type=int, default=128, help="overlap between windows, in tokens (default: 128)")
    parser.add_argument("--max-question-length", type=int, default=64, help="longer questions are cut (default: 64)")
    parser.add_argument("--max-answer-length", type=int,
                        help="longest answer, in tokens (default: chosen from the training answers, at least 30)")
    parser.add_argument("--hidden-dropout", type=float, metavar="P",
                        help="dropout on hidden states (default: the model's own, 0.1 for BERT); 0 trains faster, "
                             "for data of thousands of questions")
    parser.add_argument("--no-align-to-words", action="store_true",
                        help="answers may start or end inside a word (default: whole words)")
    parser.add_argument("--teacher", metavar="MODEL",
                        help="distill from this fine-tuned model (same tokenizer as --model): the student also learns "
                             "its start and end distributions")
    parser.add_argument("--distill-alpha", type=float, default=None, metavar="A",
                        help="with --teacher: loss = A * gold + (1 - A) * T^2 * KL(teacher || student) (default: 0.5)")
    parser.add_argument("--temperature", type=float, default=None, metavar="T",
                        help="with --teacher: the softmax temperature of the distillation (default: 2.0)")
    parser.add_argument("--distill-hidden", type=float, default=0.0, metavar="H",
                        help="with --teacher: also learn the teacher's hidden states, adding H * (1 - cosine) per "
                             "token between mapped layers; runs the teacher on every batch (default: 0, off)")
    parser.add_argument("--transfer", metavar="FILE",
                        help="with --teacher: more questions about more contexts (SQuAD-style; their answers are not "
                             "read) that the teacher answers and the student learns to answer as it does")
    parser.add_argument("--lora", action="store_true",
                        help="train LoRA adapters on the attention (and the QA head) instead of every weight; merged "
                             "into the weights on save (needs peft: pip install \"qatune[lora]\")")
    parser.add_argument("--lora-rank", type=argtypes.whole_number_from_one, default=None, metavar="R",
                        help="with --lora: the adapters' rank (default: 8)")
    parser.add_argument("--trust-remote-code", action="store_true", help="allow model code from the model's repository")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--report", nargs="?", const="", metavar="FILE",
                        help="write the training report (one HTML file) at the end "
                             "(default FILE: report.html in the model directory)")
    options.add_data_reading(parser)
    options.add_json(parser)


def run(args: argparse.Namespace) -> int:
    _check_outputs(args)  # before importing torch, reading data or loading a model
    options.quiet_libraries()
    from qatune import sample
    from qatune.checkpoints import CLI_OPTIONS, check_output_dir
    from qatune.training import metrics_text, train

    on_sample = args.train is None
    train_path = sample.TRAIN if on_sample else args.train
    dev_path = sample.DEV if on_sample and args.dev is None else args.dev
    with _errors_named_by_flags():
        training_arguments = _arguments(args, on_sample)
    say = _printer(args)
    # Refusals that cost nothing come before reading the model (the run folder; the data next).
    with _errors_named_by_flags():
        check_output_dir(
            Path(args.output), resume=args.resume, overwrite=args.overwrite, options=CLI_OPTIONS,
            arguments=training_arguments.to_dict(),
        )
    train_examples, train_report = options.read_examples_and_report(train_path, args, say)
    dev_examples, dev_report = options.read_examples_and_report(dev_path, args, say) if dev_path else (None, None)
    transfer_examples, transfer_report = (
        options.read_examples_and_report(args.transfer, args, say, answers=False) if args.transfer else (None, None)
    )

    with _errors_named_by_flags():
        result = train(
            train_examples, dev_examples, training_arguments, progress=not (args.quiet or args.json), log=say,
            options=CLI_OPTIONS, data_reports={"train": train_report, "dev": dev_report, "transfer": transfer_report},
            transfer_examples=transfer_examples,
        )
    before = result.untrained_metrics
    from qatune.parallel import is_main_process

    if not is_main_process():
        return 0  # the main process reports
    if args.report is not None:
        from qatune.report import write_report

        report_path = Path(args.report) if args.report else result.output_dir / "report.html"
        try:
            write_report(result.output_dir, report_path, examples=dev_examples, validation=dev_report, log=say)
        except OSError as error:  # the model is written: say so, and how to write its report later
            raise SettingsError(
                f"--report: could not write {report_path} ({error.strerror or error}); the model is written to "
                f"{result.output_dir}: `qatune report {result.output_dir} -o FILE` writes its report"
            ) from None

    summary = {
        "output": str(result.output_dir),
        "epochs": result.epochs_run,
        "best_epoch": result.best_epoch,
        "train_seconds": round(result.train_seconds, 2),
        "processes": result.processes,
        "effective_batch_size": result.effective_batch_size,
        "counts": result.counts,
        "max_answer_length": result.settings.max_answer_length,
        "null_threshold": result.settings.null_threshold,
        "dev": result.dev_metrics,
    }
    if before is not None:
        summary["dev_before"] = before
    if result.calibration is not None:
        summary["calibration"] = result.calibration.to_dict()
    if args.report is not None:
        summary["report"] = str(report_path)
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    if before is not None:
        say("dev before training: " + metrics_text(before))
    if result.dev_metrics is not None:
        say(f"dev after training (best epoch {result.best_epoch}): " + metrics_text(result.dev_metrics))
    say(f"trained {counted(result.epochs_run, 'epoch')} in {result.train_seconds:.1f} s; model written to {result.output_dir}")
    return 0


def _check_outputs(args: argparse.Namespace) -> None:
    check_output_folder("--output", args.output)
    output = Path(args.output)
    # a report file in a model folder that training has yet to create is checked with that folder
    in_new_model_folder = not output.exists() and Path(args.report or "").parent.resolve() == output.resolve()
    report = (args.report or output / "report.html") if args.report is not None else None
    data = [("training data", args.train), ("--dev", args.dev), ("--transfer", args.transfer)]
    check_distinct_paths([("--report", report)], data)
    if args.report and not in_new_model_folder:
        check_report_file("--report", args.report)


def _printer(args):
    """Print on stdout (stderr with --json); under a multi-process launch only the main process speaks."""
    from qatune.parallel import is_main_process

    if not is_main_process():
        return lambda message: None
    stream = sys.stderr if args.json else sys.stdout
    return lambda message: print(message, file=stream, flush=True)


# TrainingArguments and QASettings name their fields in errors; the command line has flags.
_FLAGS = {
    "learning_rate": "--lr", "gradient_accumulation_steps": "--grad-accum", "distill_temperature": "--temperature",
    "bf16": "--no-bf16", "align_to_words": "--no-align-to-words",
}


@contextmanager
def _errors_named_by_flags() -> Iterator[None]:
    """`learning_rate must be ...` reads `--lr must be ...` to a user of the command line, and a
    refused resume names `--batch-size`, not `batch_size`."""
    import dataclasses

    from qatune.settings import QASettings
    from qatune.training import TrainingArguments

    fields = {f.name for f in (*dataclasses.fields(TrainingArguments), *dataclasses.fields(QASettings))}

    def flag(name: str) -> str:
        return _FLAGS.get(name, "--" + name.replace("_", "-"))

    try:
        yield
    except SettingsError as error:
        message = str(error)
        first = message.partition(" ")[0].rstrip(":")
        if first in fields:  # the field it is about
            message = flag(first) + message[len(first):]
        # and any other field named with an underscore (never a plain word such as "model"), or
        # named as a refused resume names each changed one ("seed: was 42, now 3")
        named = re.compile(r"(?<![\w-])(" + "|".join(sorted((f for f in fields if "_" in f), key=len, reverse=True)) + r")\b")
        renamed = named.sub(lambda match: flag(match.group(1)), message)
        changed = re.compile(r"(?<=[(;] )(" + "|".join(sorted(fields, key=len, reverse=True)) + r")(?=: was )")
        renamed = changed.sub(lambda match: flag(match.group(1)), renamed)
        if renamed == str(error):
            raise
        raise SettingsError(renamed) from None


# Flags that tune another flag's feature: given without it, they would change nothing, silently.
_TUNING_FLAGS = {
    "distill_alpha": ("--distill-alpha", "teacher", "--teacher", "a teacher to distill from"),
    "temperature": ("--temperature", "teacher", "--teacher", "a teacher to distill from"),
    "lora_rank": ("--lora-rank", "lora", "--lora", "LoRA adapters"),
}


def _refuse_flags_without_their_feature(args: argparse.Namespace) -> None:
    for name, (flag, needed, needed_flag, feature) in _TUNING_FLAGS.items():
        if getattr(args, name) is not None and not getattr(args, needed):
            raise SettingsError(f"{flag} tunes {feature}, and none is asked for: add {needed_flag}, or leave {flag} out")


def _given_or_default(value, default):
    return default if value is None else value


def _arguments(args: argparse.Namespace, on_sample: bool):
    """The run's TrainingArguments (with its QASettings), from the command line."""
    from qatune.settings import QASettings
    from qatune.training import DEFAULT_LEARNING_RATE, TrainingArguments

    _refuse_flags_without_their_feature(args)

    settings = QASettings(
        max_seq_length=args.max_seq_length,
        doc_stride=args.doc_stride,
        max_question_length=args.max_question_length,
        max_answer_length=args.max_answer_length,
        align_to_words=not args.no_align_to_words,
    )
    training_arguments = TrainingArguments(
        output_dir=args.output,
        model=args.model,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.lr if args.lr is not None else DEFAULT_LEARNING_RATE,
        warmup_ratio=args.warmup_ratio,
        gradient_accumulation_steps=args.grad_accum,
        seed=args.seed,
        bf16=False if args.no_bf16 else None,
        hidden_dropout=args.hidden_dropout,
        save_every=args.save_every,
        keep_checkpoints=args.keep_checkpoints,
        eval_every=args.eval_every,
        patience=args.patience,
        resume=args.resume,
        overwrite=args.overwrite,
        trust_remote_code=args.trust_remote_code,
        evaluate_untrained=on_sample or args.report is not None,
        teacher=args.teacher,
        distill_alpha=_given_or_default(args.distill_alpha, TrainingArguments.distill_alpha),
        distill_temperature=_given_or_default(args.temperature, TrainingArguments.distill_temperature),
        distill_hidden=args.distill_hidden,
        lora=args.lora,
        lora_rank=_given_or_default(args.lora_rank, TrainingArguments.lora_rank),
        settings=settings,
    )
    return training_arguments
