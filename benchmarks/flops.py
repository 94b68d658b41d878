"""What the machine can compute and what the benchmark's work costs, in floating-point operations.

Two subcommands, each writing one JSON file:

- `peak`: the best rate of a square matrix product (2048 x 2048 by default) in float32, in
  bf16 and in int8 (`torch._int_mm`, int32 accumulation; None where torch has none on this
  CPU), with torch, best of a few repeats: the ceilings that model FLOPs utilization is
  measured against.
- `count`: the model's parameters (all, embeddings, the rest) and the real, unpadded tokens
  of the windows each side works on: the reference Trainer's windows (run_qa-style), qatune's
  training items and the dev windows that inference answers. Also the sum of squared window
  lengths, for the attention's share.

The cost model (`training_flops`, `inference_flops`): a forward pass costs 2 x non-embedding
parameters per token, a training step 3 times that (forward + backward); attention scores and
their weighted sum add 4 x layers x hidden x length^2 per window forward (12 x ... in
training). Only real tokens count: padding is work done, not work wanted.

    python benchmarks/flops.py peak --output /tmp/peak.json
    # float32 352 GFLOP/s, bf16 1187 GFLOP/s, int8 <rate> GOP/s (2048 x 2048, best of 10)
    >>> training_flops({"tokens": 1000, "squared_lengths": 40000},
    ...                {"non_embedding": 10, "layers": 2, "hidden": 4})
    {'dense': 60000.0, 'attention': 3840000.0, 'total': 3900000.0}
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


# ---------------------------------------------------------------------------------------
# Cost model (plain Python: run.py uses it without torch)
# ---------------------------------------------------------------------------------------
def training_flops(windows: dict, model: dict, fraction: float = 1.0) -> dict:
    """FLOPs of training once on `windows` ({"tokens", "squared_lengths"}), scaled by
    `fraction` (epochs, or the share of an epoch a cut-short run trained)."""
    dense = 6 * model["non_embedding"] * windows["tokens"]
    attention = 12 * model["layers"] * model["hidden"] * windows["squared_lengths"]
    return _scaled(dense, attention, fraction)


def inference_flops(windows: dict, model: dict) -> dict:
    """FLOPs of one forward pass over `windows`."""
    dense = 2 * model["non_embedding"] * windows["tokens"]
    attention = 4 * model["layers"] * model["hidden"] * windows["squared_lengths"]
    return _scaled(dense, attention, 1.0)


def _scaled(dense: float, attention: float, fraction: float) -> dict:
    dense, attention = dense * fraction, attention * fraction
    return {"dense": dense, "attention": attention, "total": dense + attention}


# ---------------------------------------------------------------------------------------
# peak
# ---------------------------------------------------------------------------------------
def matmul_rate(size: int, dtype, repeats: int) -> float:
    """Best FLOP/s of `size x size @ size x size` in `dtype` over `repeats` timed runs."""
    import torch

    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    torch.mm(a, b)  # first call: kernel selection, memory
    return 2 * size**3 / _best_seconds(lambda: torch.mm(a, b), repeats)


# A precision the CPU has no units for (bf16 without AVX-512 BF16 or AMX: about 2 GFLOP/s on an
# AVX2-only EPYC) takes seconds a product: its timed runs stop once they add up to this.
BUDGET_SECONDS = 20.0


def _best_seconds(run, repeats: int, budget: float = BUDGET_SECONDS) -> float:
    """The shortest of `repeats` timed calls of `run`, or of fewer (at least one) once the
    calls add up to `budget` seconds."""
    best, spent = float("inf"), 0.0
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        seconds = time.perf_counter() - started
        best, spent = min(best, seconds), spent + seconds
        if spent >= budget:
            break
    return best


def int8_matmul_rate(size: int, repeats: int) -> float | None:
    """Best int8 x int8 -> int32 rate (`torch._int_mm`, operations per second), or None where
    this torch build has no CPU int8 matrix product: the ceiling of the int8 rows."""
    import torch

    if not hasattr(torch, "_int_mm"):
        return None
    a = torch.randint(-128, 127, (size, size), dtype=torch.int8)
    b = torch.randint(-128, 127, (size, size), dtype=torch.int8)
    try:
        torch._int_mm(a, b)
    except RuntimeError:
        return None
    return 2 * size**3 / _best_seconds(lambda: torch._int_mm(a, b), repeats)


def peak(size: int, repeats: int) -> dict:
    import torch

    return {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "size": size,
        "repeats": repeats,
        "float32_flops": matmul_rate(size, torch.float32, repeats),
        "bf16_flops": matmul_rate(size, torch.bfloat16, repeats),
        "int8_flops": int8_matmul_rate(size, repeats),
    }


# ---------------------------------------------------------------------------------------
# count
# ---------------------------------------------------------------------------------------
def parameters(model_dir: Path) -> dict:
    """Parameter counts of the encoder with a (fresh) question-answering head."""
    import torch
    from transformers import AutoModelForQuestionAnswering

    model = AutoModelForQuestionAnswering.from_pretrained(model_dir)
    config = model.config
    total = sum(p.numel() for p in model.parameters())
    embedding = sum(
        p.numel() for m in model.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters()
    )
    return {
        "total": total,
        "embedding": embedding,
        "non_embedding": total - embedding,
        "layers": getattr(config, "num_hidden_layers", None) or config.n_layers,
        "hidden": getattr(config, "hidden_size", None) or config.dim,
    }


def window_stats(lengths) -> dict:
    """Token counts of windows of these (unpadded) lengths."""
    lengths = [int(n) for n in lengths]
    return {"windows": len(lengths), "tokens": sum(lengths),
            "squared_lengths": sum(n * n for n in lengths),
            "mean_length": sum(lengths) / len(lengths) if lengths else 0.0}


def reference_training_windows(tokenizer, train: Path) -> dict:
    """The windows the reference Trainer trains on, counted without their padding to 384."""
    import reference_trainer

    rows, _ = reference_trainer.training_windows(
        tokenizer, reference_trainer.training_questions(train, None))
    stats = window_stats(sum(row["attention_mask"]) for row in rows)
    stats["padded_tokens"] = len(rows) * reference_trainer.MAX_LENGTH
    return stats


def qatune_windows(tokenizer, train: Path, dev: Path) -> tuple[dict, dict]:
    """qatune's training items (one per window and answer) and its dev windows, with the
    default window settings that `qatune train` uses."""
    from qatune import QASettings, load_examples
    from qatune.features import label_windows, make_windows

    settings = QASettings()
    train_examples = load_examples(train)
    windows = make_windows(train_examples, tokenizer, settings)
    items = label_windows(train_examples, windows)
    dev_windows = make_windows(load_examples(dev), tokenizer, settings)
    return window_stats(windows.lengths[items.window]), window_stats(dev_windows.lengths)


def count(model_dir: Path, train: Path | None, dev: Path) -> dict:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    result = {"model": str(model_dir), "parameters": parameters(model_dir)}
    if train is not None:
        result["reference_train"] = reference_training_windows(tokenizer, train)
        result["qatune_train"], result["dev"] = qatune_windows(tokenizer, train, dev)
    else:
        _, result["dev"] = qatune_windows(tokenizer, dev, dev)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    peak_parser = commands.add_parser("peak", help="matrix-product ceilings, float32, bf16 and int8")
    peak_parser.add_argument("--size", type=int, default=2048)
    peak_parser.add_argument("--repeats", type=int, default=10)
    count_parser = commands.add_parser("count", help="parameters and real tokens of the windows")
    count_parser.add_argument("--model", type=Path, required=True, help="encoder folder")
    count_parser.add_argument("--train", type=Path, help="training data (SQuAD JSON)")
    count_parser.add_argument("--dev", type=Path, required=True, help="dev data (SQuAD JSON)")
    for sub in (peak_parser, count_parser):
        sub.add_argument("--output", type=Path, required=True, help="JSON file to write")
    args = parser.parse_args(argv)

    if args.command == "peak":
        result = peak(args.size, args.repeats)
        int8 = result["int8_flops"]
        line = (f"float32 {result['float32_flops'] / 1e9:.0f} GFLOP/s, bf16 "
                f"{result['bf16_flops'] / 1e9:.0f} GFLOP/s, int8 "
                f"{'n/a' if int8 is None else f'{int8 / 1e9:.0f} GOP/s'} ({args.size} x {args.size}, "
                f"best of up to {args.repeats}, at most {BUDGET_SECONDS:.0f} s of products each)")
    else:
        result = count(args.model, args.train, args.dev)
        p = result["parameters"]
        line = (f"{p['total'] / 1e6:.1f}M parameters ({p['non_embedding'] / 1e6:.1f}M without "
                f"embeddings); dev: {result['dev']['windows']} windows, "
                f"{result['dev']['tokens']} tokens")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
