"""qatune's side of the inference benchmark, timed the way `reference_pipeline.py` times the
pipeline.

Loads a model folder with `QAModel.from_pretrained(model, engine=..., bf16=...)`: a folder
`qatune train` wrote (answered by the engine `--engine` names: `auto`, what users get, or
`torch`, `onnx`, `openvino`; bf16 where the CPU has fast bf16 units unless `--no-bf16`, always
with `--bf16`) or a folder `qatune export` wrote (its own engine). It records the engine the
loaded model reports (`model.engine.name`, `.precision`, `.describe()`), answers one warm-up
question untimed, then:

- throughput: every question of the data file through `QAModel.predict` (batches of
  `--batch-size` windows), in questions/s;
- latency: the first `--latency-questions` questions one at a time through `QAModel.ask`,
  p50/p95/mean in milliseconds.

Writes the result JSON and, next to it, `<stem>.predictions.json` (id -> answer text, from the
batched run), scored with the official SQuAD v1.1 definitions of `squad_v1.py`. With
`--load-only` it loads the model (converting and caching it for its engine where needed),
writes the load time and the engine to the result JSON and stops: `run.py` does that first,
so that the timed run's peak memory is that of a model loaded from the cache.

A qatune without engines (`QAModel.from_pretrained` with no `engine=`) still answers
`--engine torch` and `--engine auto` with PyTorch; other engines exit with code 3.

    python benchmarks/qatune_inference.py --model ./qatune-model --data dev.json \\
        --engine openvino --no-bf16 --output /tmp/qatune-openvino-float32.json
"""

from __future__ import annotations

import argparse
import inspect
import json
import platform
import sys
import time
from pathlib import Path


from squad_v1 import answerable, read_squad, score
from timing import serve_passes, summary_line, throughput_and_latency


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="model folder (PyTorch or ONNX)")
    parser.add_argument("--data", type=Path, required=True, help="SQuAD JSON to answer")
    parser.add_argument("--batch-size", type=int, default=8, help="windows per forward pass (qatune's default)")
    parser.add_argument("--latency-questions", type=int, default=100, metavar="N")
    parser.add_argument("--engine", choices=("auto", "torch", "onnx", "openvino"), default="auto",
                        help="answering engine (default: auto, what `qatune predict` uses)")
    precision = parser.add_mutually_exclusive_group()
    precision.add_argument("--no-bf16", action="store_true", help="float32 even where bf16 is fast")
    precision.add_argument("--bf16", action="store_true", help="bf16 even where the CPU has no bf16 units")
    parser.add_argument("--load-only", action="store_true",
                        help="load (convert and cache) the model, record load time and engine, stop")
    parser.add_argument("--serve-passes", action="store_true",
                        help="after loading and one untimed pass, answer timed passes on request "
                             "(stdin/stdout, for paired_answering.py) instead of writing a result")
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


def engine_alone(model, examples, batch_size: int):
    """A function timing the model's engine alone over the examples' windows (cut here, once):
    what a pass costs without tokenizing, decoding or re-checking close calls. None for a
    qatune without engines."""
    try:
        from qatune.features import make_windows
        from qatune.inference import window_logits
    except ImportError:
        return None
    windows = make_windows(examples, model.tokenizer, model.settings)
    padding = {"pad_token_id": model.tokenizer.pad_token_id or 0, "max_length": model.settings.max_seq_length}

    def timed() -> float:
        started = time.perf_counter()
        window_logits(model.engine, windows, batch_size=batch_size, **padding)
        return time.perf_counter() - started

    return timed


NO_ENGINES = 3  # exit code: this qatune cannot answer with the engine asked for


def load(args):
    """The model, and the engine it answers with as the model reports it."""
    from qatune import QAModel

    bf16 = False if args.no_bf16 else (True if args.bf16 else None)
    if "engine" in inspect.signature(QAModel.from_pretrained).parameters:
        model = QAModel.from_pretrained(args.model, engine=args.engine, bf16=bf16)
        engine = model.engine
        return model, {"name": engine.name, "precision": engine.precision, "describe": engine.describe()}
    if args.engine not in ("auto", "torch"):  # a qatune from before the engines
        print(f"this qatune has no answering engines (QAModel.from_pretrained takes no engine=); "
              f"cannot answer with --engine {args.engine}", file=sys.stderr)
        raise SystemExit(NO_ENGINES)
    if (args.model / "model.onnx").is_file():
        model = QAModel.from_pretrained(args.model)
        return model, {"name": "onnx", "precision": "unknown", "describe": "onnx (qatune without engines)"}
    model = QAModel.from_pretrained(args.model, bf16=bf16)
    precision = "bf16" if model.bf16 else "float32"
    return model, {"name": "torch", "precision": precision, "describe": f"torch {precision} (qatune without engines)"}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch
    import transformers

    from qatune import __version__, load_examples

    started = time.perf_counter()
    model, engine = load(args)
    load_s = time.perf_counter() - started
    versions = {"python": platform.python_version(), "torch": torch.__version__,
                "transformers": transformers.__version__, "qatune": __version__}
    if args.load_only:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps({"load_s": load_s, "engine": engine, "versions": versions,
                                           "model": str(args.model)}, indent=2), encoding="utf-8")
        print(f"loaded {args.model} in {load_s:.1f} s: {engine['describe']} -> {args.output}")
        return 0
    examples = load_examples(args.data)
    if not examples:
        raise SystemExit(f"{args.data}: no question to answer")
    model.ask(examples[0].question, examples[0].context)  # warm-up, untimed
    if args.serve_passes:
        answer_all(model, examples, args.batch_size)  # every batch shape seen before the timed passes
        serve_passes(lambda: answer_all(model, examples, args.batch_size), len(examples), engine["precision"],
                     engine_alone(model, examples, args.batch_size))
        return 0

    predictions, batched_s = answer_all(model, examples, args.batch_size)
    single = latencies_ms(model, examples[: args.latency_questions])

    args.output.parent.mkdir(parents=True, exist_ok=True)
    predictions_file = args.output.with_name(args.output.stem + ".predictions.json")
    predictions_file.write_text(json.dumps(predictions, ensure_ascii=False, indent=1), encoding="utf-8")
    result = {
        "system": f"qatune QAModel ({engine['describe']})",
        "engine": engine,
        "versions": versions,
        "torch_threads": torch.get_num_threads(),
        "model": str(args.model),
        "data": str(args.data),
        "settings": {"batch_size": args.batch_size, "engine_asked": args.engine,
                     "bf16_asked": False if args.no_bf16 else (True if args.bf16 else None),
                     "warm_up_questions": 1, **model.settings.to_dict()},
        "load_s": load_s,
        **throughput_and_latency(len(examples), batched_s, single),
        "dev": score(predictions, answerable(read_squad(args.data))),
        "predictions_file": str(predictions_file),
    }
    args.output.write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(summary_line(result, f"batch {args.batch_size}, {engine['describe']}", args.output))
    return 0


if __name__ == "__main__":
    sys.exit(main())
