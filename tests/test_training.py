"""Training with tiny models: it learns, it saves, it resumes exactly, it checks its arguments."""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from qatune import checkpoints
from qatune.checkpoints import PYTHON_OPTIONS
from qatune.data import GoldAnswer, load_examples
from qatune.errors import SettingsError
from qatune.files import current_umask
from qatune.inference import QAModel
from qatune.settings import QASettings
from qatune import features
from qatune.batching import pad_windows
from qatune.modeling import load_qa_model, load_tokenizer
from qatune.training import (
    TrainingArguments,
    PAD_TO_MULTIPLE,
    _accumulated,
    _token_ids_only,
    auto_epochs,
    examples_digest,
    length_grouped_batches,
    train,
)

from conftest import TINY_QA

WINDOWS = QASettings(max_seq_length=48, doc_stride=8, max_question_length=12)


def tiny_arguments(model, output, **overrides) -> TrainingArguments:
    values = dict(
        output_dir=str(output), model=str(model), epochs=3, batch_size=4, learning_rate=3e-3,
        warmup_ratio=0.0, bf16=False, settings=WINDOWS, seed=7,
    )
    return TrainingArguments(**(values | overrides))


@pytest.fixture(scope="module")
def tiny_examples():
    return load_examples(TINY_QA)


@pytest.fixture(scope="module")
def overfitted(tiny_bert, tiny_examples, tmp_path_factory):
    output = tmp_path_factory.mktemp("overfitted")
    arguments = tiny_arguments(tiny_bert, output, epochs=100, batch_size=2, save_every=0, learning_rate=1e-3)
    return train(tiny_examples, tiny_examples, arguments, progress=False), output


def test_a_tiny_model_overfits_a_tiny_set(overfitted):
    result, _ = overfitted
    assert result.dev_metrics["exact"] == 100.0
    assert result.dev_metrics["f1"] == 100.0


def test_the_model_directory_loads_and_answers_the_same(overfitted, tiny_examples):
    result, output = overfitted
    model = QAModel.from_pretrained(output, bf16=False)
    card = json.loads((output / "qatune.json").read_text())
    assert card["settings"]["max_seq_length"] == 48
    assert card["data"]["train_questions"] == len(tiny_examples)
    assert card["dev_metrics"] == result.dev_metrics
    evaluation = model.evaluate(tiny_examples)
    assert evaluation.metrics["f1"] == 100.0
    again = QAModel.from_pretrained(output, bf16=False).evaluate(tiny_examples)
    assert again.predictions == evaluation.predictions and again.na_probs == evaluation.na_probs


def test_plain_transformers_gives_the_logits_qatune_uses(overfitted, tiny_examples):
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    from qatune.features import make_windows
    from qatune.inference import window_logits

    _, output = overfitted
    qa_model = QAModel.from_pretrained(output, engine="torch", bf16=False)
    plain_model = AutoModelForQuestionAnswering.from_pretrained(output).eval()
    plain_tokenizer = AutoTokenizer.from_pretrained(output)
    example = tiny_examples[0]
    windows = make_windows([example], qa_model.tokenizer, qa_model.settings)
    starts, ends = window_logits(qa_model.engine, windows, pad_token_id=0)
    encoded = plain_tokenizer(example.question, example.context, return_tensors="pt")
    with torch.no_grad():
        output_logits = plain_model(**encoded)
    assert encoded["input_ids"][0].tolist() == windows.input_ids[0].tolist()
    torch.testing.assert_close(output_logits.start_logits[0], torch.from_numpy(starts[0]), rtol=0, atol=1e-5)
    torch.testing.assert_close(output_logits.end_logits[0], torch.from_numpy(ends[0]), rtol=0, atol=1e-5)


def test_the_unanswerable_question_is_learned_with_a_tuned_threshold(overfitted, tiny_examples):
    _, output = overfitted
    model = QAModel.from_pretrained(output, bf16=False)
    unanswerable = next(e for e in tiny_examples if e.is_impossible)
    assert model.settings.null_threshold < 1.0
    assert model.ask(unanswerable.question, unanswerable.context) == []
    answerable = tiny_examples[0]
    answers = model.ask(answerable.question, answerable.context, top_k=3)
    assert answers[0].text == answerable.answers[0].text
    assert all(a.text == answerable.context[a.start : a.end] for a in answers)
    assert 0 < sum(a.score for a in answers) <= 1


def test_metrics_log_has_every_step_and_every_evaluation(overfitted):
    result, output = overfitted
    records = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if r["type"] == "step"]
    evaluations = [r for r in records if r["type"] == "eval"]
    # 100 epochs: a dev evaluation every 5 epochs, so at most MAX_EVALUATIONS (20), the last included
    assert [r["epoch"] for r in evaluations] == list(range(5, 101, 5))
    steps_per_epoch = -(-result.counts["train_items"] // 2)  # batches of 2
    assert steps[-1]["step"] == len(steps) == 100 * steps_per_epoch
    assert steps[-1]["loss"] < steps[0]["loss"]


def weights(folder):
    return load_file(str(folder / "model.safetensors"))


def test_an_interrupted_run_resumed_ends_with_the_same_weights(tiny_distilbert, tiny_examples, tmp_path, monkeypatch):
    uninterrupted = tmp_path / "uninterrupted"
    train(tiny_examples, tiny_examples, tiny_arguments(tiny_distilbert, uninterrupted), progress=False)

    interrupted = tmp_path / "interrupted"
    real_save = checkpoints.save

    def save_then_crash(*args, **kwargs):
        real_save(*args, **kwargs)
        raise KeyboardInterrupt  # the machine goes down right after the first checkpoint

    monkeypatch.setattr(checkpoints, "save", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_examples, tiny_examples, tiny_arguments(tiny_distilbert, interrupted, save_every=1), progress=False)
    monkeypatch.setattr(checkpoints, "save", real_save)
    assert (interrupted / "checkpoints" / "latest").read_text() == "epoch-0001"

    resumed = train(
        tiny_examples, tiny_examples, tiny_arguments(tiny_distilbert, interrupted, resume=True, save_every=1), progress=False
    )
    assert resumed.epochs_run == 3
    expected, actual = weights(uninterrupted), weights(interrupted)
    assert expected.keys() == actual.keys()
    for name in expected:
        assert torch.equal(expected[name], actual[name]), name
    log = [json.loads(line) for line in (interrupted / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log if r["type"] == "eval"] == [1, 2, 3]


def test_a_resumed_run_keeps_a_best_epoch_older_than_its_checkpoint(tiny_bert, tiny_examples, tmp_path, monkeypatch):
    # So small a learning rate moves the weights but not the answers: no later epoch scores
    # better than the first, so the best epoch is older than every later checkpoint.
    arguments = dict(epochs=5, learning_rate=1e-7, eval_every=1, save_every=1)
    whole = tmp_path / "whole"
    uninterrupted = train(
        tiny_examples, tiny_examples, tiny_arguments(tiny_bert, whole, keep_checkpoints=True, **arguments), progress=False
    )
    assert uninterrupted.best_epoch == 1
    last_epoch = load_file(str(whole / "checkpoints" / "epoch-0005" / "model.safetensors"))
    assert any(not torch.equal(last_epoch[name], tensor) for name, tensor in weights(whole).items())

    real_save = checkpoints.save

    def save_then_crash_after_epoch_4(output_dir, model, optimizer, schedule, state, *rest):
        real_save(output_dir, model, optimizer, schedule, state, *rest)
        if state.epoch == 4:
            raise KeyboardInterrupt

    monkeypatch.setattr(checkpoints, "save", save_then_crash_after_epoch_4)
    interrupted = tmp_path / "interrupted"
    with pytest.raises(KeyboardInterrupt):
        train(tiny_examples, tiny_examples, tiny_arguments(tiny_bert, interrupted, **arguments), progress=False)
    monkeypatch.setattr(checkpoints, "save", real_save)
    assert (interrupted / "checkpoints" / "epoch-0004" / "best.safetensors").is_file()

    resumed = train(
        tiny_examples, tiny_examples, tiny_arguments(tiny_bert, interrupted, resume=True, **arguments), progress=False
    )
    assert (resumed.best_epoch, resumed.dev_metrics) == (1, uninterrupted.dev_metrics)
    assert resumed.settings.null_threshold == uninterrupted.settings.null_threshold
    expected, actual = weights(whole), weights(interrupted)
    for name in expected:
        assert torch.equal(expected[name], actual[name]), name


def test_a_crash_while_writing_a_checkpoint_keeps_the_last_good_one(tiny_bert, tiny_examples, tmp_path, monkeypatch):
    output = tmp_path / "run"
    real_weights = checkpoints._save_weights
    calls = []

    def fail_on_the_second_checkpoint(model, folder):
        calls.append(folder)
        if len([c for c in calls if "epoch-" in c.name]) == 2:
            raise OSError("disk full")
        real_weights(model, folder)

    monkeypatch.setattr(checkpoints, "_save_weights", fail_on_the_second_checkpoint)
    with pytest.raises(OSError):
        train(tiny_examples, None, tiny_arguments(tiny_bert, output, save_every=1), progress=False)
    monkeypatch.setattr(checkpoints, "_save_weights", real_weights)
    assert (output / "checkpoints" / "latest").read_text() == "epoch-0001"
    assert (output / "checkpoints" / "epoch-0001" / "model.safetensors").is_file()
    resumed = train(tiny_examples, None, tiny_arguments(tiny_bert, output, resume=True), progress=False)
    assert resumed.epochs_run == 3


def test_patience_stops_early(tiny_bert, tiny_examples, tmp_path):
    arguments = tiny_arguments(tiny_bert, tmp_path / "run", epochs=30, learning_rate=1e-9, patience=2, save_every=0)
    result = train(tiny_examples, tiny_examples, arguments, progress=False)
    # 30 epochs: evaluated every 2; patience counts evaluations: 2 is the best, 4 and 6 bring nothing
    assert result.epochs_run == 6
    assert result.best_epoch == 2


def test_a_new_run_refuses_to_mix_with_an_earlier_one(tiny_bert, tiny_examples, tmp_path):
    output = tmp_path / "run"
    train(tiny_examples, None, tiny_arguments(tiny_bert, output, epochs=1, keep_checkpoints=True), progress=False)
    with pytest.raises(SettingsError) as error:
        train(tiny_examples, None, tiny_arguments(tiny_bert, output, epochs=1), progress=False)
    assert str(error.value) == (
        f"{output} holds an earlier training run (checkpoints, metrics.jsonl): pass "
        f"TrainingArguments(resume=True) to continue it, TrainingArguments(overwrite=True) to start over "
        f"there, or choose another output_dir"
    )
    train(tiny_examples, None, tiny_arguments(tiny_bert, output, epochs=1, overwrite=True), progress=False)


def test_a_finished_run_removes_its_checkpoints_unless_asked_to_keep_them(tiny_bert, tiny_examples, tmp_path):
    train(tiny_examples, None, tiny_arguments(tiny_bert, tmp_path / "plain", epochs=2, save_every=1), progress=False)
    assert not (tmp_path / "plain" / "checkpoints").exists()
    assert (tmp_path / "plain" / "model.safetensors").is_file()
    train(tiny_examples, None, tiny_arguments(tiny_bert, tmp_path / "kept", epochs=2, keep_checkpoints=True), progress=False)
    assert (tmp_path / "kept" / "checkpoints" / "latest").read_text() == "epoch-0002"


def test_a_run_without_a_checkpoint_has_one_way_out(tiny_bert, tiny_examples, tmp_path):
    output = tmp_path / "run"
    train(tiny_examples, None, tiny_arguments(tiny_bert, output, epochs=1), progress=False)  # checkpoints removed
    expected = (
        f"{output} holds an earlier training run that left no checkpoint to resume from"
    )
    with pytest.raises(SettingsError) as plain:
        train(tiny_examples, None, tiny_arguments(tiny_bert, output, epochs=1), progress=False)
    assert str(plain.value) == (
        f"{expected}: pass TrainingArguments(overwrite=True) to start over there, or choose another output_dir"
    )
    with pytest.raises(SettingsError) as resumed:
        train(tiny_examples, None, tiny_arguments(tiny_bert, output, epochs=1, resume=True), progress=False)
    assert str(resumed.value) == (
        f"{expected} (it stopped before its first checkpoint, or it finished and removed its checkpoints: "
        f"TrainingArguments(keep_checkpoints=True) keeps them); pass TrainingArguments(overwrite=True) to "
        f"start over there, or choose another output_dir"
    )


def test_refusals_come_before_the_model_is_loaded(tiny_bert, tiny_examples, tmp_path):
    output = tmp_path / "run"
    train(tiny_examples, None, tiny_arguments(tiny_bert, output, epochs=1), progress=False)
    # The model named does not exist: the folder's refusal must come first, with no loading.
    with pytest.raises(SettingsError, match="holds an earlier training run"):
        train(tiny_examples, None, tiny_arguments(tmp_path / "no-such-model", output, epochs=1), progress=False)


def test_an_output_that_is_a_file_is_refused(tiny_bert, tiny_examples, tmp_path):
    output = tmp_path / "taken"
    output.write_text("not a folder")
    with pytest.raises(SettingsError) as error:
        train(tiny_examples, None, tiny_arguments(tiny_bert, output), progress=False)
    assert str(error.value) == f"{output}: expected a folder for the model, found a file; choose another output_dir"


def test_resume_with_other_settings_is_refused(tiny_bert, tiny_examples, tmp_path):
    output = tmp_path / "run"
    train(tiny_examples, None, tiny_arguments(tiny_bert, output, epochs=1, keep_checkpoints=True), progress=False)
    with pytest.raises(SettingsError, match=r"learning_rate: was 0.003, now 0.001"):
        train(tiny_examples, None, tiny_arguments(tiny_bert, output, epochs=1, learning_rate=1e-3, resume=True), progress=False)


def test_resume_with_other_data_is_refused_naming_the_data(tiny_bert, tiny_examples, tmp_path):
    output = tmp_path / "run"
    train(tiny_examples, tiny_examples[:4], tiny_arguments(tiny_bert, output, epochs=1, keep_checkpoints=True), progress=False)
    reworded = [dataclasses.replace(tiny_examples[0], question="Reworded?"), *tiny_examples[1:]]
    cases = [
        (reworded, tiny_examples[:4], "other training data than the run's (its questions, answers or contexts differ)"),
        (tiny_examples, tiny_examples[4:8], "other dev data than the run's"),
        (tiny_examples, None, "dev data given before, none now"),
    ]
    for train_data, dev_data, said in cases:
        with pytest.raises(SettingsError, match=re.escape(said)):
            train(train_data, dev_data, tiny_arguments(tiny_bert, output, epochs=2, resume=True), progress=False)
    # the same data resumes
    result = train(tiny_examples, tiny_examples[:4], tiny_arguments(tiny_bert, output, epochs=2, resume=True), progress=False)
    assert result.epochs_run == 2


def test_a_resume_without_epochs_keeps_the_plan_of_its_run(tiny_bert, tiny_examples, tmp_path, monkeypatch):
    output = tmp_path / "run"
    real_save = checkpoints.save

    def save_then_crash(*args, **kwargs):
        real_save(*args, **kwargs)
        raise KeyboardInterrupt  # after the first epoch's checkpoint

    monkeypatch.setattr(checkpoints, "save", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_examples, None, tiny_arguments(tiny_bert, output, epochs=3, save_every=1), progress=False)
    monkeypatch.setattr(checkpoints, "save", real_save)
    lines = []
    result = train(tiny_examples, None, tiny_arguments(tiny_bert, output, epochs=None, resume=True),
                   progress=False, log=lines.append)
    assert result.epochs_run == 3  # not the number chosen from the data size
    assert any(line.startswith("training 3 epochs (as the resumed run planned)") for line in lines), lines


def test_resume_without_a_checkpoint_is_refused(tiny_bert, tiny_examples, tmp_path):
    output = tmp_path / "none"
    with pytest.raises(SettingsError) as error:
        train(tiny_examples, None, tiny_arguments(tiny_bert, output, resume=True), progress=False)
    assert str(error.value) == (
        f"{output} has no checkpoint to resume from (expected {output}/checkpoints/latest); train without "
        f"TrainingArguments(resume=True), or check output_dir"
    )


def test_resume_can_add_epochs_but_not_remove_trained_ones(tiny_bert, tiny_examples, tmp_path):
    output = tmp_path / "run"
    train(tiny_examples, None, tiny_arguments(tiny_bert, output, epochs=2, keep_checkpoints=True), progress=False)
    with pytest.raises(SettingsError) as error:
        train(tiny_examples, None, tiny_arguments(tiny_bert, output, epochs=1, resume=True), progress=False)
    assert str(error.value) == (
        f"TrainingArguments(resume=True): the run in {output} was planned for 2 epochs (2 trained), but epochs "
        f"is 1; ask for at least 2 epochs to continue it"
    )
    lines = []
    result = train(
        tiny_examples, None, tiny_arguments(tiny_bert, output, epochs=3, resume=True), progress=False, log=lines.append
    )
    assert result.epochs_run == 3
    assert "resumed from the checkpoint after epoch 2; training to epoch 3" in lines
    records = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    epochs = [r["epoch"] for r in records if r["type"] == "step"]
    assert sorted(set(epochs)) == [1, 2, 3] and epochs == sorted(epochs)
    assert records[-1]["lr"] < records[-2]["lr"]  # the longer schedule decays to its new last step


def test_a_moved_run_folder_resumes_and_paths_compare_resolved(tiny_bert, tiny_examples, tmp_path, monkeypatch):
    first = tmp_path / "first"
    train(tiny_examples, None, tiny_arguments(tiny_bert, first, epochs=1, keep_checkpoints=True), progress=False)
    moved = tmp_path / "moved"
    first.rename(moved)
    monkeypatch.chdir(tmp_path)
    model_relative = tiny_bert.relative_to(tmp_path) if tiny_bert.is_relative_to(tmp_path) else tiny_bert
    result = train(
        tiny_examples, None, tiny_arguments(model_relative, "moved/", epochs=2, resume=True), progress=False
    )
    assert result.epochs_run == 2


def test_a_damaged_checkpoint_is_an_error_with_the_way_out(tiny_bert, tiny_examples, tmp_path):
    output = tmp_path / "run"
    train(tiny_examples, None, tiny_arguments(tiny_bert, output, epochs=1, keep_checkpoints=True), progress=False)
    checkpoint = output / "checkpoints" / "epoch-0001"
    weights_file = checkpoint / "model.safetensors"
    weights_file.write_bytes(weights_file.read_bytes()[: weights_file.stat().st_size // 2])
    with pytest.raises(SettingsError) as error:
        train(tiny_examples, None, tiny_arguments(tiny_bert, output, epochs=2, resume=True), progress=False)
    message = str(error.value)
    assert message.startswith(f"{checkpoint}: the checkpoint cannot be read (")
    assert message.endswith(
        "); it is damaged or incomplete, so the run cannot be resumed: pass TrainingArguments(overwrite=True) to start over"
    )


def test_resume_drops_a_torn_last_line_of_the_metrics_log(tiny_bert, tiny_examples, tmp_path):
    output = tmp_path / "run"
    train(tiny_examples, None, tiny_arguments(tiny_bert, output, epochs=1, keep_checkpoints=True), progress=False)
    log_file = output / "metrics.jsonl"
    log_file.write_text(log_file.read_text() + '{"type": "step", "ep')  # killed mid-write
    lines = []
    train(tiny_examples, None, tiny_arguments(tiny_bert, output, epochs=2, resume=True), progress=False, log=lines.append)
    assert f"{log_file}: dropped 1 unreadable line (cut short when the run was stopped)" in lines
    records = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert {r["epoch"] for r in records} == {1, 2}


def test_dev_scores_during_training_equal_those_of_the_saved_model(tiny_bert, tiny_examples, tmp_path):
    for bf16 in (False, None):  # None: bf16 where this CPU has it, with close calls re-checked
        output = tmp_path / f"bf16-{bf16}"
        arguments = tiny_arguments(tiny_bert, output, epochs=6, batch_size=2, learning_rate=1e-3, bf16=bf16)
        result = train(tiny_examples, tiny_examples, arguments, progress=False)
        evaluation = QAModel.from_pretrained(output, bf16=bf16).evaluate(tiny_examples)
        assert evaluation.metrics == result.dev_metrics
        assert evaluation.null_threshold == result.settings.null_threshold


def test_answer_length_is_chosen_from_the_training_answers(tiny_bert, tiny_examples, tmp_path):
    lines = []
    chosen = train(tiny_examples, None, tiny_arguments(tiny_bert, tmp_path / "auto", epochs=1), progress=False, log=lines.append)
    assert chosen.settings.max_answer_length == 30  # the tiny answers are short: the floor
    assert json.loads((tmp_path / "auto" / "qatune.json").read_text())["settings"]["max_answer_length"] == 30
    assert any(line.startswith("max_answer_length: 30 tokens (chosen from the training answers") for line in lines)
    assert chosen.counts["answers_longer_than_max_answer_length"] == 0

    short = tiny_arguments(tiny_bert, tmp_path / "short", epochs=1, settings=dataclasses.replace(WINDOWS, max_answer_length=1))
    lines = []
    result = train(tiny_examples, None, short, progress=False, log=lines.append)
    longer = result.counts["answers_longer_than_max_answer_length"]
    assert longer > 0
    assert (
        f"{longer} training answers are longer than max_answer_length (1 tokens): the model cannot give them; "
        f"raise QASettings(max_answer_length=N) to let it"
    ) in lines


def test_chosen_answer_length_follows_long_answers():
    from qatune.features import TrainingItems
    from qatune.training import _with_answer_length

    lengths = np.arange(1, 101)  # answers of 1 to 100 tokens
    items = TrainingItems(window=np.zeros(100, dtype=np.int64), start=np.full(100, 5), end=4 + lengths,
                          answer_lengths=lengths)
    settings, too_long = _with_answer_length(QASettings(max_seq_length=384), items, lambda line: None, PYTHON_OPTIONS)
    assert settings.max_answer_length == 119  # 1.2 x the 99th percentile (99.01 tokens)
    assert too_long == 0


def test_unanswerable_training_data_without_unanswerable_dev_data_warns(tiny_bert, tiny_examples, tmp_path):
    answerable = [example for example in tiny_examples if example.answers]
    lines = []
    train(tiny_examples, answerable, tiny_arguments(tiny_bert, tmp_path / "run", epochs=1), progress=False, log=lines.append)
    unanswerable = sum(not example.answers for example in tiny_examples)
    assert lines[-1] == (
        f"warning: {unanswerable} training questions are unanswerable, but the dev data has no unanswerable "
        f"question to tune the no-answer threshold on, so it stays at 1.0 and the model always answers. Give "
        f"dev_examples with unanswerable questions (for example, move a tenth of the training file's questions, "
        f"unanswerable ones included, into a dev file) and train again"
    )


def test_model_files_are_readable_by_others(tiny_bert, tiny_examples, tmp_path):
    output = tmp_path / "run"
    train(tiny_examples, None, tiny_arguments(tiny_bert, output, epochs=1), progress=False)
    for name in ("model.safetensors", "config.json", "qatune.json"):
        assert (output / name).stat().st_mode & 0o777 == 0o666 & ~current_umask(), name


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("batch_size", 0, "batch_size must be a whole number of at least 1, got 0"),
        ("epochs", 2.5, "epochs must be a whole number of at least 1, got 2.5"),
        ("learning_rate", 3.0, "learning_rate must be between 0 and 1 (e.g. 2e-4), got 3.0"),
        ("save_every", -1, "save_every must be None (every 10 minutes of training), 0 (never) or a whole number of epochs, got -1"),
        ("eval_every", 0, "eval_every must be a whole number of at least 1, got 0"),
        ("warmup_ratio", 1.0, "warmup_ratio must be in [0, 1), got 1.0"),
        ("hidden_dropout", 1.5, "hidden_dropout must be in [0, 1), or None for the model's own, got 1.5"),
        # NaN passes every comparison's negation: a model of NaN weights was trained and saved
        ("max_grad_norm", float("nan"), "max_grad_norm must be a number > 0 (e.g. 1.0), got nan"),
        ("weight_decay", float("nan"), "weight_decay must be a number >= 0 (e.g. 0.01), got nan"),
        # a value of another type is named, not a TypeError from a comparison
        ("learning_rate", "2e-4", "learning_rate must be between 0 and 1 (e.g. 2e-4), got '2e-4'"),
        ("learning_rate", None, "learning_rate must be between 0 and 1 (e.g. 2e-4), got None"),
        ("hidden_dropout", "0.1", "hidden_dropout must be in [0, 1), or None for the model's own, got '0.1'"),
        ("seed", -1, "seed must be a whole number from 0 to 2**32 - 1, got -1"),
        ("seed", 2**32, "seed must be a whole number from 0 to 2**32 - 1, got 4294967296"),
        ("bf16", "no", "bf16 must be True, False or None (where the machine supports it), got 'no'"),
        ("lora_rank", 0, "lora_rank must be a whole number of at least 1, got 0"),
        ("output_dir", None, "output_dir must be a folder path, got None"),
        ("settings", "x", "settings must be a QASettings (or a dict of its fields), got 'x'"),
        ("settings", {"doc_strid": 64}, "settings: unknown keys 'doc_strid'; expected those of QASettings (max_seq_length, "
         "doc_stride, max_question_length, max_answer_length, n_best, null_threshold, align_to_words, temperature)"),
    ],
)
def test_bad_arguments_name_the_field(field, value, message):
    with pytest.raises(SettingsError) as error:
        TrainingArguments(**{field: value})
    assert str(error.value) == message


def test_resume_and_overwrite_exclude_each_other():
    with pytest.raises(SettingsError) as error:
        TrainingArguments(resume=True, overwrite=True)
    assert str(error.value) == (
        "resume and overwrite exclude each other: resume continues the run in output_dir, overwrite starts a "
        "new one there; choose one"
    )


def test_length_grouped_batches_cover_every_item_once_and_depend_only_on_the_seed():
    lengths = torch.randint(10, 300, (1000,)).numpy()
    batches = length_grouped_batches(lengths, 16, seed=(1, 2))
    flat = sorted(int(i) for batch in batches for i in batch)
    assert flat == list(range(1000))
    again = length_grouped_batches(lengths, 16, seed=(1, 2))
    assert all((a == b).all() for a, b in zip(batches, again))
    padded = sum(len(b) * lengths[b].max() for b in batches)
    assert padded < 1.1 * lengths.sum()  # grouping by length leaves little padding


def test_auto_epochs_give_small_data_enough_steps():
    assert auto_epochs(steps_per_epoch=5) == 20
    assert auto_epochs(steps_per_epoch=1000) == 2


def test_training_batches_are_padded_to_a_multiple_of_32_tokens_within_max_seq_length():
    def padded_length(length: int, max_seq_length: int = 384) -> int:
        windows = features.Windows([np.ones(length, np.int64), np.ones(3, np.int64)], None, [], [], np.array([0, 1]))
        return pad_windows(windows, [0, 1], 0, PAD_TO_MULTIPLE, max_seq_length)["input_ids"].shape[1]

    assert [padded_length(n) for n in (1, 32, 33, 200, 370, 384)] == [32, 32, 64, 224, 384, 384]
    assert padded_length(40, max_seq_length=48) == 48
    assert padded_length(60, max_seq_length=48) == 60  # longer than max_seq_length: left as it is
    # a process's share of a batch is padded as the whole batch is: as if its longest were among them
    windows = features.Windows([np.ones(40, np.int64), np.ones(3, np.int64)], None, [], [], np.array([0, 1]))
    share = pad_windows(windows, [1], 0, PAD_TO_MULTIPLE, 384, longest=40)
    assert share["input_ids"].shape == (1, 64) and share["attention_mask"].sum() == 3
    assert pad_windows(windows, [1], 0, PAD_TO_MULTIPLE, 384)["input_ids"].shape == (1, 32)


def test_padding_to_a_multiple_changes_no_logit(tiny_bert, tiny_examples):
    tokenizer, model = load_tokenizer(str(tiny_bert)), load_qa_model(str(tiny_bert)).eval()
    windows = features.make_windows(tiny_examples, tokenizer, WINDOWS)
    batch = pad_windows(windows, [0, 1, 2], tokenizer.pad_token_id)
    padded = pad_windows(windows, [0, 1, 2], tokenizer.pad_token_id, PAD_TO_MULTIPLE, 64)
    length = batch["input_ids"].shape[1]
    assert padded["input_ids"].shape[1] == 32 * -(-length // 32) > length
    assert (padded["input_ids"][:, length:] == tokenizer.pad_token_id).all() and not padded["attention_mask"][:, length:].any()
    with torch.no_grad():
        plain = model(**{name: torch.from_numpy(array) for name, array in batch.items()})
        wider = model(**{name: torch.from_numpy(array) for name, array in padded.items()})
    mask = torch.from_numpy(batch["attention_mask"]).bool()
    for name in ("start_logits", "end_logits"):
        torch.testing.assert_close(getattr(wider, name)[:, :length][mask], getattr(plain, name)[mask])


def test_each_process_resumes_its_own_random_state(tmp_path):
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    states = []
    for rank in range(2):  # what each of 2 processes had drawn when the checkpoint was written
        torch.manual_seed(rank)
        torch.rand(rank + 1)
        states.append(checkpoints.rng_state())
    arguments = {"epochs": 1}
    checkpoints.save(tmp_path, model, optimizer, schedule, checkpoints.TrainingState(epoch=1), arguments, None, states)
    for rank in range(2):
        torch.manual_seed(99)
        checkpoints.load_latest(tmp_path, arguments, model, optimizer, schedule, PYTHON_OPTIONS, rank=rank)
        assert torch.equal(torch.get_rng_state(), states[rank]["torch_rng"]), rank
    # a checkpoint of an earlier qatune holds the main process's state alone: every process takes it
    trainer_state = tmp_path / "checkpoints" / "epoch-0001" / "trainer_state.pt"
    saved = torch.load(trainer_state, weights_only=True)
    torch.save({"optimizer": saved["optimizer"], "schedule": saved["schedule"], **states[0]}, trainer_state)
    checkpoints.load_latest(tmp_path, arguments, model, optimizer, schedule, PYTHON_OPTIONS, rank=1)
    assert torch.equal(torch.get_rng_state(), states[0]["torch_rng"])


def test_a_transfer_sets_digest_leaves_its_answers_out(tiny_examples):
    unanswered = [dataclasses.replace(example, answers=()) for example in tiny_examples]
    moved = [dataclasses.replace(example, answers=(GoldAnswer(example.context[:1], 0),)) for example in tiny_examples]
    assert examples_digest(moved, answers=False) == examples_digest(tiny_examples, answers=False)
    # a transfer set without answers keeps the digest an earlier qatune recorded for it: its runs resume
    assert examples_digest(tiny_examples, answers=False) == examples_digest(unanswered)
    assert examples_digest(moved) != examples_digest(tiny_examples)  # the training data's answers count
    reworded = [dataclasses.replace(tiny_examples[0], question="Reworded?"), *tiny_examples[1:]]
    assert examples_digest(reworded, answers=False) != examples_digest(tiny_examples, answers=False)


def test_windows_tokenized_in_chunks_equal_those_made_at_once(tiny_bert, tiny_examples, monkeypatch):
    tokenizer = load_tokenizer(str(tiny_bert))
    whole = features.make_windows(tiny_examples, tokenizer, WINDOWS)
    monkeypatch.setattr(features, "TOKENIZE_CHUNK", 2)
    assert len(tiny_examples) > 2
    chunked = features.cached_windows(tiny_examples, tokenizer, WINDOWS, cache_dir=None)
    for name in ("input_ids", "token_type_ids", "offsets", "word_offsets"):
        assert len(getattr(chunked, name)) == len(getattr(whole, name))
        assert all((a == b).all() for a, b in zip(getattr(chunked, name), getattr(whole, name)))
    assert chunked.example_index.tolist() == whole.example_index.tolist()
    assert chunked.truncated_questions == whole.truncated_questions
    compact = _token_ids_only(whole)
    assert [ids.tolist() for ids in compact.input_ids] == [ids.tolist() for ids in whole.input_ids]
    assert [types.tolist() for types in compact.token_type_ids] == [types.tolist() for types in whole.token_type_ids]
    assert compact.lengths.tolist() == whole.lengths.tolist()
    # the smallest types that hold them: token types are 0 and 1; the ids fit a vocabulary's size
    assert compact.token_type_ids[0].dtype == np.uint8
    largest = max(int(ids.max()) for ids in whole.input_ids)
    assert compact.input_ids[0].dtype == (np.uint8 if largest < 256 else np.uint16 if largest < 65536 else np.uint32)


@pytest.mark.parametrize(
    "batches, accumulation, divisors",
    [(3, 2, [2, 2, 1]), (6, 3, [3, 3, 3, 3, 3, 3]), (7, 3, [3, 3, 3, 3, 3, 3, 1]), (2, 4, [2, 2]), (4, 1, [1, 1, 1, 1])],
)
def test_each_optimizer_step_averages_the_batches_it_adds_up(batches, accumulation, divisors):
    # the epoch's last step may add up fewer batches: their gradient is still a mean, not a smaller sum
    assert [_accumulated(n, batches, accumulation) for n in range(1, batches + 1)] == divisors


def test_an_answer_length_capped_by_the_window_says_so(tiny_bert, tiny_examples, tmp_path):
    lines = []
    narrow = QASettings(max_seq_length=32, doc_stride=4, max_question_length=12)  # 17 tokens of context
    train(tiny_examples, None, tiny_arguments(tiny_bert, tmp_path / "run", epochs=1, settings=narrow),
          progress=False, log=lines.append)
    said = [line for line in lines if line.startswith("max_answer_length: ")]
    assert said and said[0].startswith("max_answer_length: 17 tokens (") and "at least 30" not in said[0]
    assert said[0].endswith("at most the 17 tokens a window has for its context)")
