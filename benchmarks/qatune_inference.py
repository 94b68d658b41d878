"""qatune's side of the inference benchmark, timed the way `reference_pipeline.py` times the
pipeline.

Loads a model folder with `QAModel.from_pretrained` (a PyTorch model, bf16 autocast where the
CPU has fast bf16 units unless `--no-bf16`; or a folder written by `qatune export --onnx`,
answered by ONNX Runtime), answers one warm-up question untimed, then:

- throughput: every question of the data file through `QAModel.predict` (batches of
  `--batch-size` windows), in questions/s;
- latency: the first `--latency-questions` questions one at a time through `QAModel.ask`,
  p50/p95/mean in milliseconds.

Writes the result JSON and, next to it, `<stem>.predictions.json` (id -> answer text, from the
batched run), scored with the official SQuAD v1.1 definitions of `squad_v1.py`.

    python benchmarks/qatune_inference.py --model ./qatune-model --data dev.json \\
        --output /tmp/qatune-bf16.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path


from squad_v1 import answerable, read_squad, score
from timing import summary_line, throughput_and_latency


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="model folder (PyTorch or ONNX)")
    parser.add_argument("--data", type=Path, required=True, help="SQuAD JSON to answer")
    parser.add_argument("--batch-size", type=int, default=16, help="windows per forward pass")
    parser.add_argument("--latency-questions", type=int, default=100, metavar="N")
    parser.add_argument("--no-bf16", action="store_true", help="float32 even where bf16 is fast")
    parser.add_argument("--output", type=Path, required=True, help="result JSON to write")
    args = parser.parse_args(argv)
    for name in ("batch_size", "latency_questions"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, found {getattr(args, name)}")
    return args


def answer_all(model, examples, batch_size: int) -> tuple[dict[str, str], float]:
    """Answers (id -> text) to every example in batches, and the wall time it took."""
    from qatune.evaluation import official_predictions

    started = time.perf_counter()
    decoded = model.predict(examples, batch_size=batch_size)
    predictions, _ = official_predictions(examples, decoded, model.settings.null_threshold)
    return predictions, time.perf_counter() - started


def latencies_ms(model, examples) -> list[float]:
    """Milliseconds to answer each question on its own."""
    times = []
    for example in examples:
        started = time.perf_counter()
        model.ask(example.question, example.context)
        times.append(1000 * (time.perf_counter() - started))
    return times


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch
    import transformers

    from qatune import QAModel, __version__, load_examples

    started = time.perf_counter()
    model = QAModel.from_pretrained(args.model, bf16=False if args.no_bf16 else None)
    load_s = time.perf_counter() - started
    examples = load_examples(args.data)
    if not examples:
        raise SystemExit(f"{args.data}: no question to answer")
    model.ask(examples[0].question, examples[0].context)  # warm-up, untimed

    predictions, batched_s = answer_all(model, examples, args.batch_size)
    single = latencies_ms(model, examples[: args.latency_questions])

    args.output.parent.mkdir(parents=True, exist_ok=True)
    predictions_file = args.output.with_name(args.output.stem + ".predictions.json")
    predictions_file.write_text(json.dumps(predictions, ensure_ascii=False, indent=1), encoding="utf-8")
    onnx = (args.model / "model.onnx").is_file()
    result = {
        "system": "qatune QAModel (" + ("ONNX Runtime" if onnx else "PyTorch") + ")",
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "transformers": transformers.__version__, "qatune": __version__},
        "torch_threads": torch.get_num_threads(),
        "model": str(args.model),
        "data": str(args.data),
        "settings": {"batch_size": args.batch_size, "bf16": bool(model.bf16), "onnx": onnx,
                     "warm_up_questions": 1, **model.settings.to_dict()},
        "load_s": load_s,
        **throughput_and_latency(len(examples), batched_s, single),
        "dev": score(predictions, answerable(read_squad(args.data))),
        "predictions_file": str(predictions_file),
    }
    args.output.write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(summary_line(result, f"batch {args.batch_size}, bf16 {model.bf16}", args.output))
    return 0


if __name__ == "__main__":
    sys.exit(main())
