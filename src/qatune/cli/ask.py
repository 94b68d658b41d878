"""`qatune ask MODEL -q QUESTION -c CONTEXT [--top-k K]`: answer one question.

Prints JSON: a list of `{text, start, end, score}`, best first (`[]` means "no answer");
`start` and `end` are half-open character offsets into the context.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from qatune.cli import options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="model directory (or hub id)")
    parser.add_argument("-q", "--question", required=True, help="the question")
    context = parser.add_mutually_exclusive_group(required=True)
    context.add_argument("-c", "--context", help="the text that holds the answer")
    context.add_argument("--context-file", help="read the context from this UTF-8 text file")
    parser.add_argument("--top-k", type=int, default=1, help="how many answers (default: 1)")
    options.add_model_loading(parser)


def run(args: argparse.Namespace) -> int:
    options.quiet_libraries()
    context = args.context if args.context is not None else _read_context(args.context_file)
    model = options.load_model(args)
    answers = model.ask(args.question, context, top_k=args.top_k)
    print(json.dumps([asdict(answer) for answer in answers], indent=2, ensure_ascii=False))
    return 0


def _read_context(path: str) -> str:
    from pathlib import Path

    from qatune.errors import DataError

    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: context file not found; check the path given to --context-file") from None
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: expected UTF-8 text, found a byte that is not UTF-8 at offset {error.start}") from None
