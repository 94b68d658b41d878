"""The answering engines: one interface, the same logits as PyTorch float32, `auto`'s choice,
the conversion cache, exported folders, and what a user is told when an engine cannot answer."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import qatune.engines as engines
from qatune import inference
from qatune.engines import openvino_engine
from qatune.batching import pad_windows
from qatune.data import load_examples
from qatune.engines.openvino_engine import OpenVinoEngine
from qatune.errors import ModelError, SettingsError
from qatune.export import export_model
from qatune.features import make_windows
from qatune.inference import QAModel

from conftest import TINY_QA

FLOAT32_TOLERANCE = 1e-4  # OpenVINO's float32 kernels sum in another order than PyTorch's


@pytest.fixture(scope="module")
def examples():
    return load_examples(TINY_QA)


def batches_of_every_shape(model: QAModel, examples):
    """Padded batches of 1, 3 and all windows: other batch sizes, lengths and padding."""
    windows = make_windows(examples, model.tokenizer, model.settings)
    pad = model.tokenizer.pad_token_id or 0
    return [pad_windows(windows, indices, pad) for indices in ([0], [0, 5, 9], list(range(len(windows))))]


@pytest.mark.parametrize("engine", ["openvino", "onnx"])
def test_every_engine_gives_the_logits_of_pytorch_float32(engine, tiny_model, examples):
    reference = QAModel.from_pretrained(tiny_model, engine="torch", bf16=False)
    other = QAModel.from_pretrained(tiny_model, engine=engine, bf16=False)

    assert (other.engine.name, other.engine.precision) == (engine, "float32")
    for batch in batches_of_every_shape(reference, examples):
        mask = batch["attention_mask"].astype(bool)
        for expected, found in zip(reference.engine.logits(batch), other.engine.logits(batch)):
            assert found.dtype == np.float32 and found.shape == expected.shape
            assert np.abs(found[mask] - expected[mask]).max() < FLOAT32_TOLERANCE
    # the same best answer wherever float noise (1e-4 here) cannot swap it: not a near-tie
    expected, found = reference.predict(examples, top_k=2), other.predict(examples, top_k=2)
    clear = [i for i, d in enumerate(expected) if np.log(d.answers[0].score / d.answers[1].score) > 1e-3]
    assert len(clear) > len(examples) // 2
    assert [found[i].answers[0].text for i in clear] == [expected[i].answers[0].text for i in clear]


def test_auto_answers_with_openvino_on_a_cpu_and_torch_without_it(tiny_bert, monkeypatch):
    monkeypatch.setattr(engines, "_cuda_possible", lambda: False)  # a CPU machine, whatever this one is
    assert QAModel.from_pretrained(tiny_bert).engine.name == "openvino"
    assert QAModel.from_pretrained(tiny_bert, bf16=False).engine.describe() == "openvino float32"

    monkeypatch.setattr(engines, "_installed", lambda module: False)
    assert QAModel.from_pretrained(tiny_bert).engine.name == "torch"


def test_auto_falls_back_to_torch_when_openvino_cannot_convert(tiny_bert, tmp_path, monkeypatch):
    def refuse(model, tokenizer):
        raise RuntimeError("unsupported operation")

    monkeypatch.setenv("QATUNE_CACHE", str(tmp_path))  # nothing converted yet
    monkeypatch.setattr("qatune.engines.openvino_engine.convert_torch_model", refuse)

    assert QAModel.from_pretrained(tiny_bert).engine.name == "torch"
    with pytest.raises(ModelError, match=r"OpenVINO cannot convert this model \(BertForQuestionAnswering\): unsupported"):
        QAModel.from_pretrained(tiny_bert, engine="openvino")


def test_a_converted_model_is_cached_by_the_content_of_its_weights(tiny_bert, tmp_path, monkeypatch):
    import shutil

    monkeypatch.setenv("QATUNE_CACHE", str(tmp_path / "cache"))
    copy = tmp_path / "copy"
    shutil.copytree(tiny_bert, copy)
    conversions = []
    real = engines.convert_for_openvino
    monkeypatch.setattr(engines, "convert_for_openvino", lambda *a: conversions.append(a[2]) or real(*a))

    QAModel.from_pretrained(tiny_bert, engine="openvino")
    QAModel.from_pretrained(copy, engine="openvino")  # a copy has the same content: no conversion
    assert conversions == [str(tiny_bert)]
    assert len(list((tmp_path / "cache" / "openvino").iterdir())) == 1

    (copy / "config.json").write_text((copy / "config.json").read_text().replace("}", ', "note": 1}', 1))
    QAModel.from_pretrained(copy, engine="openvino")  # other content: its own entry
    assert conversions == [str(tiny_bert), str(copy)]


def test_an_openvino_export_answers_like_float32_and_records_its_engine(tiny_distilbert, tmp_path, examples):
    graph = export_model(tiny_distilbert, tmp_path / "ov", format="openvino")
    reference = QAModel.from_pretrained(tiny_distilbert, engine="torch", bf16=False).predict(examples, top_k=2)
    clear = [i for i, d in enumerate(reference) if np.log(d.answers[0].score / d.answers[1].score) > 1e-3]

    exported = QAModel.from_pretrained(graph.parent, bf16=False)

    assert graph.name == "model.xml" and (graph.parent / "model.bin").is_file()
    assert json.loads((graph.parent / "qatune.json").read_text())["engine"] == {"name": "openvino", "precision": "float32"}
    assert exported.engine.describe() == "openvino float32"
    answers = exported.predict(examples)
    assert [answers[i].answers[0].text for i in clear] == [reference[i].answers[0].text for i in clear]
    with pytest.raises(ModelError, match=r"this folder is an openvino export, which only the openvino engine answers"):
        QAModel.from_pretrained(graph.parent, engine="torch")


def test_an_int8_openvino_export_rechecks_its_close_calls_in_float32(tiny_bert, tmp_path, examples):
    pytest.importorskip("nncf")
    graph = export_model(tiny_bert, tmp_path / "int8", format="openvino", quantize="int8", calibration=examples)
    card = json.loads((graph.parent / "qatune.json").read_text())["engine"]

    model = QAModel.from_pretrained(graph.parent)

    assert card["precision"] == "int8" and card["quantization"]["method"] == "static"
    assert (graph.parent / "float32" / "model.xml").is_file()
    assert model.engine.precision == "int8" and model.engine.recheck_margin == card["quantization"]["recheck_margin"]
    assert model.engine.float32() is not None and model.engine.float32().precision == "float32"
    assert len(model.predict(examples)) == len(examples)


@pytest.mark.parametrize("bf16_native", [True, False])
def test_int8_close_calls_go_to_bf16_where_it_is_native_and_its_close_calls_to_float32(
    bf16_native, tiny_bert, tmp_path, examples, monkeypatch
):
    pytest.importorskip("nncf")
    folder = export_model(tiny_bert, tmp_path / "int8", format="openvino", quantize="int8", calibration=examples).parent
    exact = QAModel.from_pretrained(tiny_bert, engine="openvino", bf16=False).predict(examples, top_k=2)
    monkeypatch.setattr(openvino_engine, "bf16_is_native", lambda: bf16_native)
    model = QAModel.from_pretrained(folder)
    # the tiny model's int8 may change none of its calibration answers (margin 0): widen the margin
    # so that most of its questions are close calls
    model.engine.recheck_margin = 0.3
    calls, window_logits = [], inference.window_logits

    def spy(answering, *args, **kwargs):
        calls.append((answering.precision, kwargs.get("only")))
        return window_logits(answering, *args, **kwargs)

    monkeypatch.setattr(inference, "window_logits", spy)
    answers = model.predict(examples, top_k=2)

    chain = ["int8", "bf16", "float32"] if bf16_native else ["int8", "float32"]
    assert [engine.precision for engine in [model.engine, *inference._rechecks(model.engine)]] == chain
    assert model.engine.describe() == (
        "openvino int8, close calls re-checked in bf16 (and theirs in float32)" if bf16_native
        else "openvino int8, close calls re-checked in float32"
    )
    # each engine of the chain answered only (some of) the windows the one before it re-checked
    assert [precision for precision, _ in calls] == chain, "the tiny random model should have close calls at every step"
    windows = make_windows(examples, model.tokenizer, model.settings)
    asked = [set(range(len(windows))) if only is None else set(only.tolist()) for _, only in calls]
    assert all(later <= earlier for earlier, later in zip(asked, asked[1:]))
    if bf16_native:  # float32 answers only bf16's own close calls, far fewer than int8's
        assert len(asked[2]) < len(asked[1])
    # whatever was re-checked ends as float32 answers it (bf16 can only flip answers within its own margin)
    rechecked = sorted({int(windows.example_index[w]) for w in asked[1]})
    assert [answers[i].answers[0].text for i in rechecked] == [exact[i].answers[0].text for i in rechecked]


def test_engine_names_and_devices_are_checked(tiny_bert, tmp_path, monkeypatch):
    with pytest.raises(SettingsError, match=r"engine must be one of auto, torch, onnx, openvino, got 'tensorrt'"):
        QAModel.from_pretrained(tiny_bert, engine="tensorrt")
    monkeypatch.setattr(engines, "_device_type", lambda device: "cuda")  # as on a machine with a GPU
    with pytest.raises(SettingsError, match=r"^--device cuda: the openvino engine runs on the CPU; answer on a GPU"):
        QAModel.from_pretrained(tiny_bert, engine="openvino", device="cuda")
    exported = export_model(tiny_bert, tmp_path / "ov", format="openvino").parent
    assert QAModel.from_pretrained(exported).engine.name == "openvino"  # no device asked for: the CPU


def test_an_engine_leaves_out_inputs_its_model_does_not_take(tiny_distilbert):
    engine = QAModel.from_pretrained(tiny_distilbert, engine="openvino", bf16=False).engine
    ids = np.array([[2, 40, 3]], dtype=np.int64)
    with_types, plain = (
        engine.logits({"input_ids": ids, "attention_mask": np.ones_like(ids), **extra})
        for extra in ({"token_type_ids": np.zeros_like(ids)}, {})
    )
    assert all((a == b).all() for a, b in zip(with_types, plain))


def test_an_engine_refuses_a_batch_without_an_input_it_needs(tiny_distilbert):
    engine = QAModel.from_pretrained(tiny_distilbert, engine="openvino", bf16=False).engine
    ids = np.array([[2, 3]], dtype=np.int64)
    with pytest.raises(ModelError, match=r"the model takes \['attention_mask', 'input_ids'\], but the tokenizer gave"):
        engine.logits({"input_ids": ids})
    assert isinstance(engine, OpenVinoEngine)


def test_cli_says_which_engine_answers(tiny_bert):
    completed = subprocess.run(
        [sys.executable, "-m", "qatune", "ask", str(tiny_bert), "-q", "Who?", "-c", "Ada wrote it.", "--no-bf16"],
        capture_output=True, text=True,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stderr.endswith("answered with openvino float32 (--engine auto)\n")
    forced = subprocess.run(
        [sys.executable, "-m", "qatune", "ask", str(tiny_bert), "-q", "Who?", "-c", "Ada wrote it.", "--engine", "torch",
         "--no-bf16"],
        capture_output=True, text=True,
    )
    assert forced.returncode == 0, forced.stderr
    assert forced.stderr.endswith("answered with torch float32\n")
    # float32 on both, other kernels: the same answer, the score within float noise
    ours, theirs = json.loads(forced.stdout), json.loads(completed.stdout)
    assert [(a["text"], a["start"], a["end"]) for a in ours] == [(a["text"], a["start"], a["end"]) for a in theirs]
    assert ours[0]["score"] == pytest.approx(theirs[0]["score"], rel=1e-3)


def test_a_converted_model_answers_without_importing_torch(tiny_bert):
    """torch is ~200 MB of memory that OpenVINO does not need, once the conversion is cached."""
    QAModel.from_pretrained(tiny_bert)  # converts and caches (needs torch)
    script = (
        "import sys; from qatune import QAModel; "
        f"model = QAModel.from_pretrained({str(tiny_bert)!r}); model.ask('Who?', 'Ada wrote it.'); "
        "print(model.engine.name, 'torch' in sys.modules)"
    )
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.split() == ["openvino", "False"]


@pytest.mark.parametrize("bf16", [False, True], ids=["float32", "bf16"])
@pytest.mark.parametrize("size", ["tiny", "minilm-sized"])
def test_openvino_logits_of_a_window_do_not_depend_on_its_batch(size, bf16, request, examples):
    """What lets the server batch different callers together without changing an answer: a
    window's logits are the same to the bit alone and among others, with more padding."""
    folder = request.getfixturevalue("tiny_bert" if size == "tiny" else "minilm_sized_bert")
    model = QAModel.from_pretrained(folder, engine="openvino", bf16=bf16)
    assert model.engine.batch_invariant
    windows = make_windows(examples, model.tokenizer, model.settings)
    pad, lengths = model.tokenizer.pad_token_id or 0, windows.lengths
    rng = np.random.default_rng(0)

    def logits_of(indices):
        start, end = model.engine.logits(pad_windows(windows, indices, pad, 16))
        return {w: (start[row, : lengths[w]], end[row, : lengths[w]]) for row, w in enumerate(indices)}

    alone = {w: logits_of([w])[w] for w in range(len(windows))}
    for size_of_batch in (2, 5, 8, 17, 32):
        indices = rng.choice(len(windows), size=min(size_of_batch, len(windows)), replace=False).tolist()
        for window, (start, end) in logits_of(indices).items():
            assert np.array_equal(start, alone[window][0]) and np.array_equal(end, alone[window][1]), (size_of_batch, window)


def test_engines_whose_logits_depend_on_the_batch_say_so(tiny_bert):
    assert not QAModel.from_pretrained(tiny_bert, engine="torch").engine.batch_invariant
    assert not QAModel.from_pretrained(tiny_bert, engine="onnx").engine.batch_invariant
