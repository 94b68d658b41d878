"""`qatune shrink MODEL --layers K -o DIR`: a smaller student that keeps K of the model's layers.

Prints the parameters before and after, and how much faster the student answers (the sample's
dev questions, answered by each model with the same engine; --no-speed skips it). A DIR that
holds anything is refused unless --overwrite, which replaces the model it holds (everything in
it) once the student is written; never the teacher.
"""

from __future__ import annotations

import argparse
import time

from qatune.cli import argtypes, options
from qatune.errors import SettingsError
from qatune.files import check_folder_to_replace, check_output_folder


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="the model to shrink (a model folder or hub id)")
    parser.add_argument("--layers", type=argtypes.whole_number_from_one, required=True, metavar="K",
                        help="layers the student keeps, evenly spaced, the first and the last included")
    parser.add_argument("-o", "--output", required=True, help="folder to write the student to")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the model that the -o folder holds (default: refuse a folder that is not empty)")
    parser.add_argument("--engine", default="auto", choices=["auto", "torch", "onnx", "openvino"],
                        help="engine the answering speed is measured with (default: auto)")
    parser.add_argument("--no-speed", action="store_true", help="do not measure the answering speed")
    parser.add_argument("--trust-remote-code", action="store_true", help="allow model code from the model's repository")


def run(args: argparse.Namespace) -> int:
    # the output folder first: a bad one must not cost loading the model before it
    check_output_folder("-o/--output", args.output)
    check_folder_to_replace("-o/--output", args.output, overwrite=args.overwrite, source=args.model)
    options.quiet_libraries()
    from qatune.shrink import shrink_model

    try:  # an earlier model stays until the student is complete
        result = shrink_model(
            args.model, args.output, layers=args.layers, overwrite=args.overwrite, trust_remote_code=args.trust_remote_code
        )
    except SettingsError as error:  # "layers must be ...": the flag is --layers
        message = str(error)
        raise SettingsError("--" + message if message.startswith("layers ") else message) from None
    share = result.parameters_after / result.parameters_before
    print(
        f"kept layers {result.kept_layers} of {result.layers_before}; parameters {result.parameters_before:,} -> "
        f"{result.parameters_after:,} ({100 * share:.0f}%); written to {args.output}"
    )
    if not args.no_speed:
        teacher, student = (_answering_seconds(folder, args.engine) for folder in (args.model, args.output))
        print(
            f"answering the sample's dev questions: {teacher[0]:.3f} s -> {student[0]:.3f} s, "
            f"{teacher[0] / student[0]:.2f}x as fast ({student[1]}; best of 3)"
        )
    if len(result.kept_layers) == result.layers_before:
        print("every layer kept: it answers as its teacher, without the no-answer threshold and calibration, which "
              "come from training (train it, with --teacher MODEL, to have them)")
    else:
        print("train it (with the teacher's help: --teacher MODEL) before use: only its layers come from the teacher")
    return 0


def _answering_seconds(folder, engine: str) -> tuple[float, str]:
    """Seconds to answer the sample's dev questions (best of 3, after a warm-up), and the engine."""
    from qatune import sample
    from qatune.data import load_examples
    from qatune.inference import QAModel

    examples = load_examples(sample.DEV)
    model = QAModel.from_pretrained(folder, engine=engine)
    model.predict(examples)
    timings = []
    for _ in range(3):
        started = time.perf_counter()
        model.predict(examples)
        timings.append(time.perf_counter() - started)
    return min(timings), model.engine.describe()
