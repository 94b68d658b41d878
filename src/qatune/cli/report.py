"""`qatune report MODEL_DIR [--data DEV] [-o report.html]`: one self-contained HTML page about a
trained model: learning curves, data counts, and with --data every question answered, grouped
and highlighted, and how far the scores can be trusted.
"""

from __future__ import annotations

import argparse

from qatune.cli import options
from qatune.files import check_distinct_paths, check_report_file


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL_DIR", help="the model folder `qatune train` wrote")
    parser.add_argument("--data", help="data file with gold answers (dev data): answer and show every question")
    parser.add_argument("-o", "--output", default="report.html", help="the HTML file to write (default: report.html)")
    options.add_model_loading(parser)
    options.add_data_reading(parser)


def run(args: argparse.Namespace) -> int:
    from qatune.report import check_model_folder, write_report

    # before reading data or loading a model
    check_distinct_paths([("-o/--output", args.output)], [("--data", args.data)])
    check_report_file("-o/--output", args.output)
    check_model_folder(args.model)
    examples = validation = model = None
    if args.data:
        options.quiet_libraries(import_torch=False)
        examples, validation = options.read_examples_and_report(args.data, args, options.say_on_stderr)
        model = options.load_model(args)
    write_report(
        args.model, args.output, examples=examples, validation=validation, model=model,
        log=options.say_on_stderr, batch_size=args.batch_size,
    )
    if model is not None:
        options.say_engine(model, args)
    return 0
