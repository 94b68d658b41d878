"""Checks of the benchmark's own machinery: steps, the FLOPs model, ratios and the report.

    python -m pytest benchmarks/test_run.py -q
"""

from __future__ import annotations

import json
import sys

import pytest

import prepare_data
import report
import run
from flops import inference_flops, training_flops, window_stats
from squad_v1 import read_squad
from steps import StepFailed, Steps
from test_reference import squad_v2

MODEL = {"non_embedding": 1000, "layers": 2, "hidden": 8}
PEAK = {"float32_flops": 1e12, "bf16_flops": 2e12, "size": 2048, "repeats": 10, "torch": "2.x"}


# --- steps ---------------------------------------------------------------------------------
def test_a_step_records_its_load_peak_memory_and_output(tmp_path):
    steps = Steps(tmp_path, cwd=tmp_path)
    # Allocating 200 MiB must show in the child's own peak RSS, measured from outside.
    code = "b = bytearray(200 * 1024 * 1024); print('done')"
    record = steps.run("alloc", [sys.executable, "-c", code])
    assert record["stdout"] == "done\n"
    assert 200 < record["peak_rss_mib"] < 1000
    assert len(record["load_average_before"]) == 3 and record["exit_code"] == 0
    assert steps.records[0]["name"] == "alloc" and "stdout" not in steps.records[0]


def test_a_failing_step_raises_with_the_end_of_its_log_and_is_still_recorded(tmp_path):
    steps = Steps(tmp_path, cwd=tmp_path)
    with pytest.raises(StepFailed) as failure:
        steps.run("bad", [sys.executable, "-c", "import sys; sys.exit('no model here')"])
    assert failure.value.summary == "exit code 1: no model here"
    assert str(tmp_path / "logs" / "bad.log") in failure.value.details
    assert steps.records[-1]["exit_code"] == 1


# --- FLOPs model -----------------------------------------------------------------------------
def test_window_stats_count_real_tokens_and_squared_lengths():
    assert window_stats([3, 4]) == {"windows": 2, "tokens": 7, "squared_lengths": 25, "mean_length": 3.5}


def test_training_costs_three_forward_passes_and_scales_with_epochs():
    windows = window_stats([10, 20])
    forward = inference_flops(windows, MODEL)
    assert forward == {"dense": 2 * 1000 * 30, "attention": 4 * 2 * 8 * 500, "total": 60000 + 32000}
    two_epochs = training_flops(windows, MODEL, fraction=2)
    assert two_epochs["total"] == pytest.approx(2 * 3 * forward["total"])


# --- rows, ratios, report ------------------------------------------------------------------
def fake_results(model: str = "minilm") -> dict:
    def train_row(label, wall_s, rss, f1):
        return report.training_row(label, wall_s=wall_s, windows=100, peak_rss_mib=rss,
                                   dev={"exact_match": f1 - 10, "f1": f1}, flops=1e12)

    def infer_row(label, qps, p50, rss, f1, agreement=None):
        result = {"batched": {"questions": 50, "questions_per_s": qps, "wall_s": 50 / qps},
                  "single": {"questions": 20, "p50_ms": p50, "p95_ms": 2 * p50},
                  "dev": {"exact_match": f1 - 10, "f1": f1}}
        return report.inference_row(label, result, peak_rss_mib=rss, flops=1e11, agreement=agreement)

    return {
        "machine": {"cpu": "Some CPU", "cores": 2, "date": "2026-01-01 00:00 UTC", "torch": "2.x",
                    "transformers": "5.x", "transformers_reference": "4.x"},
        "settings": {"setting": "small", "model": model, "epochs": 1, "batch_size": 12, "lr": 2e-4,
                     "seed": 42, "overrides": {"train_questions": 24}},
        "steps": [{"load_average_before": [0.5, 0, 0]}, {"load_average_before": [1.5, 0, 0]}],
        "peak": PEAK,
        "data": {"train_questions": 24, "dev_questions": 50},
        "training": {"trainer": train_row("HF Trainer", 100.0, 3000.0, 30.0),
                     "trainer_bf16": train_row("HF Trainer --bf16", 80.0, 3000.0, 31.0),
                     "qatune": train_row("qatune", 20.0, 1500.0, 33.5),
                     "qatune_defaults": train_row("qatune defaults", 25.0, 1200.0, 29.0)},
        "inference": {"pipeline": infer_row("pipeline", 40.0, 20.0, 800.0, 30.0),
                      "qatune_bf16": infer_row("qatune bf16", 100.0, 5.0, 400.0, 31.0,
                                               {"exact_match": 90.0, "f1": 95.0, "questions": 50}),
                      "onnx_int8": {"label": "qatune, ONNX int8", "skipped": "no `qatune export` command"}},
    }


def test_utilization_is_achieved_rate_over_each_peak_and_the_best_peak_counts():
    row = report.training_row("x", wall_s=4.0, windows=8, peak_rss_mib=1.0, dev={}, flops=2e9)
    assert (row["windows_per_s"], row["achieved_flops"]) == (2.0, 5e8)
    peak = report.combine_peaks([{"float32_flops": 1e9, "bf16_flops": 2e9, "size": 2048},
                                 {"float32_flops": 0.5e9, "bf16_flops": 4e9, "size": 2048}])
    assert (peak["float32_flops"], peak["bf16_flops"], len(peak["measurements"])) == (1e9, 4e9, 2)
    results = {"peak": peak, "training": {"x": row}, "inference": {"y": {"skipped": "why"}}}
    report.add_utilization(results)
    assert (row["mfu_float32"], row["mfu_bf16"]) == (0.5, 0.125)


def test_ratios_put_qatune_over_each_reference():
    ratios = report.ratios(fake_results())
    qatune = ratios["training"]["qatune"]
    assert qatune["speedup_vs_trainer"] == pytest.approx(5.0)
    assert qatune["speedup_vs_trainer_bf16"] == pytest.approx(4.0)
    assert qatune["memory_vs_trainer"] == pytest.approx(0.5)
    assert qatune["f1_minus_trainer"] == pytest.approx(3.5)
    assert ratios["training"]["trainer"]["speedup_vs_trainer"] == pytest.approx(1.0)
    infer = ratios["inference"]["qatune_bf16"]
    assert infer["speedup"] == pytest.approx(2.5) and infer["latency_p50_speedup"] == pytest.approx(4.0)
    assert infer["memory"] == pytest.approx(0.5) and infer["agreement_em"] == 90.0
    assert "onnx_int8" not in ratios["inference"]


def test_markdown_has_machine_ratios_and_skipped_rows():
    text = report.markdown(fake_results())
    assert "`small` setting (train questions 24)" in text
    assert "Some CPU, 2 cores; torch 2.x" in text
    assert "Load average (1 min) before the steps: 0.5 to 1.5" in text
    assert "| qatune | 20.0 | 5.00 | 5.00x | 4.00x | 1500 | 0.50x | 23.5 | 33.5 | +3.5 | 50 | 5.0% | 2.5% |" in text
    assert "| qatune bf16 | 100.0 | 2.50x | 5 | 10 | 400 | 0.50x | 31.0 | +1.0 | 90.0% |" in text
    assert "- qatune, ONNX int8: not run (no `qatune export` command)" in text
    assert "meaningless" not in text and "exceed the float32 peak" not in text


def test_markdown_warns_when_a_row_beats_the_measured_peak():
    results = fake_results()
    results["peak"] = {**PEAK, "float32_flops": 1e9}
    assert "Some rows exceed the float32 peak" in report.markdown(results)


def test_markdown_labels_random_weight_scores_as_meaningless():
    text = report.markdown(fake_results(model="distilbert"))
    assert "EM/F1 and agreement are meaningless" in text
    assert "| dev F1 (meaningless) |" in text and "| F1 (meaningless) |" in text


# --- settings and data -----------------------------------------------------------------------
def test_settings_fill_in_and_overrides_are_named(tmp_path):
    args = run.parse_args(["--setting", "large", "--work", str(tmp_path)])
    assert (args.train_questions, args.epochs, args.dev_questions) == (1007, 2, None)
    args = run.parse_args(["--train-questions", "24", "--work", str(tmp_path)])
    assert (args.train_questions, args.epochs, args.dev_questions) == (24, 1, 150)
    assert args.overrides == {"train_questions": 24}


def test_bad_counts_are_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        run.parse_args(["--latency-questions", "0", "--work", str(tmp_path)])
    assert "--latency-questions must be at least 1, found 0" in capsys.readouterr().err


def test_prepare_data_keeps_the_first_dev_questions(tmp_path):
    (tmp_path / prepare_data.SOURCE_NAME).write_text(json.dumps(squad_v2(11)))
    out = tmp_path / "out"
    assert prepare_data.main(["--shared", str(tmp_path), "--out", str(out), "--dev-questions", "2"]) == 0
    assert [q["id"] for q in read_squad(out / "dev.json")] == ["q8", "q9"]
