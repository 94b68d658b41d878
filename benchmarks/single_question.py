"""Where one question's time goes, and which OpenVINO settings answer one window fastest here.

    python benchmarks/single_question.py --model /tmp/a/teacher --data /tmp/a/data/dev.json

Loads the folder as `qatune ask` does (`--engine auto`), then answers the first `--questions`
questions one at a time: the parts of `QAModel.ask` (cutting the window, the engine, decoding)
timed apart, then the engine alone under other OpenVINO compile settings (fewer threads, the
throughput hint with one stream, no thread pinning), the variants interleaved round by round so
that the host's load falls on all of them alike, each warmed by one untimed pass over every
window first. Prints Markdown tables; needs an auto engine that is OpenVINO (a CPU) for the
second table, whose other rows are float32 (the loaded engine's row says its precision).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from qatune.batching import pad_windows
from qatune.data import read_dataset
from qatune.inference import PAD_TO_MULTIPLE, QAModel, decode_examples, make_windows, window_logits

# name -> extra OpenVINO compile settings (qatune's own: LATENCY hint, every core)
OPENVINO_VARIANTS = {
    "float32, qatune's settings (LATENCY hint, every core)": {},
    "one thread": {"INFERENCE_NUM_THREADS": 1},
    "THROUGHPUT hint, one stream": {"PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": 1},
    "no thread pinning": {"ENABLE_CPU_PINNING": False},
}


def milliseconds(times: list[float]) -> str:
    return f"{1000 * statistics.median(times):.1f} | {1000 * float(np.percentile(times, 95)):.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--questions", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    model = QAModel.from_pretrained(args.model)
    examples = read_dataset(args.data)[0][: args.questions]
    padding = {"pad_token_id": model.tokenizer.pad_token_id or 0, "max_length": model.settings.max_seq_length}
    parts: dict[str, list[float]] = {"cutting the window": [], "engine": [], "decoding": [], "whole `ask`": []}
    for example in examples:
        started = time.perf_counter()
        windows = make_windows([example], model.tokenizer, model.settings)
        cut = time.perf_counter()
        starts, ends = window_logits(model.engine, windows, **padding)
        answered = time.perf_counter()
        decode_examples([example], windows, starts, ends, model.settings, top_k=2)
        decoded = time.perf_counter()
        model.ask(example.question, example.context)
        asked = time.perf_counter()
        for part, seconds in zip(parts, (cut - started, answered - cut, decoded - answered, asked - decoded)):
            parts[part].append(seconds)
    tokens = [len(make_windows([e], model.tokenizer, model.settings).input_ids[0]) for e in examples]
    print(f"engine: {model.engine.name} {model.engine.precision}; {len(examples)} questions, "
          f"median {statistics.median(tokens):.0f} tokens in the first window\n")
    print("| part of one question | p50 ms | p95 ms |\n|---|---|---|")
    for part, times in parts.items():
        print(f"| {part} | {milliseconds(times)} |")

    if model.engine.name != "openvino":
        return
    import openvino

    core, graph = openvino.Core(), model.engine.source
    # the loaded engine's own request first: what `ask` runs; the others compiled here alike
    requests = {f"the loaded engine, {model.engine.precision} (what `ask` runs)": model.engine.request}
    for name, extra in OPENVINO_VARIANTS.items():
        settings = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY", **extra}
        requests[name] = core.compile_model(graph, "CPU", settings).create_infer_request()
    feeds = []  # each question's first window, padded as `ask` pads it for the engine
    for example in examples:
        windows = make_windows([example], model.tokenizer, model.settings)
        padded = pad_windows(windows, [0], padding["pad_token_id"], PAD_TO_MULTIPLE, padding["max_length"])
        feeds.append({name: padded[name] for name in model.engine.input_names})
    times: dict[str, list[float]] = {name: [] for name in requests}
    # warm-up alike: every request answers every window once, untimed (a first call on a new
    # shape costs more, and the loaded engine has already seen every shape in the table above)
    for request in requests.values():
        for feed in feeds:
            request.infer(feed)
    for _ in range(args.rounds):
        for name, request in requests.items():
            for feed in feeds:
                started = time.perf_counter()
                request.infer(feed)
                times[name].append(time.perf_counter() - started)
    print("\n| OpenVINO, one window | p50 ms | p95 ms |\n|---|---|---|")
    for name, measured in times.items():
        print(f"| {name} | {milliseconds(measured)} |")


if __name__ == "__main__":
    main()
