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
