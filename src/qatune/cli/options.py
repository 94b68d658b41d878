"""Command-line options shared by several commands, so that they mean the same everywhere."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")


def add_data_reading(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--format", default="auto", choices=["auto", "squad", "paragraphs", "records"],
        help="layout of the data file (default: detected)",
    )
    parser.add_argument(
        "--on-error", default="repair", choices=["repair", "strict", "skip"],
        help="what to do with answers whose offsets do not match (default: repair what can be)",
    )


def add_model_loading(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch-size", type=int, default=16, help="windows per forward pass (default: 16)")
    parser.add_argument("--no-bf16", action="store_true", help="compute in float32 even where bf16 is fast")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    parser.add_argument(
        "--trust-remote-code", action="store_true", help="allow model code from the model's repository to run"
    )


def load_model(args: argparse.Namespace):
    from qatune.inference import QAModel

    return QAModel.from_pretrained(
        args.model,
        device=args.device,
        bf16=False if args.no_bf16 else None,
        trust_remote_code=args.trust_remote_code,
    )


def read_examples(path, args: argparse.Namespace, say=None):
    """The examples of a data file (an error if it has errors under --on-error); `say` gets one
    line with the counts and what was repaired or skipped, as `qatune validate` reports them."""
    from qatune.data import read_dataset

    examples, report = read_dataset(path, format=args.format, on_error=args.on_error)
    report.raise_for_errors()
    if say is not None:
        say(f"{path}: {len(examples)} questions ({report.unanswerable} unanswerable); {report.repair_line()}")
    return examples


def say_on_stderr(message: str) -> None:
    """Tell the user something without mixing it into a command's output on stdout."""
    import sys

    print(message, file=sys.stderr, flush=True)


def quiet_libraries() -> None:
    """Keep transformers' and accelerate's informational chatter out of the command's output."""
    import logging

    import torch  # noqa: F401  (importing torch resets its logger: import it before quieting it)

    for name in ("transformers", "accelerate", "torch"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        from transformers.utils import logging as transformers_logging

        transformers_logging.set_verbosity_error()
        transformers_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass


def write_json(path, value) -> None:
    """Write a JSON file the way every command does: UTF-8, indented, newline at the end."""
    Path(path).write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
