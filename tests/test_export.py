"""ONNX export: an exported folder answers like the torch model it came from.

Measured on the tiny 2-layer models and the 27 questions (66 windows of 179 to 384 tokens)
of the sample dev set, with onnxruntime 1.32 on an AVX-512 CPU:
- float32: window logits differ by at most 1.5e-7 (logits lie within about +-0.4); the test
  allows 1e-5. Every answer is the same, text and offsets.
- int8: window logits differ by at most 0.008 and correlate at 0.99983 (BERT) and 0.99985
  (DistilBERT); 25/27 answers are the same for each (a random tiny model's logits are
  nearly flat, so a small change can pick another span). The test asks for a correlation
  of at least 0.999, a difference below 0.05 and at least 80% of the answers the same.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

import qatune.export as export  # noqa: E402
from qatune import sample  # noqa: E402
from qatune.data import load_examples  # noqa: E402
from qatune.errors import ModelError, SettingsError  # noqa: E402
from qatune.engines.onnx_engine import load_onnx  # noqa: E402
from qatune.export import ExportCheck, compare_with_float32, export_onnx  # noqa: E402
from qatune.features import make_windows  # noqa: E402
from qatune.inference import QAModel, decode_examples, window_logits  # noqa: E402
from qatune.settings import QASettings, read_model_card, write_model_card  # noqa: E402
from qatune.training import TrainingArguments, train  # noqa: E402

from conftest import TINY_QA  # noqa: E402

FLOAT32_TOLERANCE = 1e-5
INT8_MIN_CORRELATION = 0.999
INT8_MAX_DIFFERENCE = 0.05
INT8_MIN_SAME_ANSWERS = 0.8


@pytest.fixture(scope="module")
def examples():
    return load_examples(sample.DEV)


@pytest.fixture(scope="module")
def sources(tiny_bert, tiny_distilbert) -> dict[str, Path]:
    return {"bert": tiny_bert, "distilbert": tiny_distilbert}


@pytest.fixture(scope="module")
def exported(sources, tmp_path_factory):
    """Export folders, each made once per (model, quantize) for the whole module."""
    made: dict[tuple[str, str | None], Path] = {}

    def get(kind: str, quantize: str | None = None) -> Path:
        if (kind, quantize) not in made:
            folder = tmp_path_factory.mktemp(f"onnx-{kind}-{quantize or 'float32'}")
            export_onnx(sources[kind], folder, quantize=quantize)
            made[kind, quantize] = folder
        return made[kind, quantize]

    return get


@pytest.fixture(scope="module")
def reference(sources, examples):
    """Window logits and answers of the torch models (float32), each computed once."""
    made: dict[str, tuple[np.ndarray, list]] = {}

    def get(kind: str) -> tuple[np.ndarray, list]:
        if kind not in made:
            made[kind] = logits_and_answers(torch_model(sources[kind]), examples)
        return made[kind]

    return get


def logits_and_answers(model: QAModel, examples) -> tuple[np.ndarray, list[list[tuple[str, int, int]]]]:
    """What `model.predict` computes: every window's logits (flat) and each question's answers.

    Batches of 7 windows mix batch sizes and padded lengths.
    """
    windows = make_windows(examples, model.tokenizer, model.settings)
    starts, ends = window_logits(model.engine, windows, pad_token_id=model.tokenizer.pad_token_id or 0, batch_size=7)
    decoded = decode_examples(examples, windows, starts, ends, model.settings)
    return np.concatenate(starts + ends), [[(a.text, a.start, a.end) for a in d.answers] for d in decoded]


def torch_model(source: Path) -> QAModel:
    return QAModel.from_pretrained(source, engine="torch", device="cpu", bf16=False)


@pytest.fixture(scope="module")
def trained(tiny_bert, tmp_path_factory) -> Path:
    """The tiny BERT fitted to the 12 tiny questions: answers worth comparing (an untrained one's are noise)."""
    output = tmp_path_factory.mktemp("trained") / "model"
    arguments = TrainingArguments(
        output_dir=str(output), model=str(tiny_bert), epochs=12, batch_size=4, learning_rate=3e-3,
        warmup_ratio=0.0, bf16=False, save_every=0, seed=7,
        settings=QASettings(max_seq_length=48, doc_stride=8, max_question_length=12),
    )
    train(load_examples(TINY_QA), None, arguments, progress=False)
    return output


@pytest.mark.parametrize("kind", ["bert", "distilbert"])
def test_float32_export_answers_like_the_torch_model(kind, reference, exported, examples):
    expected_logits, expected_answers = reference(kind)
    onnx = QAModel.from_pretrained(exported(kind))

    logits, answers = logits_and_answers(onnx, examples)
    assert onnx.engine.name == "onnx" and onnx.engine.precision == "float32"
    assert np.abs(logits - expected_logits).max() < FLOAT32_TOLERANCE
    assert answers == expected_answers


@pytest.mark.parametrize("kind", ["bert", "distilbert"])
def test_int8_export_stays_close_to_the_torch_model(kind, reference, exported, examples):
    expected_logits, expected_answers = reference(kind)
    onnx = QAModel.from_pretrained(exported(kind, "int8"))

    logits, answers = logits_and_answers(onnx, examples)
    assert np.corrcoef(expected_logits, logits)[0, 1] >= INT8_MIN_CORRELATION
    assert np.abs(logits - expected_logits).max() < INT8_MAX_DIFFERENCE
    same = sum(a == b for a, b in zip(answers, expected_answers))
    assert same >= INT8_MIN_SAME_ANSWERS * len(examples)


def test_int8_export_stores_int8_weights(exported):
    import onnx

    float32, int8 = exported("bert") / "model.onnx", exported("bert", "int8") / "model.onnx"
    int8_weights = [w for w in onnx.load(str(int8)).graph.initializer if w.data_type == onnx.TensorProto.INT8]

    assert len(int8_weights) >= 12  # 2 layers x 6 weight matrices (query, key, value, output, 2 feed-forward)
    assert int8.stat().st_size < float32.stat().st_size
    entry = read_model_card(int8.parent)["engine"]
    assert entry.pop("opset") >= export.MIN_OPSET
    assert entry == {"name": "onnx", "precision": "int8", "quantization": {"method": "dynamic"}}


@pytest.mark.parametrize(("kind", "inputs"), [
    ("bert", ["input_ids", "attention_mask", "token_type_ids"]),
    ("distilbert", ["input_ids", "attention_mask"]),
])
def test_graph_takes_what_the_tokenizer_makes_with_any_batch_and_length(kind, inputs, exported):
    model = load_onnx(exported(kind))

    assert list(model.input_names) == inputs
    assert [node.shape for node in model.session.get_inputs()] == [["batch", "sequence"]] * len(inputs)
    assert [node.name for node in model.session.get_outputs()] == ["start_logits", "end_logits"]


def test_large_weights_go_beside_the_graph(tiny_distilbert, tmp_path, monkeypatch, reference, examples):
    monkeypatch.setattr(export, "EXTERNAL_DATA_BYTES", 0)  # as if the model had over 1.8 GB of weights

    path = export_onnx(tiny_distilbert, tmp_path / "onnx")

    assert (path.parent / "model.onnx.data").is_file()
    logits, _ = logits_and_answers(QAModel.from_pretrained(path.parent), examples)
    assert np.abs(logits - reference("distilbert")[0]).max() < FLOAT32_TOLERANCE


@pytest.mark.parametrize(("arguments", "error", "message"), [
    (
        {"model_dir": "{tmp}/missing"}, ModelError,
        "{tmp}/missing: expected a model folder (config.json, model.safetensors, tokenizer files), "
        "found nothing; pass the folder that `qatune train` wrote",
    ),
    (
        {"model_dir": "{model}/config.json"}, ModelError,
        "{model}/config.json: expected a model folder (config.json, model.safetensors, tokenizer files), "
        "found a file; pass the folder that `qatune train` wrote",
    ),
    (
        {"output_dir": "{model}/config.json"}, SettingsError,
        "{model}/config.json: expected a folder to write the exported model into, found a file; "
        "choose another -o/--output",
    ),
    (
        {"output_dir": "{model}"}, SettingsError,
        "{model}: the output folder is the model folder itself; an exported graph there would replace the "
        "torch model when loading it: choose another -o/--output",
    ),
    (
        {"quantize": "int4"}, SettingsError,
        "quantize must be one of int8 (or None for float32 weights), got 'int4'",
    ),
    (
        {"opset": 17}, SettingsError,
        "--opset: expected a whole number of at least 18 (older opsets cannot express the exported graph), "
        "found 17; leave it out to use the exporter's default",
    ),
])
def test_bad_export_arguments_say_what_to_fix(arguments, error, message, tiny_bert, tmp_path):
    values = {"model_dir": "{model}", "output_dir": "{tmp}/onnx", **arguments}
    place = {"model": str(tiny_bert), "tmp": str(tmp_path)}
    model_dir, output_dir = (values.pop(key).format(**place) for key in ("model_dir", "output_dir"))

    with pytest.raises(error) as raised:
        export_onnx(model_dir, output_dir, **values)

    assert str(raised.value) == message.format(**place)
    assert not (tmp_path / "onnx").exists()


def test_an_opset_is_refused_for_an_openvino_export(tiny_bert, tmp_path):
    with pytest.raises(SettingsError) as raised:
        export.export_model(tiny_bert, tmp_path / "ov", format="openvino", opset=18)

    assert str(raised.value) == (
        "--opset: an opset is the version of an ONNX graph (model.onnx), for --format onnx; an OpenVINO export "
        "has none: leave --opset out with --format openvino"
    )
    assert not (tmp_path / "ov").exists()


def test_an_export_is_not_exported_again(exported, tmp_path):
    folder = exported("distilbert")
    with pytest.raises(ModelError, match=r"this folder is already an export \(model.onnx, no safetensors"):
        export_onnx(folder, tmp_path / "again")


@pytest.mark.parametrize(("same_answers", "f1", "warning"), [
    (97, 79.5, None),  # at both limits: 97% the same, 0.5 F1 points lost
    (
        96, 80.0,
        "on dev.json the export answers 4 of 100 questions differently from float32 (96.0% agree, the limit "
        "is 97%); keep float32 (export without --quantize), or keep int8 only where its speed is worth this loss",
    ),
    (
        100, 79.4,
        "on dev.json the export loses 0.6 F1 points (79.4 against 80.0 for float32, the limit is 0.5); keep "
        "float32 (export without --quantize), or keep int8 only where its speed is worth this loss",
    ),
    (
        90, 70.0,
        "on dev.json the export answers 10 of 100 questions differently from float32 (90.0% agree, the limit "
        "is 97%) and loses 10.0 F1 points (70.0 against 80.0 for float32, the limit is 0.5); keep float32 "
        "(export without --quantize), or keep int8 only where its speed is worth this loss",
    ),
], ids=["at-the-limits", "answers-changed", "f1-lost", "both"])
def test_an_export_that_loses_more_than_the_limits_is_warned_about(same_answers, f1, warning):
    check = ExportCheck(
        data="dev.json", questions=100, same_answers=same_answers, agreement=float(same_answers),
        exact=f1, exact_float32=80.0, f1=f1, f1_float32=80.0,
    )
    assert check.warning() == warning


def test_a_float32_export_checked_on_dev_data_answers_like_float32(sources, exported, examples, tmp_path):
    folder = tmp_path / "onnx"
    shutil.copytree(exported("bert"), folder)

    check = compare_with_float32(sources["bert"], folder, examples, data="dev.json")

    assert (check.data, check.questions, check.same_answers, check.agreement) == ("dev.json", 27, 27, 100.0)
    assert (check.exact, check.f1) == (check.exact_float32, check.f1_float32)
    assert check.warning() is None
    engine_entry = read_model_card(folder)["engine"]
    assert engine_entry["check"] == check.to_dict() and engine_entry["precision"] == "float32"


def test_checking_a_folder_that_is_no_export(tiny_bert, examples, tmp_path):
    with pytest.raises(ModelError) as raised:
        compare_with_float32(tiny_bert, tmp_path, examples)
    assert str(raised.value) == (
        f"{tmp_path}: expected an exported folder (model.onnx or model.xml), found none; export the model "
        f"first with `qatune export MODEL --format onnx|openvino -o DIR` and pass DIR"
    )


def test_loading_a_missing_or_broken_onnx_file(tmp_path):
    with pytest.raises(ModelError) as raised:
        load_onnx(tmp_path)
    assert str(raised.value) == (
        f"{tmp_path}/model.onnx: expected an ONNX model file, found none; "
        f"export one with `qatune export MODEL --format onnx -o DIR` and pass DIR"
    )

    (tmp_path / "model.onnx").write_bytes(b"not a graph")
    with pytest.raises(ModelError, match=r"model.onnx: ONNX Runtime cannot load this file \("):
        load_onnx(tmp_path)


def test_an_export_folder_that_lost_its_graph_says_so_not_that_torch_weights_are_missing(exported, tmp_path):
    folder = shutil.copytree(exported("bert"), tmp_path / "export")
    (folder / "model.onnx").unlink()
    with pytest.raises(ModelError) as raised:
        QAModel.from_pretrained(folder)
    assert str(raised.value) == (
        f"{folder}: its qatune.json records an onnx export, but the folder has no model.onnx; copy the whole export "
        "folder again, or export the model again (`qatune export`)"
    )


def test_missing_onnx_packages_say_how_to_install_them(exported, tiny_bert, tmp_path, monkeypatch):
    folder = exported("distilbert")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now fails
    monkeypatch.setitem(sys.modules, "onnxscript", None)

    with pytest.raises(ModelError) as raised:
        load_onnx(folder)
    assert str(raised.value) == (
        "answering with an ONNX model needs onnxruntime, which is not installed; "
        'install the ONNX extras with `pip install "qatune[onnx]"`'
    )
    with pytest.raises(ModelError, match=r"exporting to ONNX needs onnxscript and onnxruntime, which are not "):
        export_onnx(tiny_bert, tmp_path / "onnx", quantize="int8")


def test_a_mismatched_tokenizer_is_reported(exported):
    engine = load_onnx(exported("distilbert"))
    ids = np.array([[2, 3]], dtype=np.int64)
    with pytest.raises(ModelError, match=r"the model takes \['attention_mask', 'input_ids'\], but the tokenizer gave"):
        engine.logits({"input_ids": ids, "token_type_ids": ids})


def qatune(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "qatune", *map(str, arguments)], capture_output=True, text=True)


def test_cli_exports_a_model_that_answers_with_its_settings(tiny_bert, tmp_path):
    source, output = tmp_path / "model", tmp_path / "onnx"
    shutil.copytree(tiny_bert, source)
    settings = QASettings(max_seq_length=128, doc_stride=32, max_answer_length=12, null_threshold=0.9)
    write_model_card(source, settings, metrics={"f1": 51.5})
    question, context = "What did the probe carry?", "The probe carried a golden record and a camera."

    exported_run = qatune("export", source, "--format", "onnx", "-o", output)
    asked = qatune("ask", output, "-q", question, "-c", context)

    assert exported_run.returncode == 0, exported_run.stderr
    assert re.fullmatch(
        rf"wrote {re.escape(str(output / 'model.onnx'))} \(onnx, float32 weights, opset \d+, "
        rf"[\d.]+ (kB|MB)\) with its tokenizer, config.json and qatune.json\n",
        exported_run.stdout,
    )
    card = read_model_card(output)
    assert card["settings"] == settings.to_dict() and card["metrics"] == {"f1": 51.5}
    assert card["engine"]["precision"] == "float32" and card["engine"]["opset"] >= export.MIN_OPSET
    assert (output / "config.json").read_text() == (source / "config.json").read_text()
    assert "note:" not in exported_run.stderr  # float32: nothing to check
    assert asked.returncode == 0, asked.stderr
    expected = torch_model(source).ask(question, context)
    assert expected  # the tiny model does answer this question: the comparison means something
    assert [(a["text"], a["start"], a["end"]) for a in json.loads(asked.stdout)] == [
        (a.text, a.start, a.end) for a in expected
    ]


def test_cli_int8_export_checked_on_dev_data_says_what_it_costs(trained, tmp_path):
    output = tmp_path / "onnx"

    completed = qatune("export", trained, "--format", "onnx", "--quantize", "int8", "-o", output, "--dev", TINY_QA)

    assert completed.returncode == 0, completed.stderr
    wrote, checked = completed.stdout.splitlines()
    assert wrote.startswith(f"wrote {output / 'model.onnx'} (onnx, int8 weights, opset ")
    check = ExportCheck(**read_model_card(output)["engine"]["check"])
    assert checked == (
        f"checked on {TINY_QA}: {check.same_answers} of 12 answers the same as float32 ({check.agreement:.1f}%); "
        f"EM {check.exact:.1f} (float32 {check.exact_float32:.1f}), F1 {check.f1:.1f} (float32 {check.f1_float32:.1f})"
    )
    dev = load_examples(TINY_QA)
    float32 = QAModel.from_pretrained(trained, engine="torch", bf16=False).evaluate(dev)
    int8 = QAModel.from_pretrained(output, bf16=False).evaluate(dev)
    same = sum(int8.predictions[qid] == answer for qid, answer in float32.predictions.items())
    assert (check.data, check.questions, check.same_answers, check.agreement) == (
        str(TINY_QA), 12, same, 100 * same / 12
    )
    assert (check.exact, check.f1) == (int8.metrics["exact"], int8.metrics["f1"])
    assert (check.exact_float32, check.f1_float32) == (float32.metrics["exact"], float32.metrics["f1"])
    assert check.f1_float32 > 50  # the trained model answers: the comparison means something
    warnings = [line for line in completed.stderr.splitlines() if line.startswith("warning: ")]
    assert warnings == ([f"warning: {check.warning()}"] if check.warning() else [])
    assert "note:" not in completed.stderr


def test_cli_int8_export_without_dev_data_says_its_answers_were_not_checked(tiny_distilbert, tmp_path):
    completed = qatune("export", tiny_distilbert, "--format", "onnx", "--quantize", "int8", "-o", tmp_path / "onnx")

    assert completed.returncode == 0, completed.stderr
    assert completed.stderr.endswith(
        "note: the int8 answers were not compared with float32; add --dev DATA to measure how many change\n"
    )
    assert "check" not in read_model_card(tmp_path / "onnx")["engine"]


@pytest.mark.parametrize(("arguments", "message"), [
    (["MODEL", "-o", "{tmp}/onnx"], "error: --format: expected onnx or openvino (which engine the export is for), found none"),
    (["MODEL", "--format", "onnx"], "qatune export: error: the following arguments are required: -o/--output"),
    (["MODEL", "--format", "tflite", "-o", "{tmp}/onnx"], "qatune export: error: argument --format: invalid choice: 'tflite'"),
    (
        ["MODEL", "--format", "onnx", "-o", "{tmp}/onnx", "--calibration", "{tmp}/c.json"],
        "error: --calibration: calibration data is for int8; add --quantize int8, or leave --calibration out",
    ),
    (
        ["MODEL", "--format", "openvino", "-o", "{tmp}/onnx", "--quantize", "int8"],
        "error: --quantize int8 --format openvino: expected calibration questions (--calibration DATA: a few "
        "hundred of your own, e.g. the training file), found none",
    ),
    (
        ["MODEL", "--format", "openvino", "-o", "{tmp}/onnx", "--opset", "18"],
        "error: --opset: an opset is the version of an ONNX graph (model.onnx), for --format onnx",
    ),
    (
        ["MODEL", "--format", "onnx", "-o", "{tmp}/onnx", "--opset", "17"],
        "error: --opset: expected a whole number of at least 18",
    ),
    (
        ["MODEL", "--format", "onnx", "-o", "{tmp}/onnx", "--quantize", "int4"],
        "qatune export: error: argument --quantize: invalid choice: 'int4'",
    ),
    (
        ["{tmp}/missing", "--format", "onnx", "-o", "{tmp}/onnx"],
        "error: {tmp}/missing: expected a model folder (config.json, model.safetensors, tokenizer files), "
        "found nothing; pass the folder that `qatune train` wrote",
    ),
    (
        ["MODEL", "--format", "onnx", "-o", "{tmp}/onnx", "--dev", "{tmp}/missing.json"],
        "error: {tmp}/missing.json: expected a data file, found no such file; check the path",
    ),
])
def test_cli_bad_arguments_exit_2_with_a_message(arguments, message, tiny_bert, tmp_path):
    place = {"tmp": str(tmp_path)}
    completed = qatune("export", *(str(tiny_bert) if a == "MODEL" else a.format(**place) for a in arguments))

    assert completed.returncode == 2
    assert message.format(**place) in completed.stderr
    assert "exporting" not in completed.stderr  # refused before any work begins
    assert not (tmp_path / "onnx").exists()


def test_an_openvino_int8_export_on_a_cpu_without_int8_units_says_it_will_be_slower(
        tiny_distilbert, tmp_path, monkeypatch, capsys):
    import qatune.cli.export as export_command
    from qatune.cli import main

    note = export_command._no_int8_units_note
    assert "has no int8 units (none of avx512_vnni, avx_vnni, amx_int8)" in note("openvino", "int8", {"avx2", "fma"}, "X")
    for flags in ({"avx2", "avx512_vnni"}, {"avx2", "avx_vnni"}, {"amx_int8", "avx2"}, set()):  # set(): unknown
        assert note("openvino", "int8", flags, "X") is None
    assert note("onnx", "int8", {"avx2"}, "X") is None  # ONNX Runtime's dynamic int8 was faster there
    assert note("openvino", None, {"avx2"}, "X") is None

    monkeypatch.setattr(export_command, "cpu_flags", lambda: {"avx2", "fma"})
    monkeypatch.setattr(export_command, "cpu_name", lambda: "Some CPU")
    assert main(["export", str(tiny_distilbert), "--format", "openvino", "--quantize", "int8",
                 "--calibration", str(TINY_QA), "-o", str(tmp_path / "int8")]) == 0
    lines = capsys.readouterr().err.splitlines()
    first_note = next(i for i, line in enumerate(lines) if line.startswith("note: this CPU (Some CPU) has no int8 units"))
    assert first_note < next(i for i, line in enumerate(lines) if line.startswith("exporting "))
    assert read_model_card(tmp_path / "int8")["engine"]["precision"] == "int8"  # a note, not a refusal


def test_the_library_refuses_a_folder_that_holds_a_model_unless_told_to_replace_it(tiny_bert, tmp_path):
    import shutil

    from qatune.inference import QAModel

    trained = shutil.copytree(tiny_bert, tmp_path / "trained")
    (trained / "metrics.jsonl").write_text("{}\n")
    before = sorted(path.name for path in trained.iterdir())
    with pytest.raises(SettingsError, match=r"output_dir: .*trained is not empty .*pass overwrite=True"):
        export.export_model(tiny_bert, trained, format="openvino")
    assert sorted(path.name for path in trained.iterdir()) == before  # untouched
    graph = export.export_model(tiny_bert, trained, format="openvino", overwrite=True)
    assert graph == trained / "model.xml"
    assert not (trained / "metrics.jsonl").exists() and not (trained / "model.safetensors").exists()  # replaced whole
    assert QAModel.from_pretrained(trained).engine.to_dict()["name"] == "openvino"
