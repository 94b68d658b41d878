"""`qatune annotate`: the JSON API of the annotation app (contract: every endpoint, offsets in code
points, refusals, versions, atomic saves, other layouts, a model's suggestions) and the command.

Most tests run the app in this process through `fastapi.testclient.TestClient(create_app(path))`;
the ones that need a real server (two processes on one file, what the command prints, the
address it binds, the body limit over a socket, paths that try to leave the static folder) run
`python -m qatune annotate` in a subprocess on a free port of 127.0.0.1.

After every refusal the file's bytes are compared with what they were, and the folder is checked
for temporary files. Nothing here asserts a duration: timeouts are generous bounds only.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
from dataclasses import asdict, dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from qatune.annotation import create_app
from qatune.annotation import store as store_module
from qatune.annotation.store import changes_on_reading
from qatune.data import load_examples, read_dataset
from qatune.errors import DataError, QATuneError

from serving_helpers import Server, free_port

DATA = Path(__file__).parent / "data"
SQUAD = DATA / "data_squad_v2.json"
RECORDS = DATA / "data_records.jsonl"
PARAGRAPHS = DATA / "data_paragraphs.json"
NEEDS_REPAIR = DATA / "data_needs_repair.json"
STARTUP_SECONDS = 120  # a bound, never a measure
HTTP_TIMEOUT = 60
JSON_HEADERS = {"Content-Type": "application/json"}
NO_QUESTIONS = "expected at least one usable question"  # what the reader says of a file with none yet


# --- helpers ---------------------------------------------------------------------------------------


def squad_copy(folder: Path, name: str = "data.json", source: Path = SQUAD) -> Path:
    path = folder / name
    shutil.copyfile(source, path)
    return path


def client(path: Path, **options) -> TestClient:
    return TestClient(create_app(path, **options))


def version_of(api: TestClient) -> int:
    response = api.get("/api/data")
    assert response.status_code == 200, response.text
    return response.json()["version"]


def saved(path: Path) -> dict:
    """The file as it is on disk."""
    with path.open(encoding="utf-8") as handle:
        return json.load(handle)


def questions_of(doc_or_data) -> dict[str, dict]:
    """Every question by its id, the id as a string (as qatune reads it, and the API gives it;
    the file keeps an integer id as it was)."""
    data = doc_or_data["data"] if isinstance(doc_or_data, dict) else doc_or_data
    return {
        str(qa["id"]): qa | {"id": str(qa["id"])}
        for article in data for paragraph in article["paragraphs"] for qa in paragraph["qas"]
    }


def contexts_of(doc_or_data) -> dict[str, str]:
    data = doc_or_data["data"] if isinstance(doc_or_data, dict) else doc_or_data
    return {f"{a}/{p}": paragraph["context"] for a, article in enumerate(data) for p, paragraph in enumerate(article["paragraphs"])}


def assert_valid(path: Path) -> None:
    """The file reads back under on_error="strict" with no errors (a file with no questions yet
    has only the reader's "no usable question" complaint), and every answer is at its place."""
    examples, report = read_dataset(path, format="squad", on_error="strict")
    errors = [e for e in report.errors if not (not examples and NO_QUESTIONS in e.message)]
    assert errors == [], errors
    for example in examples:
        for answer in example.answers:
            assert example.context[answer.start : answer.end] == answer.text


def assert_error(response, status: int | tuple[int, ...], *words: str) -> str:
    """A JSON body with a string `detail` (mentioning each of `words`), and the expected status."""
    statuses = status if isinstance(status, tuple) else (status,)
    assert response.status_code in statuses, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert isinstance(body, dict) and isinstance(body.get("detail"), str) and body["detail"], body
    for word in words:
        assert word.lower() in body["detail"].lower(), (word, body["detail"])
    return body["detail"]


def leftovers(folder: Path, *expected: str) -> list[str]:
    """Names in `folder` other than the expected ones (temporary files left behind, stray copies),
    apart from the original a repaired SQuAD file is kept as when opened (`NAME.orig.json`)."""
    kept_originals = {Path(name).stem + ".orig" + Path(name).suffix for name in expected}
    return sorted(p.name for p in folder.iterdir() if p.name not in expected and p.name not in kept_originals)


def add_question(api: TestClient, version: int, paragraph: str, question: str, context: str, *answers: str):
    spans = [{"start": context.index(a), "end": context.index(a) + len(a)} for a in answers]
    response = api.post("/api/questions", json={"paragraph": paragraph, "question": question, "answers": spans, "version": version})
    assert response.status_code == 200, response.text
    return response.json()


# --- 1. every operation --------------------------------------------------------------------------


def test_a_missing_file_is_created_as_empty_squad_v2(tmp_path):
    path = tmp_path / "new.json"
    api = client(path)
    assert saved(path) == {"version": "v2.0", "data": []}
    body = api.get("/api/data").json()
    assert isinstance(body["version"], int)
    assert body["data"] == [] and body["file"] == "new.json"
    assert body["counts"] == {"articles": 0, "paragraphs": 0, "questions": 0, "answers": 0, "unanswerable": 0}
    assert body["report"]["layout"] == "squad" and isinstance(body["report"]["line"], str)
    assert body["model"] is None and body["can_undo"] is False and body["undo"] is None
    assert leftovers(tmp_path, "new.json") == []


def test_a_file_with_no_questions_yet_opens_again(tmp_path):
    """What `qatune annotate new.json` created (and a paragraph added to it) opens again after a restart."""
    path = tmp_path / "new.json"
    api = client(path)
    response = api.post("/api/paragraphs", json={"title": "T", "context": "Paris is in France.", "version": version_of(api)})
    assert response.status_code == 200, response.text
    again = client(path)
    assert again.get("/api/data").json()["data"][0]["paragraphs"][0]["context"] == "Paris is in France."


def test_a_new_file_in_a_missing_folder_is_an_error_not_a_crash(tmp_path):
    with pytest.raises(QATuneError, match="does not exist"):
        create_app(tmp_path / "no such folder" / "new.json")


def test_a_folder_given_as_the_data_file_is_an_error_that_says_what_to_pass(tmp_path):
    with pytest.raises(QATuneError, match="found a folder; pass the JSON file inside it"):
        create_app(tmp_path)


def test_paragraphs_same_title_appends_new_title_makes_an_article(tmp_path):
    path = tmp_path / "new.json"
    api = client(path)
    version = version_of(api)
    added = []
    for title, context in [("Alpha", "First alpha text."), ("Beta", "First beta text."), ("Alpha", "Second alpha text."),
                           ("", "A text with no title."), ("Beta", "Second beta text."), ("", "Another untitled text.")]:
        response = api.post("/api/paragraphs", json={"title": title, "context": context, "version": version})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["version"] != version
        version = body["version"]
        added.append(body["paragraph"])
    assert added == ["0/0", "1/0", "0/1", "2/0", "1/1", "2/1"]
    doc = saved(path)
    assert [(article["title"], [p["context"] for p in article["paragraphs"]]) for article in doc["data"]] == [
        ("Alpha", ["First alpha text.", "Second alpha text."]),
        ("Beta", ["First beta text.", "Second beta text."]),
        ("", ["A text with no title.", "Another untitled text."]),
    ]
    assert all(p["qas"] == [] for article in doc["data"] for p in article["paragraphs"])
    body = api.get("/api/data").json()
    assert body["version"] == version and body["data"] == doc["data"]
    assert body["counts"] == {"articles": 3, "paragraphs": 6, "questions": 0, "answers": 0, "unanswerable": 0}
    assert_valid(path)


def test_questions_with_answers_and_unanswerable(tmp_path):
    path = tmp_path / "new.json"
    api = client(path)
    context = "Marie Curie was born in Warsaw in 1867. She moved to Paris in 1891."
    response = api.post("/api/paragraphs", json={"title": "Curie", "context": context, "version": version_of(api)})
    paragraph, version = response.json()["paragraph"], response.json()["version"]
    answered = add_question(api, version, paragraph, "Where was she born?", context, "Warsaw", "in Warsaw")
    unanswerable = add_question(api, answered["version"], paragraph, "Where did she die?", context)
    assert isinstance(answered["id"], str) and isinstance(unanswerable["id"], str) and answered["id"] != unanswerable["id"]
    qas = questions_of(saved(path))
    assert qas[answered["id"]] == {
        "id": answered["id"], "question": "Where was she born?", "is_impossible": False,
        "answers": [{"text": "Warsaw", "answer_start": 24}, {"text": "in Warsaw", "answer_start": 21}],
    }
    assert qas[unanswerable["id"]] == {"id": unanswerable["id"], "question": "Where did she die?", "answers": [], "is_impossible": True}
    body = api.get("/api/data").json()
    assert body["version"] == unanswerable["version"]
    assert body["counts"] == {"articles": 1, "paragraphs": 1, "questions": 2, "answers": 2, "unanswerable": 1}
    assert body["can_undo"] is True and "Where did she die?" in body["undo"]
    assert_valid(path)
    examples = {e.id: e for e in load_examples(path, on_error="strict")}
    assert examples[unanswerable["id"]].unanswerable and not examples[answered["id"]].unanswerable


def test_edit_a_question(tmp_path):
    path = squad_copy(tmp_path)
    doc = saved(path)
    doc["data"][0]["paragraphs"][0]["qas"][0]["note"] = "checked by a person"  # a field qatune does not know
    path.write_text(json.dumps(doc, ensure_ascii=False, indent=1), encoding="utf-8")
    api = client(path)
    context = contexts_of(doc)["0/0"]
    start = context.index("Broncos")
    response = api.put("/api/questions", params={"id": "sb1"}, json={
        "question": "Which team won?", "answers": [{"start": start, "end": start + 7}], "version": version_of(api)})
    assert response.status_code == 200, response.text
    assert response.json()["id"] == "sb1"
    qa = questions_of(saved(path))["sb1"]
    assert qa == {"id": "sb1", "question": "Which team won?", "answers": [{"text": "Broncos", "answer_start": start}],
                  "is_impossible": False, "note": "checked by a person"}
    # answerable -> unanswerable -> answerable
    response = api.put("/api/questions", params={"id": "sb1"}, json={"question": "Which team won?", "answers": [], "version": response.json()["version"]})
    assert response.status_code == 200, response.text
    assert questions_of(saved(path))["sb1"]["answers"] == [] and questions_of(saved(path))["sb1"]["is_impossible"] is True
    response = api.put("/api/questions", params={"id": "sb3"}, json={
        "question": "Which team won Super Bowl 50?", "answers": [{"start": 177, "end": 191}], "version": response.json()["version"]})
    assert response.status_code == 200, response.text
    sb3 = questions_of(saved(path))["sb3"]
    assert sb3["answers"] == [{"text": "Denver Broncos", "answer_start": 177}] and sb3["is_impossible"] is False
    # the other questions are as they were
    before, after = questions_of(doc), questions_of(saved(path))
    assert {k: v for k, v in after.items() if k not in ("sb1", "sb3")} == {k: v for k, v in before.items() if k not in ("sb1", "sb3")}
    counts = api.get("/api/data").json()["counts"]
    assert counts == {"articles": 2, "paragraphs": 3, "questions": 6, "answers": 7, "unanswerable": 2}
    assert_valid(path)


def test_a_question_edit_changes_only_what_it_asks_for(tmp_path):
    """Answers kept stay as they were (one per annotator, with their fields), so do the id's type,
    plausible answers, and the absence of "is_impossible" in a question that had none."""
    path = squad_copy(tmp_path)
    doc = saved(path)
    sb2 = doc["data"][0]["paragraphs"][0]["qas"][1]
    for answer, annotator in zip(sb2["answers"], ["a1", "a2", "a3"]):
        answer["annotator"] = annotator  # two of them on one span: the duplicates of a SQuAD dev file
    path.write_text(json.dumps(doc, ensure_ascii=False, indent=1), encoding="utf-8")
    api = client(path)
    version = version_of(api)

    def put(question_id, question, spans):
        nonlocal version
        body = {"question": question, "answers": [{"start": s, "end": e} for s, e in spans], "version": version}
        response = api.put("/api/questions", params={"id": question_id}, json=body)
        assert response.status_code == 200, response.text
        version = response.json()["version"]
        return questions_of(saved(path))[question_id]

    answers = sb2["answers"]
    spans = [(a["answer_start"], a["answer_start"] + len(a["text"])) for a in answers]
    # the text alone, answers sent back as they were (what the page's Edit > Save does)
    assert put("sb2", "Who played for the NFC?", spans) == sb2 | {"question": "Who played for the NFC?"}
    # one answer removed (the page's x): only that entry goes
    assert put("sb2", "Who played for the NFC?", spans[:2])["answers"] == answers[:2]
    # one added: appended, the others as they were
    assert put("sb2", "Who played for the NFC?", spans[:2] + [(249, 257)])["answers"] == answers[:2] + [
        {"text": "Carolina", "answer_start": 249}]
    # an unanswerable question keeps its plausible answers
    sb3 = questions_of(doc)["sb3"]
    assert put("sb3", "Which team won Super Bowl 52?", []) == sb3 | {"question": "Which team won Super Bowl 52?"}
    # an integer id stays an integer, and a question without "is_impossible" is not given one
    edited = put("7", "When was the algorithm published?", [(96, 100)])
    assert edited == questions_of(doc)["7"] | {"question": "When was the algorithm published?"}
    raw = saved(path)["data"][1]["paragraphs"][0]["qas"][0]
    assert raw["id"] == 7 and "is_impossible" not in raw
    assert_valid(path)


def test_a_question_edit_in_a_squad_v1_file_adds_no_is_impossible(tmp_path):
    path = squad_copy(tmp_path)
    doc = saved(path)
    v1 = {"version": "1.1", "data": [{"title": "T", "paragraphs": [
        {"context": p["context"], "qas": [{k: v for k, v in qa.items() if k not in ("is_impossible", "plausible_answers")} for qa in p["qas"]]}
        for article in doc["data"] for p in article["paragraphs"]]}]}
    path.write_text(json.dumps(v1, ensure_ascii=False), encoding="utf-8")
    api = client(path)
    response = api.put("/api/questions", params={"id": "sb1"}, json={"question": "Who won?", "answers": [], "version": version_of(api)})
    assert response.status_code == 200, response.text
    assert questions_of(saved(path))["sb1"] == {"id": "sb1", "question": "Who won?", "answers": []}
    response = api.put("/api/questions", params={"id": "sb1"}, json={
        "question": "Who won?", "answers": [{"start": 177, "end": 191}], "version": response.json()["version"]})
    assert response.status_code == 200, response.text
    assert questions_of(saved(path))["sb1"] == {"id": "sb1", "question": "Who won?", "answers": [{"text": "Denver Broncos", "answer_start": 177}]}
    # nor is a question added to it
    response = api.post("/api/questions", json={
        "paragraph": "0/0", "question": "Who lost?", "answers": [], "version": response.json()["version"]})
    assert response.status_code == 200, response.text
    assert questions_of(saved(path))[response.json()["id"]] == {"id": response.json()["id"], "question": "Who lost?", "answers": []}
    assert_valid(path)


@pytest.mark.parametrize("odd_id", ["doc1/q1", ".", "..", "50%", "a?b&c=d", "#1"])
def test_any_id_the_file_can_hold_can_be_edited_and_deleted(tmp_path, odd_id):
    path = squad_copy(tmp_path)
    doc = saved(path)
    doc["data"][0]["paragraphs"][0]["qas"][0]["id"] = odd_id  # sb1's question under another id
    path.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    api = client(path)
    edited = api.put("/api/questions", params={"id": odd_id}, json={
        "question": "Which team won?", "answers": [], "version": version_of(api)})
    assert edited.status_code == 200, edited.text
    assert edited.json()["id"] == odd_id and questions_of(saved(path))[odd_id]["question"] == "Which team won?"
    deleted = api.delete("/api/questions", params={"id": odd_id, "version": edited.json()["version"]})
    assert deleted.status_code == 200, deleted.text
    assert odd_id not in questions_of(saved(path))


def test_delete_a_question(tmp_path):
    path = squad_copy(tmp_path)
    api = client(path)
    response = api.delete("/api/questions", params={"id": "sb4", "version": version_of(api)})
    assert response.status_code == 200, response.text
    assert response.json()["version"] == version_of(api)
    assert "sb4" not in questions_of(saved(path)) and len(questions_of(saved(path))) == 5
    assert saved(path)["data"][0]["paragraphs"][1]["qas"] == []  # the paragraph stays
    assert api.get("/api/data").json()["counts"] == {"articles": 2, "paragraphs": 3, "questions": 5, "answers": 5, "unanswerable": 2}
    # an integer id in the file is named by its text
    response = api.delete("/api/questions", params={"id": "7", "version": response.json()["version"]})
    assert response.status_code == 200, response.text
    assert set(questions_of(saved(path))) == {"sb1", "sb2", "sb3", "al2"}
    assert_valid(path)


def test_undo_reverts_delete_edit_add_in_order(tmp_path):
    path = squad_copy(tmp_path)
    api = client(path)
    original = api.get("/api/data").json()
    assert original["can_undo"] is False and original["undo"] is None
    context = contexts_of(original["data"])["1/0"]
    states = [saved(path)]
    added = add_question(api, original["version"], "1/0", "What did Ada write?", context, "the first published algorithm")
    states.append(saved(path))
    start = context.index("Analytical Engine")
    edited = api.put("/api/questions", params={"id": "al2"}, json={"question": "Who designed the Analytical Engine?",
                                                 "answers": [{"start": start, "end": start + 17}], "version": added["version"]})
    assert edited.status_code == 200, edited.text
    states.append(saved(path))
    deleted = api.delete("/api/questions", params={"id": "sb1", "version": edited.json()["version"]})
    assert deleted.status_code == 200, deleted.text
    version = deleted.json()["version"]
    # states: before the add, before the edit, before the delete; undone last change first
    for words, state in [(("delete", "sb1"), states[2]), (("edit", "al2"), states[1]), (("add", "What did Ada write?"), states[0])]:
        view = api.get("/api/data").json()
        assert view["can_undo"] is True and all(w in view["undo"] for w in words), view["undo"]
        response = api.post("/api/undo", json={"version": version})
        assert response.status_code == 200, response.text
        assert all(w in response.json()["undone"] for w in words), response.json()
        version = response.json()["version"]
        assert saved(path) == state
        assert questions_of(api.get("/api/data").json()) == questions_of(state)
        assert_valid(path)
    assert api.get("/api/data").json()["can_undo"] is False
    before = path.read_bytes()
    assert_error(api.post("/api/undo", json={"version": version}), 422, "nothing to undo")
    assert path.read_bytes() == before


def test_undo_keeps_what_each_change_touched_not_the_whole_file(tmp_path):
    import gc
    import tracemalloc

    path = tmp_path / "data.json"
    paragraphs = [{"context": f"Paragraph {p} was written in {1900 + p % 100}.", "qas": [
        {"id": f"q{p}-{q}", "question": f"When was paragraph {p} written ({q})?", "is_impossible": False,
         "answers": [{"text": str(1900 + p % 100), "answer_start": len(f"Paragraph {p} was written in "), "annotator": a}
                     for a in ("a1", "a2")]} for q in range(4)]} for p in range(500)]
    path.write_text(json.dumps({"version": "v2.0", "data": [{"title": "T", "paragraphs": paragraphs}]}), encoding="utf-8")
    store = store_module.AnnotationStore(path)
    original = saved(path)
    _, version = store.update_question(store.version, "q9-0", "Which year?", [])  # what a first change imports
    tracemalloc.start()
    try:
        gc.collect()
        start = tracemalloc.get_traced_memory()[0]
        for p in range(5):
            _, version = store.update_question(version, f"q{p}-0", f"Which year ({p})?", [])
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - start
    finally:
        tracemalloc.stop()
    assert grown < 200_000, grown  # a copy of the whole data is several MB
    for _ in range(6):
        _, version = store.undo(version)
    assert saved(path) == original and store.doc == original


def test_undo_with_a_stale_version_is_a_conflict(tmp_path):
    path = squad_copy(tmp_path)
    api = client(path)
    first = version_of(api)
    response = api.delete("/api/questions", params={"id": "sb1", "version": first})
    before = path.read_bytes()
    assert_error(api.post("/api/undo", json={"version": first}), 409, "reload")
    assert path.read_bytes() == before
    assert api.post("/api/undo", json={"version": response.json()["version"]}).status_code == 200


def test_editing_a_paragraph_moves_its_answers_with_their_text(tmp_path):
    path = squad_copy(tmp_path)
    api = client(path)
    doc = saved(path)
    old = contexts_of(doc)["0/0"]
    new = "In 2016, " + old.replace("American football game", "American-football game played")
    response = api.put("/api/paragraphs/0/0", json={"context": new, "version": version_of(api)})
    assert response.status_code == 200, response.text
    moved = response.json()["moved"]
    expected = []
    for qa in doc["data"][0]["paragraphs"][0]["qas"]:
        for answer in qa["answers"]:
            start, text = answer["answer_start"], answer["text"]
            to = new.index(text, start)  # each answer lies after the edits: shifted by what was inserted before it
            assert to == start + len(new) - len(old)
            expected.append({"id": qa["id"], "from": [start, start + len(text)], "to": [to, to + len(text)], "text": text})
    assert moved == expected
    after = saved(path)
    assert contexts_of(after)["0/0"] == new
    for qa in after["data"][0]["paragraphs"][0]["qas"]:
        for answer in qa["answers"]:
            assert new[answer["answer_start"] : answer["answer_start"] + len(answer["text"])] == answer["text"]
    # other paragraphs are untouched
    assert after["data"][0]["paragraphs"][1] == doc["data"][0]["paragraphs"][1] and after["data"][1] == doc["data"][1]
    assert_valid(path)
    # the text around an answer rewritten: the answer is found where its text now is
    rewritten = "Levi's Stadium, in Santa Clara, California, hosted the game on February 7, 2016."
    response = api.put("/api/paragraphs/0/1", json={"context": rewritten, "version": response.json()["version"]})
    assert response.status_code == 200, response.text
    assert response.json()["moved"] == [
        {"id": "sb4", "from": [44, 58], "to": [0, 14], "text": "Levi's Stadium"},
        {"id": "sb4", "from": [92, 115], "to": [19, 42], "text": "Santa Clara, California"},
    ]
    assert [(a["text"], a["answer_start"]) for a in questions_of(saved(path))["sb4"]["answers"]] == [
        ("Levi's Stadium", 0), ("Santa Clara, California", 19)]
    # an edit that moves nothing
    response = api.put("/api/paragraphs/0/1", json={"context": rewritten + " More text.", "version": response.json()["version"]})
    assert response.status_code == 200 and response.json()["moved"] == []
    assert_valid(path)


def test_a_paragraph_edit_that_loses_an_answer_is_refused(tmp_path):
    path = squad_copy(tmp_path)
    api = client(path)
    view = api.get("/api/data").json()
    before = path.read_bytes()
    old = contexts_of(view["data"])["0/0"]
    detail = assert_error(
        api.put("/api/paragraphs/0/0", json={"context": old.replace("Denver Broncos", "Broncos"), "version": view["version"]}),
        422, "sb1",
    )
    assert "Denver Broncos" in detail
    assert path.read_bytes() == before
    assert api.get("/api/data").json() == view
    assert leftovers(tmp_path, "data.json") == []


def test_a_paragraph_edit_that_loses_answers_of_two_questions_names_both(tmp_path):
    path = squad_copy(tmp_path)
    api = client(path)
    view = api.get("/api/data").json()
    before = path.read_bytes()
    new = contexts_of(view["data"])["0/0"].replace("Denver Broncos", "Broncos").replace("Carolina Panthers", "Carolina")
    detail = assert_error(api.put("/api/paragraphs/0/0", json={"context": new, "version": view["version"]}), 422, "sb1")
    assert path.read_bytes() == before and api.get("/api/data").json() == view
    assert "sb2" in detail, detail


def test_a_paragraph_edit_moves_plausible_answers_too_and_is_refused_when_one_is_gone(tmp_path):
    path = squad_copy(tmp_path)
    api = client(path)
    view = api.get("/api/data").json()
    old = contexts_of(view["data"])["0/0"]
    before = path.read_bytes()
    # sb3 is unanswerable; its plausible answer is "Denver Broncos", as is sb1's answer
    detail = assert_error(api.put("/api/paragraphs/0/0", json={
        "context": old.replace("Denver Broncos", "Broncos"), "version": view["version"]}), 422, "sb1", "sb3", "plausible")
    assert path.read_bytes() == before
    new = "Played in 2016. " + old
    response = api.put("/api/paragraphs/0/0", json={"context": new, "version": view["version"]})
    assert response.status_code == 200, response.text
    assert questions_of(saved(path))["sb3"]["plausible_answers"] == [{"text": "Denver Broncos", "answer_start": new.index("Denver Broncos")}]
    assert_valid(path)


def test_export_jsonl_in_the_hugging_face_layout(tmp_path):
    path = squad_copy(tmp_path)
    api = client(path)
    context = contexts_of(saved(path))["0/1"]
    add_question(api, version_of(api), "0/1", "When was the game played?", context, "February 7, 2016")
    response = api.get("/api/export.jsonl")
    assert response.status_code == 200
    assert response.headers["content-disposition"] == "attachment; filename=\"data.jsonl\"; filename*=UTF-8''data.jsonl"
    assert response.headers["content-type"].startswith("application/x-ndjson")
    lines = response.content.decode("utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    doc = saved(path)
    titles = {str(qa["id"]): article["title"] for article in doc["data"] for p in article["paragraphs"] for qa in p["qas"]}
    assert len(records) == len(questions_of(doc)) == 7
    for record in records:
        assert set(record) == {"id", "title", "context", "question", "answers"}
        assert set(record["answers"]) == {"text", "answer_start"}
        assert len(record["answers"]["text"]) == len(record["answers"]["answer_start"])
        assert record["title"] == titles[str(record["id"])]
        for text, start in zip(record["answers"]["text"], record["answers"]["answer_start"]):
            assert record["context"][start : start + len(text)] == text
    exported = tmp_path / "export.jsonl"
    exported.write_bytes(response.content)
    key = lambda e: (e.id, e.question, e.context, e.answers, e.unanswerable, e.title)  # noqa: E731
    assert [key(e) for e in load_examples(exported, format="records", on_error="strict")] == [
        key(e) for e in load_examples(path, on_error="strict")]


def test_question_ids_are_strings_in_the_api_and_the_export(tmp_path):
    """tests/data/data_squad_v2.json has the integer id 7 (qatune's reader makes it "7")."""
    path = squad_copy(tmp_path)
    api = client(path)
    data = api.get("/api/data").json()["data"]
    data_ids = [qa["id"] for article in data for paragraph in article["paragraphs"] for qa in paragraph["qas"]]
    export_ids = [json.loads(line)["id"] for line in api.get("/api/export.jsonl").text.splitlines()]
    assert "7" in data_ids and all(isinstance(i, str) for i in data_ids + export_ids), (data_ids, export_ids)


def test_counts_follow_the_data(tmp_path):
    path = squad_copy(tmp_path)
    api = client(path)
    counts = api.get("/api/data").json()["counts"]
    assert counts == {"articles": 2, "paragraphs": 3, "questions": 6, "answers": 7, "unanswerable": 2}
    version = api.post("/api/paragraphs", json={"title": "New", "context": "Some new text.", "version": version_of(api)}).json()["version"]
    version = add_question(api, version, "2/0", "What is new?", "Some new text.", "text")["version"]
    version = add_question(api, version, "2/0", "What is old?", "Some new text.")["version"]
    api.delete("/api/questions", params={"id": "sb2", "version": version})
    view = api.get("/api/data").json()
    qas = list(questions_of(view["data"]).values())
    assert view["counts"] == {
        "articles": len(view["data"]), "paragraphs": sum(len(a["paragraphs"]) for a in view["data"]),
        "questions": len(qas), "answers": sum(len(q["answers"]) for q in qas),
        "unanswerable": sum(1 for q in qas if not q["answers"]),
    } == {"articles": 3, "paragraphs": 4, "questions": 7, "answers": 5, "unanswerable": 3}


# --- 2. offsets to the character --------------------------------------------------------------


OFFSET_CASES = {
    "emoji": ("Fans 😀 cheered 🎉 when the 🏈 team won the final in Denver.", ["Denver", "🎉", "🏈 team"]),
    "zwj and flags": ("The 👨‍👩‍👧‍👦 family from 🇩🇪 and 🏳️‍🌈 fans met 👩🏽‍💻 coders in Berlin.", ["Berlin", "👨‍👩‍👧‍👦 family", "👩🏽‍💻 coders"]),
    "cjk": ("東京は日本の首都です。人口は約1400万人で、𠮷野家もある。", ["1400万人", "東京", "𠮷野家"]),
    "combining marks": ("The cafe\u0301 sells cre\u0300me bru\u0302le\u0301e to Zoe\u0308 daily.", ["cre\u0300me bru\u0302le\u0301e", "Zoe\u0308"]),
    "crlf": ("Line one.\r\nLine two holds the answer.\r\n\r\nLine four: 42.\r\n", ["answer", "42", "two holds the answer.\r\n\r\nLine"]),
    "tabs": ("name\tvalue\tunit\r\nheight\t8848\tmetres\n", ["8848", "metres", "value\tunit"]),
}


@pytest.mark.parametrize("case", list(OFFSET_CASES), ids=list(OFFSET_CASES))
def test_offsets_are_code_points_in_the_saved_file(tmp_path, case):
    context, answers = OFFSET_CASES[case]
    path = tmp_path / "new.json"
    api = client(path)
    response = api.post("/api/paragraphs", json={"title": case, "context": context, "version": version_of(api)})
    assert response.status_code == 200, response.text
    version, ids = response.json()["version"], {}
    for answer in answers:
        body = add_question(api, version, "0/0", f"Where is {answer}?", context, answer)
        ids[body["id"]], version = answer, body["version"]
    added = add_question(api, version, "0/0", "All of them?", context, *answers)
    doc = saved(path)
    assert doc["data"][0]["paragraphs"][0]["context"] == context  # as sent: no normalization, \r\n kept
    qas = questions_of(doc)
    for question_id, answer in ids.items():
        (stored,) = qas[question_id]["answers"]
        assert stored == {"text": answer, "answer_start": context.index(answer)}
        assert context[stored["answer_start"] : stored["answer_start"] + len(stored["text"])] == answer
    assert [(a["text"], a["answer_start"]) for a in qas[added["id"]]["answers"]] == [(a, context.index(a)) for a in answers]
    examples, report = read_dataset(path, on_error="strict")
    assert report.errors == [] and report.repaired == {"whitespace": 0, "reanchored": 0}
    assert {e.id: [(a.text, a.start) for a in e.answers] for e in examples} == {
        qa["id"]: [(a["text"], a["answer_start"]) for a in qa["answers"]] for qa in qas.values()}
    assert api.get("/api/data").json()["data"] == doc["data"]
    # a prefix of characters outside the BMP moves every answer by its length in code points
    prefix = "🇫🇷👨‍👩‍👧 "
    response = api.put("/api/paragraphs/0/0", json={"context": prefix + context, "version": added["version"]})
    assert response.status_code == 200, response.text
    assert all(m["to"] == [m["from"][0] + len(prefix), m["from"][1] + len(prefix)] for m in response.json()["moved"])
    for qa in questions_of(saved(path)).values():
        for a in qa["answers"]:
            assert (prefix + context)[a["answer_start"] : a["answer_start"] + len(a["text"])] == a["text"]
    assert_valid(path)


def test_qatune_validate_accepts_the_saved_file(tmp_path):
    path = tmp_path / "new.json"
    api = client(path)
    context = "Ünïcode 😀 text\r\nwith\ttabs, 東京 and cafe\u0301 🇩🇪 here."
    version = api.post("/api/paragraphs", json={"title": "t", "context": context, "version": version_of(api)}).json()["version"]
    for answer in ["here", "東京", "cafe\u0301 🇩🇪"]:
        version = add_question(api, version, "0/0", f"{answer}?", context, answer)["version"]
    result = subprocess.run([sys.executable, "-m", "qatune", "validate", str(path), "--on-error", "strict"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 questions ready to use" in result.stdout


# --- 3. bad input -----------------------------------------------------------------------------------

CONTEXT_00 = json.loads(SQUAD.read_text(encoding="utf-8"))["data"][0]["paragraphs"][0]["context"]
SPACE = CONTEXT_00.index(" ")
NEW_Q = "/api/questions"


def _question(v, **changes):
    return {"paragraph": "0/0", "question": "Who won?", "answers": [{"start": 177, "end": 191}], "version": v, **changes}


def _edit(v, **changes):
    return {"question": "Who won?", "answers": [{"start": 177, "end": 191}], "version": v, **changes}


def _without(body, key):
    return {k: value for k, value in body.items() if k != key}


BAD = [
    # (name, method, url, body for version v (or raw bytes), status, words in the detail)
    ("end past the context", "POST", NEW_Q, lambda v: _question(v, answers=[{"start": 300, "end": len(CONTEXT_00) + 1}]), 422, ["answers[0]"]),
    ("start past the context", "POST", NEW_Q, lambda v: _question(v, answers=[{"start": len(CONTEXT_00), "end": len(CONTEXT_00) + 2}]), 422, ["answers[0]"]),
    ("negative start", "POST", NEW_Q, lambda v: _question(v, answers=[{"start": -1, "end": 3}]), 422, ["answers[0].start"]),
    ("empty span", "POST", NEW_Q, lambda v: _question(v, answers=[{"start": 10, "end": 10}]), 422, ["answers[0]"]),
    ("zero end", "POST", NEW_Q, lambda v: _question(v, answers=[{"start": 0, "end": 0}]), 422, ["answers[0].end"]),
    ("whitespace span", "POST", NEW_Q, lambda v: _question(v, answers=[{"start": SPACE, "end": SPACE + 1}]), 422, ["answers[0]", "whitespace"]),
    ("second answer bad", "POST", NEW_Q, lambda v: _question(v, answers=[{"start": 177, "end": 191}, {"start": 20, "end": 5}]), 422, ["answers[1]"]),
    ("start after end", "POST", NEW_Q, lambda v: _question(v, answers=[{"start": 191, "end": 177}]), 422, ["answers[0]"]),
    ("start a string", "POST", NEW_Q, lambda v: _question(v, answers=[{"start": "177", "end": 191}]), 422, ["answers[0].start"]),
    ("start a float", "POST", NEW_Q, lambda v: _question(v, answers=[{"start": 177.0, "end": 191}]), 422, ["answers[0].start"]),
    ("start a bool", "POST", NEW_Q, lambda v: _question(v, answers=[{"start": True, "end": 191}]), 422, ["answers[0].start"]),
    ("answers not a list", "POST", NEW_Q, lambda v: _question(v, answers="Denver Broncos"), 422, ["answers"]),
    ("answer as text", "POST", NEW_Q, lambda v: _question(v, answers=[{"text": "Denver Broncos", "answer_start": 177}]), 422, ["answers[0]"]),
    ("question a number", "POST", NEW_Q, lambda v: _question(v, question=5), 422, ["question"]),
    ("paragraph a number", "POST", NEW_Q, lambda v: _question(v, paragraph=0), 422, ["paragraph"]),
    ("version a string", "POST", NEW_Q, lambda v: _question(str(v)), 422, ["version"]),
    ("missing question", "POST", NEW_Q, lambda v: _without(_question(v), "question"), 422, ["question"]),
    ("missing paragraph", "POST", NEW_Q, lambda v: _without(_question(v), "paragraph"), 422, ["paragraph"]),
    ("missing version", "POST", NEW_Q, lambda v: _without(_question(v), "version"), 422, ["version"]),
    ("missing end", "POST", NEW_Q, lambda v: _question(v, answers=[{"start": 177}]), 422, ["answers[0].end"]),
    ("extra field", "POST", NEW_Q, lambda v: _question(v, path="/etc/passwd"), 422, ["path"]),
    ("extra answer field", "POST", NEW_Q, lambda v: _question(v, answers=[{"start": 177, "end": 191, "text": "x"}]), 422, ["answers[0].text"]),
    ("unknown paragraph", "POST", NEW_Q, lambda v: _question(v, paragraph="9/9"), 404, ["9/9"]),
    ("unknown paragraph in article", "POST", NEW_Q, lambda v: _question(v, paragraph="0/7"), 404, ["0/7"]),
    ("negative paragraph", "POST", NEW_Q, lambda v: _question(v, paragraph="-1/0"), 404, ["-1/0"]),
    ("malformed paragraph", "POST", NEW_Q, lambda v: _question(v, paragraph="first"), 404, ["first"]),
    ("empty question", "POST", NEW_Q, lambda v: _question(v, question=""), 422, ["question"]),
    ("blank question", "POST", NEW_Q, lambda v: _question(v, question=" \t\n "), 422, ["question"]),
    ("zero-width question", "POST", NEW_Q, lambda v: _question(v, question="\u200b\u0301"), 422, ["question", "no visible character"]),
    ("lone surrogate in question", "POST", NEW_Q,
     lambda v: b'{"paragraph": "0/0", "question": "Who \\ud800 won?", "answers": [], "version": %d}' % v, 422, ["question"]),
    ("not json", "POST", NEW_Q, lambda v: b'{"paragraph": "0/0", "question": ', (400, 422), []),
    ("edit: missing answers", "PUT", "/api/questions?id=sb1", lambda v: _without(_edit(v), "answers"), 422, ["answers"]),
    ("edit: missing question", "PUT", "/api/questions?id=sb1", lambda v: _without(_edit(v), "question"), 422, ["question"]),
    ("edit: extra field", "PUT", "/api/questions?id=sb1", lambda v: _edit(v, id="sb2"), 422, ["id"]),
    ("edit: span out of range", "PUT", "/api/questions?id=sb1", lambda v: _edit(v, answers=[{"start": 0, "end": 10_000}]), 422, ["answers[0]"]),
    ("edit: whitespace span", "PUT", "/api/questions?id=sb1", lambda v: _edit(v, answers=[{"start": SPACE, "end": SPACE + 1}]), 422, ["whitespace"]),
    ("edit: blank question", "PUT", "/api/questions?id=sb1", lambda v: _edit(v, question="   "), 422, ["question"]),
    ("edit: lone surrogate", "PUT", "/api/questions?id=sb1",
     lambda v: b'{"question": "\\udfff", "answers": [], "version": %d}' % v, 422, ["question"]),
    ("edit: unknown question", "PUT", "/api/questions?id=nope", lambda v: _edit(v), 404, ["nope"]),
    ("delete: unknown question", "DELETE", "/api/questions?id=nope&version={v}", None, 404, ["nope"]),
    ("delete: no version", "DELETE", "/api/questions?id=sb1", None, 422, ["version"]),
    ("delete: version not a number", "DELETE", "/api/questions?id=sb1&version=latest", None, 422, ["version"]),
    ("paragraph: empty context", "POST", "/api/paragraphs", lambda v: {"title": "T", "context": "", "version": v}, 422, ["context"]),
    ("paragraph: blank context", "POST", "/api/paragraphs", lambda v: {"title": "T", "context": " \r\n\t", "version": v}, 422, ["context"]),
    ("paragraph: missing context", "POST", "/api/paragraphs", lambda v: {"title": "T", "version": v}, 422, ["context"]),
    ("paragraph: title a list", "POST", "/api/paragraphs", lambda v: {"title": ["T"], "context": "Text.", "version": v}, 422, ["title"]),
    ("paragraph: extra field", "POST", "/api/paragraphs", lambda v: {"context": "Text.", "version": v, "file": "other.json"}, 422, ["file"]),
    ("paragraph: lone surrogate in context", "POST", "/api/paragraphs",
     lambda v: b'{"title": "T", "context": "Text \\ud800.", "version": %d}' % v, 422, ["context"]),
    ("paragraph: lone surrogate in title", "POST", "/api/paragraphs",
     lambda v: b'{"title": "\\udc80", "context": "Text.", "version": %d}' % v, 422, ["title"]),
    ("edit paragraph: unknown article", "PUT", "/api/paragraphs/5/0", lambda v: {"context": "Text.", "version": v}, 404, ["5/0"]),
    ("edit paragraph: unknown paragraph", "PUT", "/api/paragraphs/0/2", lambda v: {"context": "Text.", "version": v}, 404, ["0/2"]),
    ("edit paragraph: not numbers", "PUT", "/api/paragraphs/a/b", lambda v: {"context": "Text.", "version": v}, 422, ["article"]),
    ("edit paragraph: empty context", "PUT", "/api/paragraphs/0/1", lambda v: {"context": "", "version": v}, 422, ["context"]),
    ("edit paragraph: blank context", "PUT", "/api/paragraphs/0/1", lambda v: {"context": "  ", "version": v}, 422, ["context"]),
    ("edit paragraph: missing version", "PUT", "/api/paragraphs/0/1", lambda v: {"context": "x"}, 422, ["version"]),
    ("undo: extra field", "POST", "/api/undo", lambda v: {"version": v, "steps": 2}, 422, ["steps"]),
    ("undo: nothing to undo", "POST", "/api/undo", lambda v: {"version": v}, 422, ["nothing to undo"]),
]


@pytest.fixture
def bad_input_app(tmp_path):
    """A fresh app for each refusal (a refused edit can spoil the app's copy of the data: see
    test_a_refused_question_edit_leaves_the_question_as_it_was)."""
    path = squad_copy(tmp_path)
    return path, client(path)


@pytest.mark.parametrize("name, method, url, body, status, words", BAD, ids=[case[0] for case in BAD])
def test_bad_input_is_refused_and_nothing_is_written(bad_input_app, name, method, url, body, status, words):
    path, api = bad_input_app
    version = version_of(api)
    before = path.read_bytes()
    value = body(version) if body else None
    if isinstance(value, bytes):
        response = api.request(method, url, content=value, headers=JSON_HEADERS)
    else:
        response = api.request(method, url.format(v=version), json=value)
    assert_error(response, status, *words)
    assert path.read_bytes() == before
    assert version_of(api) == version
    assert leftovers(path.parent, "data.json") == []


def test_a_refused_question_edit_leaves_the_question_as_it_was(tmp_path):
    path = squad_copy(tmp_path)
    api = client(path)
    view = api.get("/api/data").json()
    before = path.read_bytes()
    response = api.put("/api/questions", params={"id": "sb1"}, json={"question": "Who?", "answers": [{"start": 0, "end": 10_000}], "version": view["version"]})
    assert_error(response, 422, "answers[0]")
    assert path.read_bytes() == before
    after = api.get("/api/data").json()
    assert after["data"] == view["data"]
    # the next change works
    response = api.delete("/api/questions", params={"id": "sb2", "version": after["version"]})
    assert response.status_code == 200, response.text


def test_errors_for_missing_routes_and_methods_are_json(tmp_path):
    api = client(squad_copy(tmp_path))
    assert_error(api.get("/api/nothing"), 404, "/api/nothing")
    assert_error(api.get("/api/questions", params={"id": "sb1"}), 405)
    assert_error(api.post("/api/paragraphs", content=b"title=T", headers={"Content-Type": "application/x-www-form-urlencoded"}), 415, "json")


# --- 4. versions ----------------------------------------------------------------------------------


def _every_change(v: int) -> list[tuple[str, str, dict | None]]:
    return [
        ("POST", "/api/paragraphs", {"title": "T", "context": "New text.", "version": v}),
        ("PUT", "/api/paragraphs/0/1", {"context": "Levi's Stadium in Santa Clara, California.", "version": v}),
        ("POST", "/api/questions", _question(v)),
        ("PUT", "/api/questions?id=sb1", _edit(v)),
        ("DELETE", f"/api/questions?id=sb1&version={v}", None),
        ("POST", "/api/undo", {"version": v}),
    ]


def test_a_stale_version_is_a_conflict_and_nothing_changes(tmp_path):
    path = squad_copy(tmp_path)
    api = client(path)
    stale = version_of(api)
    assert api.delete("/api/questions", params={"id": "al2", "version": stale}).status_code == 200
    view = api.get("/api/data").json()
    before = path.read_bytes()
    for method, url, body in _every_change(stale):
        assert_error(api.request(method, url, json=body), 409, "reload")
        assert path.read_bytes() == before
    assert api.get("/api/data").json() == view
    for method, url, body in _every_change(stale + 1):  # a version the file never had
        assert_error(api.request(method, url, json=body), 409, "reload")
    assert path.read_bytes() == before


def test_two_apps_on_one_file_lose_nothing(tmp_path):
    path = squad_copy(tmp_path)
    first, second = client(path), client(path)
    start = version_of(first)
    assert version_of(second) == start
    context = contexts_of(saved(path))["1/0"]
    one = add_question(first, start, "1/0", "In which year?", context, "1843")
    before = path.read_bytes()
    response = second.post("/api/questions", json={"paragraph": "1/0", "question": "Who?", "answers": [], "version": start})
    assert_error(response, 409, "reload")
    assert path.read_bytes() == before
    view = second.get("/api/data").json()
    assert view["version"] == one["version"] and one["id"] in questions_of(view["data"])
    # what was validated at start is not this file any more: the page says it was reloaded
    assert view["report"]["line"] == "reloaded: changed by another program since this session opened it"
    assert first.get("/api/data").json()["report"]["line"] == "valid as read: nothing repaired or skipped"
    two = second.post("/api/questions", json={"paragraph": "1/0", "question": "Who?", "answers": [], "version": view["version"]})
    assert two.status_code == 200, two.text
    # the first app's change with its old version is refused too, then made after a reload
    assert_error(first.delete("/api/questions", params={"id": "sb1", "version": one["version"]}), 409, "reload")
    deleted = first.delete("/api/questions", params={"id": "sb1", "version": version_of(first)})
    assert deleted.status_code == 200, deleted.text
    # the first app cannot undo past the second's change
    assert first.get("/api/data").json()["can_undo"] is True
    undone = first.post("/api/undo", json={"version": deleted.json()["version"]})
    assert undone.status_code == 200 and "sb1" in undone.json()["undone"]
    assert_error(first.post("/api/undo", json={"version": undone.json()["version"]}), 422, "nothing to undo")
    qas = questions_of(saved(path))
    assert {one["id"], two.json()["id"], "sb1"} <= set(qas) and len(qas) == 8
    assert questions_of(first.get("/api/data").json()["data"]) == questions_of(second.get("/api/data").json()["data"]) == qas
    assert_valid(path)
    assert leftovers(tmp_path, "data.json") == []


def test_a_change_by_another_program_is_taken_in(tmp_path):
    path = squad_copy(tmp_path)
    api = client(path)
    stale = version_of(api)
    doc = saved(path)
    doc["data"][1]["paragraphs"][0]["qas"][1]["question"] = "Who designed the engine?"
    path.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")  # an editor
    assert_error(api.delete("/api/questions", params={"id": "sb1", "version": stale}), 409, "reload")
    assert saved(path) == doc
    view = api.get("/api/data").json()
    assert questions_of(view["data"])["al2"]["question"] == "Who designed the engine?" and view["can_undo"] is False
    assert api.delete("/api/questions", params={"id": "sb1", "version": view["version"]}).status_code == 200
    assert questions_of(saved(path))["al2"]["question"] == "Who designed the engine?"


def test_questions_without_ids_written_by_another_program_get_the_ids_reading_gives_them(tmp_path):
    path = squad_copy(tmp_path)
    api = client(path)
    context = "Apollo 11 landed on the Moon on 20 July 1969. Neil Armstrong was first to walk there."
    doc = {"version": "v2.0", "data": [{"title": "Moon", "paragraphs": [{"context": context, "qas": [
        {"question": "When did Apollo 11 land?", "answers": [{"text": "20 July 1969", "answer_start": 32}]},
        {"question": "Who walked first?", "answers": [{"text": "Neil Armstrong", "answer_start": 46}]},
    ]}]}]}
    path.write_text(json.dumps(doc), encoding="utf-8")  # another program, ids left to be generated
    view = api.get("/api/data").json()
    ids = [qa["id"] for qa in view["data"][0]["paragraphs"][0]["qas"]]
    assert ids == [e.id for e in load_examples(path)] and len(set(ids)) == 2 and "None" not in ids
    response = api.put("/api/questions", params={"id": ids[1]}, json={
        "question": "Who walked on the Moon first?", "answers": [{"start": 46, "end": 60}], "version": view["version"]})
    assert response.status_code == 200, response.text
    qas = saved(path)["data"][0]["paragraphs"][0]["qas"]
    assert qas == [doc["data"][0]["paragraphs"][0]["qas"][0] | {"id": ids[0]},
                   doc["data"][0]["paragraphs"][0]["qas"][1] | {"id": ids[1], "question": "Who walked on the Moon first?"}]
    assert_valid(path)


# --- 5. nothing lost ----------------------------------------------------------------------------


def test_a_crash_before_the_rename_loses_only_that_change(tmp_path, monkeypatch):
    path = squad_copy(tmp_path)
    api = TestClient(create_app(path), raise_server_exceptions=False)
    context = contexts_of(saved(path))["0/1"]
    real_replace, calls = store_module.os.replace, []

    def replace(source, target):
        calls.append(target)
        if len(calls) == 3:
            raise OSError("simulated crash: killed before the rename")
        return real_replace(source, target)

    monkeypatch.setattr(store_module.os, "replace", replace)
    one = add_question(api, version_of(api), "0/1", "Where?", context, "Levi's Stadium")
    two = add_question(api, one["version"], "0/1", "In which state?", context, "California")
    before = path.read_bytes()
    response = api.post("/api/questions", json={"paragraph": "0/1", "question": "Lost?", "answers": [], "version": two["version"]})
    assert_error(response, 500)
    assert len(calls) == 3
    monkeypatch.setattr(store_module.os, "replace", real_replace)
    assert path.read_bytes() == before
    qas = questions_of(saved(path))
    assert {one["id"], two["id"]} <= set(qas) and "Lost?" not in [q["question"] for q in qas.values()] and len(qas) == 8
    assert_valid(path)
    assert leftovers(tmp_path, "data.json") == []
    # the app goes on from the file as it is
    view = api.get("/api/data").json()
    assert view["version"] == two["version"] and questions_of(view["data"]) == qas
    assert "In which state?" in view["undo"]
    three = add_question(api, view["version"], "0/1", "Found?", context)
    assert len(questions_of(saved(path))) == 9
    assert api.post("/api/undo", json={"version": three["version"]}).status_code == 200
    assert questions_of(saved(path)) == qas


def test_a_crash_of_the_first_save_of_a_new_file_leaves_no_file(tmp_path, monkeypatch):
    def replace(source, target):
        raise OSError("simulated crash")

    monkeypatch.setattr(store_module.os, "replace", replace)
    with pytest.raises(OSError):
        create_app(tmp_path / "new.json")
    assert leftovers(tmp_path) == []


def test_a_change_that_would_not_read_back_is_refused(tmp_path, monkeypatch):
    path = squad_copy(tmp_path)
    api = client(path)
    view = api.get("/api/data").json()
    before = path.read_bytes()
    checked = []

    def check_file(self, temporary, doc):
        checked.append(temporary)
        assert temporary.exists() and temporary.parent == tmp_path  # the temporary file is what is checked
        raise store_module.Invalid("the data would not read back as valid SQuAD v2.0 (simulated); nothing was saved")

    monkeypatch.setattr(store_module.AnnotationStore, "_check_file", check_file)
    assert_error(api.delete("/api/questions", params={"id": "sb1", "version": view["version"]}), 422, "would not read back")
    assert_error(api.post("/api/paragraphs", json={"title": "T", "context": "Text.", "version": view["version"]}), 422, "read back")
    assert len(checked) == 2 and not any(p.exists() for p in checked)
    assert path.read_bytes() == before
    assert leftovers(tmp_path, "data.json") == []
    monkeypatch.undo()
    assert api.get("/api/data").json() == view


# --- 6. other layouts -----------------------------------------------------------------------------


@pytest.mark.parametrize("source", [RECORDS, PARAGRAPHS], ids=["records", "paragraphs"])
def test_another_layout_is_kept_and_edited_beside_it(tmp_path, source):
    original = tmp_path / source.name
    shutil.copyfile(source, original)
    before = original.read_bytes()
    api = client(original)
    target = tmp_path / (original.stem + ".squad.json")
    assert leftovers(tmp_path, original.name, target.name) == [] and target.exists()
    view = api.get("/api/data").json()
    assert view["file"] == target.name and view["report"]["layout"] == source.stem.split("_")[1]
    examples = load_examples(source)
    assert {e.id: (e.question, e.context, [(a.text, a.start) for a in e.answers]) for e in examples} == {
        qa["id"]: (qa["question"], paragraph["context"], [(a["text"], a["answer_start"]) for a in qa["answers"]])
        for article in saved(target)["data"] for paragraph in article["paragraphs"] for qa in paragraph["qas"]
    }
    assert_valid(target)
    context = contexts_of(view["data"])["0/0"]
    added = add_question(api, view["version"], "0/0", "A new question?", context, context.split()[1])
    assert original.read_bytes() == before
    assert added["id"] in questions_of(saved(target))
    name = f"{original.stem}.jsonl"
    assert api.get("/api/export.jsonl").headers["content-disposition"] == f"attachment; filename=\"{name}\"; filename*=UTF-8''{name}"
    # starting again from the original while the edited copy exists is refused, naming it
    with pytest.raises(DataError, match=target.name):
        create_app(original)
    assert original.read_bytes() == before and added["id"] in questions_of(saved(target))


def test_a_file_with_errors_qatune_cannot_repair_is_refused(tmp_path):
    doc = json.loads(SQUAD.read_text(encoding="utf-8"))
    doc["data"][0]["paragraphs"][0]["qas"][0]["answers"][0]["text"] = "Jacksonville Jaguars"  # nowhere in the context
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    before = path.read_bytes()
    _, report = read_dataset(path)  # what `qatune validate` says with its default --on-error repair
    assert not report.ok and "found it nowhere" in report.errors[0].message
    with pytest.raises(DataError, match="qatune validate") as refused:
        create_app(path)
    assert path.read_bytes() == before and leftovers(tmp_path, "broken.json") == []
    # the problem with its place, and no advice annotate cannot follow (it has no --on-error)
    assert "found it nowhere" in str(refused.value) and "data[0].paragraphs[0].qas[0]" in str(refused.value)
    assert "--on-error" not in str(refused.value)


@pytest.mark.parametrize(
    "name, text, said",
    [("broken.json", '{"data": [', "syntax error at line 1"), ("table.csv", "a,b\n1,2\n", "named as a table")],
)
def test_a_file_that_cannot_be_read_is_named_as_the_user_gave_it(tmp_path, name, text, said):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataError) as refused:
        create_app(path)
    message = str(refused.value)
    assert message.startswith(f"{path}:") and said in message
    assert tempfile.gettempdir() not in message.replace(str(tmp_path), "")  # not a temporary copy's path
    assert path.read_text(encoding="utf-8") == text and leftovers(tmp_path, name) == []


def test_a_file_needing_repairs_opens_and_says_what_was_repaired(tmp_path):
    path = squad_copy(tmp_path, "repair.json", NEEDS_REPAIR)
    api = client(path)
    view = api.get("/api/data").json()
    assert view["report"]["line"] == (
        "3 answers repaired: 2 whitespace, 1 re-anchored (largest shift 9 characters); skipped: 0 questions, 0 answers")
    assert view["report"]["repaired"] == 3 and view["report"]["layout"] == "squad"
    for paragraph in view["data"][0]["paragraphs"]:  # the data shown is the repaired one
        for qa in paragraph["qas"]:
            for a in qa["answers"]:
                assert paragraph["context"][a["answer_start"] : a["answer_start"] + len(a["text"])] == a["text"]
    assert api.delete("/api/questions", params={"id": "f4", "version": view["version"]}).status_code == 200
    assert_valid(path)
    assert set(questions_of(saved(path))) == {"f1", "f2", "f3"}


# --- 7. a model -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model(tiny_bert):
    from qatune.inference import QAModel

    return QAModel.from_pretrained(tiny_bert)


def test_suggestions_are_what_the_model_answers(tmp_path, model):
    path = squad_copy(tmp_path)
    api = client(path, model=model, model_name="tiny")
    view = api.get("/api/data").json()
    assert view["model"]["name"] == "tiny"
    contexts = contexts_of(view["data"])
    asked = [("0/0", "Which NFL team represented the AFC at Super Bowl 50?", 3), ("0/1", "Where was the game played?", 3),
             ("1/0", "When did Ada Lovelace publish her algorithm?", 1), ("1/0", "Who built the Analytical Engine?", 5)]
    for paragraph, question, top_k in asked:
        response = api.post("/api/suggest", json={"paragraph": paragraph, "question": question, "top_k": top_k})
        assert response.status_code == 200, response.text
        body = response.json()
        expected = [asdict(a) for a in model.ask(question, contexts[paragraph], top_k=top_k)]
        assert body["answers"] == expected
        assert 0.0 <= body["no_answer_probability"] <= 1.0
        assert body["question_cut"] is False
        for answer in body["answers"]:
            assert contexts[paragraph][answer["start"] : answer["end"]] == answer["text"]
    # a question longer than the model reads: answered from its first tokens, and said to be cut
    limit = view["model"]["max_question_length"]
    assert limit == model.settings.max_question_length
    long_question = "Which NFL team " + " ".join(["represented the AFC"] * limit) + "?"
    body = api.post("/api/suggest", json={"paragraph": "0/0", "question": long_question, "top_k": 2}).json()
    assert body["question_cut"] is True
    assert body["answers"] == [asdict(a) for a in model.ask(long_question, contexts["0/0"], top_k=2)]
    default = api.post("/api/suggest", json={"paragraph": "0/0", "question": asked[0][1]}).json()
    assert default["answers"] == [asdict(a) for a in model.ask(asked[0][1], contexts["0/0"], top_k=3)]
    assert_error(api.post("/api/suggest", json={"paragraph": "7/7", "question": "Who?"}), 404, "7/7")
    assert_error(api.post("/api/suggest", json={"paragraph": "0/0", "question": ""}), 422, "question")
    assert_error(api.post("/api/suggest", json={"paragraph": "0/0", "question": " \n\t"}), 422, "question")
    assert_error(api.post("/api/suggest", json={"paragraph": "0/0", "question": "Who?", "top_k": 0}), 422, "top_k")


def test_the_review_queue_puts_disagreements_first(tmp_path, model):
    path = squad_copy(tmp_path)
    api = client(path, model=model, model_name="tiny")
    view = api.get("/api/data").json()
    contexts, qas = contexts_of(view["data"]), questions_of(view["data"])
    places = {str(qa["id"]): f"{a}/{p}" for a, article in enumerate(view["data"])
              for p, paragraph in enumerate(article["paragraphs"]) for qa in paragraph["qas"]}
    response = api.get("/api/review")
    assert response.status_code == 200, response.text
    items = response.json()["items"]
    assert sorted(str(item["id"]) for item in items) == sorted(qas)
    reasons = [item["reason"] for item in items]
    assert set(reasons) <= {"disagrees", "unsure"} and "disagrees" in reasons
    assert reasons == sorted(reasons, key=lambda r: r != "disagrees")  # every "disagrees" before every "unsure"
    disagreeing = [item["f1"] for item in items if item["reason"] == "disagrees"]
    assert disagreeing == sorted(disagreeing) and all(f < 1.0 for f in disagreeing)
    for item in items:
        context = contexts[item["paragraph"]]
        assert item["paragraph"] == places[str(item["id"])] and item["question"] == qas[str(item["id"])]["question"]
        assert [(g["text"], g["start"]) for g in item["gold"]] == [(a["text"], a["answer_start"]) for a in qas[str(item["id"])]["answers"]]
        for gold in item["gold"]:
            assert context[gold["start"] : gold["end"]] == gold["text"]
        if item["predicted"] is not None:
            assert context[item["predicted"]["start"] : item["predicted"]["end"]] == item["predicted"]["text"]
            assert set(item["predicted"]) == {"text", "start", "end", "score"}
        assert 0.0 <= item["f1"] <= 1.0
    assert response.json() == api.get("/api/review").json()  # the same every time
    assert api.get("/api/review", params={"limit": 2}).json()["items"] == items[:2]
    assert_error(api.get("/api/review", params={"limit": 0}), 422, "limit")


def test_without_a_model_suggest_and_review_are_404(tmp_path):
    api = client(squad_copy(tmp_path))
    assert_error(api.post("/api/suggest", json={"paragraph": "0/0", "question": "Who won?"}), 404, "--model")
    assert_error(api.get("/api/review"), 404, "--model")


# --- the command, over HTTP -----------------------------------------------------------------------


@dataclass
class Annotating:
    server: Server
    stderr: Path
    port: int

    def said(self) -> str:
        return self.stderr.read_text(encoding="utf-8", errors="replace")

    def data(self) -> dict:
        status, _, body = self.server.request("GET", "/api/data", timeout=HTTP_TIMEOUT)
        assert status == 200, body
        return json.loads(body)

    def send(self, method: str, path: str, value=None) -> tuple[int, dict]:
        body = None if value is None else json.dumps(value).encode("utf-8")
        status, _, answer = self.server.request(method, path, body, JSON_HEADERS if body else {}, timeout=HTTP_TIMEOUT)
        return status, json.loads(answer)


@contextlib.contextmanager
def annotating(data: Path, *arguments: str, log_dir: Path):
    """`python -m qatune annotate DATA --port P ARGUMENTS` until GET /api/data answers 200; SIGTERM on the way out."""
    port = free_port()
    stdout, stderr = log_dir / f"annotate-{port}.out", log_dir / f"annotate-{port}.err"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "qatune", "annotate", str(data), "--port", str(port), *arguments],
            stdout=out, stderr=err, stdin=subprocess.DEVNULL,
        )
    running = Annotating(Server(process, f"http://127.0.0.1:{port}", stderr), stderr, port)
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"qatune annotate exited with {process.returncode}:\n{running.said()}")
            try:
                if running.server.request("GET", "/api/data", timeout=5)[0] == 200:
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"qatune annotate did not answer after {STARTUP_SECONDS} s:\n{running.said()}")
            time.sleep(0.1)
        yield running
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def qatune(*arguments: object) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "qatune", *map(str, arguments)], capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)


def test_http_two_processes_on_one_file_lose_nothing(tmp_path):
    path = squad_copy(tmp_path)
    logs = tmp_path / "logs"
    logs.mkdir()
    with annotating(path, log_dir=logs) as first, annotating(path, log_dir=logs) as second:
        start = first.data()["version"]
        assert second.data()["version"] == start
        status, one = first.send("POST", "/api/questions", {"paragraph": "1/0", "question": "In which year?",
                                                            "answers": [{"start": 96, "end": 100}], "version": start})
        assert status == 200, one
        before = path.read_bytes()
        status, body = second.send("POST", "/api/questions", {"paragraph": "1/0", "question": "Who?", "answers": [], "version": start})
        assert status == 409 and "reload" in body["detail"], body
        assert path.read_bytes() == before
        view = second.data()
        assert view["version"] == one["version"] and one["id"] in questions_of(view["data"])
        status, two = second.send("POST", "/api/questions", {"paragraph": "1/0", "question": "Who?", "answers": [], "version": view["version"]})
        assert status == 200, two

        # both at once, each retrying after a reload on 409: every change is kept
        def write(server: Annotating, label: str, count: int, errors: list) -> None:
            for n in range(count):
                for _ in range(200):
                    status, body = server.send("POST", "/api/questions", {
                        "paragraph": "0/1", "question": f"{label} {n}?", "answers": [], "version": server.data()["version"]})
                    if status == 200:
                        break
                    if status != 409:
                        errors.append(body)
                        return
                else:
                    errors.append(f"{label} {n}: no success in 200 tries")

        errors: list = []
        threads = [threading.Thread(target=write, args=(server, label, 8, errors)) for server, label in [(first, "A"), (second, "B")]]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
        assert errors == []
        questions = [qa["question"] for qa in questions_of(saved(path)).values()]
        assert {one["id"], two["id"]} <= set(questions_of(saved(path)))
        assert sorted(q for q in questions if q[0] in "AB" and q[1] == " ") == sorted(f"{l} {n}?" for l in "AB" for n in range(8))
        assert len(questions) == 6 + 2 + 16
        assert questions_of(first.data()["data"]) == questions_of(second.data()["data"]) == questions_of(saved(path))
    assert_valid(path)
    assert leftovers(tmp_path, "data.json", "logs") == []


def test_http_another_layout_is_written_beside_it_and_not_reopened(tmp_path):
    original = tmp_path / RECORDS.name
    shutil.copyfile(RECORDS, original)
    before = original.read_bytes()
    target = tmp_path / "data_records.squad.json"
    logs = tmp_path / "logs"
    logs.mkdir()
    with annotating(original, log_dir=logs) as server:
        assert server.data()["file"] == target.name
        status, _ = server.send("DELETE", f"/api/questions?id=r3&version={server.data()['version']}")
        assert status == 200
    said = server.said()
    assert str(target) in said, said
    assert f"annotating {target} on http://127.0.0.1:{server.port}" in said
    assert original.read_bytes() == before and set(questions_of(saved(target))) == {"r1", "r2"}
    again = qatune("annotate", original, "--port", free_port())
    assert again.returncode == 2, again.stderr
    assert again.stderr.startswith("error:") and str(target) in again.stderr
    assert original.read_bytes() == before and set(questions_of(saved(target))) == {"r1", "r2"}


def test_http_a_file_qatune_cannot_repair_is_refused(tmp_path):
    doc = json.loads(SQUAD.read_text(encoding="utf-8"))
    doc["data"][1]["paragraphs"][0]["qas"][0]["answers"][0]["text"] = "1852"
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    before = path.read_bytes()
    result = qatune("annotate", path, "--port", free_port())
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error:") and f"qatune validate {path}" in result.stderr
    assert path.read_bytes() == before and leftovers(tmp_path, "broken.json") == []
    assert qatune("validate", path).returncode != 0


def _listening_addresses(port: int) -> list[str]:
    """The local addresses of sockets listening on `port` (Linux: /proc/net/tcp and tcp6)."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as handle:
            for line in handle.readlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                address, hex_port = local.split(":")
                if state == "0A" and int(hex_port, 16) == port:
                    found.append(address)
    return found


def _raw_get(port: int, target: str) -> tuple[int, bytes]:
    """A GET with the request target sent exactly as written (no client-side normalization)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=HTTP_TIMEOUT)
    try:
        connection.putrequest("GET", target, skip_accept_encoding=True)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def _post_big(port: int, target: str, body: bytes, *, chunked: bool) -> tuple[int, dict, bytes]:
    """POST a body over the limit on a raw socket. Declared: only the headers are sent (the server
    answers from Content-Length alone). Chunked: sent until the server stops reading (it answers, then
    closes; the send error that follows is expected), then the answer is read."""
    with socket.create_connection(("127.0.0.1", port), timeout=HTTP_TIMEOUT) as connection:
        framing = b"Transfer-Encoding: chunked" if chunked else b"Content-Length: %d" % len(body)
        connection.sendall(b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nConnection: close\r\n%s\r\n\r\n"
                           % (target.encode(), framing))
        if chunked:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                for start in range(0, len(body), 65536):
                    piece = body[start : start + 65536]
                    connection.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
                connection.sendall(b"0\r\n\r\n")
        answer = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := connection.recv(65536):
                answer += chunk
    head, _, rest = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, rest[: int(headers.get("content-length", len(rest)))]


def _version(data: bytes) -> int:
    return store_module._version_of(data)


def test_http_security(tmp_path):
    folder = tmp_path / "work"
    folder.mkdir()
    path = squad_copy(folder)
    secret = tmp_path / "secret.json"
    secret.write_text('{"secret": "do-not-leak-4f2a"}', encoding="utf-8")
    secret_bytes = secret.read_bytes()
    logs = tmp_path / "logs"
    logs.mkdir()
    with annotating(path, log_dir=logs) as server:
        # 127.0.0.1 by default, and only there
        assert f"annotating {path} on http://127.0.0.1:{server.port}" in server.said()
        if os.path.exists("/proc/net/tcp"):
            assert _listening_addresses(server.port) == ["0100007F"]
        before = path.read_bytes()
        # a body over the limit: declared (refused before it is read), then sent in chunks (refused as it arrives)
        big = json.dumps({"title": "T", "context": "x " * 2_600_000, "version": server.data()["version"]}).encode()
        assert len(big) > 5_000_000
        for chunked in (False, True):
            status, headers, body = _post_big(server.port, "/api/paragraphs", big, chunked=chunked)
            assert status == 413 and headers["content-type"].startswith("application/json"), (chunked, status, body[:200])
            assert isinstance(json.loads(body)["detail"], str) and "5000000" in json.loads(body)["detail"]
        assert path.read_bytes() == before
        assert server.data()["version"] == _version(before)
        # paths out of the static folder, and a path in the query
        for target in ["/static/../../etc/passwd", "/static/..%2f..%2f..%2fetc%2fpasswd", "/static/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
                       "/../../../etc/passwd", f"/static/../../../../..{secret}", "/static//etc/passwd",
                       "/static/%2fetc%2fpasswd", f"/static/..%2f..%2f..%2f..%2f..%2f..%2f..{urllib.parse.quote(str(secret), safe='')}"]:
            status, body = _raw_get(server.port, target)
            assert status in (400, 404), (target, status, body[:200])
            assert b"root:" not in body and b"do-not-leak" not in body, target
        for query in [{"path": "/etc/passwd"}, {"path": str(secret)}, {"file": str(secret)}, {"data": str(secret)}]:
            status, _, body = server.server.request("GET", "/api/data?" + urllib.parse.urlencode(query), timeout=HTTP_TIMEOUT)
            assert status == 200 and json.loads(body)["file"] == "data.json"
            assert b"root:" not in body and b"do-not-leak" not in body
            status, _, body = server.server.request("GET", "/api/export.jsonl?" + urllib.parse.urlencode(query), timeout=HTTP_TIMEOUT)
            assert status == 200 and b"do-not-leak" not in body and b"root:" not in body
        # a change naming another file writes nothing anywhere
        status, body = server.send("POST", "/api/paragraphs", {"title": "T", "context": "x", "version": server.data()["version"], "path": str(secret)})
        assert status == 422, body
        status, _ = server.send("DELETE", f"/api/questions?id=sb1&version={server.data()['version']}&path={urllib.parse.quote(str(secret))}")
        assert status == 200
        assert secret.read_bytes() == secret_bytes
        status, _, page = server.server.request("GET", "/", timeout=HTTP_TIMEOUT)
        assert status == 200 and b"<html" in page.lower()
        process = server.server.process
    assert process.returncode == 0, server.said()  # SIGTERM: a clean stop
    assert leftovers(folder, "data.json") == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["logs", "secret.json", "work"]


def test_a_squad_file_that_needed_repairs_is_saved_repaired_at_once_and_its_original_kept(tmp_path):
    """Valid under on_error="strict" even when the session changes nothing."""
    path = squad_copy(tmp_path, source=DATA / "data_needs_repair.json")
    original = path.read_bytes()
    with pytest.raises(Exception):  # as given, it is not strictly valid
        read_dataset(path, on_error="strict")[1].raise_for_errors()
    client(path).get("/api/data")
    assert (tmp_path / "data.orig.json").read_bytes() == original
    assert_valid(path)


def test_a_squad_file_that_needs_nothing_is_left_as_it_is_written_when_opened(tmp_path):
    path = tmp_path / "data.json"
    path.write_text(json.dumps(saved(SQUAD), separators=(",", ":")), encoding="utf-8")  # as the official files are
    original = path.read_bytes()
    app = create_app(path)
    assert TestClient(app).get("/api/data").json()["report"]["line"] == "valid as read: nothing repaired or skipped"
    assert path.read_bytes() == original and leftovers(tmp_path, "data.json") == [] and not (tmp_path / "data.orig.json").exists()


def test_a_squad_file_with_questions_without_ids_is_saved_with_them_when_opened(tmp_path):
    path = tmp_path / "data.json"
    doc = saved(SQUAD)
    del doc["data"][0]["paragraphs"][0]["qas"][0]["id"]
    path.write_text(json.dumps(doc), encoding="utf-8")
    original = path.read_bytes()
    client(path).get("/api/data")
    assert (tmp_path / "data.orig.json").read_bytes() == original
    assert saved(path)["data"][0]["paragraphs"][0]["qas"][0]["id"] == load_examples(tmp_path / "data.orig.json")[0].id
    # what `qatune annotate` says it was saved with: the ids, not repairs it did not make
    assert changes_on_reading(read_dataset(tmp_path / "data.orig.json")[1]) == ["ids for its 1 questions that had none"]
    needs_repair = read_dataset(DATA / "data_needs_repair.json")[1]
    assert changes_on_reading(needs_repair)[0] == "its repairs"
    assert changes_on_reading(read_dataset(path)[1]) == []


def test_export_of_a_file_with_a_name_outside_ascii(tmp_path):
    path = squad_copy(tmp_path, name="données 数据.json")
    response = client(path).get("/api/export.jsonl")
    assert response.status_code == 200
    disposition = response.headers["content-disposition"]
    assert 'filename="donn_es __.jsonl"' in disposition and "filename*=UTF-8''donn%C3%A9es%20%E6%95%B0%E6%8D%AE.jsonl" in disposition


def test_a_linked_file_is_edited_where_it_is_with_its_permissions(tmp_path):
    real = squad_copy(tmp_path, name="real.json", source=DATA / "data_squad_v2.json")
    client(real).get("/api/data")  # saved once if it needed repairs: from here it is as annotate keeps it
    real.chmod(0o600)
    link = tmp_path / "link.json"
    link.symlink_to(real)
    api = client(link)
    view = api.get("/api/data").json()
    context = contexts_of(view["data"])["0/0"]
    add_question(api, view["version"], "0/0", "Who?", context, context.split()[0])
    assert link.is_symlink() and "Who?" in {qa["question"] for qa in questions_of(saved(real)).values()}
    assert real.stat().st_mode & 0o777 == 0o600


def test_a_new_file_must_be_named_json(tmp_path):
    with pytest.raises(DataError, match="ending in .json"):
        create_app(tmp_path / "new.jsonl")
    assert not (tmp_path / "new.jsonl").exists()


def test_the_readmes_api_example_adds_a_paragraph_and_its_question(tmp_path):
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    example = next(block for block in re.findall(r"```python\n(.*?)```", readme, re.S) if "/api/paragraphs" in block)
    path = tmp_path / "new.json"
    logs = tmp_path / "logs"
    logs.mkdir()
    with annotating(path, log_dir=logs) as running:
        code = example.replace("http://127.0.0.1:8001", f"http://127.0.0.1:{running.port}")
        assert code != example  # the example talks to the default port, which this test replaces
        exec(compile(code, "README.md", "exec"), {})
    examples, report = read_dataset(path, on_error="strict")
    assert [(e.question, e.context[e.answers[0].start:e.answers[0].end]) for e in examples] == [
        ("When did Apollo 11 land?", "1969")]
    assert examples[0].title == "Apollo" and not report.repairs  # offsets exact, nothing to re-anchor


def test_head_answers_as_get_and_a_slash_at_the_end_names_the_endpoint(tmp_path):
    api = client(squad_copy(tmp_path))
    for path in ("/", "/api/data"):
        got, head = api.get(path), api.head(path)
        assert (head.status_code, head.content) == (200, b"") and got.content
        assert head.headers["content-type"] == got.headers["content-type"]
    version = version_of(api)
    response = api.post("/api/undo/", json={"version": version}, follow_redirects=False)
    detail = assert_error(response, 404, "/api/undo/")
    assert detail.endswith("the endpoint is /api/undo, without the slash at the end")
