"""Distillation: the losses by hand, the tokenizer and width checks, and a teacher that knows the
answers (or whose states the student learns) helping."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil

import numpy as np
import pytest
import torch
import transformers

from qatune import TrainingArguments, train
from qatune.batching import as_tensors, pad_windows
from qatune.data import load_examples
from qatune.distillation import (
    check_same_tokenizer, distillation_loss, gold_losses, hidden_layer_map, hidden_state_loss, teacher_logits,
)
from qatune.engines import load_engine
from qatune.errors import SettingsError
from qatune.features import label_windows, make_windows, with_token_types
from qatune.modeling import load_qa_model, load_tokenizer
from qatune.settings import QASettings
from qatune.shrink import shrink_model

from conftest import TINY_QA

WINDOWS = QASettings(max_seq_length=48, doc_stride=8, max_question_length=12)
COMMON = dict(batch_size=4, warmup_ratio=0.0, bf16=False, settings=WINDOWS, seed=7, save_every=0)


def numpy_kl(teacher, student, mask, temperature):
    """Mean over rows of sum_i p_i log(p_i / q_i), softmaxes at the temperature over unmasked tokens."""
    total = 0.0
    for t_row, s_row, m_row in zip(teacher, student, mask):
        t, s = t_row[m_row == 1] / temperature, s_row[m_row == 1] / temperature
        p = np.exp(t - t.max()) / np.exp(t - t.max()).sum()
        log_q = s - s.max() - np.log(np.exp(s - s.max()).sum())
        total += float(np.sum(p * (np.log(p) - log_q)))
    return total / len(teacher)


@pytest.mark.parametrize("alpha, temperature", [(0.5, 2.0), (0.0, 1.0), (0.8, 3.5), (1.0, 2.0)])
def test_the_loss_equals_the_hand_computed_value(alpha, temperature):
    rng = np.random.default_rng(4)
    shape = (3, 7)
    student_start, student_end, teacher_start, teacher_end = (rng.normal(size=shape) * 3 for _ in range(4))
    mask = np.ones(shape, dtype=np.int64)
    mask[1, 5:] = 0  # a shorter window: its padding takes no part
    mask[2, 3:] = 0
    gold = 1.234
    loss = distillation_loss(
        torch.tensor(gold), *(torch.tensor(a, dtype=torch.float32) for a in (student_start, student_end, teacher_start, teacher_end)),
        torch.tensor(mask), alpha, temperature,
    )
    kl = (numpy_kl(teacher_start, student_start, mask, temperature) + numpy_kl(teacher_end, student_end, mask, temperature)) / 2
    assert float(loss) == pytest.approx(alpha * gold + (1 - alpha) * temperature**2 * kl, rel=1e-5)


def test_a_student_equal_to_its_teacher_has_no_distillation_loss():
    logits = torch.randn(2, 9)
    mask = torch.ones(2, 9, dtype=torch.long)
    assert float(distillation_loss(torch.tensor(0.0), logits, logits, logits, logits, mask, 0.0, 2.0)) == pytest.approx(0.0, abs=1e-6)



def test_transfer_windows_learn_from_the_teacher_alone():
    rng = np.random.default_rng(5)
    shape = (4, 6)
    student_start, student_end, teacher_start, teacher_end = (rng.normal(size=shape) * 2 for _ in range(4))
    mask = np.ones(shape, dtype=np.int64)
    mask[3, 4:] = 0
    gold = np.array([0.7, 1.9, 5.0, 3.3])
    labelled = np.array([True, False, True, False])  # windows 1 and 3: transfer questions
    alpha, temperature = 0.6, 2.0
    tensors = [torch.tensor(a, dtype=torch.float32) for a in (student_start, student_end, teacher_start, teacher_end)]
    loss = distillation_loss(torch.tensor(gold, dtype=torch.float32), *tensors, torch.tensor(mask), alpha, temperature,
                             torch.tensor(labelled))
    expected = []
    for row in range(4):
        rows = slice(row, row + 1)
        kl = (numpy_kl(teacher_start[rows], student_start[rows], mask[rows], temperature)
              + numpy_kl(teacher_end[rows], student_end[rows], mask[rows], temperature)) / 2
        weight = alpha if labelled[row] else 0.0
        expected.append(weight * gold[row] + (1 - weight) * temperature**2 * kl)
    assert float(loss) == pytest.approx(np.mean(expected), rel=1e-5)
    # every window labelled: the batch formula, alpha * mean gold + (1 - alpha) * T^2 * mean KL
    everyone = distillation_loss(torch.tensor(gold, dtype=torch.float32), *tensors, torch.tensor(mask), alpha, temperature)
    kl_all = (numpy_kl(teacher_start, student_start, mask, temperature) + numpy_kl(teacher_end, student_end, mask, temperature)) / 2
    assert float(everyone) == pytest.approx(alpha * gold.mean() + (1 - alpha) * temperature**2 * kl_all, rel=1e-5)


def test_each_windows_gold_loss_averages_to_the_models_own_loss(tiny_bert):
    examples = load_examples(TINY_QA)
    model, tokenizer = load_qa_model(str(tiny_bert)).eval(), load_tokenizer(str(tiny_bert))
    windows = make_windows(examples, tokenizer, WINDOWS)
    items = label_windows(examples, windows)
    padded = pad_windows(windows, items.window.tolist(), tokenizer.pad_token_id or 0, 1, WINDOWS.max_seq_length)
    starts, ends = torch.from_numpy(items.start), torch.from_numpy(items.end)
    with torch.no_grad():
        output = model(**as_tensors(padded, "cpu"), start_positions=starts, end_positions=ends)
    per_window = gold_losses(output.start_logits, output.end_logits, starts, ends)
    assert per_window.shape == (len(items),)
    assert float(per_window.mean()) == pytest.approx(float(output.loss), rel=1e-5)

def test_a_teacher_with_another_tokenizer_is_refused_naming_both(tiny_bert, tmp_path):
    from transformers import BertTokenizerFast

    other = tmp_path / "other-teacher"
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "when", "did", "it", "open"]
    BertTokenizerFast(vocab={w: i for i, w in enumerate(words)}).save_pretrained(other)
    with pytest.raises(SettingsError) as caught:
        check_same_tokenizer(load_tokenizer(tiny_bert), load_tokenizer(other), str(tiny_bert), str(other))
    message = str(caught.value)
    assert f"the teacher {other} and the student {tiny_bert} have different vocabularies" in message
    assert "qatune shrink TEACHER --layers K -o STUDENT" in message
    arguments = TrainingArguments(output_dir=str(tmp_path / "student"), model=str(tiny_bert), epochs=1, teacher=str(other), **COMMON)
    with pytest.raises(SettingsError, match="different vocabularies"):
        train(load_examples(TINY_QA), None, arguments, progress=False)
    assert not (tmp_path / "student" / "model.safetensors").exists()


def test_bad_distillation_settings_name_the_field():
    with pytest.raises(SettingsError, match=r"distill_alpha must be between 0 and 1 .*got 1.5"):
        TrainingArguments(distill_alpha=1.5)
    with pytest.raises(SettingsError, match=r"distill_temperature must be a positive number .*got 0"):
        TrainingArguments(distill_temperature=0)


def held_out_loss(folder, examples) -> float:
    """The model's cross-entropy on the examples' labelled windows (the loss training minimizes)."""
    model, tokenizer = load_qa_model(str(folder)).eval(), load_tokenizer(str(folder))
    windows = make_windows(examples, tokenizer, WINDOWS)
    items = label_windows(examples, windows)
    padded = pad_windows(windows, items.window.tolist(), tokenizer.pad_token_id or 0, 1, WINDOWS.max_seq_length)
    with torch.no_grad():
        output = model(**as_tensors(padded, "cpu"), start_positions=torch.from_numpy(items.start),
                       end_positions=torch.from_numpy(items.end))
    return float(output.loss)


def test_a_teacher_that_knows_the_answers_lowers_the_held_out_loss(tiny_bert, tmp_path):
    examples = load_examples(TINY_QA)
    taught, held_out = examples[:8], examples[8:]
    teacher = tmp_path / "teacher"  # trained long on every question, the held-out ones included
    train(examples, None, TrainingArguments(output_dir=str(teacher), model=str(tiny_bert), epochs=60, learning_rate=3e-3, **COMMON), progress=False)
    losses, lines = {}, []
    for name, with_teacher in (("alone", None), ("taught", str(teacher))):
        arguments = TrainingArguments(output_dir=str(tmp_path / name), model=str(tiny_bert), epochs=20, learning_rate=3e-3,
                                      teacher=with_teacher, **COMMON)
        train(taught, None, arguments, progress=False, log=lines.append)
        losses[name] = held_out_loss(tmp_path / name, held_out)
    # the same steps, the same seed: only the teacher's distributions differ (measured margin ~0.1)
    assert losses["taught"] < losses["alone"] - 0.03
    said = [line for line in lines if line.startswith(f"distilling from {teacher}: its logits of ")]
    assert len(said) == 1 and " s (openvino float32); loss = " in said[0]  # bf16=False: the teacher's too


def test_the_teachers_logits_are_its_own_in_float32(tiny_bert, tmp_path):
    # computed by the engine that answers with the teacher (OpenVINO on a CPU): the same
    # function as the teacher model, window by window, up to float32 rounding
    examples = load_examples(TINY_QA)
    tokenizer = load_tokenizer(str(tiny_bert))
    windows = make_windows(examples, tokenizer, WINDOWS)
    engine = load_engine(str(tiny_bert), tokenizer, bf16=False)
    logits = teacher_logits(engine, windows, pad_token_id=tokenizer.pad_token_id or 0, max_length=WINDOWS.max_seq_length)
    model = load_qa_model(str(tiny_bert)).eval()
    assert engine.precision == "float32" and len(logits.starts) == len(windows) > 0
    with torch.no_grad():
        for window, ids in enumerate(windows.input_ids):
            inputs = {"input_ids": torch.from_numpy(ids)[None], "token_type_ids": torch.from_numpy(windows.token_type_ids[window])[None]}
            output = model(**inputs)
            np.testing.assert_allclose(logits.starts[window], output.start_logits[0].numpy(), atol=1e-4)
            np.testing.assert_allclose(logits.ends[window], output.end_logits[0].numpy(), atol=1e-4)


def numpy_cosine_loss(student, teacher, mask):
    """Mean over the real tokens of 1 - cos(student, teacher)."""
    s, t = student[mask == 1], teacher[mask == 1]
    cos = np.sum(s * t, axis=-1) / (np.linalg.norm(s, axis=-1) * np.linalg.norm(t, axis=-1))
    return float(np.mean(1 - cos))


def test_the_hidden_state_loss_equals_the_hand_computed_value():
    rng = np.random.default_rng(11)
    mask = np.array([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1], [1, 1, 0, 0, 0, 0]])
    student = [rng.normal(size=(3, 6, 5)) for _ in range(3)]  # embeddings, then 2 layers
    teacher = [rng.normal(size=(3, 6, 5)) for _ in range(5)]  # embeddings, then 4 layers
    layer_map = hidden_layer_map(2, 4)
    assert layer_map == [2, 4]
    loss = hidden_state_loss(
        tuple(torch.tensor(a, dtype=torch.float32) for a in student),
        tuple(torch.tensor(a, dtype=torch.float32) for a in teacher),
        torch.tensor(mask), layer_map,
    )
    # student layer 1 against teacher layer 2, student layer 2 against teacher layer 4; padding left out
    expected = (numpy_cosine_loss(student[1], teacher[2], mask) + numpy_cosine_loss(student[2], teacher[4], mask)) / 2
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    same = tuple(torch.tensor(a, dtype=torch.float32) for a in teacher)
    assert float(hidden_state_loss(same, same, torch.tensor(mask), [1, 2, 3, 4])) == pytest.approx(0.0, abs=1e-6)


def test_the_layer_map_sends_the_last_student_layer_to_the_last_teacher_layer():
    for student in range(1, 13):
        layer_map = hidden_layer_map(student, 12)
        assert layer_map[-1] == 12 and layer_map == sorted(set(layer_map)) and len(layer_map) == student
    with pytest.raises(SettingsError, match="the student has 4 layers, the teacher 2"):
        hidden_layer_map(4, 2)


def test_hidden_state_distillation_needs_a_teacher_and_the_same_width(tiny_bert, tmp_path):
    with pytest.raises(SettingsError, match=r"distill_hidden learns a teacher's hidden states: name the teacher"):
        TrainingArguments(distill_hidden=1.0)
    with pytest.raises(SettingsError, match=r"distill_hidden must be 0 \(off\) or a positive weight .*got -1"):
        TrainingArguments(distill_hidden=-1, teacher=str(tiny_bert))
    wider = tmp_path / "wider-teacher"
    config = transformers.AutoConfig.from_pretrained(tiny_bert)
    config.hidden_size, config.intermediate_size = 48, 96
    transformers.AutoModelForQuestionAnswering.from_config(config).save_pretrained(wider)
    load_tokenizer(str(tiny_bert)).save_pretrained(wider)
    arguments = TrainingArguments(output_dir=str(tmp_path / "student"), model=str(tiny_bert), epochs=1,
                                  teacher=str(wider), distill_hidden=1.0, **COMMON)
    with pytest.raises(SettingsError, match=f"the student {tiny_bert} has 32 dimensions and the teacher {wider} 48"):
        train(load_examples(TINY_QA), None, arguments, progress=False)


def states_gap(student_folder, teacher_folder, examples) -> float:
    """The hidden-state loss between a student and its teacher on the examples' windows."""
    student, teacher = load_qa_model(str(student_folder)).eval(), load_qa_model(str(teacher_folder)).eval()
    tokenizer = load_tokenizer(str(student_folder))
    windows = make_windows(examples, tokenizer, WINDOWS)
    padded = as_tensors(pad_windows(windows, list(range(len(windows))), tokenizer.pad_token_id or 0, 1, WINDOWS.max_seq_length), "cpu")
    with torch.no_grad():
        student_states = student(**padded, output_hidden_states=True).hidden_states
        teacher_states = teacher(**padded, output_hidden_states=True).hidden_states
    layer_map = hidden_layer_map(len(student_states) - 1, len(teacher_states) - 1)
    return float(hidden_state_loss(student_states, teacher_states, padded["attention_mask"], layer_map))


def test_hidden_state_distillation_brings_the_students_states_to_the_teachers(tiny_bert, tmp_path):
    examples = load_examples(TINY_QA)
    teacher = tmp_path / "teacher"
    train(examples, None, TrainingArguments(output_dir=str(teacher), model=str(tiny_bert), epochs=10, learning_rate=3e-3, **COMMON), progress=False)
    shrink_model(teacher, tmp_path / "student", layers=1)
    gaps, lines = {}, []
    for name, hidden in (("answers only", 0.0), ("states too", 1.0)):
        arguments = TrainingArguments(output_dir=str(tmp_path / name), model=str(tmp_path / "student"), epochs=10,
                                      learning_rate=3e-3, teacher=str(teacher), distill_hidden=hidden, **COMMON)
        train(examples, None, arguments, progress=False, log=lines.append)
        gaps[name] = states_gap(tmp_path / name, teacher, examples)
    # the same steps and seed; only the hidden-state term differs (1 - cos measured 0.032 against 0.052)
    assert gaps["states too"] < 0.8 * gaps["answers only"]
    assert "student layers 1-1 learn the outputs of teacher layers 2 (1 - cosine per token)" in "\n".join(lines)



def unanswered(examples):
    """The questions with their answers taken away, as a transfer set holds them."""
    return [dataclasses.replace(example, answers=[]) for example in examples]


def test_a_transfer_set_teaches_the_student_the_teachers_answers_to_its_questions(tiny_bert, tmp_path):
    examples = load_examples(TINY_QA)
    taught, held_out = examples[:8], examples[8:]
    teacher = tmp_path / "teacher"  # knows every answer, the held-out ones included
    train(examples, None, TrainingArguments(output_dir=str(teacher), model=str(tiny_bert), epochs=60, learning_rate=3e-3, **COMMON), progress=False)
    losses, lines, results = {}, [], {}
    for name, transfer in (("gold only", None), ("with transfer", unanswered(held_out))):
        arguments = TrainingArguments(output_dir=str(tmp_path / name), model=str(tiny_bert), epochs=20, learning_rate=3e-3,
                                      teacher=str(teacher), **COMMON)
        results[name] = train(taught, None, arguments, progress=False, log=lines.append, transfer_examples=transfer)
        losses[name] = held_out_loss(tmp_path / name, held_out)
    # the held-out questions reach the student only through the teacher's answers to them
    # (measured 0.83 against 3.62)
    assert losses["with transfer"] < 0.5 * losses["gold only"]
    counts = results["with transfer"].counts
    assert counts["transfer_questions"] == len(held_out) and counts["transfer_windows"] >= len(held_out)
    assert counts["train_questions"] == len(taught) and "transfer_questions" not in results["gold only"].counts
    assert f"transfer set: {len(held_out)} questions -> {counts['transfer_windows']} windows" in "\n".join(lines)
    card = json.loads((tmp_path / "with transfer" / "qatune.json").read_text())
    assert card["training_arguments"]["transfer_sha256"] == card["data"]["transfer_sha256"]
    readme = (tmp_path / "with transfer" / "README.md").read_text()
    assert f"trained on {len(taught)} questions (0 unanswerable), and on its teacher's answers to {len(held_out)} more questions" in readme


def test_transfer_questions_need_a_teacher_and_a_resume_needs_the_same_ones(tiny_bert, tmp_path):
    examples = load_examples(TINY_QA)
    alone = TrainingArguments(output_dir=str(tmp_path / "alone"), model=str(tiny_bert), epochs=1, **COMMON)
    with pytest.raises(SettingsError, match=r"transfer questions \(transfer_examples\) have no gold answers: only a teacher"):
        train(examples, None, alone, progress=False, transfer_examples=unanswered(examples[8:]))
    taught = TrainingArguments(output_dir=str(tmp_path / "student"), model=str(tiny_bert), epochs=1, teacher=str(tiny_bert),
                               keep_checkpoints=True, **(COMMON | {"save_every": 1}))
    with pytest.raises(SettingsError, match=r"the transfer set \(transfer_examples\) has no questions"):
        train(examples, None, taught, progress=False, transfer_examples=[])
    train(examples[:8], None, taught, progress=False, transfer_examples=unanswered(examples[8:]))
    resumed = dataclasses.replace(taught, epochs=2, resume=True)
    with pytest.raises(SettingsError, match=r"started with other settings \(other transfer questions than the run's"):
        train(examples[:8], None, resumed, progress=False, transfer_examples=unanswered(examples[9:]))


def test_a_resume_whose_teacher_changed_in_place_is_refused_naming_the_teacher(tiny_bert, tmp_path):
    examples = load_examples(TINY_QA)
    teacher, output = tmp_path / "teacher", tmp_path / "student"
    shutil.copytree(tiny_bert, teacher)
    arguments = TrainingArguments(output_dir=str(output), model=str(tiny_bert), epochs=1, teacher=str(teacher),
                                  keep_checkpoints=True, **(COMMON | {"save_every": 1}))
    train(examples, None, arguments, progress=False)
    retrained = load_qa_model(str(teacher))  # the same folder now holds another model
    with torch.no_grad():
        retrained.qa_outputs.weight.add_(0.01)
    retrained.save_pretrained(teacher, safe_serialization=True)
    resumed = dataclasses.replace(arguments, epochs=2, resume=True)
    said = f"teacher: {teacher} holds another model than the run's (its weights or config.json changed since the run started)"
    with pytest.raises(SettingsError, match=re.escape(said)):
        train(examples, None, resumed, progress=False)
    # a checkpoint written before qatune recorded its teacher's content resumes as it did
    saved_arguments = output / "checkpoints" / "epoch-0001" / "training_args.json"
    recorded = json.loads(saved_arguments.read_text())
    del recorded["teacher_sha256"]
    saved_arguments.write_text(json.dumps(recorded))
    assert train(examples, None, resumed, progress=False).epochs_run == 2


def test_a_distilbert_student_learns_from_a_bert_teacher(tiny_bert, tiny_distilbert, tmp_path):
    """The same ids, token types on the teacher's side only: the student's windows get BERT's segments."""
    examples = load_examples(TINY_QA)
    student_windows = make_windows(examples, load_tokenizer(tiny_distilbert), WINDOWS)
    teacher_windows = make_windows(examples, load_tokenizer(tiny_bert), WINDOWS)
    assert student_windows.token_type_ids is None and teacher_windows.token_type_ids is not None
    built = with_token_types(student_windows, load_tokenizer(tiny_distilbert).sep_token_id)
    for ids, types, theirs, their_types in zip(
        built.input_ids, built.token_type_ids, teacher_windows.input_ids, teacher_windows.token_type_ids
    ):
        assert np.array_equal(ids, theirs) and np.array_equal(types, their_types)

    arguments = TrainingArguments(output_dir=str(tmp_path / "student"), model=str(tiny_distilbert), epochs=1,
                                  learning_rate=3e-3, teacher=str(tiny_bert), **COMMON)
    assert train(examples, None, arguments, progress=False).epochs_run == 1


def test_a_bert_teacher_of_hidden_states_reads_its_token_types(tiny_bert, tiny_distilbert, tmp_path, monkeypatch):
    seen = []
    real_forward = transformers.BertForQuestionAnswering.forward

    def spying_forward(self, *args, **kwargs):
        seen.append((kwargs["input_ids"].clone(), kwargs.get("token_type_ids")))
        return real_forward(self, *args, **kwargs)

    monkeypatch.setattr(transformers.BertForQuestionAnswering, "forward", spying_forward)
    arguments = TrainingArguments(output_dir=str(tmp_path / "student"), model=str(tiny_distilbert), epochs=1,
                                  learning_rate=3e-3, teacher=str(tiny_bert), distill_hidden=1.0, **COMMON)
    train(load_examples(TINY_QA), None, arguments, progress=False)
    sep = load_tokenizer(tiny_bert).sep_token_id
    assert seen  # the teacher gave its states batch by batch
    for ids, types in seen:
        assert types is not None
        for row_ids, row_types in zip(ids.tolist(), types.tolist()):
            first = row_ids.index(sep)  # the question's part (through its [SEP]) is segment 0, the rest 1
            length = len(row_ids) - row_ids[::-1].index(sep)  # through the last [SEP]: padding is 0
            assert row_types[: first + 1] == [0] * (first + 1) and row_types[first + 1 : length] == [1] * (length - first - 1)


def test_a_teacher_shorter_than_the_windows_is_refused_naming_the_length(tiny_bert, tmp_path):
    teacher = tmp_path / "short-teacher"
    model = load_qa_model(tiny_bert)
    model.config.max_position_embeddings = 40  # what the teacher's config says it takes
    model.save_pretrained(teacher)
    load_tokenizer(tiny_bert).save_pretrained(teacher)
    arguments = TrainingArguments(output_dir=str(tmp_path / "student"), model=str(tiny_bert), epochs=1,
                                  teacher=str(teacher), **COMMON)
    with pytest.raises(SettingsError, match=r"takes at most 40 tokens per window, but the student's windows are max_seq_length 48"):
        train(load_examples(TINY_QA), None, arguments, progress=False)
