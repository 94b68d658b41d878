"""`qatune score DATA PREDICTIONS.json`: the official SQuAD EM/F1 of a predictions file.

    $ qatune score dev.json predictions.json --na-probs na_probs.json
    warning: 3 questions without a prediction, scored as wrong (EM 0, F1 0): sb4, 7, al2
    official SQuAD v2.0 metrics, 6 questions
    exact              33.33
    f1                 33.33
    total              6
    ...
    best_f1            50.00
    best_f1_thresh     0.2

`--json` prints one JSON object with the official keys instead (the numbers unrounded).
Questions without a prediction and predictions for unknown ids are reported on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys

from qatune.cli import options  # torch-free: it imports torch only inside the functions that load models


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", metavar="DATA", help="gold data (SQuAD-style JSON or JSONL)")
    parser.add_argument(
        "predictions",
        metavar="PREDICTIONS.json",
        help='JSON object: question id -> predicted answer text ("" for no answer)',
    )
    parser.add_argument(
        "--na-probs",
        metavar="NA_PROBS.json",
        help="JSON object: question id -> probability (0 to 1) that it has no answer; "
        "adds best_exact/best_f1 and their thresholds",
    )
    parser.add_argument(
        "--na-prob-thresh",
        type=float,
        default=None,
        metavar="T",
        help="answer 'no answer' when the no-answer probability is above T (default 1.0)",
    )
    parser.add_argument("--json", action="store_true", help="print the metrics as one JSON object")
    options.add_data_reading(parser)


def run(args: argparse.Namespace) -> int:
    from qatune.errors import DataError, SettingsError
    from qatune.metrics import check_na_probs, read_na_probs, read_predictions, score

    thresh = 1.0 if args.na_prob_thresh is None else args.na_prob_thresh
    if not 0 <= thresh <= 1:  # also rejects nan
        raise SettingsError(
            f"--na-prob-thresh: expected a number from 0 to 1, found {args.na_prob_thresh}; "
            "a question counts as unanswered when its no-answer probability is above it"
        )
    # skipped questions leave the totals: a warning then, and silence when nothing was skipped
    lines: list[str] = []
    examples, report = options.read_examples_and_report(args.data, args, lines.append)
    if args.on_error == "skip" and (report.skipped_questions or report.skipped_answers):
        _warn(lines[0])
    if not examples:
        raise DataError(f"{args.data}: no questions found; expected data with questions to score")
    predictions = read_predictions(args.predictions)
    na_probs = None
    if args.na_probs:
        na_probs = read_na_probs(args.na_probs)
        predicted = [ex.id for ex in examples if ex.id in predictions]
        check_na_probs(na_probs, predicted, source=args.na_probs)
    elif args.na_prob_thresh is not None:
        _warn("--na-prob-thresh has no effect without --na-probs")

    result = score(examples, predictions, na_probs, na_prob_thresh=thresh)
    if na_probs is not None and result.version == "v1.1":
        _warn(
            f"--na-probs: {args.data} has no unanswerable questions, so its metrics are SQuAD v1.1's, "
            "which have no no-answer threshold: the no-answer probabilities are not used"
        )
    for line in result.warnings():
        _warn(line)
    if args.json:
        print(json.dumps(result.metrics, indent=2))
    else:
        print(f"official SQuAD {result.version} metrics, {len(examples)} questions")
        for name, value in result.metrics.items():
            print(f"{name:<18} {_format(name, value)}")
    return 0


def _format(name: str, value: float) -> str:
    """Percentages to two decimals; counts and thresholds as they are."""
    if name.endswith("total") or name.endswith("thresh"):
        return f"{value}"
    return f"{value:.2f}"


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)
