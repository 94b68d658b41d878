"""`qatune export MODEL --onnx [--quantize int8] -o DIR`: write a model as ONNX.

    $ qatune export ./qatune-model --onnx --quantize int8 -o ./qatune-onnx --dev dev.json
    wrote qatune-onnx/model.onnx (int8 weights, opset 20, 22.9 MB) with its tokenizer, config.json and qatune.json
    checked on dev.json: 24 of 24 answers the same as float32 (100.0%); EM 83.3 (float32 83.3), F1 88.1 (float32 88.1)

With --dev, the export answers those questions next to the float32 model, records the
comparison in DIR/qatune.json (`onnx.check`) and warns when it answers fewer of them the same
than MIN_AGREEMENT allows or loses more F1 than MAX_F1_LOSS (`qatune.export`).

DIR then answers questions like any model folder (`qatune ask DIR ...`, `qatune evaluate
DIR ...`), through ONNX Runtime on the CPU. Needs `pip install "qatune[onnx]"`.
"""

from __future__ import annotations

import argparse
import sys

from qatune.cli import options
# qatune.export and qatune.settings import torch and onnx only when used: cheap to import here
from qatune.export import (
    MAX_F1_LOSS, MIN_AGREEMENT, MIN_OPSET, QUANTIZE_CHOICES, ExportCheck, compare_with_float32, export_onnx,
)
from qatune.settings import read_model_card


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="model folder written by `qatune train` (with model.safetensors)")
    parser.add_argument("--onnx", action="store_true", required=True, help="export to ONNX (the only format for now)")
    parser.add_argument(
        "-o", "--output", required=True, metavar="DIR", help="folder to write model.onnx and its files to"
    )
    parser.add_argument(
        "--quantize", choices=QUANTIZE_CHOICES, help="int8: dynamic int8 quantization of the weights (default: float32)"
    )
    parser.add_argument("--opset", type=int, help=f"ONNX opset, at least {MIN_OPSET} (default: the exporter's)")
    parser.add_argument(
        "--dev", metavar="DATA",
        help="data file with gold answers: compare the export's answers and EM/F1 with the float32 model's; "
        f"warns below {MIN_AGREEMENT:g}%% of the answers the same or more than {MAX_F1_LOSS:g} F1 points lost",
    )
    options.add_data_reading(parser)


def run(args: argparse.Namespace) -> int:
    options.quiet_libraries()
    # the dev data is read first: a bad file fails before the export's work
    dev_examples = options.read_examples(args.dev, args, options.say_on_stderr) if args.dev else None
    print(f"exporting {args.model} to ONNX ...", file=sys.stderr)
    path = export_onnx(args.model, args.output, quantize=args.quantize, opset=args.opset)
    onnx_entry = read_model_card(path.parent)["onnx"]
    weights = f"{onnx_entry['quantize']} weights" if onnx_entry["quantize"] else "float32 weights"
    print(
        f"wrote {path} ({weights}, opset {onnx_entry['opset']}, {_size(path)}) "
        f"with its tokenizer, config.json and qatune.json"
    )
    if dev_examples is not None:
        check = compare_with_float32(args.model, path.parent, dev_examples, data=args.dev, progress=True)
        print(_check_line(check))
        if check.warning():
            print(f"warning: {check.warning()}", file=sys.stderr)
    elif args.quantize:
        print(
            f"note: the {args.quantize} answers were not compared with float32; "
            f"add --dev DATA to measure how many change",
            file=sys.stderr,
        )
    return 0


def _check_line(check: ExportCheck) -> str:
    return (
        f"checked on {check.data}: {check.same_answers} of {check.questions} answers the same as float32 "
        f"({check.agreement:.1f}%); EM {check.exact:.1f} (float32 {check.exact_float32:.1f}), "
        f"F1 {check.f1:.1f} (float32 {check.f1_float32:.1f})"
    )


def _size(path) -> str:
    """Size of model.onnx plus its external weights file, if any, in MB."""
    data = path.parent / f"{path.name}.data"
    total = path.stat().st_size + (data.stat().st_size if data.exists() else 0)
    return f"{total / 1e6:.1f} MB" if total >= 100_000 else f"{total / 1e3:.1f} kB"
