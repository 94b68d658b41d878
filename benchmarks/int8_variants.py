"""Which int8 quantization keeps a model's answers, and at what speed: variants of the OpenVINO
int8 export on the user's own data, measured against float32 in one run.

For every variant: the int8 model is calibrated on the training questions as `qatune export
--quantize int8` does (`qatune.quantize`), then answers the first `--margin-questions` training
questions and all dev questions. Reported per variant: how many answers equal OpenVINO
float32's before any re-check (training and dev); the re-check margin the export would pick on
the training questions (at catch 0.9, the export's, and 0.8) with the share of dev questions it
sends to a re-check and the dev agreement after it (the re-check gives float32's answer); and the
int8 pass over the dev questions (no re-check), timed in paired rounds against OpenVINO bf16.

    python benchmarks/int8_variants.py --model MODEL --train train.json --dev dev.json \\
        [--variants base,smooth-quant-off,...] [--rounds 5] [--save rows.json]

Variants: `base` (the export's: QA head float, NNCF's SmoothQuant default, 300 calibration
windows), `smooth-quant-off`, `smooth-quant-0.5`, `calibration-1000` (1,000 windows),
`ffn-out-float` (every layer's feed-forward output kept float), `layerN-float` (all six matrix
products of layer N kept float), `rest-in-bf16` (the base model, with what is not int8 computed
in bf16 instead of float32 and the QA head in float32 outside the graph, as the bf16 engine does).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from run import machine

LAYER_PRODUCTS = ("attention.self.query", "attention.self.key", "attention.self.value",
                  "attention.output.dense", "intermediate.dense", "output.dense")


def variants(layers: int) -> dict[str, dict]:
    """Each variant's arguments: `quantize_openvino` keywords, calibration windows, engine precision."""
    encoder = [f"bert.encoder.layer.{i}" for i in range(layers)]
    table = {
        "base": {},
        "smooth-quant-off": {"smooth_quant_alpha": -1},
        "smooth-quant-0.5": {"smooth_quant_alpha": 0.5},
        "calibration-1000": {"limit": 1000},
        "ffn-out-float": {"keep_float": ["qa_outputs"] + [f"{layer}.output.dense" for layer in encoder]},
        "rest-in-bf16": {"engine_precision": "bf16"},
    }
    for i, layer in enumerate(encoder):
        table[f"layer{i}-float"] = {"keep_float": ["qa_outputs"] + [f"{layer}.{part}" for part in LAYER_PRODUCTS]}
    return table


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a model folder written by `qatune train`")
    parser.add_argument("--train", required=True, help="training questions: calibration and the re-check margin")
    parser.add_argument("--dev", required=True, help="held-out questions: agreement and speed")
    parser.add_argument("--variants", default="all", help="comma-separated names (default: all)")
    parser.add_argument("--margin-questions", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5, help="paired timing rounds against bf16")
    parser.add_argument("--save", type=Path, help="write the rows as JSON here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    import torch
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    from qatune import quantize
    from qatune.data import load_examples
    from qatune.decoding import best_answer, close_call_margin
    from qatune.engines.openvino_engine import OpenVinoEngine, convert_torch_model
    from qatune.inference import QAModel
    from qatune.settings import read_settings

    print(json.dumps(machine()), flush=True)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    settings = read_settings(args.model)
    torch_model = AutoModelForQuestionAnswering.from_pretrained(args.model)
    float32_graph = convert_torch_model(torch_model, tokenizer)
    table = variants(torch_model.config.num_hidden_layers)
    del torch_model
    names = list(table) if args.variants == "all" else args.variants.split(",")
    unknown = [name for name in names if name not in table]
    if unknown:
        sys.exit(f"--variants: unknown {unknown}; known: {', '.join(table)}")
    training = load_examples(args.train)
    questions = {"train": training[: args.margin_questions], "dev": load_examples(args.dev)}

    def answering(graph, precision: str) -> QAModel:
        engine = OpenVinoEngine(graph, precision=precision)
        engine.recheck_margin = 0.0  # the engine's own answers: the re-check is simulated below
        return QAModel(engine, tokenizer, settings)

    def text(decoded) -> str:
        answer = best_answer(decoded, settings.null_threshold)
        return "" if answer is None else answer.text

    def same(answers, reference) -> list[bool]:
        return [text(a) == text(b) for a, b in zip(answers, reference)]

    float32 = answering(float32_graph, "float32")
    reference = {part: float32.predict(examples, top_k=2) for part, examples in questions.items()}
    del float32
    bf16 = answering(float32_graph, "bf16")
    calibration: dict[int, list] = {}
    rows = []
    for name in names:
        options = dict(table[name])
        limit = options.pop("limit", 300)
        precision = options.pop("engine_precision", "int8")
        if limit not in calibration:
            calibration[limit] = quantize.calibration_batches(training, tokenizer, settings, limit=limit)
        started = time.perf_counter()
        graph = quantize.quantize_openvino(float32_graph, calibration[limit], **options)
        row = {"variant": name, "quantize_seconds": round(time.perf_counter() - started, 1)}
        int8 = answering(graph, precision)
        answers = {part: int8.predict(examples, top_k=2) for part, examples in questions.items()}
        for part in questions:
            row[f"{part}_same_as_float32"] = float(np.mean(same(answers[part], reference[part])))
        for catch in (0.9, 0.8):
            margin = quantize.recheck_margin(answers["train"], reference["train"], catch=catch,
                                             null_threshold=settings.null_threshold)
            close = [close_call_margin(d, settings.null_threshold) < margin for d in answers["dev"]]
            kept = [c or s for c, s in zip(close, same(answers["dev"], reference["dev"]))]
            row[f"catch_{catch}"] = {"margin": margin, "dev_rechecked": float(np.mean(close)),
                                     "dev_same_after_recheck": float(np.mean(kept))}
        seconds = {"int8": [], "bf16": []}
        order = random.Random(0)
        for _ in range(args.rounds):
            pair = [("int8", int8), ("bf16", bf16)]
            order.shuffle(pair)
            for label, model in pair:
                started = time.perf_counter()
                model.predict(questions["dev"])
                seconds[label].append(time.perf_counter() - started)
        row["dev_pass_seconds"] = statistics.median(seconds["int8"])
        row["speed_vs_bf16_paired"] = statistics.median(b / i for b, i in zip(seconds["bf16"], seconds["int8"]))
        print(json.dumps(row), flush=True)
        rows.append(row)
    print(markdown(rows))
    if args.save:
        args.save.write_text(json.dumps(rows, indent=1), encoding="utf-8")


def markdown(rows: list[dict]) -> str:
    lines = ["| variant | same as float32: train / dev | catch 0.9: dev re-checked, same after | "
             "catch 0.8: dev re-checked, same after | int8 pass (no re-check) vs bf16, paired |",
             "|---|---|---|---|---|"]
    for row in rows:
        catches = [row[f"catch_{c}"] for c in (0.9, 0.8)]
        lines.append(f"| {row['variant']} | {row['train_same_as_float32']:.1%} / {row['dev_same_as_float32']:.1%} | "
                     + " | ".join(f"{c['dev_rechecked']:.1%}, {c['dev_same_after_recheck']:.1%}" for c in catches)
                     + f" | {row['speed_vs_bf16_paired']:.2f}x |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
