"""`qatune predict MODEL DATA -o predictions.json`: answer every question of a data file.

The output maps each question id to its answer text ("" for no answer), the format the
official SQuAD scripts read; `--na-probs FILE` also writes the no-answer probabilities, and
`--details FILE` the top answers with character offsets and scores ([] for no answer, as `ask`
gives them), and for each question its text, `context_index` (its context's number among the
file's distinct contexts, in order of first appearance) and `place` in the file, so answers can
be matched to questions without ids.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING

from qatune.cli import argtypes, options
from qatune.files import check_distinct_paths, check_output_file

if TYPE_CHECKING:
    from qatune.data import Example
    from qatune.decoding import Decoded


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="model directory (or hub id)")
    parser.add_argument("data", help="data file with the questions (gold answers, if any, are not used)")
    parser.add_argument("-o", "--output", required=True, help="predictions file to write")
    parser.add_argument("--na-probs", help="also write question id -> no-answer probability to this file")
    parser.add_argument(
        "--details",
        help="also write to this file, per question: its text, context number and place, and the top "
        "answers with offsets and scores",
    )
    parser.add_argument(
        "--top-k",
        type=argtypes.whole_number_from_one,
        default=1,
        help="answers kept per question in --details (default: 1)",
    )
    options.add_model_loading(parser)
    options.add_data_reading(parser)


def run(args: argparse.Namespace) -> int:
    # output paths first: a bad one must not cost the reading, loading and answering before it
    outputs = (("-o/--output", args.output), ("--na-probs", args.na_probs), ("--details", args.details))
    for option, path in outputs:
        if path:
            check_output_file(option, path)
    check_distinct_paths(outputs, [("data", args.data)])
    options.quiet_libraries(import_torch=False)
    options.limit_heap_fragmentation()
    from qatune.evaluation import official_predictions
    from qatune.parallel import is_main_process, predict_across_processes

    # gold answers are not needed to answer: unlabelled questions, or ones whose gold answer is
    # broken, are answered all the same
    say = options.say_on_stderr if is_main_process() else None
    examples = options.read_examples_and_report(args.data, args, say, answers=False)[0]
    model = options.load_model(args)
    if say is not None:
        options.say_cut_questions(model, [example.question for example in examples], say)
    # under torchrun / accelerate launch each process answers its share; the main one writes
    decoded = predict_across_processes(model, examples, batch_size=args.batch_size, top_k=args.top_k, progress=True)
    if decoded is None:
        return 0
    predictions, na_probs = official_predictions(examples, decoded, model.settings.null_threshold)
    options.write_json(args.output, predictions)
    if args.na_probs:
        options.write_json(args.na_probs, na_probs)
    if args.details:
        options.write_json(args.details, _details(examples, decoded, model.answers_of, args.top_k))
    unanswered = sum(1 for text in predictions.values() if not text)
    print(f"wrote {len(predictions)} predictions to {args.output} ({unanswered} answered 'no answer')", file=sys.stderr)
    options.say_engine(model, args)
    return 0


def _details(examples: Sequence[Example], decoded: Sequence[Decoded], answers_of, top_k: int) -> dict[str, dict]:
    """Question id -> its top answers as `ask` gives them ([] where the model says "no answer",
    as predictions.json has ""), with what tells the question apart where the data has no ids:
    its text, its context (numbered in order of first appearance) and its place."""
    context_numbers: dict[str, int] = {}
    details = {}
    for example, result in zip(examples, decoded):
        details[example.id] = {
            "question": example.question,
            "context_index": context_numbers.setdefault(example.context, len(context_numbers)),
            "place": example.place,
            "answers": [asdict(answer) for answer in answers_of(result, top_k)],
            "null_prob": result.null_prob,
        }
    return details
