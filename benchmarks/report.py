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
# One row per answering engine and precision; `torch_float32` is the reference for "the same
# answers" (agreement with float32), `qatune_auto` is what users get (`--engine auto`).
INFERENCE_QATUNE = ("qatune_auto", "torch_float32", "torch_bf16", "openvino_float32", "openvino_int8",
                    "onnx_float32", "onnx_int8")
FLOAT32_REFERENCE = "torch_float32"
DEFAULT_ROW = "qatune_auto"
INT8_ROWS = ("openvino_int8", "onnx_int8")
# The CPU flags that say which matrix units the CPU has (from /proc/cpuinfo).
MATRIX_FLAGS = ("amx_bf16", "amx_int8", "amx_tile", "avx512_bf16", "avx512_vnni", "avx512f", "avx2")
# The targets of the inference comparison (checked by `targets`).
TARGET_DEFAULT_SPEEDUP, TARGET_DEFAULT_AGREEMENT = 3.0, 99.0
TARGET_INT8_SPEEDUP, TARGET_INT8_AGREEMENT, TARGET_INT8_F1 = 5.0, 97.0, 0.5
TARGET_LATENCY_SHARE = 0.5  # one-question p50 at most half the pipeline's

RANDOM_WEIGHTS_NOTE = ("random weights (DistilBERT-sized encoder): timings only, "
                       "EM/F1 and agreement are meaningless")


def combine_peaks(measurements: list[dict]) -> dict:
    """The best of several peak measurements (`flops.py peak`), per number format: a busy
    machine only ever lowers a measured peak."""
    best = dict(measurements[0])
    for key in ("float32_flops", "bf16_flops", "int8_flops"):
        values = [m[key] for m in measurements if m.get(key) is not None]
        best[key] = max(values) if values else None
    return {**best, "measurements": measurements}


def precision_peak(precision: str | None, peak: dict | None) -> tuple[float | None, str]:
    """The matmul ceiling of a number format, and its name. A narrower format's ceiling is the
    fastest product an engine could use for it: int8 the int8 peak, or the bf16 or float32 peak
    where torch's int8 product is slower (it is emulated then: about 2 GOP/s on an AVX2-only
    CPU, far below what OpenVINO's int8 kernels reach there); bf16 the bf16 peak, or the float32
    peak on a CPU without bf16 units."""
    peak = peak or {}
    float32, bf16, int8 = (peak.get(f"{name}_flops") for name in ("float32", "bf16", "int8"))
    if precision == "int8":
        choices = [(int8, "int8"), (bf16, "bf16 (int8 product slower)"),
                   (float32, "float32 (int8 and bf16 products slower)")]
    elif precision == "bf16":
        choices = [(bf16, "bf16"), (float32, "float32 (bf16 product slower)")]
    else:
        return float32, "float32"
    measured = [(value, name) for value, name in choices if value is not None]
    # the first (the format's own) wins ties; max() keeps the first of equal keys
    return max(measured, key=lambda choice: choice[0]) if measured else (None, choices[0][1])


def cpu_summary(machine: dict) -> str:
    """'Intel Xeon ..., 2 cores; has amx_bf16 amx_int8 ...; lacks ...' from `run.machine()`."""
    flags = machine.get("matrix_flags")
    text = f"{machine.get('cpu', '?')}, {machine.get('cores', '?')} cores"
    if flags is None:
        return text + "; CPU flags unknown"
    missing = [flag for flag in MATRIX_FLAGS if flag not in flags]
    return (text + f"; has {' '.join(flags) or 'none of ' + ' '.join(MATRIX_FLAGS)}"
            + (f"; lacks {' '.join(missing)}" if missing and flags else ""))


def matrix_units(machine: dict) -> str:
    """A few words for titles: 'AMX (bf16, int8)', 'AVX-512 bf16, no AMX', ..."""
    flags = machine.get("matrix_flags")
    if flags is None:
        return "matrix units unknown"
    amx = [kind for kind in ("bf16", "int8") if f"amx_{kind}" in flags]
    if amx:
        return f"AMX ({', '.join(amx)})"
    if "avx512_bf16" in flags:
        return "AVX-512 bf16" + (" + VNNI" if "avx512_vnni" in flags else "") + ", no AMX"
    if "avx512f" in flags:
        return "AVX-512, no bf16 units, no AMX"
    return "AVX2 only" if "avx2" in flags else "no AVX2"


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
                  agreement: dict | None = None, agreement_float32: dict | None = None) -> dict:
    """One inference system from the result JSON of reference_pipeline.py or qatune_inference.py.
    `engine` ({name, precision, describe}) is the engine the loaded model reported (the
    pipeline: PyTorch float32); `agreement` is against the pipeline's answers,
    `agreement_float32` against qatune PyTorch float32's (`squad_v1.agreement`)."""
    wall_s = result["batched"]["wall_s"]
    engine = result.get("engine") or {"name": "torch", "precision": "float32", "describe": "torch float32"}
    return {"label": label, "engine": engine, "questions": result["batched"]["questions"],
            "questions_per_s": result["batched"]["questions_per_s"],
            "p50_ms": result["single"]["p50_ms"], "p95_ms": result["single"]["p95_ms"],
            "mean_ms": result["single"].get("mean_ms"),
            "latency_questions": result["single"]["questions"],
            "peak_rss_mib": peak_rss_mib, "dev": result["dev"], "agreement": agreement,
            "agreement_float32": agreement_float32,
            "flops": flops, "achieved_flops": flops / wall_s if wall_s > 0 else 0.0}


def rows(results: dict) -> list[dict]:
    """Every measured row, training and inference (skipped ones left out)."""
    return [row for group in ("training", "inference") for row in results.get(group, {}).values()
            if isinstance(row, dict) and "achieved_flops" in row]


def add_utilization(results: dict) -> None:
    """Put each row's MFU (against `results["peak"]`) into the row."""
    for row in rows(results):
        row.update(utilization(row["achieved_flops"], results.get("peak")))
        if "engine" in row:  # inference: also against the peak of the precision it computes in
            ceiling, name = precision_peak(row["engine"].get("precision"), results.get("peak"))
            row["mfu_own_precision"] = {"peak": name, "mfu": row["achieved_flops"] / ceiling if ceiling else None}


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
        if not _measured(ours):
            continue
        entry = {}
        for ref_name in TRAINING_REFERENCES:
            ref = train.get(ref_name)
            if _measured(ref):
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
            "agreement_float32_em": (ours.get("agreement_float32") or {}).get("exact_match"),
        }
    return out


# ---------------------------------------------------------------------------------------
# Targets of the inference comparison
# ---------------------------------------------------------------------------------------
def _measured(row: dict | None) -> bool:
    return bool(row) and "skipped" not in row


def _ceiling(row: dict, peak: dict | None, needed_factor: float, rate: float | None = None) -> str:
    """Achieved FLOP/s of `row` (or `rate`) against the matmul peak of its precision, and what
    the target would need: `needed_factor` times that rate."""
    rate = row["achieved_flops"] if rate is None else rate
    ceiling, name = precision_peak(row["engine"].get("precision"), peak)
    if not ceiling:
        return f"{rate / 1e9:.0f} GFLOP/s achieved; no {name} peak measured"
    needed = rate * needed_factor
    return (f"{rate / 1e9:.0f} GFLOP/s achieved = {100 * rate / ceiling:.0f}% of the {name} matmul peak "
            f"({ceiling / 1e9:.0f}); the target needs {needed / 1e9:.0f} GFLOP/s = "
            f"{100 * needed / ceiling:.0f}% of it")


def targets(results: dict) -> list[dict]:
    """Each target: what it asks, what the run measured, met (True/False, None: not measured)
    and, for a missed speed target, the ceiling (FLOP/s achieved against the peak of the
    precision the row computed in)."""
    inference = results.get("inference", {})
    pipe, peak = inference.get(INFERENCE_REFERENCE), results.get("peak")
    out: list[dict] = []
    if not _measured(pipe):
        return out
    r = ratios(results)["inference"]
    fp32 = inference.get(FLOAT32_REFERENCE)
    fp32_note = "" if _measured(fp32) else " (no PyTorch float32 row: agreement not measured)"

    default = inference.get(DEFAULT_ROW)
    name = f"default engine (`auto`) >= {TARGET_DEFAULT_SPEEDUP:g}x the pipeline's questions/s, " \
           f">= {TARGET_DEFAULT_AGREEMENT:g}% answers identical to PyTorch float32"
    if _measured(default):
        speedup, agree = r[DEFAULT_ROW]["speedup"], r[DEFAULT_ROW]["agreement_float32_em"]
        met = speedup >= TARGET_DEFAULT_SPEEDUP and agree is not None and agree >= TARGET_DEFAULT_AGREEMENT
        target = {"target": name, "row": DEFAULT_ROW, "met": met,
                  "measured": f"{default['engine']['describe']}: {speedup:.2f}x, {_fmt(agree, '.1f', '%')} "
                              f"identical{fp32_note}"}
        if speedup < TARGET_DEFAULT_SPEEDUP:
            target["ceiling"] = _ceiling(default, peak, TARGET_DEFAULT_SPEEDUP / speedup)
        out.append(target)
    else:
        out.append({"target": name, "row": DEFAULT_ROW, "met": None,
                    "measured": f"not run ({(default or {}).get('skipped', 'no row')})"})

    for row_name in INT8_ROWS:
        row = inference.get(row_name)
        name = (f"{row_name.split('_')[0]} int8 >= {TARGET_INT8_SPEEDUP:g}x the pipeline, >= "
                f"{TARGET_INT8_AGREEMENT:g}% identical to PyTorch float32, F1 at most {TARGET_INT8_F1:g} below it")
        if not _measured(row):
            out.append({"target": name, "row": row_name, "met": None,
                        "measured": f"not run ({(row or {}).get('skipped', 'no row')})"})
            continue
        speedup, agree = r[row_name]["speedup"], r[row_name]["agreement_float32_em"]
        f1_delta = row["dev"]["f1"] - fp32["dev"]["f1"] if _measured(fp32) else None
        met = (speedup >= TARGET_INT8_SPEEDUP and agree is not None and agree >= TARGET_INT8_AGREEMENT
               and f1_delta is not None and f1_delta >= -TARGET_INT8_F1)  # "within": loses at most
        target = {"target": name, "row": row_name, "met": met,
                  "measured": f"{row['engine']['describe']}: {speedup:.2f}x, {_fmt(agree, '.1f', '%')} identical, "
                              f"F1 {_fmt(f1_delta, '+.1f')} vs float32{fp32_note}"}
        if speedup < TARGET_INT8_SPEEDUP:
            target["ceiling"] = _ceiling(row, peak, TARGET_INT8_SPEEDUP / speedup)
        out.append(target)

    name = f"one-question p50 <= {TARGET_LATENCY_SHARE:g} x the pipeline's (default engine)"
    if _measured(default):
        wanted = TARGET_LATENCY_SHARE * pipe["p50_ms"]
        met = default["p50_ms"] <= wanted
        target = {"target": name, "row": DEFAULT_ROW, "met": met,
                  "measured": f"{default['p50_ms']:.0f} ms vs the pipeline's {pipe['p50_ms']:.0f} ms "
                              f"(target {wanted:.0f} ms)"}
        if not met and default.get("mean_ms") and default.get("questions"):
            # The average question's work at the one-at-a-time pace: an estimate (the latency
            # questions are the first N, the FLOPs are those of all questions).
            single_rate = default["flops"] / default["questions"] / (default["mean_ms"] / 1000)
            target["ceiling"] = "one at a time, about " + _ceiling(
                default, peak, default["p50_ms"] / wanted, rate=single_rate)
        out.append(target)
    else:
        out.append({"target": name, "row": DEFAULT_ROW, "met": None, "measured": "not run"})

    cli = inference.get("qatune_predict_cli")
    name = "`qatune predict` peak RSS <= the pipeline's"
    if cli:
        met = cli["peak_rss_mib"] <= pipe["peak_rss_mib"]
        out.append({"target": name, "row": "qatune_predict_cli", "met": met,
                    "measured": f"{cli['peak_rss_mib']:.0f} MiB vs the pipeline's {pipe['peak_rss_mib']:.0f} MiB "
                                f"({cli['peak_rss_mib'] / pipe['peak_rss_mib']:.2f}x)"})
    else:
        out.append({"target": name, "row": "qatune_predict_cli", "met": None, "measured": "not run"})
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


def _over_peak(row: dict, peak: dict) -> bool:
    """Whether a row computed faster than the matmul peak of its precision (inference rows) or
    than the float32 peak (training rows, whose precision the report does not record)."""
    ceiling = precision_peak(row["engine"].get("precision"), peak)[0] if "engine" in row else peak.get("float32_flops")
    return bool(ceiling) and row["achieved_flops"] > ceiling


def header(results: dict) -> list[str]:
    m, s = results["machine"], results["settings"]
    loads = [step["load_average_before"][0] for step in results.get("steps", [])]
    changed = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in s.get("overrides", {}).items())
    lines = [
        f"### qatune speed benchmark: `{s['setting']}` setting{f' ({changed})' if changed else ''}, "
        f"model `{s['model']}`, on {m['cpu']} ({matrix_units(m)})",
        "",
        f"CPU: {cpu_summary(m)} (matrix-unit flags from /proc/cpuinfo; the figures hold for this CPU only).",
        f"Software: torch {m.get('torch', '?')}, transformers {m.get('transformers', '?')} "
        f"(pipeline: transformers {m.get('transformers_reference', '?')})"
        + "".join(f", {name} {m[name]}" for name in ("onnxruntime", "openvino") if m.get(name))
        + f"; {m['date']}.",
    ]
    if loads:
        lines.append(f"Load average (1 min) before the steps: {min(loads):.1f} to {max(loads):.1f} "
                     "(steps ran one after the other).")
    peak = results.get("peak")
    if peak:
        times = len(peak.get("measurements", [peak]))
        int8 = peak.get("int8_flops")
        lines.append(f"Matmul peak ({peak['size']}x{peak['size']}, best of up to {peak['repeats']} repeats"
                     f"{f', best of {times} measurements' if times > 1 else ''}): float32 "
                     f"{peak['float32_flops'] / 1e9:.0f} GFLOP/s, bf16 {peak['bf16_flops'] / 1e9:.0f} GFLOP/s, "
                     f"int8 {'n/a' if int8 is None else f'{int8 / 1e9:.0f} GOP/s'} (torch `_int_mm`).")
        if any(_over_peak(row, peak) for row in rows(results)):
            lines.append("Some rows exceed the peak of their precision (training: the float32 peak): it was "
                         "measured while the machine was busier than during those steps (or they use faster "
                         "units); rerun on an idle machine.")
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
    lines = ["", f"#### Training ({results['machine']['cpu']}, {matrix_units(results['machine'])})", "",
             "| system | train s | windows/s | speed-up vs Trainer | vs Trainer --bf16 | peak RSS MiB "
             f"| memory vs Trainer | dev EM{f1_note} | dev F1{f1_note} | F1 vs Trainer | GFLOP/s "
             "| MFU (fp32 peak) | MFU (bf16 peak) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    skipped = []
    for name in TRAINING_REFERENCES + TRAINING_QATUNE:
        row = train.get(name)
        if not row:
            continue
        if "skipped" in row:
            skipped.append(f"{row['label']}: not run ({row['skipped']})")
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
    return lines + [f"- {line}" for line in skipped]


def inference_table(results: dict) -> list[str]:
    inference = results.get("inference", {})
    if INFERENCE_REFERENCE not in inference:
        return []
    r = ratios(results)["inference"]
    peak = results.get("peak")
    f1_note = " (meaningless)" if results["settings"]["model"] == "distilbert" else ""
    lines = ["", f"#### Inference ({inference.get('model_label', 'one model for every system')}; "
                 f"{results['machine']['cpu']}, {matrix_units(results['machine'])})", "",
             "| system | engine (as loaded) | questions/s | speed-up vs pipeline | p50 ms | p95 ms "
             f"| peak RSS MiB | memory vs pipeline | EM{f1_note} | F1{f1_note} | F1 vs pipeline "
             "| same answer as pipeline | same answer as PyTorch float32 | GFLOP/s | MFU (peak of its precision) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    skipped = []
    for name in (INFERENCE_REFERENCE,) + INFERENCE_QATUNE:
        row = inference.get(name)
        if not row:
            continue
        if "skipped" in row:
            skipped.append(f"{row['label']}: not run ({row['skipped']})")
            continue
        entry = r.get(name, {})
        engine = row.get("engine", {})
        ceiling, ceiling_name = precision_peak(engine.get("precision"), peak)
        mfu = f"{_pct(row['achieved_flops'] / ceiling if ceiling else None)} ({ceiling_name.split(' ')[0]})"
        same_fp32 = "(reference)" if name == FLOAT32_REFERENCE else _fmt(entry.get("agreement_float32_em"), ".1f", "%")
        lines.append(
            f"| {row['label']} | {engine.get('describe', '?')} | {row['questions_per_s']:.1f} "
            f"| {_fmt(entry.get('speedup'), '.2f', 'x')} "
            f"| {row['p50_ms']:.0f} | {row['p95_ms']:.0f} | {row['peak_rss_mib']:.0f} "
            f"| {_fmt(entry.get('memory'), '.2f', 'x')} | {row['dev']['exact_match']:.1f} | {row['dev']['f1']:.1f} "
            f"| {_fmt(entry.get('f1_minus_pipeline'), '+.1f')} "
            f"| {'(reference)' if name == INFERENCE_REFERENCE else _fmt(entry.get('agreement_em'), '.1f', '%')} "
            f"| {same_fp32} | {row['achieved_flops'] / 1e9:.0f} | {mfu} |")
    lines += [f"- {line}" for line in skipped]
    first_loads = [f"{inference[name]['label']} {inference[name]['first_load_s']:.1f} s"
                   for name in INFERENCE_QATUNE
                   if _measured(inference.get(name)) and inference[name].get("first_load_s") is not None]
    if first_loads:
        lines += ["", "First load of the model folder by an engine that converts it (`--load-only`, before "
                      "the timed run, which loads the cached conversion as a user's second run does; rows of one "
                      "engine share the conversion, so the first of them pays for it): "
                      + "; ".join(first_loads) + "."]
    cli = inference.get("qatune_predict_cli")
    if cli:
        pipe = inference[INFERENCE_REFERENCE]
        agree = (cli.get("agreement_with_api") or {}).get("exact_match")
        lines += ["", f"`qatune predict` end to end (default engine, process start to predictions file, "
                      f"{cli['questions']} questions): {cli['wall_s']:.1f} s, peak RSS "
                      f"{cli['peak_rss_mib']:.0f} MiB against the pipeline's {pipe['peak_rss_mib']:.0f} MiB "
                      f"({_fmt(_ratio(cli['peak_rss_mib'], pipe['peak_rss_mib']), '.2f', 'x')}); its answers match "
                      f"the timed default-engine run's on {_fmt(agree, '.1f', '%')} of the questions."]
    return lines + targets_lines(results)


def targets_lines(results: dict) -> list[str]:
    found = targets(results)
    if not found:
        return []
    lines = ["", "Targets:"]
    for target in found:
        verdict = {True: "**pass**", False: "**FAIL**", None: "not measured"}[target["met"]]
        lines.append(f"- {verdict}: {target['target']}: {target['measured']}")
        if target.get("ceiling"):
            lines.append(f"  - ceiling: {target['ceiling']}")
    return lines


NOTES = [
    "",
    "Notes: *train s* is the training loop alone (no loading, tokenizing, evaluation or saving). "
    "*windows/s*: windows trained per second (qatune: training items, one per window and answer, "
    "the same count here since each training question keeps its first answer). Speed-ups are "
    "throughput ratios qatune / reference; *memory* is the ratio of the peak resident set size "
    "of the processes (below 1: qatune uses less). qatune trains without `--dev`, so that no "
    "epoch is picked on the data it is scored on; its model is scored from `qatune predict`. "
    "Inference: throughput over every dev question in batches after one warm-up question; "
    "latency of questions one at a time (`QAModel.ask`; the pipeline called with one question); "
    "*engine (as loaded)* is what the loaded model reports (`model.engine.describe()`); *same answer* "
    "is the exact match (SQuAD-normalized) of the row's answers against the pipeline's and against "
    "qatune PyTorch float32's; MFU is against the matmul peak of the precision the row computes in. "
    "FLOPs count real (unpadded) tokens: training 6 x non-embedding parameters per token plus "
    "attention 12 x layers x hidden x length^2 per window; inference 2 x ... plus 4 x ...; "
    "the int8 model's rate is in FLOP-equivalents of the float model.",
]


def markdown(results: dict) -> str:
    return "\n".join(header(results) + training_table(results) + inference_table(results) + NOTES)
