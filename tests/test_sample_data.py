"""The sample data set shipped in the package (`qatune/sample/`), read with plain `json`.

`qatune train` with no data file relies on these files, so they must be found as package
resources, follow the SQuAD v2.0 layout, and have every answer at its stated offset.
"""

from __future__ import annotations

import json
import re
from importlib.resources import files
from typing import Any, Iterator

import pytest

SPLITS = ("train", "dev")


def load(split: str) -> dict[str, Any]:
    """Read one sample file the way an installed qatune finds it."""
    resource = files("qatune") / "sample" / f"{split}.json"
    return json.loads(resource.read_text(encoding="utf-8"))


def paragraphs(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for article in doc["data"]:
        yield from article["paragraphs"]


def questions(doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield (context, qa) for every question in the file."""
    for paragraph in paragraphs(doc):
        for qa in paragraph["qas"]:
            yield paragraph["context"], qa


@pytest.fixture(scope="module")
def docs() -> dict[str, dict[str, Any]]:
    return {split: load(split) for split in SPLITS}


def test_files_are_package_resources() -> None:
    folder = files("qatune") / "sample"
    for name in ("train.json", "dev.json"):
        assert (folder / name).is_file(), f"qatune/sample/{name} is missing"


@pytest.mark.parametrize("split", SPLITS)
def test_layout_is_squad_v2(docs: dict[str, dict[str, Any]], split: str) -> None:
    doc = docs[split]
    assert set(doc) == {"version", "data"}
    assert doc["version"] == "v2.0"
    assert 2 <= len(doc["data"]) <= 3
    for article in doc["data"]:
        assert set(article) == {"title", "paragraphs"}
        assert isinstance(article["title"], str) and article["title"]
        for paragraph in article["paragraphs"]:
            assert set(paragraph) == {"context", "qas"}
            assert isinstance(paragraph["context"], str)
            assert paragraph["qas"], "a paragraph without questions"
            for qa in paragraph["qas"]:
                assert set(qa) == {"id", "question", "answers", "is_impossible"}
                assert qa["is_impossible"] is False
                assert qa["question"].endswith("?")
                assert qa["answers"]
                for answer in qa["answers"]:
                    assert set(answer) == {"text", "answer_start"}
                    assert isinstance(answer["text"], str) and answer["text"]
                    assert type(answer["answer_start"]) is int


@pytest.mark.parametrize("split", SPLITS)
def test_every_answer_is_the_slice_of_its_context(
    docs: dict[str, dict[str, Any]], split: str
) -> None:
    for context, qa in questions(docs[split]):
        for answer in qa["answers"]:
            start, text = answer["answer_start"], answer["text"]
            assert 0 <= start <= len(context) - len(text), qa["id"]
            assert context[start : start + len(text)] == text, qa["id"]


@pytest.mark.parametrize("split", SPLITS)
def test_answers_are_short_spans(docs: dict[str, dict[str, Any]], split: str) -> None:
    for _, qa in questions(docs[split]):
        for answer in qa["answers"]:
            assert answer["text"] == answer["text"].strip(), qa["id"]
            assert len(answer["text"].split()) <= 8, qa["id"]


def test_question_counts(docs: dict[str, dict[str, Any]]) -> None:
    train = list(questions(docs["train"]))
    dev = list(questions(docs["dev"]))
    assert len(train) >= 70
    assert len(dev) >= 24
    for paragraph in paragraphs(docs["train"]):
        assert 7 <= len(paragraph["qas"]) <= 9


def test_ten_contexts_of_which_dev_alone_shows_two(docs: dict[str, dict[str, Any]]) -> None:
    train_contexts = [p["context"] for p in paragraphs(docs["train"])]
    dev_contexts = [p["context"] for p in paragraphs(docs["dev"])]
    assert len(set(train_contexts)) == len(train_contexts) == 8
    assert len(set(dev_contexts)) == len(dev_contexts) == 10
    assert set(train_contexts) < set(dev_contexts)
    unseen = set(dev_contexts) - set(train_contexts)
    assert len(unseen) == 2
    unseen_questions = [qa for context, qa in questions(docs["dev"]) if context in unseen]
    assert len(unseen_questions) >= 8


def test_contexts_are_paragraph_sized(docs: dict[str, dict[str, Any]]) -> None:
    for paragraph in paragraphs(docs["dev"]):
        assert 90 <= len(paragraph["context"].split()) <= 160


def test_articles_agree_between_files(docs: dict[str, dict[str, Any]]) -> None:
    """A context shown in both files sits under the same title in each."""
    def titles(doc: dict[str, Any]) -> dict[str, str]:
        return {p["context"]: a["title"] for a in doc["data"] for p in a["paragraphs"]}

    train_titles, dev_titles = titles(docs["train"]), titles(docs["dev"])
    for context, title in train_titles.items():
        assert dev_titles[context] == title


def test_ids_are_unique_across_both_files(docs: dict[str, dict[str, Any]]) -> None:
    ids = [qa["id"] for split in SPLITS for _, qa in questions(docs[split])]
    assert len(ids) == len(set(ids))
    for split in SPLITS:
        for _, qa in questions(docs[split]):
            assert re.fullmatch(rf"{split}-\d{{3}}", qa["id"]), qa["id"]


def test_dev_questions_are_not_copies_of_training_questions(
    docs: dict[str, dict[str, Any]],
) -> None:
    train_questions = {qa["question"].casefold() for _, qa in questions(docs["train"])}
    for _, qa in questions(docs["dev"]):
        assert qa["question"].casefold() not in train_questions, qa["id"]


def test_some_dev_questions_have_several_gold_answers(
    docs: dict[str, dict[str, Any]],
) -> None:
    several = [qa for _, qa in questions(docs["dev"]) if len(qa["answers"]) > 1]
    assert len(several) >= 3
    for qa in several:
        texts = [answer["text"] for answer in qa["answers"]]
        assert len(texts) == len(set(texts)), qa["id"]
        assert len(texts) <= 3, qa["id"]
    for _, qa in questions(docs["train"]):
        assert len(qa["answers"]) == 1, qa["id"]
