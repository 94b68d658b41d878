"""Python callers' mistakes: arguments of the wrong kind get qatune's own error, naming the
argument and what it takes, before any work (not a deep error from numpy, torch or pathlib,
and never a silent wrong result such as the base model loaded for None)."""

from __future__ import annotations

import re

import pytest

from qatune.errors import ArgumentTypeError, SettingsError


@pytest.fixture(scope="module")
def model(tiny_bert):
    from qatune.inference import QAModel

    return QAModel.from_pretrained(tiny_bert, engine="torch", bf16=False)


@pytest.mark.parametrize("path", [None, 3, "", ["model"]])
def test_a_model_path_that_is_no_path_is_refused(path):
    from qatune.inference import QAModel

    with pytest.raises(ArgumentTypeError, match=r"^path must be a path \(a str or pathlib.Path\)"):
        QAModel.from_pretrained(path)


@pytest.mark.parametrize("bf16", ["no", "false", 0, 1])
def test_bf16_takes_none_true_or_false_only(tiny_bert, bf16):
    from qatune.inference import QAModel

    with pytest.raises(SettingsError, match=r"^bf16 must be None .*, True or False, got "):
        QAModel.from_pretrained(tiny_bert, bf16=bf16)


@pytest.mark.parametrize("batch_size", ["8", 2.5, None, True, 0])
def test_a_batch_size_that_is_no_whole_number_is_refused(model, batch_size):
    from qatune.data import Example

    with pytest.raises(SettingsError, match=r"^batch_size must be a whole number of at least 1"):
        model.predict([Example(id="1", question="Who?", context="Ada wrote it.")], batch_size=batch_size)


@pytest.mark.parametrize(
    "arguments, error, message",
    [
        ({"model": None}, ArgumentTypeError, r"^model must be a path"),
        ({"model": "./no-such-model"}, Exception, r"no such model folder: ./no-such-model"),
        ({"engine": "tf"}, SettingsError, r"^engine must be one of auto, torch, onnx, openvino, got 'tf'"),
        ({"device": "gpu"}, SettingsError, r"^--device: expected .*got 'gpu'"),
        ({"bf16": "no"}, SettingsError, r"^bf16 must be None"),
        ({"model_card": "x"}, ArgumentTypeError, r"^model_card must be a dict"),
        ({"limits": {"max_items": 3}}, ArgumentTypeError, r"^limits must be a ServerLimits"),
        ({"api_key": 123}, ArgumentTypeError, r"^the API key must be a str"),
    ],
)
def test_the_server_app_checks_its_arguments_when_it_is_made(tiny_bert, arguments, error, message):
    from qatune.serving import create_app

    arguments = {"model": tiny_bert, **arguments}
    with pytest.raises(error, match=message):
        create_app(arguments.pop("model"), **arguments)


@pytest.mark.parametrize(
    "field, value", [("batch_size", 2.5), ("batch_size", "8"), ("max_items", None), ("max_items", True), ("max_wait_ms", 0)]
)
def test_server_limits_take_positive_numbers_only(field, value):
    from qatune.serving import ServerLimits

    with pytest.raises(SettingsError, match=rf"^ServerLimits.{field} must be a positive "):
        ServerLimits(**{field: value})
    assert ServerLimits(max_wait_ms=2.5).max_wait_ms == 2.5


# --- examples built in Python ------------------------------------------------------------------


def test_an_example_whose_answer_is_not_at_its_offset_is_refused():
    from qatune.data import Example, GoldAnswer
    from qatune.errors import DataError

    context = "Ada wrote it in 1843."
    assert Example("a", "Who?", context, (GoldAnswer("Ada", 0),)).answers[0].end == 3
    with pytest.raises(DataError, match=r"^example 'b': the answer 'Ada' is not at character 5 of its context \(found 'rot'\)"):
        Example("b", "Who?", context, (GoldAnswer("Ada", 5),))
    with pytest.raises(DataError, match="found ''"):
        Example("c", "Who?", context, (GoldAnswer("Ada", 500),))
    with pytest.raises(ArgumentTypeError, match="GoldAnswer start must be a character offset"):
        GoldAnswer("Ada", -3)
    listed = Example("d", "Who?", context, [GoldAnswer("1843", 16)])  # a list is taken as the tuple it stands for
    assert listed.answers == (GoldAnswer("1843", 16),)


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"context": None}, r"context must be a str, got NoneType"),
        ({"id": 7}, r"id must be a str, got int \(pass str\(id\)\)"),
        ({"answers": [{"text": "Ada", "answer_start": 0}]}, r"answers must be a tuple of GoldAnswer\(text, start\)"),
    ],
)
def test_an_example_with_fields_of_the_wrong_kind_is_refused(fields, message):
    from qatune.data import Example

    values = {"id": "e", "question": "Who?", "context": "Ada wrote it.", **fields}
    with pytest.raises(ArgumentTypeError, match=message):
        Example(**values)


@pytest.mark.parametrize("question, context, blank", [("", "Ada wrote it.", "question is blank (empty)"),
                                                     ("Who?", "\u200b\u0301", "context is blank (U+200B U+0301)")])
def test_an_example_with_a_blank_question_or_context_is_refused_as_reading_a_file_refuses_it(question, context, blank):
    from qatune.data import Example
    from qatune.errors import DataError

    with pytest.raises(DataError, match=rf"^example 'e': the {re.escape(blank)}; write the "):
        Example("e", question, context)


def test_a_files_name_where_examples_go_says_to_read_it_first(model, tmp_path):
    from qatune.data import Example, write_squad_v2
    from qatune.training import TrainingArguments, train

    expected = r"^examples must be examples \(a list of qatune.data.Example\), got the path 'dev.json': read the file first"
    with pytest.raises(ArgumentTypeError, match=expected):
        model.predict("dev.json")
    with pytest.raises(ArgumentTypeError, match=expected):
        model.evaluate("dev.json")
    with pytest.raises(ArgumentTypeError, match=expected):
        write_squad_v2("dev.json", tmp_path / "out.json")
    with pytest.raises(ArgumentTypeError, match=r"^train_examples must be examples .*load_examples\('train.json'\)"):
        train("train.json", None, TrainingArguments(output_dir=str(tmp_path / "m")))
    one = Example("1", "Who?", "Ada wrote it.")
    with pytest.raises(ArgumentTypeError, match=r"^examples must be a list of qatune.data.Example, got one Example: pass \[it\]"):
        model.predict(one)
    with pytest.raises(ArgumentTypeError, match=r"^examples\[1\] must be a qatune.data.Example .*got dict"):
        model.predict([one, {"id": "2", "question": "Who?", "context": "Ada wrote it."}])
    with pytest.raises(ArgumentTypeError, match=r"^args must be a qatune.training.TrainingArguments"):
        train([one], None, {"output_dir": str(tmp_path / "m")})
    assert not (tmp_path / "m").exists()


def test_a_repeated_id_is_refused_before_any_work(model, tmp_path):
    from qatune.data import Example, GoldAnswer, write_squad_v2
    from qatune.errors import DataError
    from qatune.training import TrainingArguments, train

    context = "Ada wrote it in 1843."
    train_examples = [Example(f"t{i}", "Who?", context, (GoldAnswer("Ada", 0),)) for i in range(3)]
    dev = [Example("same", "Who?", context, (GoldAnswer("Ada", 0),)), Example("same", "When?", context, (GoldAnswer("1843", 16),))]
    message = r"^question id 'same' appears twice, at dev_examples\[0\] and at dev_examples\[1\]"
    with pytest.raises(DataError, match=message):
        train(train_examples, dev, TrainingArguments(output_dir=str(tmp_path / "m"), model="tiny"))
    assert not (tmp_path / "m").exists()  # refused before the model loaded and the folder was made
    with pytest.raises(DataError, match=r"^question id 'same' appears twice, at examples\[0\] and at examples\[1\]"):
        model.evaluate(dev)
    with pytest.raises(DataError, match=r"appears twice"):
        write_squad_v2(dev, tmp_path / "dev.json")
    with pytest.raises(DataError, match=r"^no examples to write"):
        write_squad_v2([], tmp_path / "dev.json")
    assert not (tmp_path / "dev.json").exists()


def test_a_report_is_written_only_where_a_file_can_go(model, tiny_bert, tmp_path):
    import shutil

    from qatune.report import write_report
    from qatune.settings import QASettings, write_model_card

    folder = shutil.copytree(tiny_bert, tmp_path / "trained")
    write_model_card(folder, QASettings())
    with pytest.raises(SettingsError, match=r"^output: .*missing"):
        write_report(folder, tmp_path / "missing" / "report.html")
    assert not (tmp_path / "missing").exists()  # no folder made for an output file
    data = tmp_path / "dev.json"
    data.write_text('{"data": []}')
    with pytest.raises(SettingsError, match=r"is not an HTML page"):
        write_report(folder, data)
    with pytest.raises(ArgumentTypeError, match=r"^model must be a loaded QAModel"):
        write_report(folder, tmp_path / "r.html", model=str(folder))
    assert write_report(folder, tmp_path / "r.html", model=model).is_file()


def test_reading_data_from_no_path_is_refused():
    from qatune.data import load_examples, read_dataset

    for read in (load_examples, read_dataset):
        with pytest.raises(ArgumentTypeError, match=r"^path must be a path"):
            read(None)
