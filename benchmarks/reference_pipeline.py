"""Inference reference: transformers 4.x `pipeline("question-answering")` on the CPU.

What users run today to answer questions with a fine-tuned extractive QA model.
transformers 5 no longer has this pipeline, so this script runs in the environment that
`benchmarks/setup_reference_env.sh` creates (transformers 4.57+, the system's torch). It
never imports qatune.

Settings: `max_seq_len=384, doc_stride=128, max_answer_len=30` (the same windows and
answer length as the training reference), everything else at the pipeline's defaults
(one answer per question, no "no answer"). One warm-up question is answered first and not
timed, so model loading and first-call costs stay out of both figures:

- throughput: every question, batched (`batch_size`), in questions/s;
- latency: the first ~100 questions one at a time, p50/p95/mean in milliseconds.

It writes the result JSON and, next to it, `<stem>.predictions.json` (id -> answer text,
from the batched run), scored with the official SQuAD v1.1 definitions.

    benchmarks/.venv-tf4/bin/python benchmarks/reference_pipeline.py --model MODEL_DIR \\
        --data dev.json --questions 20 --batch-size 1 --output /tmp/pipeline.json
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from pathlib import Path


from squad_v1 import answerable, read_squad, score
from timing import serve_passes, summary_line, throughput_and_latency

SETTINGS = {"max_seq_len": 384, "doc_stride": 128, "max_answer_len": 30}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="fine-tuned QA model folder")
    parser.add_argument("--data", type=Path, required=True, help="SQuAD JSON to answer")
    parser.add_argument("--questions", type=int, default=None, metavar="N",
                        help="answer the first N answerable questions (default: all)")
    parser.add_argument("--batch-size", type=int, default=1, help="the pipeline's own default")
    parser.add_argument("--latency-questions", type=int, default=100, metavar="N",
                        help="questions answered one at a time for latency (default: 100)")
    parser.add_argument("--serve-passes", action="store_true",
                        help="after loading and one untimed pass, answer timed passes on request "
                             "(stdin/stdout, for paired_answering.py) instead of writing a result")
    parser.add_argument("--output", type=Path, required=True, help="result JSON to write")
    args = parser.parse_args(argv)
    for name in ("questions", "batch_size", "latency_questions"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, found {value}")
    return args


def answer_all(qa, questions: list[dict], batch_size: int) -> tuple[dict[str, str], float]:
    """Answers to every question in batches, and the wall time it took."""
    started = time.perf_counter()
    answers = qa(
        question=[q["question"] for q in questions],
        context=[q["context"] for q in questions],
        batch_size=batch_size,
        **SETTINGS,
    )
    elapsed = time.perf_counter() - started
    if isinstance(answers, dict):  # a single question comes back unwrapped
        answers = [answers]
    return {q["id"]: a["answer"] for q, a in zip(questions, answers)}, elapsed


def latencies_ms(qa, questions: list[dict]) -> list[float]:
    """Milliseconds to answer each question on its own."""
    times = []
    for q in questions:
        started = time.perf_counter()
        qa(question=q["question"], context=q["context"], **SETTINGS)
        times.append(1000 * (time.perf_counter() - started))
    return times


def peak_rss_mib() -> float:
    # ru_maxrss is in KiB on Linux and in bytes on macOS.
    scale = 1024 * 1024 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch
    import transformers
    from transformers import pipeline

    if int(transformers.__version__.split(".")[0]) != 4:
        raise SystemExit(f"needs transformers 4.x (found {transformers.__version__}); run it "
                         "with the python that benchmarks/setup_reference_env.sh prints")
    questions = answerable(read_squad(args.data))[: args.questions]
    if not questions:
        raise SystemExit(f"{args.data}: no answerable question to answer")
    qa = pipeline("question-answering", model=str(args.model), tokenizer=str(args.model),
                  device=-1)
    qa(question=questions[0]["question"], context=questions[0]["context"], **SETTINGS)
    if args.serve_passes:
        answer_all(qa, questions, args.batch_size)  # every first-call cost paid before the timed passes
        serve_passes(lambda: answer_all(qa, questions, args.batch_size), len(questions), "float32")
        return 0

    predictions, batched_s = answer_all(qa, questions, args.batch_size)
    single = latencies_ms(qa, questions[: args.latency_questions])

    args.output.parent.mkdir(parents=True, exist_ok=True)
    predictions_file = args.output.with_name(args.output.stem + ".predictions.json")
    predictions_file.write_text(json.dumps(predictions, ensure_ascii=False, indent=1),
                                encoding="utf-8")
    result = {
        "system": "reference: transformers 4.x pipeline('question-answering')",
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "transformers": transformers.__version__},
        "torch_threads": torch.get_num_threads(),
        "model": str(args.model),
        "data": str(args.data),
        "settings": {**SETTINGS, "batch_size": args.batch_size, "warm_up_questions": 1},
        **throughput_and_latency(len(questions), batched_s, single),
        "dev": score(predictions, questions),
        "peak_rss_mib": peak_rss_mib(),
        "predictions_file": str(predictions_file),
    }
    args.output.write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(summary_line(result, f"batch {args.batch_size}", args.output))
    return 0


if __name__ == "__main__":
    sys.exit(main())
