"""`qatune ask MODEL -q QUESTION -c CONTEXT [--top-k K]`: answer one question.

Prints JSON: a list of `{text, start, end, score}`, best first (`[]` means "no answer");
`start` and `end` are half-open character offsets into the context (with --context-file:
into the file's text as it is, line endings included, after a UTF-8 BOM if it has one).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from qatune.cli import argtypes, options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="model directory (or hub id)")
    parser.add_argument("-q", "--question", required=True, help="the question")
    context = parser.add_mutually_exclusive_group(required=True)
    context.add_argument("-c", "--context", help="the text that holds the answer")
    context.add_argument("--context-file", help="read the context from this UTF-8 text file")
    parser.add_argument(
        "--top-k", type=argtypes.whole_number_from_one, default=1, help="how many answers (default: 1)"
    )
    options.add_model_loading(parser)


def run(args: argparse.Namespace) -> int:
    options.quiet_libraries(import_torch=False)
    options.limit_heap_fragmentation()
    context = args.context if args.context is not None else _read_context(args.context_file)
    from qatune.inference import check_text

    check_text("question", args.question)  # before the model loads: a bad text costs no wait
    check_text("context", context)
    model = options.load_model(args)
    answers = model.ask(args.question, context, top_k=args.top_k)
    options.say_cut_questions(model, [args.question])
    print(json.dumps([asdict(answer) for answer in answers], indent=2, ensure_ascii=False))
    options.say_engine(model, args)
    return 0


def _read_context(path: str) -> str:
    """The file's exact text, decoded as data files are (a UTF-8 BOM skipped, line endings kept),
    so that the answers' offsets index the file's own characters."""
    import os
    from pathlib import Path

    from qatune.data.reading import read_text_file
    from qatune.errors import DataError

    # os.path checks never raise; they come first only to word these two for a context file.
    if os.path.isdir(path):
        raise DataError(
            f"{path}: expected a UTF-8 text file for --context-file, found a directory; give the path of a text file"
        )
    if not os.path.exists(path):
        raise DataError(f"{path}: context file not found; check the path given to --context-file")
    return read_text_file(Path(path))
