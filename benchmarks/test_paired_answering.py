"""Checks of the paired-rounds benchmark: the worker protocol and the paired speed-ups.

    python -m pytest benchmarks/test_paired_answering.py -q
"""

from __future__ import annotations

import io
import json
import sys

import pytest

import paired_answering
from timing import REPLY, serve_passes


def test_a_worker_announces_its_questions_and_answers_one_pass_per_command():
    calls = []

    def answer_all():
        calls.append(1)
        return {"q1": f"answer of pass {len(calls)}"}, 0.25 * len(calls)

    replies = io.StringIO()
    commands = io.StringIO("answers\npass\nengine\npass\nanswers\n")
    serve_passes(answer_all, 477, "bf16", engine_alone=lambda: 0.125, commands=commands, replies=replies)
    ready = json.dumps({"questions": 477, "precision": "bf16", "engine_alone": True})
    assert replies.getvalue().splitlines() == [
        f"{REPLY}ready {ready}", f"{REPLY}{{}}", f"{REPLY}0.250000", f"{REPLY}0.125000", f"{REPLY}0.500000",
        f"{REPLY}" + json.dumps({"q1": "answer of pass 2"}),
    ]
    assert len(calls) == 2


def test_a_worker_refuses_an_unknown_command_and_an_engine_pass_it_cannot_time():
    with pytest.raises(SystemExit, match="takes 'pass', 'engine', or 'answers'"):
        serve_passes(lambda: ({}, 1.0), 3, "float32", engine_alone=lambda: 1.0, commands=io.StringIO("stop\n"),
                     replies=io.StringIO())
    with pytest.raises(SystemExit, match="takes 'pass', or 'answers'"):
        serve_passes(lambda: ({}, 1.0), 3, "float32", commands=io.StringIO("engine\n"), replies=io.StringIO())


def test_the_coordinator_reads_replies_among_other_output_and_sees_a_worker_die():
    script = (
        "import sys\n"
        "print('a library talks on stdout')\n"
        f"print({REPLY!r} + 'ready ' + '{{\"questions\": 5, \"precision\": \"int8\", \"engine_alone\": false}}', flush=True)\n"
        "for line in sys.stdin:\n"
        "    print('noise', flush=True)\n"
        f"    print({REPLY!r} + '1.5', flush=True)\n"
        "    break\n"
    )
    worker = paired_answering.Worker("stand-in", [sys.executable, "-c", script])
    assert (worker.questions, worker.precision, worker.has_engine_alone) == (5, "int8", False)
    assert worker.timed("pass") == 1.5
    with pytest.raises(SystemExit, match="stand-in: the worker stopped"):
        worker.timed("pass")  # it answered one pass and exited


def test_speedups_are_paired_within_rounds():
    passes = {paired_answering.PIPELINE: [10.0, 20.0, 12.0], "fast": [4.0, 10.0, 4.0]}
    rows = {row["system"]: row for row in paired_answering.summarize(passes, {paired_answering.PIPELINE: 100, "fast": 100})}
    fast = rows["fast"]
    assert fast["paired_speedup"]["median"] == pytest.approx(2.5)  # rounds: 2.5, 2.0, 3.0
    assert fast["paired_speedup"]["quartiles"] == pytest.approx([2.25, 2.75])
    assert fast["paired_speedup"]["of_summed_times"] == pytest.approx(42 / 18)
    assert fast["questions_per_s"] == pytest.approx(25.0)  # at its median pass, 4 s
    assert rows[paired_answering.PIPELINE]["paired_speedup"]["median"] == pytest.approx(1.0)
    assert "engine_alone" not in fast


def test_an_engine_timed_alone_gets_its_own_paired_speedup():
    passes = {paired_answering.PIPELINE: [10.0, 20.0, 12.0], "fast": [4.0, 10.0, 4.0]}
    rows = paired_answering.summarize(passes, {paired_answering.PIPELINE: 100, "fast": 100}, {"fast": [2.0, 5.0, 3.0]})
    alone = rows[1]["engine_alone"]
    assert alone["median_s"] == 3.0
    assert alone["paired_speedup"]["median"] == pytest.approx(4.0)  # rounds: 5, 4, 4
    assert "engine_alone" not in rows[0]


def test_answers_are_scored_and_compared_with_float32_and_the_pipeline():
    questions = [{"id": "a", "answers": [{"text": "1932"}]}, {"id": "b", "answers": [{"text": "the bridge"}]}]
    answers = {
        paired_answering.PIPELINE: {"a": "1932", "b": "a bridge"},
        paired_answering.FLOAT32: {"a": "1932", "b": "Bridge"},
        "fast": {"a": "in 1932", "b": "bridge"},
    }
    rows = [{"system": name} for name in answers]
    paired_answering.add_answers(rows, answers, questions)
    fast = rows[2]
    assert fast["dev"]["exact_match"] == 50.0  # "bridge" equals "the bridge" once normalized
    assert fast["same_as_float32"] == 50.0 and fast["same_as_pipeline"] == 50.0
    assert rows[1]["same_as_float32"] == 100.0 and rows[1]["same_as_pipeline"] == 100.0


def test_each_row_is_held_against_the_peak_of_its_own_number_format():
    rows = [{"system": "a", "median_pass_s": 2.0}, {"system": "b", "median_pass_s": 4.0}]
    peak = {"float32_flops": 400e9, "bf16_flops": 2000e9, "int8_flops": 2500e9}
    paired_answering.add_ceilings(rows, {"a": "bf16", "b": "int8"}, 1000e9, peak)
    assert rows[0]["achieved_flops"] == pytest.approx(500e9)
    assert rows[0]["mfu"] == {"peak": "bf16", "share": pytest.approx(0.25)}
    assert rows[1]["mfu"] == {"peak": "int8", "share": pytest.approx(0.1)}


def test_a_missing_pipeline_environment_is_named_with_the_way_to_make_it(tmp_path, capsys):
    with pytest.raises(SystemExit):
        paired_answering.parse_args(["--model", "m", "--data", "d.json", "--reference-python", str(tmp_path / "nope")])
    assert "setup_reference_env.sh" in capsys.readouterr().err
