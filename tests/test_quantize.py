"""int8 quantization: calibration batches, NNCF static quantization of an OpenVINO model, and
the margin of the float32 re-check of close calls. A tiny BERT keeps it fast."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from qatune import load_examples
from qatune.decoding import Answer, Decoded
from qatune.errors import ModelError, SettingsError
from qatune.modeling import load_qa_model, load_tokenizer
from qatune.decoding import close_call_margin
from qatune.quantize import calibration_batches, quantize_openvino, recheck_margin
from qatune.settings import QASettings

from conftest import TINY_QA

ov = pytest.importorskip("openvino")
pytest.importorskip("nncf")

SETTINGS = QASettings(max_seq_length=64, doc_stride=16, max_question_length=16)
HEAD = "qa_outputs"


@pytest.fixture(scope="module")
def examples():
    return load_examples(TINY_QA)


@pytest.fixture(scope="module")
def tokenizer(tiny_bert):
    return load_tokenizer(tiny_bert)


@pytest.fixture(scope="module")
def batches(examples, tokenizer):
    return calibration_batches(examples, tokenizer, SETTINGS, limit=40, batch_size=4)


@pytest.fixture(scope="module")
def float_model(tiny_bert, batches):
    """The tiny BERT as an OpenVINO model taking the tokenizer's inputs, returning (start, end) logits."""
    import torch

    model = load_qa_model(tiny_bert).float().eval()

    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids):
            output = self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
            return output.start_logits, output.end_logits

    with torch.no_grad():
        return ov.convert_model(Logits(), example_input={k: torch.from_numpy(v) for k, v in batches[0].items()})


@pytest.fixture(scope="module")
def int8_model(float_model, batches):
    return quantize_openvino(float_model, batches)


def run(model, batch: dict[str, np.ndarray]) -> np.ndarray:
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    result = compiled({name: batch[name] for name in ("input_ids", "attention_mask", "token_type_ids")})
    return np.stack([result[0], result[1]])


def matmuls(model) -> dict[str, object]:
    return {op.get_friendly_name(): op for op in model.get_ops() if op.get_type_name() == "MatMul"}


def weight_source(matmul):
    """The node the MatMul's weight comes from, through int8 dequantization (Multiply, Subtract, Convert)."""
    node = matmul.input_value(1).get_node()
    while node.get_type_name() in ("Multiply", "Subtract", "Convert"):
        node = node.input_value(0).get_node()
    return node


def test_calibration_batches_are_padded_length_sorted_and_deterministic(examples, tokenizer, batches):
    assert [sorted(batch) for batch in batches] == [["attention_mask", "input_ids", "token_type_ids"]] * len(batches)
    assert all(batch["input_ids"].dtype == np.int64 and batch["input_ids"].shape[0] <= 4 for batch in batches)
    lengths = np.concatenate([batch["attention_mask"].sum(axis=1) for batch in batches])
    assert (np.diff(lengths) >= 0).all()  # sorted by length, as answering batches them
    again = calibration_batches(examples, tokenizer, SETTINGS, limit=40, batch_size=4)
    assert all(np.array_equal(a["input_ids"], b["input_ids"]) for a, b in zip(batches, again))
    few = calibration_batches(examples, tokenizer, SETTINGS, limit=5, batch_size=2)
    assert [len(batch["input_ids"]) for batch in few] == [2, 2, 1]


def test_calibration_needs_examples_and_a_positive_limit(examples, tokenizer):
    with pytest.raises(SettingsError, match=r"limit must be a whole number of at least 1 \(calibration windows\), got 0"):
        calibration_batches(examples, tokenizer, SETTINGS, limit=0)
    with pytest.raises(SettingsError, match=r"expected examples to calibrate int8 ranges on, found none"):
        calibration_batches([], tokenizer, SETTINGS)


def test_encoder_weights_are_int8_and_the_qa_head_stays_float(int8_model):
    ops = matmuls(int8_model)
    weighted = {name: op for name, op in ops.items() if "aten::linear" in name}
    head = [name for name in weighted if f".{HEAD}/" in name]
    assert len(head) == 1 and len(weighted) == 13  # 2 layers x 6 linear layers + the head
    for name, op in weighted.items():
        source = weight_source(op)
        kind = "f32" if name in head else "i8"
        assert source.get_type_name() == "Constant" and source.get_output_element_type(0).get_type_name() == kind, name
    # int8 activations: every encoder MatMul's input passes a FakeQuantize, the head's does not
    for name, op in weighted.items():
        quantized_input = op.input_value(0).get_node().get_type_name() == "FakeQuantize"
        assert quantized_input == (name not in head), name


def test_modules_kept_float_have_float_weights(float_model, batches):
    kept = "bert.encoder.layer.1.output.dense"
    model = quantize_openvino(float_model, batches[:1], keep_float=(HEAD, kept))
    for name, op in matmuls(model).items():
        if f".{kept}/" in name or f".{HEAD}/" in name:
            assert weight_source(op).get_output_element_type(0).get_type_name() == "f32", name
            assert op.input_value(0).get_node().get_type_name() != "FakeQuantize", name


def test_int8_logits_stay_close_to_float32_on_any_batch_and_length(float_model, int8_model, batches):
    for batch in batches + [{name: array[:1, :7] for name, array in batches[-1].items()}]:
        expected, found = run(float_model, batch), run(int8_model, batch)
        assert found.shape == expected.shape
        mask = batch["attention_mask"].astype(bool)
        error = np.abs(found - expected)[:, mask]
        assert error.max() < 0.1 * np.abs(expected[:, mask]).max()
        assert np.corrcoef(found[:, mask].ravel(), expected[:, mask].ravel())[0, 1] > 0.99


def test_the_original_model_is_not_changed(float_model, int8_model):
    assert not any(op.get_type_name() == "FakeQuantize" for op in float_model.get_ops())


def test_unknown_modules_to_keep_float_are_named(float_model, batches):
    with pytest.raises(SettingsError, match=r"keep_float: no matrix multiplication of the model belongs to 'classifier'"):
        quantize_openvino(float_model, batches, keep_float=("classifier",))


def test_missing_nncf_says_how_to_install_it(float_model, batches, monkeypatch):
    monkeypatch.setitem(sys.modules, "nncf", None)  # import nncf now fails
    with pytest.raises(ModelError) as raised:
        quantize_openvino(float_model, batches)
    assert str(raised.value) == (
        "int8 quantization needs nncf, which is not installed; "
        'install the int8 extras with `pip install "qatune[int8]"` (nncf and openvino)'
    )


def decoded(*scores: float, null: float = 0.0) -> Decoded:
    return Decoded([Answer(f"answer {i}", i, i + 1, s) for i, s in enumerate(scores)], null)


def test_close_call_margin_is_the_log_ratio_to_the_runner_up_or_the_threshold():
    assert close_call_margin(decoded(0.5, 0.25)) == pytest.approx(np.log(2))
    assert close_call_margin(decoded(0.9)) == float("inf")
    assert close_call_margin(decoded(0.5, 0.1, null=0.3), null_threshold=0.25) == pytest.approx(np.log(0.3 / 0.25))
    # threshold 0 ("no answer" whenever its probability is above 0): noise cannot flip it, only the runner-up counts
    assert close_call_margin(decoded(0.5, 0.25, null=0.3), null_threshold=0.0) == pytest.approx(np.log(2))


def test_a_model_whose_threshold_is_0_answers_on_an_engine_that_rechecks(tiny_bert, tmp_path):
    import json
    import shutil

    from qatune.inference import QAModel

    folder = shutil.copytree(tiny_bert, tmp_path / "model")
    card = json.loads((folder / "qatune.json").read_text()) if (folder / "qatune.json").exists() else {"settings": {}}
    card["settings"]["null_threshold"] = 0.0
    (folder / "qatune.json").write_text(json.dumps(card))
    model = QAModel.from_pretrained(folder, engine="openvino", bf16=True)  # bf16 re-checks close calls in float32
    assert model.ask("Who wrote it?", "Ada wrote it.") == []  # every no-answer probability is above 0


def test_recheck_margin_catches_the_changed_answers_of_the_calibration_data():
    reference = [decoded(0.5, 0.4), decoded(0.6, 0.1), decoded(0.5, 0.45), decoded(0.9, 0.05)]
    # int8 swaps the first and third questions' answers (margins log 1.5 and log 1.2)
    quantized = [
        Decoded([Answer("answer 1", 1, 2, 0.6), Answer("answer 0", 0, 1, 0.4)], 0.0),
        decoded(0.6, 0.1),
        Decoded([Answer("answer 1", 1, 2, 0.48), Answer("answer 0", 0, 1, 0.4)], 0.0),
        decoded(0.9, 0.05),
    ]
    every = recheck_margin(quantized, reference, catch=1.0)
    assert np.log(0.6 / 0.4) < every < np.log(0.6 / 0.4) + 1e-9  # just above the widest changed margin
    assert np.log(0.48 / 0.4) < recheck_margin(quantized, reference, catch=0.5) < np.log(0.6 / 0.4)
    assert recheck_margin(reference, reference) == 0.0
    with pytest.raises(SettingsError, match=r"expected the same questions decoded twice, got 1 int8 and 4 float32"):
        recheck_margin(quantized[:1], reference)


@pytest.mark.parametrize(("measured", "questions", "recorded", "warned"), [
    (0.0, 1, 0.05, True),  # one question: int8 changed none of its answers; bf16's margin still re-checks
    (0.3, 12, 0.3, False),
])
def test_the_recorded_margin_is_never_below_bf16s_and_few_calibration_questions_are_warned_about(
    measured, questions, recorded, warned, tiny_bert, examples, tmp_path, monkeypatch, caplog
):
    import json

    import qatune.export as export
    import qatune.quantize as quantize

    monkeypatch.setattr(quantize, "recheck_margin", lambda *answers, null_threshold: measured)
    monkeypatch.setattr(export, "ADVISED_CALIBRATION_QUESTIONS", 12, raising=False)
    folder = export.export_model(
        tiny_bert, tmp_path / "int8", format="openvino", quantize="int8", calibration=examples[:questions]
    ).parent

    record = json.loads((folder / "qatune.json").read_text())["engine"]["quantization"]
    assert (record["measured_recheck_margin"], record["recheck_margin"]) == (measured, recorded)
    warnings = [record.getMessage() for record in caplog.records if record.name == "qatune"]
    assert warnings == ([
        "--calibration: 1 question, fewer than the 12 advised; int8's re-check margin measured on so few may miss "
        "answers int8 changes (it is kept at least bf16's, 0.05): calibrate on a few hundred of your own questions "
        "(the training file does)"
    ] if warned else [])
