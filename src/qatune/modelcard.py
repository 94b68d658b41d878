"""The model card: `README.md` in every model folder qatune writes, in the Hugging Face layout
(a YAML metadata header, then prose), made from what `qatune.json` records.

The header's keys: `library_name` (transformers: the folder loads there; left out for an
export, which only qatune answers), `pipeline_tag`
(question-answering), `base_model`, `tags`, `metrics` (exact_match, f1), `model-index` (the dev
scores, when there were dev data), and `qatune`: `version`, `data` (per file: sha256 of the
questions, counts, what reading repaired and skipped), `settings` (windows and decoding, the
no-answer threshold, the temperature), `training` (hyperparameters, epochs, best epoch,
seconds, machine), `calibration`, and `engine` for an exported folder.

    >>> write_readme("qatune-model")  # doctest: +SKIP
    PosixPath('qatune-model/README.md')
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

from qatune.wording import with_article

README = "README.md"
# Hyperparameters shown in the card (the rest stay in qatune.json).
SHOWN_ARGUMENTS = (
    "epochs", "batch_size", "learning_rate", "weight_decay", "warmup_ratio", "max_grad_norm",
    "gradient_accumulation_steps", "seed", "bf16", "attention_dropout", "hidden_dropout", "patience",
    "processes", "effective_batch_size", "teacher", "distill_alpha", "distill_temperature", "distill_hidden", "lora", "lora_rank",
)
MATRIX_FLAGS = ("amx_bf16", "amx_int8", "amx_tile", "avx512_bf16", "avx512_vnni", "avx512f", "avx2")


def write_readme(model_dir: str | Path) -> Path:
    """Write `README.md` (the model card) from the folder's `qatune.json` and `config.json`."""
    import yaml

    from qatune.settings import read_model_card

    folder = Path(model_dir)
    card = read_model_card(folder)
    header = card_metadata(card, folder.resolve().name)
    text = "---\n" + yaml.safe_dump(header, sort_keys=False, allow_unicode=True) + "---\n\n" + _body(card, folder)
    path = folder / README
    path.write_text(text, encoding="utf-8")
    return path


def card_metadata(card: dict[str, Any], name: str) -> dict[str, Any]:
    """The YAML header of the card as a dict."""
    settings = card.get("settings", {})
    data = card.get("data") or {}
    engine = card.get("engine")
    # an export holds an ONNX or OpenVINO graph, no PyTorch weights: transformers cannot load it
    header: dict[str, Any] = {} if engine else {"library_name": "transformers"}
    header["pipeline_tag"] = "question-answering"
    if card.get("base_model"):
        header["base_model"] = card["base_model"]
    header["tags"] = ["qatune", "question-answering", "extractive-question-answering"]
    if engine:
        header["tags"].append(engine.get("name", "export"))
    header["metrics"] = ["exact_match", "f1"]
    dev = card.get("dev_metrics")
    if dev:
        header["model-index"] = [
            {
                "name": name,
                "results": [
                    {
                        "task": {"type": "question-answering", "name": "Extractive question answering"},
                        "dataset": {
                            "type": "json",
                            "name": f"dev data ({data.get('dev_questions', '?')} questions)",
                            "revision": data.get("dev_sha256", ""),
                        },
                        "metrics": [
                            {"type": "exact_match", "name": "Exact match", "value": round(_exact(dev), 2)},
                            {"type": "f1", "name": "F1", "value": round(float(dev["f1"]), 2)},
                        ],
                    }
                ],
            }
        ]
    header["qatune"] = {
        "version": card.get("qatune_version"),
        "data": _data_entries(data),
        "settings": settings,
        "training": _training_entry(card),
        "calibration": card.get("calibration"),
    }
    if card.get("engine"):
        header["qatune"]["engine"] = card["engine"]
    return header


def _exact(metrics: dict[str, Any]) -> float:
    return float(metrics.get("exact_match", metrics.get("exact", 0.0)))


def _data_entries(data: dict[str, Any]) -> dict[str, Any]:
    """Per data file: its sha256 and counts, and what reading it repaired and skipped."""
    validation = data.get("validation") or {}
    entries = {}
    for name in ("train", "dev", "transfer"):
        if f"{name}_sha256" not in data:
            continue
        entry = {"sha256": data[f"{name}_sha256"], "questions": data.get(f"{name}_questions")}
        if name != "transfer":  # the transfer questions' own answers are never read
            entry["unanswerable"] = data.get(f"{name}_unanswerable")
        if name in validation:
            entry["read"] = validation[name]
        entries[name] = entry
    if "train" in entries:
        entries["train"]["windows"] = data.get("train_windows")
        entries["train"]["answers_outside_windows"] = data.get("answers_outside_windows")
        entries["train"]["truncated_questions"] = data.get("truncated_questions")
    if "transfer" in entries:  # questions the teacher answered
        entries["transfer"]["windows"] = data.get("transfer_windows")
    return entries


def _training_entry(card: dict[str, Any]) -> dict[str, Any]:
    arguments = card.get("training_arguments") or {}
    entry = {key: arguments[key] for key in SHOWN_ARGUMENTS if key in arguments}
    entry.update(
        best_epoch=card.get("best_epoch"),
        train_seconds=card.get("train_seconds"),
        machine=card.get("machine"),
    )
    return entry


def _shown_hyperparameters(training: dict[str, Any]) -> list[str]:
    """The hyperparameters worth a row: set ones, and distillation's and LoRA's only when used."""
    unused = set()
    if not training.get("teacher"):
        unused |= {"distill_alpha", "distill_temperature", "distill_hidden"}
    if not training.get("lora"):
        unused.add("lora_rank")
    return [key for key in SHOWN_ARGUMENTS if training.get(key) is not None and key not in unused]


def _score_meaning(calibration: dict[str, Any] | None) -> str:
    """What a score can be trusted for, from what calibration measured on the dev data."""
    if not calibration:
        return "; it was not calibrated (trained without dev data), so it may be overconfident."
    before, after = 100 * calibration["ece_before"], 100 * calibration["ece_after"]
    measured = f"calibration error {before:.1f} -> {after:.1f} points on {calibration['questions']} dev questions"
    if after <= before:
        return (
            f", calibrated on the dev data (temperature {calibration['temperature']:.3f}; {measured}): on questions like "
            f"those, answers scored about 0.8 were exact matches about 80% of the time, within that error."
        )
    return (
        f", rescaled on the dev data by the temperature with the lowest log loss ({calibration['temperature']:.3f}), "
        f"though its binned calibration error there rose ({measured}): read scores as a ranking, not as chances."
    )


def _body(card: dict[str, Any], folder: Path) -> str:
    name = folder.resolve().name
    base = card.get("base_model") or "an encoder"
    data = card.get("data") or {}
    settings = card.get("settings", {})
    dev = card.get("dev_metrics")
    training = _training_entry(card)
    lines = [
        f"# {name}",
        "",
        f"An extractive question-answering model: given a question and a text, it points at the span of the text "
        f"that answers it (or says there is none). Fine-tuned from `{base}` with qatune "
        f"{card.get('qatune_version', '')}.",
        "",
        "## Intended use and limits",
        "",
        "- Answers are spans copied from the given text, never generated: a question whose answer is not written "
        "in the text gets a wrong span or, if the model learned to abstain, no answer.",
        f"- It was trained on {data.get('train_questions', 'an unknown number of')} questions"
        + (f" ({data.get('train_unanswerable')} unanswerable)" if data.get("train_unanswerable") is not None else "")
        + (
            f", and on its teacher's answers to {data['transfer_questions']} more questions"
            if data.get("transfer_questions") else ""
        )
        + "; expect its scores to hold for text and questions like those, and to drop on others. "
        "Measure it on your own held-out questions (`qatune evaluate`).",
        "- A score is the model's probability for its answer" + _score_meaning(card.get("calibration")),
        "",
        "## Training data",
        "",
    ]
    entries = _data_entries(data)
    if entries:
        lines += ["| data | questions | unanswerable | sha256 of the questions |", "|---|---|---|---|"]
        for key, entry in entries.items():
            lines.append(f"| {key} | {entry['questions']} | {entry.get('unanswerable', '-')} | `{entry['sha256'][:16]}…` |")
        lines.append("")
        for key, entry in entries.items():
            read = entry.get("read")
            if read:
                lines.append(
                    f"- {key}: read from `{read['file']}` ({read['layout']} layout): {read['repaired']} answers repaired, "
                    f"{read['skipped_questions']} questions and {read['skipped_answers']} answers skipped."
                )
        if "train" in entries:
            lines.append(
                f"- windows: {data.get('train_windows')} training windows; {data.get('answers_outside_windows', 0)} answers "
                f"fall outside every window; {data.get('truncated_questions', 0)} questions were cut to max_question_length."
            )
    else:
        lines.append("Not recorded (this folder was not written by `qatune train`).")
    lines += ["", "## Training procedure", ""]
    if training.get("epochs") is not None:
        lines += ["| hyperparameter | value |", "|---|---|"]
        lines += [f"| {key} | {training[key]} |" for key in _shown_hyperparameters(training)]
        lines += [f"| {key} | {'qatune default' if value is None else value} |" for key, value in settings.items()]
        lines.append("")
        seconds = training.get("train_seconds")
        machine = training.get("machine") or {}
        lines.append(
            f"Trained {'%.0f s' % seconds if seconds is not None else 'for an unknown time'}"
            + (f" on {machine.get('device_name') or machine.get('cpu')}" if machine else "")
            + (f"; best dev epoch {training['best_epoch']}." if training.get("best_epoch") else ".")
        )
    else:
        lines.append("Not recorded.")
    lines += ["", "## Evaluation", ""]
    if dev:
        lines += [
            f"On the dev data ({data.get('dev_questions', '?')} questions), answered as `qatune evaluate` answers them:",
            "",
            "| metric | value |",
            "|---|---|",
        ]
        lines += [f"| {key} | {value:.2f} |" if isinstance(value, float) else f"| {key} | {value} |" for key, value in dev.items()]
        lines.append("")
        lines.append(
            f"No-answer threshold: {settings.get('null_threshold', 1.0):.6g} (a question is answered \"no answer\" when "
            "its no-answer probability exceeds it; 1.0 always answers)."
        )
        calibration = card.get("calibration")
        if calibration:
            lines.append(
                f"Calibration: temperature {calibration['temperature']:.3f} fitted on {calibration['questions']} dev "
                f"questions; expected calibration error {100 * calibration['ece_before']:.1f} points before, "
                f"{100 * calibration['ece_after']:.1f} after."
            )
    else:
        lines.append("No dev data was evaluated.")
    engine = card.get("engine")
    if engine:
        lines += ["", f"This folder was exported for the `{engine.get('name', '?')}` engine ({engine.get('precision', '?')})."]
    lines += ["", "## How to use", ""] + _qatune_usage(name, engine)
    lines += _export_note(engine) if engine else _transformers_usage(name)
    return "\n".join(lines)


def _qatune_usage(name: str, engine: dict[str, Any] | None) -> list[str]:
    if engine:
        opening = (
            f"With qatune, which answers with this folder's `{engine.get('name', '?')}` engine (same windows, "
            "decoding, threshold and calibration as the scores above):"
        )
    else:
        opening = "With qatune (same windows, decoding, threshold and calibration as the scores above):"
    return [
        opening,
        "",
        "```bash",
        f'qatune ask {name} -q "When did it open?" -c "The bridge opened in 1932."',
        f"qatune serve {name}",
        "```",
        "",
        "```python",
        "from qatune import QAModel",
        "",
        f'model = QAModel.from_pretrained("{name}")',
        'model.ask("When did it open?", "The bridge opened in 1932.")',
        "# [Answer(text='1932', start=21, end=25, score=...)]  (start/end: Python string indices)",
        "```",
        "",
    ]


def _export_note(engine: dict[str, Any]) -> list[str]:
    graph = "model.xml and model.bin" if engine.get("name") == "openvino" else "model.onnx"
    return [
        f"This folder holds {with_article(engine.get('name', 'exported'))} graph ({graph}), not PyTorch weights: "
        "plain transformers cannot load it; use the folder it was exported from for that.",
        "",
    ]


def _transformers_usage(name: str) -> list[str]:
    return [
        "With plain transformers (one window, best start and end picked apart, no threshold or calibration: "
        "fine for short texts):",
        "",
        "```python",
        "import torch",
        "from transformers import AutoModelForQuestionAnswering, AutoTokenizer",
        "",
        f'tokenizer = AutoTokenizer.from_pretrained("{name}")',
        f'model = AutoModelForQuestionAnswering.from_pretrained("{name}")',
        'inputs = tokenizer("When did it open?", "The bridge opened in 1932.", return_tensors="pt")',
        "with torch.no_grad():",
        "    output = model(**inputs)",
        "start, end = int(output.start_logits.argmax()), int(output.end_logits.argmax())",
        'print(tokenizer.decode(inputs["input_ids"][0][start : end + 1]))',
        "```",
        "",
    ]


def validation_summary(report) -> dict[str, Any]:
    """What reading one data file did (a `qatune.data.ValidationReport`), for qatune.json."""
    return {
        "file": Path(report.path).name,
        "file_sha256": _file_sha256(report.path),  # what `sha256sum FILE` prints; "sha256" is the questions'
        "layout": report.layout,
        "questions": report.questions,
        "kept_questions": report.kept_questions,
        "unanswerable": report.unanswerable,
        "repaired": sum(report.repaired.values()),
        "repaired_by_kind": dict(report.repaired),
        "skipped_questions": report.skipped_questions,
        "skipped_answers": report.skipped_answers,
    }


def _file_sha256(path) -> str | None:
    import hashlib

    digest = hashlib.sha256()
    try:
        with open(path, "rb") as file:
            for block in iter(lambda: file.read(1 << 20), b""):
                digest.update(block)
    except OSError:  # read a moment ago; gone or unreadable now: nothing to record
        return None
    return digest.hexdigest()


def machine_description(device, bf16: bool) -> dict[str, Any]:
    """The machine a model was trained on: CPU and its matrix units, GPU, torch, bf16."""
    import torch

    description: dict[str, Any] = {
        "cpu": cpu_name(),
        "cpu_cores": os.cpu_count(),
        "cpu_matrix_flags": [flag for flag in MATRIX_FLAGS if flag in cpu_flags()],
        "device": device.type,
        "torch": torch.__version__,
        "bf16": bool(bf16),
        "platform": platform.platform(terse=True),
    }
    if device.type == "cuda":
        description["device_name"] = torch.cuda.get_device_name(device)
    return description


def _cpuinfo_field(name: str) -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            for line in info:
                if line.startswith(name) and ":" in line:
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def cpu_name() -> str:
    """The CPU's model name (Linux: from /proc/cpuinfo)."""
    return _cpuinfo_field("model name") or platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux: from /proc/cpuinfo; empty elsewhere)."""
    return set(_cpuinfo_field("flags").split())


__all__ = ["README", "card_metadata", "machine_description", "validation_summary", "write_readme"]
