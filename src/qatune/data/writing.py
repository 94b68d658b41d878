"""Writing data back: the file as read with its repairs (`write_fixed`, what `qatune validate
--write-fixed` does), or examples alone as a SQuAD v2.0 file (`write_squad_v2`)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from qatune.data.checking import _SURROGATE
from qatune.data.examples import Example, PathLike, as_examples, check_unique_ids
from qatune.data.reading import _read
from qatune.data.report import ValidationReport
from qatune.errors import DataError


def write_fixed(
    path: PathLike, out: PathLike, *, format: str = "auto", on_error: str = "repair"
) -> tuple[list[Example], ValidationReport, bool]:
    """Read `path`; if it has no errors, write it to `out` in its own layout, changed only where
    an answer was repaired, where `on_error="skip"` dropped something (removed) and where a
    question had no id (its generated id is added). Every other field stays as it was.

    Returns what `read_dataset` returns and whether the file was written. Reading `out`
    gives the same examples (apart from `place`, where something was removed), with no repairs.

    >>> examples, report, written = write_fixed("tests/data/data_paragraphs.json", "/tmp/fixed.json")
    >>> written, report.generated_ids, json.load(open("/tmp/fixed.json"))[0]["qas"][2]["id"]
    (True, 1, 'a98872ea7e23')
    """
    reader, document, jsonl = _read(path, format, on_error)
    examples, report = reader.finish()
    if not report.ok:
        return examples, report, False
    reader.edits.apply()
    if jsonl:
        text = "".join(json_text(record) + "\n" for record in document)
    else:
        text = json_text(document, indent=1) + "\n"
    _write_text(out, text)
    return examples, report, True


def write_squad_v2(examples: Sequence[Example], path: PathLike) -> None:
    """Write examples as SQuAD v2.0 JSON, grouped by title then context (first-seen order).

    Reading the file back gives the same examples (apart from `place`) with no repairs: an
    empty list, and a question id given twice, are refused as reading would refuse them.
    Only what an Example holds is written; `write_fixed` keeps every field of a file.
    """
    examples = as_examples("examples", examples)
    if not examples:
        raise DataError("no examples to write: a data file needs at least one question")
    check_unique_ids(examples)
    articles: dict[str | None, dict[str, list[dict[str, Any]]]] = {}
    for example in examples:
        contexts = articles.setdefault(example.title, {})
        contexts.setdefault(example.context, []).append(
            {
                "id": example.id,
                "question": example.question,
                "answers": [{"text": a.text, "answer_start": a.start} for a in example.answers],
                "is_impossible": example.unanswerable,
            }
        )
    data = []
    for title, contexts in articles.items():
        article: dict[str, Any] = {} if title is None else {"title": title}
        article["paragraphs"] = [{"context": c, "qas": qas} for c, qas in contexts.items()]
        data.append(article)
    _write_text(path, json_text({"version": "v2.0", "data": data}, indent=1) + "\n")


def json_text(value: Any, indent: int | None = None) -> str:
    text = json.dumps(value, ensure_ascii=False, indent=indent)
    # a lone surrogate (possible in fields qatune does not check) has no UTF-8: keep it escaped
    return _SURROGATE.sub(lambda match: f"\\u{ord(match.group()):04x}", text)


def _write_text(path: PathLike, text: str) -> None:
    try:
        Path(path).write_text(text, encoding="utf-8")
    except OSError as error:
        raise DataError(f"{path}: cannot write the file ({error}); check the path") from None
