"""The benchmark's rows, its ratios qatune / reference and the Markdown table, from the results.

Plain Python (no torch, no qatune): `run.py` builds the rows from the steps' JSON results with
`training_row` and `inference_row`, and `markdown` turns the whole results dict into the text
pasted into BENCHMARKS.md.

    >>> row = training_row("Trainer", wall_s=10.0, windows=50, peak_rss_mib=900.0,
    ...                    dev={"exact_match": 40.0, "f1": 50.0}, flops=2e12)
    >>> row["windows_per_s"], row["achieved_flops"]
    (5.0, 200000000000.0)
    >>> utilization(row["achieved_flops"], {"float32_flops": 4e11, "bf16_flops": 1e12})
    {'mfu_float32': 0.5, 'mfu_bf16': 0.2}
"""

from __future__ import annotations

# Keys of the rows in `results["training"]` and `results["inference"]`; the first of each is
# the baseline the ratios are taken against.
TRAINING_REFERENCES = ("trainer", "trainer_bf16")
TRAINING_QATUNE = ("qatune", "qatune_defaults", "qatune_no_dropout")
INFERENCE_REFERENCE = "pipeline"
INFERENCE_QATUNE = ("qatune_bf16", "qatune_float32", "onnx_float32", "onnx_int8")

RANDOM_WEIGHTS_NOTE = ("random weights (DistilBERT-sized encoder): timings only, "
                       "EM/F1 and agreement are meaningless")


def combine_peaks(measurements: list[dict]) -> dict:
    """The best of several peak measurements (`flops.py peak`), per number format: a busy
    machine only ever lowers a measured peak."""
    best = dict(measurements[0])
    for key in ("float32_flops", "bf16_flops"):
        best[key] = max(m[key] for m in measurements)
    return {**best, "measurements": measurements}


def utilization(achieved_flops: float, peak: dict | None) -> dict:
    """Achieved FLOP/s as a share of the float32 and of the bf16 matmul peak (None: no peak)."""
    shares = {}
    for name in ("float32", "bf16"):
        ceiling = (peak or {}).get(f"{name}_flops")
        shares[f"mfu_{name}"] = achieved_flops / ceiling if ceiling else None
    return shares


def training_row(label: str, *, wall_s: float, windows: float, peak_rss_mib: float, dev: dict,
                 flops: float) -> dict:
    """One training system: `windows` trained (qatune: training items) in `wall_s` seconds,
    `flops` of useful work done."""
    return {"label": label, "wall_s": wall_s, "windows": windows,
            "windows_per_s": windows / wall_s if wall_s > 0 else 0.0,
            "peak_rss_mib": peak_rss_mib, "dev": dev, "flops": flops,
            "achieved_flops": flops / wall_s if wall_s > 0 else 0.0}


def inference_row(label: str, result: dict, *, peak_rss_mib: float, flops: float,
                  agreement: dict | None) -> dict:
    """One inference system from the result JSON of reference_pipeline.py or qatune_inference.py."""
    wall_s = result["batched"]["wall_s"]
    return {"label": label, "questions": result["batched"]["questions"],
            "questions_per_s": result["batched"]["questions_per_s"],
            "p50_ms": result["single"]["p50_ms"], "p95_ms": result["single"]["p95_ms"],
            "latency_questions": result["single"]["questions"],
            "peak_rss_mib": peak_rss_mib, "dev": result["dev"], "agreement": agreement,
            "flops": flops, "achieved_flops": flops / wall_s if wall_s > 0 else 0.0}


def rows(results: dict) -> list[dict]:
    """Every measured row, training and inference (skipped ones left out)."""
    return [row for group in ("training", "inference") for row in results.get(group, {}).values()
            if isinstance(row, dict) and "achieved_flops" in row]


def add_utilization(results: dict) -> None:
    """Put each row's MFU (against `results["peak"]`) into the row."""
    for row in rows(results):
        row.update(utilization(row["achieved_flops"], results.get("peak")))


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def ratios(results: dict) -> dict:
    """Every row against the references (qatune / reference for qatune's rows): speed-up
    (throughput ratio; latency as reference / row), memory (peak RSS ratio) and F1 difference
    (points). The references get them too: the Trainer's --bf16 against its default flags."""
    out: dict = {"training": {}, "inference": {}}
    train = results.get("training", {})
    for name in TRAINING_REFERENCES + TRAINING_QATUNE:
        ours = train.get(name)
        if not ours:
            continue
        entry = {}
        for ref_name in TRAINING_REFERENCES:
            ref = train.get(ref_name)
            if ref:
                entry[f"speedup_vs_{ref_name}"] = _ratio(ours["windows_per_s"], ref["windows_per_s"])
                entry[f"memory_vs_{ref_name}"] = _ratio(ours["peak_rss_mib"], ref["peak_rss_mib"])
                entry[f"f1_minus_{ref_name}"] = ours["dev"]["f1"] - ref["dev"]["f1"]
        out["training"][name] = entry
    inference = results.get("inference", {})
    pipe = inference.get(INFERENCE_REFERENCE)
    for name in (INFERENCE_REFERENCE,) + INFERENCE_QATUNE:
        ours = inference.get(name)
        if not pipe or not ours or "skipped" in ours:
            continue
        out["inference"][name] = {
            "speedup": _ratio(ours["questions_per_s"], pipe["questions_per_s"]),
            "latency_p50_speedup": _ratio(pipe["p50_ms"], ours["p50_ms"]),
            "memory": _ratio(ours["peak_rss_mib"], pipe["peak_rss_mib"]),
            "f1_minus_pipeline": ours["dev"]["f1"] - pipe["dev"]["f1"],
            "agreement_em": (ours.get("agreement") or {}).get("exact_match"),
        }
    return out


# ---------------------------------------------------------------------------------------
# Markdown
# ---------------------------------------------------------------------------------------
def _fmt(value, spec: str = ".1f", suffix: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{suffix}"


def _pct(value) -> str:
    return _fmt(None if value is None else 100 * value, ".1f", "%")


def _flops_cells(row: dict, peak: dict | None) -> str:
    shares = utilization(row["achieved_flops"], peak)
    return f"{row['achieved_flops'] / 1e9:.0f} | {_pct(shares['mfu_float32'])} | {_pct(shares['mfu_bf16'])}"


def header(results: dict) -> list[str]:
    m, s = results["machine"], results["settings"]
    loads = [step["load_average_before"][0] for step in results.get("steps", [])]
    changed = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in s.get("overrides", {}).items())
    lines = [
        f"### qatune speed benchmark: `{s['setting']}` setting{f' ({changed})' if changed else ''}, "
        f"model `{s['model']}`",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores; torch {m.get('torch', '?')}, transformers "
        f"{m.get('transformers', '?')} (pipeline: transformers {m.get('transformers_reference', '?')}); "
        f"{m['date']}.",
    ]
    if loads:
        lines.append(f"Load average (1 min) before the steps: {min(loads):.1f} to {max(loads):.1f} "
                     "(steps ran one after the other).")
    peak = results.get("peak")
    if peak:
        times = len(peak.get("measurements", [peak]))
        lines.append(f"Matmul peak ({peak['size']}x{peak['size']}, best of {peak['repeats']} repeats"
                     f"{f', best of {times} measurements' if times > 1 else ''}): float32 "
                     f"{peak['float32_flops'] / 1e9:.0f} GFLOP/s, bf16 {peak['bf16_flops'] / 1e9:.0f} GFLOP/s.")
        if any(utilization(row["achieved_flops"], peak)["mfu_float32"] > 1 for row in rows(results)):
            lines.append("Some rows exceed the float32 peak: it was measured while the machine was "
                         "busier than during those steps (or they use faster units); rerun on an idle machine.")
    data = results.get("data", {})
    lines.append(f"Data: {data.get('train_questions', '?')} training questions, {s['epochs']} epoch(s), "
                 f"batch {s['batch_size']}, lr {s['lr']}, seed {s['seed']}; {data.get('dev_questions', '?')} "
                 "dev questions, every system scored with `benchmarks/squad_v1.py` (SQuAD v1.1 EM/F1).")
    if s["model"] == "distilbert":
        lines.append(f"**Model with {RANDOM_WEIGHTS_NOTE}.**")
    return lines


def training_table(results: dict) -> list[str]:
    train = results.get("training", {})
    if not train:
        return []
    r = ratios(results)["training"]
    f1_note = " (meaningless)" if results["settings"]["model"] == "distilbert" else ""
    lines = ["", "#### Training", "",
             "| system | train s | windows/s | speed-up vs Trainer | vs Trainer --bf16 | peak RSS MiB "
             f"| memory vs Trainer | dev EM{f1_note} | dev F1{f1_note} | F1 vs Trainer | GFLOP/s "
             "| MFU (fp32 peak) | MFU (bf16 peak) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name in TRAINING_REFERENCES + TRAINING_QATUNE:
        row = train.get(name)
        if not row:
            continue
        entry = r.get(name, {})
        lines.append(
            f"| {row['label']} | {row['wall_s']:.1f} | {row['windows_per_s']:.2f} "
            f"| {_fmt(entry.get('speedup_vs_trainer'), '.2f', 'x')} "
            f"| {_fmt(entry.get('speedup_vs_trainer_bf16'), '.2f', 'x')} "
            f"| {row['peak_rss_mib']:.0f} | {_fmt(entry.get('memory_vs_trainer'), '.2f', 'x')} "
            f"| {row['dev']['exact_match']:.1f} | {row['dev']['f1']:.1f} "
            f"| {_fmt(entry.get('f1_minus_trainer'), '+.1f')} "
            f"| {_flops_cells(row, results.get('peak'))} |")
    return lines


def inference_table(results: dict) -> list[str]:
    inference = results.get("inference", {})
    if INFERENCE_REFERENCE not in inference:
        return []
    r = ratios(results)["inference"]
    f1_note = " (meaningless)" if results["settings"]["model"] == "distilbert" else ""
    lines = ["", f"#### Inference ({inference.get('model_label', 'one model for every system')})", "",
             "| system | questions/s | speed-up vs pipeline | p50 ms | p95 ms | peak RSS MiB "
             f"| memory vs pipeline | F1{f1_note} | F1 vs pipeline | agreement with pipeline (EM) "
             "| GFLOP/s | MFU (fp32 peak) | MFU (bf16 peak) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    skipped = []
    for name in (INFERENCE_REFERENCE,) + INFERENCE_QATUNE:
        row = inference.get(name)
        if not row:
            continue
        if "skipped" in row:
            skipped.append(f"{row['label']}: not run ({row['skipped']})")
            continue
        entry = r.get(name, {})
        lines.append(
            f"| {row['label']} | {row['questions_per_s']:.1f} | {_fmt(entry.get('speedup'), '.2f', 'x')} "
            f"| {row['p50_ms']:.0f} | {row['p95_ms']:.0f} | {row['peak_rss_mib']:.0f} "
            f"| {_fmt(entry.get('memory'), '.2f', 'x')} | {row['dev']['f1']:.1f} "
            f"| {_fmt(entry.get('f1_minus_pipeline'), '+.1f')} "
            f"| {_fmt(entry.get('agreement_em'), '.1f', '%')} "
            f"| {_flops_cells(row, results.get('peak'))} |")
    cli = inference.get("qatune_predict_cli")
    if cli:
        agree = (cli.get("agreement_with_api") or {}).get("exact_match")
        lines += ["", f"`qatune predict` end to end (process start to predictions file, "
                      f"{cli['questions']} questions): {cli['wall_s']:.1f} s, peak RSS "
                      f"{cli['peak_rss_mib']:.0f} MiB; its answers match the timed bf16 run's on "
                      f"{_fmt(agree, '.1f', '%')} of the questions."]
    return lines + [f"- {line}" for line in skipped]


NOTES = [
    "",
    "Notes: *train s* is the training loop alone (no loading, tokenizing, evaluation or saving). "
    "*windows/s*: windows trained per second (qatune: training items, one per window and answer, "
    "the same count here since each training question keeps its first answer). Speed-ups are "
    "throughput ratios qatune / reference; *memory* is the ratio of the peak resident set size "
    "of the processes (below 1: qatune uses less). qatune trains without `--dev`, so that no "
    "epoch is picked on the data it is scored on; its model is scored from `qatune predict`. "
    "Inference: throughput over every dev question in batches after one warm-up question; "
    "latency of questions one at a time (`QAModel.ask`; the pipeline called with one question). "
    "FLOPs count real (unpadded) tokens: training 6 x non-embedding parameters per token plus "
    "attention 12 x layers x hidden x length^2 per window; inference 2 x ... plus 4 x ...; "
    "the int8 model's rate is in FLOP-equivalents of the float model.",
]


def markdown(results: dict) -> str:
    return "\n".join(header(results) + training_table(results) + inference_table(results) + NOTES)
