"""One training step of the default model under different settings: which levers pay on this CPU.

    python benchmarks/levers.py                 # all levers, ~5 minutes on 2 cores
    python benchmarks/levers.py --only bf16 fp32

Each row is the median of 5 timed steps after 2 warm-up steps, on a batch of 16 windows of
192 tokens (the length of an average SQuAD window), random token ids, the bundled
all-MiniLM-L6-v2 with a fresh QA head. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from transformers import AutoConfig, AutoModelForQuestionAnswering

from qatune.modeling import default_model_path

BATCH, LENGTH = 16, 192

# name -> (description, settings)
LEVERS = {
    "qatune": ("qatune's defaults: bf16 autocast, attention dropout 0, fused AdamW, SDPA", {}),
    "fp32": ("float32 instead of bf16 autocast", {"bf16": False}),
    "attn-dropout": ("attention-probability dropout 0.1 (as configured)", {"attention_dropout": 0.1}),
    "no-dropout": ("hidden dropout 0 too", {"hidden_dropout": 0.0}),
    "unfused-adamw": ("AdamW without fused=True", {"fused": False}),
    "eager": ("eager attention instead of SDPA", {"attention": "eager"}),
    "compile": ("torch.compile of the model", {"compile": True}),
    "pad-384": ("every window padded to 384 tokens", {"length": 384}),
    "one-thread": ("torch.set_num_threads(1)", {"threads": 1}),
}


def step_time(settings: dict) -> float:
    torch.manual_seed(0)
    config = AutoConfig.from_pretrained(default_model_path())
    config.attention_probs_dropout_prob = settings.get("attention_dropout", 0.0)
    config.hidden_dropout_prob = settings.get("hidden_dropout", config.hidden_dropout_prob)
    model = AutoModelForQuestionAnswering.from_pretrained(
        default_model_path(), config=config, attn_implementation=settings.get("attention", "sdpa")
    )
    model.train()
    if settings.get("compile"):
        model = torch.compile(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=settings.get("fused", True))
    length = settings.get("length", LENGTH)
    input_ids = torch.randint(1000, 20000, (BATCH, length))
    attention_mask = torch.ones_like(input_ids)
    if length > LENGTH:  # padded: only the first LENGTH tokens are real
        attention_mask[:, LENGTH:] = 0
    labels = {"start_positions": torch.randint(1, LENGTH, (BATCH,)), "end_positions": torch.randint(1, LENGTH, (BATCH,))}
    threads = torch.get_num_threads()
    torch.set_num_threads(settings.get("threads", threads))

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=settings.get("bf16", True)):
            loss = model(input_ids=input_ids, attention_mask=attention_mask, **labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(2):
        step()
    times = []
    for _ in range(5):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    torch.set_num_threads(threads)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", choices=list(LEVERS), help="levers to time (default: all)")
    names = parser.parse_args().only or list(LEVERS)
    if "qatune" not in names:
        names = ["qatune", *names]
    from transformers.utils import logging

    logging.set_verbosity_error()
    results = {name: step_time(LEVERS[name][1]) for name in names}
    base = results["qatune"]
    print(f"| setting ({BATCH} x {LENGTH} tokens, one training step) | step time | vs qatune |")
    print("|---|---|---|")
    for name, seconds in results.items():
        print(f"| {LEVERS[name][0]} | {seconds:.3f} s | {seconds / base:.2f}x |")


if __name__ == "__main__":
    main()
