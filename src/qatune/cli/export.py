"""`qatune export MODEL --format onnx|openvino -o DIR [--quantize int8 [--calibration DATA]]`.

    $ qatune export ./qatune-model --format openvino --quantize int8 --calibration train.json \
          -o ./qatune-int8 --dev dev.json
    wrote qatune-int8/model.xml (openvino, int8 weights, 23.9 MB) with its tokenizer, config.json and qatune.json
    checked on dev.json: 470 of 477 answers the same as float32 (98.5%); EM 30.2 (float32 30.0), F1 40.9 (float32 41.0)

int8 is calibrated on --calibration's questions (a few hundred of the user's own: the
training file does). With --dev, the export answers those questions next to the float32
model, records the comparison in DIR/qatune.json (`engine.check`) and warns when it answers
fewer of them the same than MIN_AGREEMENT allows or loses more F1 than MAX_F1_LOSS
(`qatune.export`).

A DIR that holds anything is refused unless --overwrite, which replaces the model it holds
(everything in it) once the export is complete; never the model exported from.

DIR then answers questions like any model folder (`qatune ask DIR ...`, `qatune evaluate
DIR ...`), with the export's engine on the CPU. A plain model folder needs no export to be
fast: `--engine auto` converts it at load.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from qatune.cli import options
from qatune.errors import SettingsError
from qatune.files import check_folder_to_replace, check_output_folder
# qatune.export and qatune.settings import torch, onnx and openvino only when used: cheap to import here
from qatune.export import (
    FORMATS, MAX_F1_LOSS, MIN_AGREEMENT, MIN_OPSET, QUANTIZE_CHOICES, ExportCheck, check_export_request,
    compare_with_float32, export_model,
)
from qatune.modelcard import cpu_flags, cpu_name
from qatune.settings import read_model_card


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="model folder written by `qatune train` (with model.safetensors)")
    parser.add_argument(
        "--format", dest="engine_format", choices=FORMATS,
        help="onnx: model.onnx for ONNX Runtime (needs qatune[onnx]); openvino: model.xml for OpenVINO",
    )
    parser.add_argument("--onnx", action="store_true", help=argparse.SUPPRESS)  # the flag before --format existed
    parser.add_argument(
        "-o", "--output", required=True, metavar="DIR", help="folder to write the exported model and its files to"
    )
    parser.add_argument(
        "--overwrite", action="store_true",
        help="replace the model that DIR holds (default: refuse a folder that is not empty)",
    )
    parser.add_argument(
        "--quantize", choices=QUANTIZE_CHOICES,
        help="int8: int8 matrix multiplications, calibrated on --calibration (default: float32)",
    )
    parser.add_argument(
        "--calibration", metavar="DATA",
        help="data file whose questions calibrate openvino int8 and measure which answers to re-check in "
        "float32 (a few hundred of your own; the training file does); onnx int8 is dynamic",
    )
    parser.add_argument("--opset", type=int, help=f"ONNX opset, at least {MIN_OPSET} (default: the exporter's)")
    parser.add_argument(
        "--dev", metavar="DATA",
        help="data file with gold answers: compare the export's answers and EM/F1 with the float32 model's; "
        f"warns below {MIN_AGREEMENT:g}%% of the answers the same or more than {MAX_F1_LOSS:g} F1 points lost",
    )
    options.add_data_reading(parser, format_flag="--data-format")


def run(args: argparse.Namespace) -> int:
    engine_format = _format(args)
    # the output folder first: a bad one must not cost the reading and converting before it
    check_output_folder("-o/--output", args.output)
    check_folder_to_replace("-o/--output", args.output, overwrite=args.overwrite, source=args.model)
    if args.calibration and not args.quantize:
        raise SettingsError("--calibration: calibration data is for int8; add --quantize int8, or leave --calibration out")
    check_export_request(args.model, engine_format, args.quantize, calibration=args.calibration is not None, opset=args.opset)
    options.quiet_libraries()
    # data files are read first: a bad file fails before the export's work
    calibration = options.read_examples(args.calibration, args, options.say_on_stderr) if args.calibration else None
    dev_examples = options.read_examples(args.dev, args, options.say_on_stderr) if args.dev else None
    slow_int8 = _no_int8_units_note(engine_format, args.quantize, cpu_flags(), cpu_name())
    if slow_int8:  # before the export's minutes, so that the choice can still be changed
        print(f"note: {slow_int8}", file=sys.stderr)
    print(f"exporting {args.model} for {engine_format} ...", file=sys.stderr)
    path = export_model(  # an earlier model stays until the new one is complete
        args.model, args.output, format=engine_format, quantize=args.quantize, calibration=calibration,
        opset=args.opset, overwrite=args.overwrite,
    )
    entry = read_model_card(path.parent)["engine"]
    details = [engine_format, f"{entry['precision']} weights"]
    if "opset" in entry:
        details.append(f"opset {entry['opset']}")
    print(f"wrote {path} ({', '.join(details)}, {_size(path)}) with its tokenizer, config.json and qatune.json")
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


INT8_UNIT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


def _no_int8_units_note(engine_format: str, quantize: str | None, flags: set[str], cpu: str) -> str | None:
    """Where OpenVINO int8 is slower than the float32 default: on a CPU without int8 units (measured
    on an AVX2-only AMD EPYC: the int8 export at 0.55x the default's speed). Silent where the
    flags cannot be read (no /proc/cpuinfo), and for ONNX, whose dynamic int8 was faster there."""
    if engine_format != "openvino" or quantize != "int8" or not flags or flags & set(INT8_UNIT_FLAGS):
        return None
    return (f"this CPU ({cpu}) has no int8 units (none of {', '.join(INT8_UNIT_FLAGS)}): OpenVINO int8 "
            "answers more slowly than the float32 default on such CPUs (about half its speed in qatune's "
            "benchmark); the export pays on a CPU that has them")


def _format(args: argparse.Namespace) -> str:
    if args.onnx and args.engine_format not in (None, "onnx"):
        raise SettingsError(f"--onnx and --format {args.engine_format} ask for two formats; pass only --format")
    if args.onnx:
        return "onnx"
    if args.engine_format is None:
        raise SettingsError("--format: expected onnx or openvino (which engine the export is for), found none")
    return args.engine_format


def _check_line(check: ExportCheck) -> str:
    return (
        f"checked on {check.data}: {check.same_answers} of {check.questions} answers the same as float32 "
        f"({check.agreement:.1f}%); EM {check.exact:.1f} (float32 {check.exact_float32:.1f}), "
        f"F1 {check.f1:.1f} (float32 {check.f1_float32:.1f})"
    )


def _size(path) -> str:
    """Size of the graph plus its weights file (model.bin, model.onnx.data), if any, in MB."""
    sidecars = [path.with_suffix(".bin"), path.parent / f"{path.name}.data"]
    total = path.stat().st_size + sum(file.stat().st_size for file in sidecars if file.exists())
    return f"{total / 1e6:.1f} MB" if total >= 100_000 else f"{total / 1e3:.1f} kB"
