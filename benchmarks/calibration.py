"""Do the scores mean what they say? The best answer's score against how often it is right,
with the model's saved temperature and with temperature 1.0 (the scores as the model gives them).

Answers every question of each data file twice with one model (`QAModel.predict`, `top_k=1`):
once with the temperature saved in the model folder (`qatune train --dev` fits it), once with
1.0. The answers are the same both times (a temperature moves scores, never their order); only
the scores differ. Answering again is exact where re-scoring the saved scores would not be:
decoding adds up the probabilities of spans with the same text, and a sum does not rescale.

A best answer is "right" when it is an exact match (official SQuAD normalization) of a gold
answer; an unanswerable question's best answer is never right. The no-answer threshold plays
no part: the score of the best span is what is judged, as the temperature fit judges it.

Per data file and temperature: questions, EM of the best answer, mean score, expected
calibration error (10 equal bins), ROC AUC of the score for right against wrong, the answers
scored 0.8-1.0 and 0.9-1.0 (count, mean score, share right), and the reliability table.
Prints Markdown (or one JSON object with --json).

    python benchmarks/calibration.py --model /tmp/cal/model /tmp/b9/data/dev.json \\
        /work/shared/data/tydiqa-goldp-v1.1-en-dev.json
    python benchmarks/calibration.py --model /tmp/cal/model /tmp/b9/data/dev.json --json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

from qatune.calibration import SCORE_BINS, expected_calibration_error, reliability_bins, roc_auc
from qatune.data import load_examples
from qatune.inference import QAModel
from qatune.metrics import exact_match
from qatune.settings import read_model_card

HIGH_SCORES = (0.8, 0.9)  # the answers scored at least this much get a row of their own


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", type=Path, nargs="+", help="data files with gold answers (any layout qatune reads)")
    parser.add_argument("--model", type=Path, required=True, help="a model folder qatune wrote")
    parser.add_argument("--engine", default="auto", help="answering engine (default: auto, what users get)")
    parser.add_argument("--bins", type=int, default=SCORE_BINS, help=f"equal-width score bins (default: {SCORE_BINS})")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of Markdown")
    return parser.parse_args(argv)


def best_answers(examples, decoded) -> tuple[list[str | None], np.ndarray]:
    """Each question's best answer text (None without one) and its score (0 without one)."""
    texts = [d.answers[0].text if d.answers else None for d in decoded]
    scores = np.array([d.answers[0].score if d.answers else 0.0 for d in decoded], dtype=np.float64)
    return texts, scores


def right_answers(examples, texts: list[str | None]) -> np.ndarray:
    """Whether each best answer is an exact match of one of its question's gold answers."""
    return np.array(
        [text is not None and any(exact_match(text, gold.text) for gold in example.answers) for example, text in zip(examples, texts)],
        dtype=bool,
    )


def answer_at(model: QAModel, examples, temperature: float) -> tuple[list[str | None], np.ndarray, float]:
    """Best answers and scores of every question at this temperature, and the seconds it took."""
    saved = model.settings
    model.settings = dataclasses.replace(saved, temperature=temperature)
    try:
        started = time.perf_counter()
        decoded = model.predict(examples, top_k=1)
        seconds = time.perf_counter() - started
    finally:
        model.settings = saved
    return *best_answers(examples, decoded), seconds


def high_bin(scores: np.ndarray, right: np.ndarray, low: float) -> dict:
    """The answers scored at least `low`: how many, their mean score, the share right."""
    inside = scores >= low
    count = int(inside.sum())
    return {
        "low": low,
        "count": count,
        "mean_score": float(scores[inside].mean()) if count else None,
        "exact": float(right[inside].mean()) if count else None,
    }


def summarize(scores: np.ndarray, right: np.ndarray, bins: int) -> dict:
    """Everything the tables show for one data file at one temperature (answered questions only)."""
    return {
        "answered": int(scores.size),
        "exact_match": float(right.mean()) if right.size else 0.0,
        "mean_score": float(scores.mean()) if scores.size else 0.0,
        "ece": expected_calibration_error(scores, right, bins),
        "roc_auc": roc_auc(scores, right),
        "high": [high_bin(scores, right, low) for low in HIGH_SCORES],
        "reliability": [dataclasses.asdict(entry) for entry in reliability_bins(scores, right, bins)],
    }


def measure(model: QAModel, path: Path, temperatures: dict[str, float], bins: int) -> dict:
    """One data file: answered once per temperature, summarized per temperature."""
    examples = load_examples(path)
    result = {"file": str(path), "questions": len(examples), "unanswerable": sum(e.unanswerable for e in examples)}
    answers = {}
    for name, temperature in temperatures.items():
        texts, scores, seconds = answer_at(model, examples, temperature)
        answered = np.array([text is not None for text in texts])
        right = right_answers(examples, texts)
        answers[name] = texts
        result[name] = {"temperature": temperature, "seconds": round(seconds, 2)} | summarize(
            scores[answered], right[answered], bins
        )
    first, *others = answers.values()
    result["same_answers"] = all(texts == first for texts in others)
    return result


def percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def score_text(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def high_text(entry: dict) -> str:
    return f"{entry['count']} / {score_text(entry['mean_score'])} / {percent(entry['exact'])}"


def summary_table(results: list[dict], names: list[str]) -> list[str]:
    header = "| data | temperature | questions | EM (best answer) | mean score | ECE (10 bins) | ROC AUC |"
    header += "".join(f" score >= {low} (n / mean score / exact) |" for low in HIGH_SCORES)
    lines = [header, "|" + "---|" * (7 + len(HIGH_SCORES))]
    for result in results:
        for name in names:
            row = result[name]
            cells = [
                Path(result["file"]).name, f"{row['temperature']:.3f} ({name})", str(result["questions"]),
                percent(row["exact_match"]), score_text(row["mean_score"]), percent(row["ece"]),
                score_text(row["roc_auc"]), *(high_text(entry) for entry in row["high"]),
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def reliability_table(result: dict, names: list[str]) -> list[str]:
    header = "| score bin |" + "".join(f" T={result[name]['temperature']:.3f}: n / mean score / exact |" for name in names)
    lines = [f"Reliability, {Path(result['file']).name}:", "", header, "|" + "---|" * (1 + len(names))]
    for index, entry in enumerate(result[names[0]]["reliability"]):
        cells = [f"{entry['low']:.1f}-{entry['high']:.1f}"]
        for name in names:
            bin_ = result[name]["reliability"][index]
            cells.append(f"{bin_['count']} / {score_text(bin_['mean_score'])} / {percent(bin_['accuracy'])}")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def markdown(report: dict) -> str:
    names = list(report["temperatures"])
    calibration = report.get("calibration") or {}
    lines = [
        f"Model {report['model']}: saved temperature {report['temperatures']['fitted']:.3f}"
        + (f" (fitted on {calibration['questions']} dev questions: ECE {percent(calibration['ece_before'])} -> "
           f"{percent(calibration['ece_after'])})" if calibration else " (no calibration in qatune.json)"),
        "",
        *summary_table(report["data"], names),
    ]
    for result in report["data"]:
        lines += ["", *reliability_table(result, names)]
        if not result["same_answers"]:
            lines.append("\nNote: the best answers differ between the temperatures (they should not).")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    card = read_model_card(args.model)
    started = time.perf_counter()
    model = QAModel.from_pretrained(args.model, engine=args.engine)
    load_seconds = time.perf_counter() - started
    temperatures = {"T=1": 1.0, "fitted": model.settings.temperature}
    report = {
        "model": str(args.model),
        "engine": model.engine.describe(),
        "load_seconds": round(load_seconds, 2),
        "calibration": card.get("calibration"),
        "temperatures": temperatures,
        "data": [measure(model, path, temperatures, args.bins) for path in args.data],
    }
    print(json.dumps(report, indent=2) if args.json else markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
