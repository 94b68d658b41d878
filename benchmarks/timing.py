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
