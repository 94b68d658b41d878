"""The answering engines: one interface, the same logits as PyTorch float32, `auto`'s choice,
the conversion cache, exported folders, and what a user is told when an engine cannot answer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

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


@pytest.mark.parametrize("engine", ["openvino", "onnx"])
def test_a_converted_model_is_cached_by_the_inputs_its_tokenizer_makes(engine, tiny_bert, tmp_path, monkeypatch):
    import shutil

    monkeypatch.setenv("QATUNE_CACHE", str(tmp_path / "cache"))
    copy = tmp_path / "copy"
    shutil.copytree(tiny_bert, copy)
    assert "token_type_ids" in QAModel.from_pretrained(copy, engine=engine).engine.input_names

    config = json.loads((copy / "tokenizer_config.json").read_text())
    config["model_input_names"] = ["input_ids", "attention_mask"]  # the same weights, a tokenizer without token types
    (copy / "tokenizer_config.json").write_text(json.dumps(config))
    model = QAModel.from_pretrained(copy, engine=engine)

    assert model.engine.input_names == ("input_ids", "attention_mask")  # a graph of its own, not the stale one
    assert len(list((tmp_path / "cache" / engine).iterdir())) == 2


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


@pytest.fixture(scope="module")
def int8_export(tiny_bert, examples, tmp_path_factory):
    """An int8 OpenVINO export of the tiny BERT, made once for the module (tests copy it to change it)."""
    pytest.importorskip("nncf")
    folder = tmp_path_factory.mktemp("int8") / "export"
    return export_model(tiny_bert, folder, format="openvino", quantize="int8", calibration=examples).parent


def test_an_int8_openvino_export_rechecks_its_close_calls_in_float32(int8_export, examples):
    graph = int8_export / "model.xml"
    card = json.loads((graph.parent / "qatune.json").read_text())["engine"]

    model = QAModel.from_pretrained(graph.parent)

    assert card["precision"] == "int8" and card["quantization"]["method"] == "static"
    assert (graph.parent / "float32" / "model.xml").is_file()
    assert model.engine.precision == "int8" and model.engine.recheck_margin == card["quantization"]["recheck_margin"]
    assert model.engine.float32() is not None and model.engine.float32().precision == "float32"
    assert len(model.predict(examples)) == len(examples)


@pytest.mark.parametrize("bf16_native", [True, False])
def test_int8_close_calls_go_to_bf16_where_it_is_native_and_its_close_calls_to_float32(
    bf16_native, tiny_bert, int8_export, examples, monkeypatch
):
    folder = int8_export
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


def test_no_bf16_rechecks_int8_close_calls_directly_in_float32(int8_export, monkeypatch):
    monkeypatch.setattr(openvino_engine, "bf16_is_native", lambda: True)  # where bf16 would be picked

    model = QAModel.from_pretrained(int8_export, bf16=False)

    assert model.engine.describe() == "openvino int8, close calls re-checked in float32"
    assert [engine.precision for engine in inference._rechecks(model.engine)] == ["float32"]


def test_an_int8_export_without_its_float32_graph_refuses_to_answer(int8_export, tmp_path):
    import shutil

    folder = tmp_path / "copy"
    shutil.copytree(int8_export, folder, ignore=shutil.ignore_patterns("float32"))
    margin = json.loads((folder / "qatune.json").read_text())["engine"]["quantization"]["recheck_margin"]
    refusal = (
        f"{folder}/float32/model.xml: expected the float32 graph that re-checks this int8 export's close calls "
        f"(its qatune.json records recheck_margin {margin:.3g}), found none; copy the whole export folder, "
        f"float32/ included, or export the model again with `qatune export MODEL --format openvino --quantize "
        f"int8 --calibration DATA -o DIR`"
    )

    with pytest.raises(ModelError) as raised:
        QAModel.from_pretrained(folder)

    assert str(raised.value) == refusal
    # an export that records no re-check promised none: it answers without one
    card = json.loads((folder / "qatune.json").read_text())
    card["engine"]["quantization"]["recheck_margin"] = 0.0
    (folder / "qatune.json").write_text(json.dumps(card))
    model = QAModel.from_pretrained(folder)
    assert model.engine.describe() == "openvino int8" and model.engine.rechecker() is None


def test_a_damaged_openvino_export_says_to_export_it_again(tiny_bert, tmp_path):
    folder = export_model(tiny_bert, tmp_path / "ov", format="openvino").parent
    with open(folder / "model.bin", "r+b") as weights:
        weights.truncate(1000)  # a copy cut short

    with pytest.raises(ModelError) as raised:
        QAModel.from_pretrained(folder)

    assert str(raised.value) == (
        f"{folder}/model.xml: OpenVINO cannot load this file (Incorrect weights in bin file!); "
        f"export the model again with `qatune export MODEL --format openvino -o DIR`"
    )


def cache_entry(cache, engine: str):
    (entry,) = (cache / engine).iterdir()
    return entry


@pytest.mark.parametrize(("engine", "graph"), [("openvino", "model.bin"), ("onnx", "model.onnx")])
def test_a_damaged_cache_entry_is_converted_again_once(engine, graph, tiny_bert, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("QATUNE_CACHE", str(tmp_path / "cache"))
    expected = QAModel.from_pretrained(tiny_bert, engine=engine, bf16=False).ask("Who?", "Ada wrote it.", top_k=2)
    damaged = cache_entry(tmp_path / "cache", engine) / graph
    size = damaged.stat().st_size
    with open(damaged, "r+b") as file:
        file.truncate(size // 2)  # a disk error or a copy cut short, after the entry was written

    again = QAModel.from_pretrained(tiny_bert, engine=engine, bf16=False)

    assert again.ask("Who?", "Ada wrote it.", top_k=2) == expected
    assert cache_entry(tmp_path / "cache", engine) == damaged.parent and damaged.stat().st_size == size
    (warning,) = warnings_in(caplog)
    assert warning.startswith(f"{damaged.parent}: a damaged cache entry (")
    assert warning.endswith("); converting the model again")
    QAModel.from_pretrained(tiny_bert, engine=engine, bf16=False)  # the rebuilt entry loads: no other warning
    assert len(warnings_in(caplog)) == 1


def warnings_in(caplog) -> list[str]:
    """qatune's warnings (the ONNX exporter logs its own)."""
    return [record.getMessage() for record in caplog.records if record.name == "qatune" and record.levelname == "WARNING"]


def unwritable_cache(how: str, tmp_path, monkeypatch) -> str:
    """Point $QATUNE_CACHE at a cache that cannot take an entry; the folder the warning names."""
    if how == "under a file":
        (tmp_path / "a-file").write_text("")
        monkeypatch.setenv("QATUNE_CACHE", str(tmp_path / "a-file" / "cache"))
        return str(tmp_path / "a-file" / "cache")
    monkeypatch.setenv("QATUNE_CACHE", str(tmp_path / "cache"))
    if how == "read-only":
        if os.geteuid() == 0:
            pytest.skip("root writes into a read-only folder")
        (tmp_path / "cache").mkdir(mode=0o555)
        return str(tmp_path / "cache")

    # a full disk: only the cache's writes fail, as its disk alone is full
    from qatune import export

    real_save, real_export = openvino_engine.save_model, export.export_onnx

    def save_model(model, folder):
        if Path(folder).is_relative_to(tmp_path / "cache"):
            raise RuntimeError("basic_ios::clear: iostream error")  # what OpenVINO raises
        return real_save(model, folder)

    def export_onnx(source, folder, **options):
        if Path(folder).is_relative_to(tmp_path / "cache"):
            raise OSError(28, "No space left on device")
        return real_export(source, folder, **options)

    monkeypatch.setattr(openvino_engine, "save_model", save_model)
    monkeypatch.setattr(export, "export_onnx", export_onnx)
    return str(tmp_path / "cache")


@pytest.mark.parametrize("how", ["under a file", "read-only", "full disk"])
@pytest.mark.parametrize("engine", ["openvino", "onnx"])
def test_a_cache_that_cannot_be_written_answers_anyway_with_one_warning(
    engine, how, tiny_bert, tmp_path, monkeypatch, caplog
):
    expected = QAModel.from_pretrained(tiny_bert, engine="torch", bf16=False).ask("Who?", "Ada wrote it.", top_k=2)
    cache = unwritable_cache(how, tmp_path, monkeypatch)

    model = QAModel.from_pretrained(tiny_bert, engine=engine, bf16=False)

    answers = model.ask("Who?", "Ada wrote it.", top_k=2)
    assert [(a.text, a.start, a.end) for a in answers] == [(a.text, a.start, a.end) for a in expected]
    (warning,) = warnings_in(caplog)
    assert warning.startswith(f"the engine cache {cache}/{engine} cannot be written (")
    assert warning.endswith(
        f"answering with the model {'converted in memory' if engine == 'openvino' else 'exported into a temporary folder'}, "
        "converted again at every load: set $QATUNE_CACHE to a writable folder"
    )


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
