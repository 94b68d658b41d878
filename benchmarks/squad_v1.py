"""SQuAD JSON reading and the official SQuAD v1.1 exact-match and F1, for the benchmarks.

Plain Python, no qatune and no torch: the reference scripts import this module so that
they measure what users run today without leaning on qatune's own code.

    >>> exact_match("The Eiffel Tower", "eiffel tower")
    1.0
    >>> round(f1("in Paris, France", "Paris"), 3)
    0.5
"""

from __future__ import annotations

import json
import re
import string
from collections import Counter
from pathlib import Path


def read_squad(path: str | Path) -> list[dict]:
    """Every question of a SQuAD-style JSON file (v1.1 or v2.0), in file order.

    Each question is a dict with `id`, `title`, `question`, `context`, `answers` (a list of
    `{"text", "answer_start"}`) and `is_impossible`.

        >>> read_squad("dev.json")[0]["answers"][0]          # doctest: +SKIP
        {'text': 'Denver Broncos', 'answer_start': 177}
    """
    path = Path(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise SystemExit(f"{path}: cannot read a SQuAD JSON file ({error})") from error
    if not isinstance(document, dict) or not isinstance(document.get("data"), list):
        raise SystemExit(f"{path}: expected an object with a 'data' list (SQuAD layout)")
    questions = []
    for article in document["data"]:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                questions.append(
                    {
                        "id": str(qa["id"]),
                        "title": article.get("title"),
                        "question": qa["question"],
                        "context": paragraph["context"],
                        "answers": list(qa.get("answers", [])),
                        "is_impossible": bool(qa.get("is_impossible", False)),
                    }
                )
    return questions


def answerable(questions: list[dict]) -> list[dict]:
    """The questions that have at least one gold answer and are not marked impossible."""
    return [q for q in questions if q["answers"] and not q["is_impossible"]]


# The official v1.1 evaluation script's definitions, reproduced.
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower case, drop punctuation, the articles a/an/the and extra whitespace."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match(prediction: str, gold: str) -> float:
    """1.0 when the normalized strings are equal, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(gold))


def f1(prediction: str, gold: str) -> float:
    """Token-overlap F1 of the normalized strings (0.0 when nothing is shared)."""
    predicted = normalize_answer(prediction).split()
    wanted = normalize_answer(gold).split()
    common = Counter(predicted) & Counter(wanted)
    shared = sum(common.values())
    if shared == 0:
        return 0.0
    precision = shared / len(predicted)
    recall = shared / len(wanted)
    return 2 * precision * recall / (precision + recall)


def score(predictions: dict[str, str], questions: list[dict]) -> dict:
    """Official v1.1 EM and F1 (in percent) of `predictions` (id -> text) over `questions`.

    Each question scores its best match over all its gold answers; a question without a
    prediction scores 0 and is counted in `missing`.

        >>> score({"q1": "Denver Broncos"}, [{"id": "q1", "answers": [{"text": "Broncos"}]}])
        {'exact_match': 0.0, 'f1': 66.66666666666666, 'questions': 1, 'missing': 0}
    """
    total_em = total_f1 = 0.0
    missing = 0
    for question in questions:
        if question["id"] not in predictions:
            missing += 1
            continue
        prediction = predictions[question["id"]]
        golds = [answer["text"] for answer in question["answers"]] or [""]
        total_em += max(exact_match(prediction, gold) for gold in golds)
        total_f1 += max(f1(prediction, gold) for gold in golds)
    count = len(questions)
    return {
        "exact_match": 100.0 * total_em / count if count else 0.0,
        "f1": 100.0 * total_f1 / count if count else 0.0,
        "questions": count,
        "missing": missing,
    }


def agreement(predictions_a: dict[str, str], predictions_b: dict[str, str]) -> dict:
    """EM and F1 of one system's answers against another's, over the ids both answered.

        >>> agreement({"q1": "the Broncos", "q2": "1999"}, {"q1": "Broncos", "q2": "in 1999"})
        {'exact_match': 50.0, 'f1': 83.33333333333333, 'questions': 2}
    """
    shared = [key for key in predictions_a if key in predictions_b]
    as_gold = [{"id": key, "answers": [{"text": predictions_b[key]}]} for key in shared]
    result = score(predictions_a, as_gold)
    return {"exact_match": result["exact_match"], "f1": result["f1"], "questions": len(shared)}
