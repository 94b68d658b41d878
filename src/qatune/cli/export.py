"""`qatune export MODEL --onnx [--quantize int8] -o DIR`: write a model as ONNX.

    $ qatune export ./qatune-model --onnx --quantize int8 -o ./qatune-onnx
    wrote qatune-onnx/model.onnx (int8 weights, opset 20, 22.9 MB) with its tokenizer, config.json and qatune.json

DIR then answers questions like any model folder (`qatune ask DIR ...`, `qatune evaluate
DIR ...`), through ONNX Runtime on the CPU. Needs `pip install "qatune[onnx]"`.
"""

from __future__ import annotations

import argparse
import sys

from qatune.cli import options
# qatune.export and qatune.settings import torch and onnx only when used: cheap to import here
from qatune.export import MIN_OPSET, QUANTIZE_CHOICES, export_onnx
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


def run(args: argparse.Namespace) -> int:
    options.quiet_libraries()
    print(f"exporting {args.model} to ONNX ...", file=sys.stderr)
    path = export_onnx(args.model, args.output, quantize=args.quantize, opset=args.opset)
    onnx_entry = read_model_card(path.parent)["onnx"]
    weights = f"{onnx_entry['quantize']} weights" if onnx_entry["quantize"] else "float32 weights"
    print(
        f"wrote {path} ({weights}, opset {onnx_entry['opset']}, {_size(path)}) "
        f"with its tokenizer, config.json and qatune.json"
    )
    return 0


def _size(path) -> str:
    """Size of model.onnx plus its external weights file, if any, in MB."""
    data = path.parent / f"{path.name}.data"
    total = path.stat().st_size + (data.stat().st_size if data.exists() else 0)
    return f"{total / 1e6:.1f} MB" if total >= 100_000 else f"{total / 1e3:.1f} kB"
