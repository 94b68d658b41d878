"""`qatune train` as a user runs it: what it says about the data, the plan and the progress,
and refusals that name its flags and come before any model is loaded."""

from __future__ import annotations

import json

import pytest

from qatune.cli import main

from conftest import DATA, TINY_QA
from test_cli_model import WINDOW_FLAGS, qatune

NEEDS_REPAIR = DATA / "data_needs_repair.json"


def test_train_says_what_it_repaired_what_it_plans_and_how_far_it_is(tiny_bert, tmp_path):
    output = tmp_path / "model"
    result = qatune(
        "train", NEEDS_REPAIR, "--dev", TINY_QA, "--model", tiny_bert, "--output", output, "--epochs", "3",
        "--no-bf16", *WINDOW_FLAGS,
    )
    lines = result.stdout.splitlines()
    assert (
        f"{NEEDS_REPAIR}: 4 questions (0 unanswerable); 3 answers repaired: 2 whitespace, 1 re-anchored "
        f"(largest shift 9 characters); skipped: 0 questions, 0 answers"
    ) in lines
    assert f"{TINY_QA}: 12 questions (1 unanswerable); 0 answers repaired: 0 whitespace, 0 re-anchored " \
           f"(largest shift 0 characters); skipped: 0 questions, 0 answers" in lines
    assert "training 3 epochs (as asked); dev evaluation every epoch; a checkpoint every 10 minutes of training" in lines
    assert [line.split(":")[0] for line in lines if line.startswith("epoch ")] == ["epoch 1", "epoch 2", "epoch 3"]
    assert "epoch 3/3" in result.stderr  # the one progress line of the whole run
    assert lines[-1].startswith("trained 3 epochs in ")


def test_quiet_keeps_the_summary_and_drops_the_progress_line(tiny_bert, tmp_path):
    result = qatune(
        "train", TINY_QA, "--model", tiny_bert, "--output", tmp_path / "model", "--no-bf16", "--quiet", *WINDOW_FLAGS,
    )
    lines = result.stdout.splitlines()
    # 12 questions at 16 a batch: 1 step an epoch, so 60 epochs (the most) for 100 steps
    assert (
        "training 60 epochs (chosen from the data size: at least 2 epochs and 100 optimizer steps, at most 60 "
        "epochs, at 1 step an epoch); a checkpoint every 10 minutes of training"
    ) in lines
    assert lines[-1].startswith("trained 60 epochs in ")
    assert "epoch 60/60" not in result.stderr


def test_refusals_name_the_flags_and_come_before_the_model_is_loaded(tmp_path):
    output = tmp_path / "run"
    output.mkdir()
    (output / "metrics.jsonl").write_text('{"type": "step", "epoch": 1}\n{"type": "st')  # killed early
    # The model does not exist: had it been loaded first, the error would be about the model.
    for extra in ([], ["--resume"]):
        result = qatune("train", TINY_QA, "--model", tmp_path / "no-model", "--output", output, *extra, check=False)
        assert result.returncode == 2
        assert "Traceback" not in result.stderr
        assert result.stderr.startswith(f"error: {output} holds an earlier training run that left no checkpoint")
        assert result.stderr.rstrip().endswith("pass --overwrite to start over there, or choose another --output")


def test_an_earlier_run_with_checkpoints_names_resume(tiny_bert, tmp_path):
    output = tmp_path / "run"
    flags = ["--model", tiny_bert, "--output", output, "--epochs", "1", "--no-bf16", "--quiet", *WINDOW_FLAGS]
    qatune("train", TINY_QA, *flags, "--keep-checkpoints")
    result = qatune("train", TINY_QA, *flags, check=False)
    assert result.stderr == (
        f"error: {output} holds an earlier training run (checkpoints, metrics.jsonl): pass --resume to continue "
        f"it, --overwrite to start over there, or choose another --output\n"
    )
    changed = qatune("train", TINY_QA, *flags, "--resume", "--seed", "3", "--lr", "1e-4", check=False)
    assert changed.returncode == 2
    # each changed setting named by its flag, as the command line spells it
    assert "(--lr: was 0.0002, now 0.0001; --seed: was 42, now 3)" in changed.stderr, changed.stderr
    # a resume with nothing left to train, without --keep-checkpoints: the checkpoints it found stay
    qatune("train", TINY_QA, *flags, "--resume")
    assert list((output / "checkpoints").iterdir())
    longer = qatune("train", TINY_QA, *flags[:-len(WINDOW_FLAGS) - 4], "--epochs", "2", "--no-bf16", "--quiet",
                    *WINDOW_FLAGS, "--resume", "--json")
    assert json.loads(longer.stdout)["epochs"] == 2


def test_report_scores_the_dev_data_before_training_and_writes_the_report(tiny_bert, tmp_path):
    output = tmp_path / "model"
    result = qatune(
        "train", TINY_QA, "--dev", DATA / "data_squad_v2.json", "--model", tiny_bert, "--output", output,
        "--epochs", "2", "--no-bf16", "--report", "--json", *WINDOW_FLAGS,
    )
    summary = json.loads(result.stdout)
    assert summary["report"] == str(output / "report.html")
    page = (output / "report.html").read_text(encoding="utf-8")
    assert "6 questions" in result.stderr and 'data-id="' in page
    records = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    baseline = [r for r in records if r["type"] == "baseline"]
    assert len(baseline) == 1 and baseline[0]["epoch"] == 0 and baseline[0]["total"] == 6
    assert summary["dev_before"] == {k: v for k, v in baseline[0].items() if k not in ("type", "epoch", "step")}
    assert "before training: dev EM" in result.stderr
    # the fitted temperature travels in the summary, the settings and the card
    card = json.loads((output / "qatune.json").read_text())
    assert summary["calibration"] == card["calibration"]
    assert card["settings"]["temperature"] == summary["calibration"]["temperature"]
    assert (output / "README.md").read_text(encoding="utf-8").startswith("---\nlibrary_name: transformers\n")

    # evaluate --report writes a report of any data with the same model
    target = tmp_path / "eval" / "tiny.html"
    target.parent.mkdir()  # qatune creates no folder for an output file
    evaluated = qatune("evaluate", output, TINY_QA, "--report", target, "--no-bf16")
    assert target.is_file() and f"wrote {target}" in evaluated.stderr
    assert evaluated.stdout.startswith(f"{TINY_QA}: 12 questions")


def test_transfer_questions_without_a_teacher_are_refused_naming_both_flags(tiny_bert, tmp_path):
    result = qatune("train", TINY_QA, "--model", tiny_bert, "--output", tmp_path / "run", "--transfer", TINY_QA,
                    "--quiet", check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.endswith(
        "error: transfer questions (--transfer) have no gold answers: only a teacher can teach them; "
        "name one (--teacher) or leave the transfer questions out\n"
    )
    assert not (tmp_path / "run" / "model.safetensors").exists()


@pytest.mark.parametrize(
    "flags, said",
    [
        (["--lr", "-1"], "error: --lr must be between 0 and 1 (e.g. 2e-4), got -1.0"),
        (["--grad-accum", "0"], "error: --grad-accum must be a whole number of at least 1, got 0"),
        (["--temperature", "0", "--teacher", "a-teacher"], "error: --temperature must be a positive number (e.g. 2.0), got 0.0"),
        (["--max-seq-length", "0"], "error: --max-seq-length must be a whole number of at least 1, got 0"),
    ],
)
def test_a_bad_value_is_named_by_its_flag_not_by_the_python_field(tmp_path, capsys, flags, said):
    assert main(["train", str(TINY_QA), "--output", str(tmp_path / "run"), *flags]) == 2
    assert capsys.readouterr().err == said + "\n"
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "extra, said",
    [
        (["--distill-alpha", "0.2"], "--distill-alpha tunes a teacher to distill from, and none is asked for: add "
                                     "--teacher, or leave --distill-alpha out"),
        (["--temperature", "5"], "--temperature tunes a teacher to distill from, and none is asked for: add "
                                 "--teacher, or leave --temperature out"),
        (["--lora-rank", "4"], "--lora-rank tunes LoRA adapters, and none is asked for: add --lora, or leave "
                               "--lora-rank out"),
    ],
)
def test_a_flag_that_tunes_a_feature_not_asked_for_is_refused(tmp_path, capsys, extra, said):
    assert main(["train", str(TINY_QA), "--output", str(tmp_path / "run"), *extra]) == 2
    assert capsys.readouterr().err == f"error: {said}\n"
    assert not (tmp_path / "run").exists()


def transfer_file(path, answers: list) -> None:
    """A SQuAD file of transfer questions, the k-th with `answers[k]` as its answer fields."""
    context = "Riverside Athletic won the cup final 3-0 in 1998 at Hampden Park."
    questions = ["Who won the cup final?", "What was the score?", "Where was the final?", "When was the final?"]
    qas = [{"id": f"t{k}", "question": question, **fields} for k, (question, fields) in enumerate(zip(questions, answers))]
    path.write_text(json.dumps({"data": [{"title": "Clubs", "paragraphs": [{"context": context, "qas": qas}]}]}))


def test_a_transfer_sets_answers_are_never_read(tiny_bert, tmp_path):
    transfer, output = tmp_path / "transfer.json", tmp_path / "run"
    unreadable = [
        {},  # no "answers" at all
        {"answers": [{"text": "Glasgow Rangers", "answer_start": 5}]},  # a text found nowhere in the context
        {"answers": "none", "is_impossible": "maybe"},  # neither a list nor a true/false marking
        {"answers": [{"text": "3-0", "answer_start": 999}], "is_impossible": True},  # an answer and marked impossible
    ]
    transfer_file(transfer, unreadable)
    flags = ("--model", tiny_bert, "--teacher", tiny_bert, "--output", output, "--transfer", transfer, "--save-every", "1",
             "--keep-checkpoints", "--no-bf16", *WINDOW_FLAGS, "--json")
    result = qatune("train", TINY_QA, "--epochs", "1", *flags)
    assert f"{transfer}: 4 questions (answers not read); skipped: 0 questions\n" in result.stderr
    assert json.loads(result.stdout)["counts"]["transfer_questions"] == 4
    # other answers are no other transfer set: the run resumes
    transfer_file(transfer, [{"answers": []}] * 4)
    resumed = qatune("train", TINY_QA, "--epochs", "2", "--resume", *flags)
    assert "resumed from the checkpoint after epoch 1" in resumed.stderr
    # what cannot be used is still refused, by its place, before the model loads
    transfer_file(transfer, [{}, {"question": ""}])
    refused = qatune("train", TINY_QA, "--model", tiny_bert, "--teacher", tiny_bert, "--output", tmp_path / "other",
                     "--transfer", transfer, check=False)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "data[0].paragraphs[0].qas[1].question" in refused.stderr
    assert not (tmp_path / "other").exists()
