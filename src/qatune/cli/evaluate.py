"""`qatune evaluate MODEL DATA [--output DIR]`: answer every question and score the answers.

Writes predictions.json and na_probs.json in the formats the official SQuAD scripts read;
`--report [FILE]` writes the report of every question (one HTML file).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from qatune.cli import options
from qatune.files import check_distinct_paths, check_output_folder, check_report_file

PREDICTIONS_FILE, NA_PROBS_FILE = "predictions.json", "na_probs.json"  # what --output holds


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="model directory (or hub id)")
    parser.add_argument("data", help="data file with gold answers")
    parser.add_argument("--output", help="folder for predictions.json and na_probs.json (default: none written)")
    parser.add_argument("--report", nargs="?", const="report.html", metavar="FILE",
                        help="write the report (every question, calibration; one HTML file) to FILE (default: report.html)")
    options.add_model_loading(parser)
    options.add_data_reading(parser)
    options.add_json(parser)


def run(args: argparse.Namespace) -> int:
    # output paths first: a bad one must not cost the reading, loading and answering before it
    if args.output:
        check_output_folder("--output", args.output)
    written = [("--output", Path(args.output) / name if args.output else None) for name in (PREDICTIONS_FILE, NA_PROBS_FILE)]
    check_distinct_paths([*written, ("--report", args.report)], [("data", args.data)])
    if args.report:
        check_report_file("--report", args.report)
    options.quiet_libraries(import_torch=False)
    options.limit_heap_fragmentation()
    from qatune.evaluation import evaluate_decoded
    from qatune.parallel import is_main_process, predict_across_processes

    say = options.say_on_stderr if is_main_process() else None
    examples, data_report = options.read_examples_and_report(args.data, args, say)
    model = options.load_model(args)
    if say is not None:
        options.say_cut_questions(model, [example.question for example in examples], say)
    # under torchrun / accelerate launch each process answers its share; the main one scores
    decoded = predict_across_processes(model, examples, batch_size=args.batch_size, progress=not args.json)
    if decoded is None:
        return 0
    evaluation = evaluate_decoded(examples, decoded, model.settings.null_threshold)
    if args.output:
        folder = Path(args.output)
        folder.mkdir(parents=True, exist_ok=True)
        options.write_json(folder / PREDICTIONS_FILE, evaluation.predictions)
        options.write_json(folder / NA_PROBS_FILE, evaluation.na_probs)
    if args.report:
        from qatune.modeling import locate_model
        from qatune.report import write_report

        write_report(locate_model(args.model), args.report, examples=examples, validation=data_report, model=model,
                     decoded=decoded, log=options.say_on_stderr)
    if args.json:
        print(json.dumps({**evaluation.metrics, "engine": model.engine.to_dict()}, indent=2))
        options.say_engine(model, args)
        return 0
    print(f"{args.data}: {len(examples)} questions, SQuAD {evaluation.version} metrics")
    for key, value in evaluation.metrics.items():
        # thresholds as they are, as `score` prints them: rounded, they would decide otherwise
        rounded = isinstance(value, float) and not key.endswith("thresh")
        print(f"{key}: {value:.4f}" if rounded else f"{key}: {value}")
    if args.output:
        print(f"wrote predictions.json and na_probs.json to {args.output}", file=sys.stderr)
    options.say_engine(model, args)
    return 0
