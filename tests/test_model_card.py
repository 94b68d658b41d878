"""The model card: README.md with a YAML header in every model folder qatune writes."""

from __future__ import annotations

import hashlib
import json

import pytest
import yaml

from qatune import TrainingArguments, train
from qatune.data import load_examples, read_dataset
from qatune.metrics import exact_of
from qatune.settings import QASettings
from qatune.training import examples_digest

from conftest import DATA, TINY_QA

DOCUMENTED_KEYS = {"library_name", "pipeline_tag", "base_model", "tags", "metrics", "model-index", "qatune"}
QATUNE_KEYS = {"version", "data", "settings", "training", "calibration"}


def header_of(readme: str) -> dict:
    assert readme.startswith("---\n")
    end = readme.index("\n---\n", 4)
    return yaml.safe_load(readme[4:end])


@pytest.fixture(scope="module")
def trained(tiny_bert, tmp_path_factory):
    folder = tmp_path_factory.mktemp("card") / "model"
    train_examples, train_report = read_dataset(TINY_QA)
    dev_examples, dev_report = read_dataset(DATA / "data_needs_repair.json")
    arguments = TrainingArguments(
        output_dir=str(folder), model=str(tiny_bert), epochs=2, batch_size=4, learning_rate=3e-3, bf16=False,
        seed=7, settings=QASettings(max_seq_length=48, doc_stride=8, max_question_length=12),
    )
    result = train(train_examples, dev_examples, arguments, progress=False,
                   data_reports={"train": train_report, "dev": dev_report})
    return folder, result, train_examples, dev_examples, dev_report


def test_the_card_header_parses_as_yaml_with_the_documented_keys(trained, tiny_bert):
    folder, result, train_examples, dev_examples, dev_report = trained
    header = header_of((folder / "README.md").read_text(encoding="utf-8"))
    assert DOCUMENTED_KEYS <= set(header)
    assert (header["library_name"], header["pipeline_tag"], header["base_model"]) == ("transformers", "question-answering", str(tiny_bert))
    assert "qatune" in header["tags"] and header["metrics"] == ["exact_match", "f1"]
    results = header["model-index"][0]["results"][0]
    values = {metric["type"]: metric["value"] for metric in results["metrics"]}
    assert values == {"exact_match": round(exact_of(result.dev_metrics), 2), "f1": round(result.dev_metrics["f1"], 2)}
    assert results["dataset"]["revision"] == examples_digest(dev_examples)

    own = header["qatune"]
    assert QATUNE_KEYS <= set(own)
    card = json.loads((folder / "qatune.json").read_text())
    assert own["settings"] == card["settings"] and own["calibration"] == card["calibration"]
    assert own["data"]["train"]["sha256"] == examples_digest(train_examples)
    assert own["data"]["train"]["questions"] == len(train_examples)
    assert own["data"]["dev"]["questions"] == len(dev_examples)
    # what reading the dev file repaired travels with the model
    assert own["data"]["dev"]["read"]["repaired"] == sum(dev_report.repaired.values()) > 0
    # and the file's own sha256, as `sha256sum` prints it (the questions' digest is another)
    file_digest = hashlib.sha256((DATA / "data_needs_repair.json").read_bytes()).hexdigest()
    assert own["data"]["dev"]["read"]["file_sha256"] == card["data"]["validation"]["dev"]["file_sha256"] == file_digest
    assert own["training"]["epochs"] == 2 and own["training"]["best_epoch"] == result.best_epoch
    assert own["training"]["machine"]["device"] == "cpu" and own["training"]["machine"]["cpu"]


def test_the_card_says_how_to_load_the_model_and_what_it_scored(trained):
    folder, result, *_ = trained
    text = (folder / "README.md").read_text(encoding="utf-8")
    body = text[text.index("\n---\n", 4):]
    for heading in ("## Intended use and limits", "## Training data", "## Training procedure", "## Evaluation", "## How to use"):
        assert heading in body
    assert f'QAModel.from_pretrained("{folder.name}")' in body
    assert f'AutoModelForQuestionAnswering.from_pretrained("{folder.name}")' in body
    assert f"| f1 | {result.dev_metrics['f1']:.2f} |" in body
    assert f"temperature {result.calibration.temperature:.3f}" in body


def test_the_plain_transformers_snippet_of_the_card_runs(trained, monkeypatch):
    folder, *_ = trained
    text = (folder / "README.md").read_text(encoding="utf-8")
    snippet = text.split("```python\n")[2].split("```")[0]
    monkeypatch.chdir(folder.parent)
    exec(compile(snippet, "README.md", "exec"), {})  # loads the folder in transformers and prints a span


def test_a_model_trained_without_dev_data_says_it_is_not_calibrated(tiny_bert, tmp_path):
    arguments = TrainingArguments(output_dir=str(tmp_path / "m"), model=str(tiny_bert), epochs=1, bf16=False,
                                  settings=QASettings(max_seq_length=48, doc_stride=8, max_question_length=12))
    train(load_examples(TINY_QA), None, arguments, progress=False)
    text = (tmp_path / "m" / "README.md").read_text(encoding="utf-8")
    header = header_of(text)
    assert "model-index" not in header and header["qatune"]["calibration"] is None
    assert "it was not calibrated (trained without dev data)" in text and "No dev data was evaluated." in text


def test_an_exported_folder_has_a_card_naming_its_engine(trained, tmp_path):
    from qatune.export import export_model

    folder, *_ = trained
    target = export_model(folder, tmp_path / "exported", format="openvino").parent
    text = (target / "README.md").read_text(encoding="utf-8")
    header = header_of(text)
    assert header["qatune"]["engine"]["name"] == "openvino"
    assert header["qatune"]["data"] == header_of((folder / "README.md").read_text(encoding="utf-8"))["qatune"]["data"]
    # an export holds no PyTorch weights: the card shows qatune loading it, not transformers
    assert "library_name" not in header and "openvino" in header["tags"]
    assert "AutoModelForQuestionAnswering" not in text and "transformers import" not in text
    assert 'QAModel.from_pretrained("exported")' in text and 'qatune ask exported -q' in text
    assert (
        "This folder holds an openvino graph (model.xml and model.bin), not PyTorch weights: plain transformers "
        "cannot load it; use the folder it was exported from for that."
    ) in text


def test_the_qatune_snippet_of_an_exports_card_runs(trained, tmp_path, monkeypatch):
    from qatune.export import export_model

    folder, *_ = trained
    target = export_model(folder, tmp_path / "exported", format="openvino").parent
    text = (target / "README.md").read_text(encoding="utf-8")
    (snippet,) = [part.split("```")[0] for part in text.split("```python\n")[1:]]
    monkeypatch.chdir(tmp_path)
    exec(compile(snippet, "README.md", "exec"), {})  # loads the export with qatune and asks a question


def _card_text(folder, **extra) -> str:
    from qatune.modelcard import write_readme
    from qatune.settings import write_model_card

    folder.mkdir()
    write_model_card(folder, QASettings(), **extra)
    return write_readme(folder).read_text(encoding="utf-8")


@pytest.mark.parametrize(
    "before, after, promise",
    [(0.385, 0.111, True), (0.066, 0.070, False)],
)
def test_the_card_promises_calibrated_scores_only_when_calibration_measured_better(tmp_path, before, after, promise):
    calibration = {"temperature": 2.0, "ece_before": before, "ece_after": after, "questions": 27}
    text = _card_text(tmp_path / "m", calibration=calibration)
    assert f"calibration error {100 * before:.1f} -> {100 * after:.1f} points on 27 dev questions" in text
    assert ("about 80% of the time" in text) is promise
    assert ("read scores as a ranking, not as chances" in text) is (not promise)


def test_the_hyperparameter_table_shows_only_what_was_set_and_used(tmp_path):
    arguments = {"epochs": 3, "batch_size": 16, "learning_rate": 2e-4, "patience": None, "teacher": None,
                 "distill_alpha": 0.5, "distill_temperature": 2.0, "lora": False, "lora_rank": 8, "seed": 42}
    text = _card_text(tmp_path / "m", training_arguments=arguments)
    rows = {line.split(" | ")[0].strip("| ") for line in text.splitlines() if line.startswith("| ")}
    assert {"epochs", "batch_size", "learning_rate", "seed"} <= rows
    assert not rows & {"patience", "teacher", "distill_alpha", "distill_temperature", "lora_rank"}
    assert "| None |" not in text
