"""`qatune report`: one self-contained HTML file about a trained model.

What it shows: the model and its dev scores; the learning curves of `metrics.jsonl`; the dev
scores before and after training; the training data's counts and what windowing did to its
labels; and, given dev data, every question with its answer, score and highlighted context,
grouped (correct, partial, wrong, answered-unanswerable, unanswered-answerable) and
filterable, and how far the scores can be trusted (reliability, calibration error, the
no-answer threshold). Figures are embedded PNGs and the page's CSS and JavaScript are
inlined: the file fetches nothing and works opened from disk.

    >>> from qatune.data import read_dataset
    >>> examples, validation = read_dataset("dev.json")                     # doctest: +SKIP
    >>> write_report("qatune-model", "report.html", examples=examples, validation=validation)  # doctest: +SKIP
    PosixPath('report.html')

Offsets in the page are Python `str` indices (code points) into the original context.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable, Sequence

from qatune.data.examples import as_examples
from qatune.errors import ArgumentTypeError, ModelError
from qatune.files import check_report_file, naming_the_file, with_default_permissions
from qatune.report.analysis import GROUPS, QuestionResult, calibration_stats, group_counts, question_results
from qatune.report.history import History, read_history

METRICS_FILE = "metrics.jsonl"
CARD_FILE = "qatune.json"
COVERAGE_CHUNK = 1000  # examples windowed at a time for the label coverage


def write_report(
    model_dir: str | os.PathLike,
    output: str | os.PathLike,
    *,
    examples: Sequence | None = None,
    validation=None,
    model=None,
    decoded: Sequence | None = None,
    log: Callable[[str], None] | None = None,
    batch_size: int = 8,
) -> Path:
    """Write the HTML report of the model folder `model_dir` to `output`; return its path.

    `examples` (qatune.data.Example, with gold answers) are answered by `model` (a loaded
    `qatune.inference.QAModel`; loaded from `model_dir` with `engine="auto"` when None) and
    shown one by one; `validation` (the ValidationReport of reading them) adds what reading
    repaired and skipped. Without examples the page shows what the folder holds. `decoded`:
    the model's answers to the examples where the caller has them already (`qatune evaluate`),
    so that they are not answered twice.
    """
    log = log or (lambda message: None)
    folder = check_model_folder(model_dir)
    check_report_file("output", output)  # before the answering: a missing folder, a data file named by mistake
    if examples is not None:
        examples = as_examples("examples", examples)
    if model is not None and not _is_qa_model(model):
        raise ArgumentTypeError(f"model must be a loaded QAModel (QAModel.from_pretrained({str(model_dir)!r})) or None, got {model!r}")
    inputs = gather(
        folder, examples=examples, validation=validation, model=model, decoded=decoded, log=log, batch_size=batch_size
    )
    from qatune.report.page import render

    page = render(inputs)
    path = Path(output)
    _write_atomically(path, page)
    questions = len(inputs.results) if inputs.results else 0
    log(f"wrote {path} ({questions} question{'' if questions == 1 else 's'})")
    return path


def _is_qa_model(model) -> bool:
    from qatune.inference import QAModel  # imported where a model was passed: loaded already

    return isinstance(model, QAModel)


def check_model_folder(model_dir: str | os.PathLike) -> Path:
    """The folder, or a ModelError when it is missing or holds neither qatune.json nor metrics.jsonl."""
    folder = Path(model_dir).expanduser()
    if not folder.is_dir():
        what = "a file, not a folder" if folder.exists() else "no such folder"
        raise ModelError(
            f"{model_dir}: {what}; expected the model folder `qatune train` wrote "
            f"(with {CARD_FILE} and {METRICS_FILE}); check the path"
        )
    if not (folder / CARD_FILE).is_file() and not (folder / METRICS_FILE).is_file():
        raise ModelError(
            f"{model_dir}: holds neither {CARD_FILE} nor {METRICS_FILE}, so there is nothing to report on; "
            f"pass the folder `qatune train` wrote (its --output)"
        )
    return folder


def gather(folder: Path, *, examples, validation, model, log, decoded=None, batch_size: int = 8):
    """Everything the page shows (a `qatune.report.page.ReportInputs`)."""
    from qatune.report.page import ReportInputs
    from qatune.settings import read_model_card

    card = read_model_card(folder) if (folder / CARD_FILE).is_file() else {}
    history = _history(folder, log)
    inputs = ReportInputs(folder=folder, card=card, history=history, validation=validation)
    if validation is not None:
        inputs.data_name = getattr(validation, "path", None)
    if not examples:
        if examples is not None:
            inputs.notes.append("the data given has no questions")
        return inputs
    examples = list(examples)
    if model is None:
        from qatune.inference import QAModel

        model = QAModel.from_pretrained(folder, engine="auto")
    inputs.engine = model.engine.describe()
    inputs.null_threshold = model.settings.null_threshold
    if decoded is None:
        decoded = model.predict(examples, batch_size=batch_size, top_k=1)
    inputs.results = question_results(examples, decoded, model.settings.null_threshold)
    inputs.stats = calibration_stats(inputs.results, model.settings.null_threshold)
    inputs.coverage = data_coverage(examples, model.tokenizer, model.settings)
    counts = group_counts(inputs.results)
    log(f"{len(examples)} questions: " + ", ".join(f"{counts[g]} {g}" for g in GROUPS))
    return inputs


def data_coverage(examples: Sequence, tokenizer, settings) -> dict[str, int]:
    """`qatune.features.label_coverage` of the examples, windowed COVERAGE_CHUNK examples at a time."""
    from qatune.features import label_coverage, label_windows, make_windows

    total: dict[str, int] = {}
    for first in range(0, len(examples), COVERAGE_CHUNK):
        chunk = examples[first : first + COVERAGE_CHUNK]
        windows = make_windows(chunk, tokenizer, settings)
        for key, value in label_coverage(windows, label_windows(chunk, windows)).items():
            total[key] = total.get(key, 0) + value
    return total


def _history(folder: Path, log: Callable[[str], None]) -> History | None:
    path = folder / METRICS_FILE
    if not path.is_file():
        return None
    history = read_history(path)
    if history.skipped_lines:
        log(f"{path}: skipped {history.skipped_lines} unreadable line{'s' if history.skipped_lines > 1 else ''}")
    return history


def _write_atomically(path: Path, text: str) -> None:
    """Write next to `path`, then rename: a reader never sees half a report."""
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with naming_the_file(path), os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
        with_default_permissions(temporary)  # mkstemp makes it 0600
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


__all__ = ["GROUPS", "QuestionResult", "check_model_folder", "data_coverage", "question_results", "write_report"]
