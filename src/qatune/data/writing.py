"""Writing examples back as a SQuAD v2.0 file (what `qatune validate --write-fixed` does)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from qatune.data.examples import Example, PathLike
from qatune.errors import DataError


def write_squad_v2(examples: Sequence[Example], path: PathLike) -> None:
    """Write examples as SQuAD v2.0 JSON, grouped by title then context (first-seen order).

    Reading the file back gives the same examples (apart from `place`) with no repairs.
    """
    articles: dict[str | None, dict[str, list[dict[str, Any]]]] = {}
    for example in examples:
        contexts = articles.setdefault(example.title, {})
        contexts.setdefault(example.context, []).append(
            {
                "id": example.id,
                "question": example.question,
                "answers": [{"text": a.text, "answer_start": a.start} for a in example.answers],
                "is_impossible": example.is_impossible or not example.answers,
            }
        )
    data = []
    for title, contexts in articles.items():
        article: dict[str, Any] = {} if title is None else {"title": title}
        article["paragraphs"] = [{"context": c, "qas": qas} for c, qas in contexts.items()]
        data.append(article)
    text = json.dumps({"version": "v2.0", "data": data}, ensure_ascii=False, indent=1)
    try:
        Path(path).write_text(text + "\n", encoding="utf-8")
    except (OSError, UnicodeEncodeError) as error:
        raise DataError(f"{path}: cannot write the file ({error}); check the path") from None
