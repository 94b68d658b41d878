"""Training with tiny models: it learns, it saves, it resumes exactly, it checks its arguments."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from qatune import checkpoints
from qatune.data import load_examples
from qatune.errors import SettingsError
from qatune.inference import QAModel
from qatune.settings import QASettings
from qatune.training import TrainingArguments, auto_epochs, length_grouped_batches, train

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
    qa_model = QAModel.from_pretrained(output, bf16=False)
    plain_model = AutoModelForQuestionAnswering.from_pretrained(output).eval()
    plain_tokenizer = AutoTokenizer.from_pretrained(output)
    example = tiny_examples[0]
    windows = make_windows([example], qa_model.tokenizer, qa_model.settings)
    starts, ends = window_logits(qa_model.model, windows, pad_token_id=0)
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
    assert [r["epoch"] for r in evaluations] == list(range(1, 101))
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
        train(tiny_examples, tiny_examples, tiny_arguments(tiny_distilbert, interrupted), progress=False)
    monkeypatch.setattr(checkpoints, "save", real_save)
    assert (interrupted / "checkpoints" / "latest").read_text() == "epoch-0001"

    resumed = train(tiny_examples, tiny_examples, tiny_arguments(tiny_distilbert, interrupted, resume=True), progress=False)
    assert resumed.epochs_run == 3
    expected, actual = weights(uninterrupted), weights(interrupted)
    assert expected.keys() == actual.keys()
    for name in expected:
        assert torch.equal(expected[name], actual[name]), name
    log = [json.loads(line) for line in (interrupted / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log if r["type"] == "eval"] == [1, 2, 3]


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
        train(tiny_examples, None, tiny_arguments(tiny_bert, output), progress=False)
    monkeypatch.setattr(checkpoints, "_save_weights", real_weights)
    assert (output / "checkpoints" / "latest").read_text() == "epoch-0001"
    assert (output / "checkpoints" / "epoch-0001" / "model.safetensors").is_file()
    resumed = train(tiny_examples, None, tiny_arguments(tiny_bert, output, resume=True), progress=False)
    assert resumed.epochs_run == 3


def test_patience_stops_early(tiny_bert, tiny_examples, tmp_path):
    arguments = tiny_arguments(tiny_bert, tmp_path / "run", epochs=30, learning_rate=1e-9, patience=2, save_every=0)
    result = train(tiny_examples, tiny_examples, arguments, progress=False)
    assert result.epochs_run == 3  # epoch 1 is the best; 2 and 3 bring nothing
    assert result.best_epoch == 1


def test_a_new_run_refuses_to_mix_with_an_earlier_one(tiny_bert, tiny_examples, tmp_path):
    output = tmp_path / "run"
    train(tiny_examples, None, tiny_arguments(tiny_bert, output, epochs=1), progress=False)
    with pytest.raises(SettingsError) as error:
        train(tiny_examples, None, tiny_arguments(tiny_bert, output, epochs=1), progress=False)
    assert str(error.value) == (
        f"{output} holds an earlier training run (checkpoints, metrics.jsonl): pass --resume to continue "
        f"it, --overwrite to start over there, or choose another --output"
    )
    train(tiny_examples, None, tiny_arguments(tiny_bert, output, epochs=1, overwrite=True), progress=False)


def test_resume_with_other_settings_is_refused(tiny_bert, tiny_examples, tmp_path):
    output = tmp_path / "run"
    train(tiny_examples, None, tiny_arguments(tiny_bert, output, epochs=1), progress=False)
    with pytest.raises(SettingsError, match=r"learning_rate: was 0.003, now 0.001"):
        train(tiny_examples, None, tiny_arguments(tiny_bert, output, epochs=1, learning_rate=1e-3, resume=True), progress=False)


def test_resume_without_a_checkpoint_is_refused(tiny_bert, tiny_examples, tmp_path):
    with pytest.raises(SettingsError, match=r"has no checkpoint to resume from"):
        train(tiny_examples, None, tiny_arguments(tiny_bert, tmp_path / "none", resume=True), progress=False)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("batch_size", 0, "batch_size must be a whole number of at least 1, got 0"),
        ("epochs", 2.5, "epochs must be a whole number of at least 1, got 2.5"),
        ("learning_rate", 3.0, "learning_rate must be between 0 and 1 (e.g. 2e-4), got 3.0"),
        ("save_every", -1, "save_every must be 0 (never) or a whole number of epochs, got -1"),
        ("warmup_ratio", 1.0, "warmup_ratio must be in [0, 1), got 1.0"),
        ("hidden_dropout", 1.5, "hidden_dropout must be in [0, 1), or None for the model's own, got 1.5"),
    ],
)
def test_bad_arguments_name_the_field(field, value, message):
    with pytest.raises(SettingsError) as error:
        TrainingArguments(**{field: value})
    assert str(error.value) == message


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
