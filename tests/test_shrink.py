"""`qatune shrink`: a student keeping K of the teacher's layers, evenly spaced."""

from __future__ import annotations

import json

import pytest
import torch

from qatune.errors import SettingsError
from qatune.shrink import kept_layers, shrink_model

from test_cli_model import qatune


def test_kept_layers_are_spread_with_the_first_and_last():
    assert kept_layers(12, 6) == [0, 2, 4, 7, 9, 11]
    assert kept_layers(6, 3) == [0, 2, 5]
    assert kept_layers(6, 6) == [0, 1, 2, 3, 4, 5]
    assert kept_layers(2, 1) == [1]
    with pytest.raises(SettingsError, match="layers must be a whole number from 1 to the model's 6 layers, got 7"):
        kept_layers(6, 7)


def layer_weights(state: dict, prefix: str, index: int) -> dict:
    mark = f"{prefix}.{index}."
    return {key[len(mark):]: value for key, value in state.items() if key.startswith(mark)}


@pytest.mark.parametrize("kind, prefix", [("bert", "bert.encoder.layer"), ("distilbert", "distilbert.transformer.layer")])
def test_the_student_holds_the_kept_layers_and_the_rest_of_the_teacher(kind, prefix, tiny_bert, tiny_distilbert, tmp_path):
    from transformers import AutoModelForQuestionAnswering

    teacher_dir = tiny_bert if kind == "bert" else tiny_distilbert
    result = shrink_model(teacher_dir, tmp_path / "student", layers=1)
    assert result.kept_layers == [1] and result.layers_before == 2
    teacher = AutoModelForQuestionAnswering.from_pretrained(teacher_dir).state_dict()
    student_model = AutoModelForQuestionAnswering.from_pretrained(tmp_path / "student")
    student = student_model.state_dict()
    assert getattr(student_model.config, "num_hidden_layers", getattr(student_model.config, "n_layers", None)) == 1
    assert not layer_weights(student, prefix, 1)  # one layer left, numbered 0
    for name, value in layer_weights(teacher, prefix, 1).items():
        assert torch.equal(layer_weights(student, prefix, 0)[name], value)
    for name, value in teacher.items():  # embeddings and the QA head are the teacher's
        if not name.startswith(prefix):
            assert torch.equal(student[name], value)
    assert result.parameters_after == sum(p.numel() for p in student_model.parameters()) < result.parameters_before


def test_keeping_every_layer_answers_as_the_teacher(tiny_bert, tmp_path):
    from qatune import QAModel

    shrink_model(tiny_bert, tmp_path / "same", layers=2)
    question, context = "who sat?", "the cat sat on the mat"
    teacher = QAModel.from_pretrained(tiny_bert, engine="torch", bf16=False).ask(question, context, top_k=3)
    student = QAModel.from_pretrained(tmp_path / "same", engine="torch", bf16=False).ask(question, context, top_k=3)
    assert student == teacher


def test_the_command_prints_sizes_and_speed_and_writes_a_model_folder(tiny_bert, tmp_path):
    output = tmp_path / "student"
    result = qatune("shrink", tiny_bert, "--layers", "1", "-o", output, "--engine", "torch")
    lines = result.stdout.splitlines()
    assert lines[0].startswith("kept layers [1] of 2; parameters ") and lines[0].endswith(f"written to {output}")
    assert lines[1].startswith("answering the sample's dev questions: ") and "x as fast (torch" in lines[1]
    card = json.loads((output / "qatune.json").read_text())
    assert card["shrunk_from"]["kept_layers"] == [1] and card["settings"]["temperature"] == 1.0
    assert (output / "README.md").is_file()
    refused = qatune("shrink", tiny_bert, "--layers", "3", "-o", tmp_path / "x", check=False)
    assert refused.returncode == 2
    assert refused.stderr.startswith("error: --layers must be a whole number from 1 to the model's 2 layers, got 3")


def test_keeping_every_layer_says_what_the_copy_lacks_instead_of_asking_to_train_it(tiny_bert, tmp_path):
    result = qatune("shrink", tiny_bert, "--layers", "2", "-o", tmp_path / "copy", "--no-speed")
    lines = result.stdout.splitlines()
    assert lines[0].startswith("kept layers [0, 1] of 2; ")
    assert lines[-1].startswith("every layer kept: it answers as its teacher, without the no-answer threshold")


def test_the_library_refuses_a_folder_that_holds_a_model_unless_told_to_replace_it(tiny_bert, tmp_path):
    from qatune.errors import ArgumentTypeError, SettingsError

    trained = tmp_path / "trained"
    shrink_model(tiny_bert, trained, layers=2)
    (trained / "metrics.jsonl").write_text("{}\n")  # what a training run leaves
    weights = (trained / "model.safetensors").read_bytes()
    with pytest.raises(SettingsError, match=r"output_dir: .*trained is not empty .*pass overwrite=True"):
        shrink_model(tiny_bert, trained, layers=1)
    assert (trained / "model.safetensors").read_bytes() == weights  # untouched
    result = shrink_model(tiny_bert, trained, layers=1, overwrite=True)
    assert result.output_dir == trained and result.kept_layers == [1]
    assert not (trained / "metrics.jsonl").exists()  # replaced whole: nothing of the earlier model is left
    assert json.loads((trained / "qatune.json").read_text())["shrunk_from"]["kept_layers"] == [1]
    a_file = tmp_path / "data.json"
    a_file.write_text("{}")
    with pytest.raises(SettingsError, match="output_dir"):
        shrink_model(tiny_bert, a_file, layers=1)
    with pytest.raises(ArgumentTypeError, match="model_dir must be a path"):
        shrink_model(None, tmp_path / "x", layers=1)
