"""`qatune shrink MODEL --layers K -o DIR`: a smaller student that keeps K of the model's layers.

Prints the parameters before and after, and how much faster the student answers (the sample's
dev questions, answered by each model with the same engine; --no-speed skips it).
"""

from __future__ import annotations

import argparse
import time

from qatune.cli import argtypes, options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="the model to shrink (a model folder or hub id)")
    parser.add_argument("--layers", type=argtypes.whole_number_from_one, required=True, metavar="K",
                        help="layers the student keeps, evenly spaced, the first and the last included")
    parser.add_argument("-o", "--output", required=True, help="folder to write the student to")
    parser.add_argument("--engine", default="auto", choices=["auto", "torch", "onnx", "openvino"],
                        help="engine the answering speed is measured with (default: auto)")
    parser.add_argument("--no-speed", action="store_true", help="do not measure the answering speed")
    parser.add_argument("--trust-remote-code", action="store_true", help="allow model code from the model's repository")


def run(args: argparse.Namespace) -> int:
    options.quiet_libraries()
    from qatune.shrink import shrink_model

    result = shrink_model(args.model, args.output, layers=args.layers, trust_remote_code=args.trust_remote_code)
    share = result.parameters_after / result.parameters_before
    print(
        f"kept layers {result.kept_layers} of {result.layers_before}; parameters {result.parameters_before:,} -> "
        f"{result.parameters_after:,} ({100 * share:.0f}%); written to {result.output_dir}"
    )
    if not args.no_speed:
        teacher, student = (_answering_seconds(folder, args.engine) for folder in (args.model, result.output_dir))
        print(
            f"answering the sample's dev questions: {teacher[0]:.3f} s -> {student[0]:.3f} s, "
            f"{teacher[0] / student[0]:.2f}x as fast ({student[1]}; best of 3)"
        )
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
