"""How both inference sides summarize their timings, so that their results read the same.

Plain Python and numpy: imported by `qatune_inference.py` and by `reference_pipeline.py`,
which runs in the transformers 4.x environment and must not import qatune.
"""

from __future__ import annotations

import numpy as np


def throughput_and_latency(questions: int, batched_s: float, single_ms: list[float]) -> dict:
    """`batched`: questions per second over all questions in batches; `single`: the latency of
    questions answered one at a time (p50, p95, mean, in milliseconds)."""
    return {
        "batched": {"questions": questions, "wall_s": batched_s, "questions_per_s": questions / batched_s},
        "single": {
            "questions": len(single_ms),
            "p50_ms": float(np.percentile(single_ms, 50)),
            "p95_ms": float(np.percentile(single_ms, 95)),
            "mean_ms": float(np.mean(single_ms)),
        },
    }


def summary_line(result: dict, setting: str, output) -> str:
    """One line for the log: throughput, latency and dev score of a result `throughput_and_latency` fed."""
    return (f"{result['batched']['questions']} questions at {result['batched']['questions_per_s']:.1f} "
            f"questions/s ({setting}); one at a time p50 {result['single']['p50_ms']:.0f} ms, "
            f"p95 {result['single']['p95_ms']:.0f} ms; EM {result['dev']['exact_match']:.1f} "
            f"F1 {result['dev']['f1']:.1f} -> {output}")


# Worker side of paired rounds (`paired_answering.py`). Replies carry this prefix, so that
# anything else a library prints on stdout is told apart from them.
REPLY = "paired-pass "


def serve_passes(answer_all, questions: int, precision: str, engine_alone=None, commands=None, replies=None) -> None:
    """Answer timed passes on request.

    Announces `ready {"questions": N, "precision": P, "engine_alone": true|false}` (P: the number
    format its engine computes in), then takes one command a line:
    - "pass": one pass over all the questions (`answer_all()` returns the answers, id -> text,
      and its seconds); replies with the seconds;
    - "engine": the engine alone over the same windows, cut beforehand, with no decoding and no
      re-check (`engine_alone()` returns its seconds; only where given): the most any pass of
      this engine could gain from the rest; replies with the seconds;
    - "answers": replies with the last pass's answers as JSON.
    The end of the input ends the worker."""
    import json
    import sys

    commands = sys.stdin if commands is None else commands
    replies = sys.stdout if replies is None else replies
    ready = {"questions": questions, "precision": precision, "engine_alone": engine_alone is not None}
    print(REPLY + "ready " + json.dumps(ready), file=replies, flush=True)
    answers: dict[str, str] = {}
    for line in commands:
        command = line.strip()
        if command == "pass":
            answers, seconds = answer_all()
            print(f"{REPLY}{seconds:.6f}", file=replies, flush=True)
        elif command == "engine" and engine_alone is not None:
            print(f"{REPLY}{engine_alone():.6f}", file=replies, flush=True)
        elif command == "answers":
            print(REPLY + json.dumps(answers, ensure_ascii=True), file=replies, flush=True)
        else:
            raise SystemExit(f"unknown command {command!r}: this worker takes 'pass', "
                             + ("'engine', " if engine_alone is not None else "") + "or 'answers'")
