"""Why qatune's answers and the pipeline's differ: the same model, several ways to decode.

Answers every question of a SQuAD file with one model and compares each way with the answers
the transformers 4.x pipeline gave (the `pipeline.predictions.json` that `run.py` writes):

- qatune float32, token spans (`align_to_words=False`) and word spans (the default);
- qatune bf16 autocast with its float32 QA head, without and with the float32 re-check of close
  calls (`QAModel.predict`, the default where bf16 is fast);
- the pipeline's own rule applied to qatune's float32 logits: a softmax per window over CLS and
  context tokens, its 12 best pairs per window aligned to words, answers with the same
  lower-cased text summed over pairs and windows. If this row agrees 100%, every other
  difference is the decoding rule (or bf16), not the model or the windows.

Prints a Markdown table: agreement with the pipeline (exact same text), SQuAD v1.1 EM/F1.

    python benchmarks/decoding_agreement.py --model /tmp/bench-run/qatune/model \\
        --data /tmp/bench-run/data/dev.json --pipeline /tmp/bench-run/inference/pipeline.predictions.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from squad_v1 import agreement, answerable, read_squad, score

PIPELINE_PAIRS_PER_WINDOW = 12  # top_k * 2 + 10 with top_k = 1, when aligning to words
PIPELINE_MAX_ANSWER_LEN = 30  # as reference_pipeline.py calls it


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="a model folder qatune wrote")
    parser.add_argument("--data", type=Path, required=True, help="the SQuAD file the pipeline answered")
    parser.add_argument("--pipeline", type=Path, required=True, help="the pipeline's predictions (id -> text)")
    return parser.parse_args(argv)


def predictions_of(examples, decoded) -> dict[str, str]:
    return {example.id: (d.answers[0].text if d.answers else "") for example, d in zip(examples, decoded)}


def pipeline_rule(examples, windows, starts, ends) -> dict[str, str]:
    """The transformers 4.x pipeline's decoding, applied to the given logits."""
    found: list[dict[str, list]] = [{} for _ in examples]  # lower-cased text -> [probability, text]
    for w, example_index in enumerate(windows.example_index.tolist()):
        offsets, words = windows.offsets[w], windows.word_offsets[w]
        allowed = offsets[:, 0] >= 0
        allowed[0] = True  # CLS takes part in the softmax, then is zeroed
        p_start, p_end = (_masked_softmax(logits.astype(np.float64), allowed) for logits in (starts[w], ends[w]))
        p_start[0] = p_end[0] = 0.0
        pairs = np.triu(np.tril(np.outer(p_start, p_end), PIPELINE_MAX_ANSWER_LEN - 1))
        best = np.argsort(-pairs, axis=None, kind="stable")[:PIPELINE_PAIRS_PER_WINDOW]
        context = examples[example_index].context
        for s, e in zip(*np.unravel_index(best, pairs.shape)):
            if not (allowed[s] and allowed[e]) or s == 0 or e == 0:
                continue
            text = context[words[s, 0] : words[e, 1]]
            entry = found[example_index].setdefault(text.lower(), [0.0, text])
            entry[0] += pairs[s, e]
    return {
        example.id: max(answers.values(), key=lambda entry: entry[0])[1] if answers else ""
        for example, answers in zip(examples, found)
    }


def _masked_softmax(logits: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    masked = np.where(allowed, logits[: allowed.size], -10000.0)
    weights = np.exp(masked - masked.max())
    return weights / weights.sum()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from qatune.data import load_examples
    from qatune.inference import QAModel, decode_examples, window_logits
    from qatune.features import make_windows

    reference = json.loads(args.pipeline.read_text(encoding="utf-8"))
    gold = answerable(read_squad(args.data))
    wanted = {q["id"] for q in gold}
    examples = [e for e in load_examples(args.data) if e.id in wanted]

    exact = QAModel.from_pretrained(args.model, engine="torch", bf16=False)
    fast = QAModel.from_pretrained(args.model, engine="torch", bf16=True)
    windows = make_windows(examples, exact.tokenizer, exact.settings)
    pad = exact.tokenizer.pad_token_id or 0
    starts, ends = window_logits(exact.engine, windows, pad_token_id=pad)
    bf16_starts, bf16_ends = window_logits(fast.engine, windows, pad_token_id=pad)
    token_spans = type(exact.settings)(**{**exact.settings.to_dict(), "align_to_words": False})

    rows = {
        "qatune float32, token spans (`align_to_words=False`)":
            predictions_of(examples, decode_examples(examples, windows, starts, ends, token_spans)),
        "qatune float32, word spans (default)":
            predictions_of(examples, decode_examples(examples, windows, starts, ends, exact.settings)),
        "qatune bf16 autocast, float32 QA head, no re-check":
            predictions_of(examples, decode_examples(examples, windows, bf16_starts, bf16_ends, exact.settings)),
        "qatune bf16 `predict` (close calls re-checked in float32; default)":
            predictions_of(examples, fast.predict(examples)),
        "the pipeline's rule on qatune's float32 logits": pipeline_rule(examples, windows, starts, ends),
    }
    print(f"{len(examples)} questions, {len(windows)} windows; model {args.model}\n")
    print("| decoding | agreement with the pipeline | EM | F1 |")
    print("|---|---|---|---|")
    for label, predictions in rows.items():
        metrics = score(predictions, gold)
        same = agreement(predictions, reference)
        print(f"| {label} | {same['exact_match']:.1f}% | {metrics['exact_match']:.2f} | {metrics['f1']:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
