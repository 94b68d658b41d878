"""qatune.data: reading the three layouts, validating, repairing, the policies, writing back."""

from __future__ import annotations

import codecs
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from qatune.data import (
    Example,
    GoldAnswer,
    load_examples,
    read_dataset,
    write_fixed,
    write_squad_v2,
)
from qatune.errors import DataError, SettingsError

DATA = Path(__file__).parent / "data"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
CONTEXT = "Paris is the capital of France. Paris hosted the 2024 Olympics."
Q = "data[0].paragraphs[0].qas[0]"  # the place of the first question in a `squad_file`


def write(tmp_path: Path, value: Any, name: str = "data.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(value, ensure_ascii=False), encoding="utf-8")
    return path


def squad_file(tmp_path: Path, qas: list[Any], context: Any = CONTEXT, **article: Any) -> Path:
    """A squad-layout file with one article and one paragraph holding `qas`."""
    article = {"title": "Paris", **article, "paragraphs": [{"context": context, "qas": qas}]}
    return write(tmp_path, {"version": "v2.0", "data": [article]})


def qa(text: Any = "France", start: Any = 24, **fields: Any) -> dict[str, Any]:
    return {"id": "q1", "question": "Which country?", "answers": [{"text": text, "answer_start": start}], **fields}


def errors(path: Path, on_error: str = "repair") -> list[str]:
    return [str(problem) for problem in read_dataset(path, on_error=on_error)[1].errors]


def strip_place(examples: list[Example]) -> list[Example]:
    return [dataclasses.replace(example, place="") for example in examples]


# --- the layouts -------------------------------------------------------------------------


def test_squad_layout_keeps_every_answer_and_both_kinds_of_unanswerable():
    examples, report = read_dataset(DATA / "data_squad_v2.json")
    assert (report.layout, report.articles, report.contexts) == ("squad", 2, 3)
    assert (report.questions, report.answers, report.unanswerable) == (6, 7, 2)
    assert report.ok and report.repaired == {"whitespace": 0, "reanchored": 0}
    by_id = {example.id: example for example in examples}
    assert list(by_id) == ["sb1", "sb2", "sb3", "sb4", "7", "al2"]  # file order; int id -> "7"
    two = by_id["sb2"]
    assert [a.text for a in two.answers] == ["Carolina Panthers", "Carolina Panthers", "Panthers"]
    for example in examples:
        for answer in example.answers:
            assert example.context[answer.start : answer.end] == answer.text
    # is_impossible: true (plausible answers never become answers), and no answers at all
    assert by_id["sb3"].is_impossible and by_id["sb3"].answers == ()
    assert by_id["al2"].is_impossible and by_id["al2"].answers == ()
    assert by_id["sb4"].place == "data[0].paragraphs[1].qas[0]"
    assert (by_id["sb1"].title, by_id["7"].title) == ("Super_Bowl_50", "Ada_Lovelace")


def test_paragraphs_layout_generates_stable_ids():
    first, report = read_dataset(DATA / "data_paragraphs.json")
    again = load_examples(DATA / "data_paragraphs.json")
    assert report.layout == "paragraphs" and report.questions == 3 and report.ok
    assert [e.id for e in first][:2] == ["p1", "p2"]
    generated = first[2].id
    assert len(generated) == 12 and int(generated, 16) >= 0 and again[2].id == generated
    assert first[2].place == "[0].qas[2]" and first[2].title is None


def test_generated_ids_of_repeated_questions_get_a_suffix(tmp_path):
    question = {"question": "Which country?", "answers": [{"text": "France", "answer_start": 24}]}
    path = write(tmp_path, [{"context": CONTEXT, "qas": [question, question, question]}])
    ids = [e.id for e in load_examples(path)]
    assert ids[1:] == [f"{ids[0]}-2", f"{ids[0]}-3"]


def test_records_layout_as_json_lines_and_as_a_json_list(tmp_path):
    examples, report = read_dataset(DATA / "data_records.jsonl")
    assert (report.layout, report.questions, report.answers, report.unanswerable) == ("records", 3, 3, 1)
    assert (report.articles, report.titles, report.contexts) == (None, 1, 1)  # no articles in this layout
    assert examples[0].answers == (GoldAnswer("the Atlantic Ocean", 62), GoldAnswer("Atlantic Ocean", 66))
    assert examples[1].place == "line 2" and examples[0].title == "Amazon"
    lines = (DATA / "data_records.jsonl").read_text(encoding="utf-8").splitlines()
    as_list = write(tmp_path, [json.loads(line) for line in lines], "records.json")
    listed, list_report = read_dataset(as_list)
    assert list_report.layout == "records" and listed[1].place == "[1]"
    assert strip_place(listed) == strip_place(examples)
    # JSON Lines in a .json file, with blank lines, is still recognised
    loose = tmp_path / "loose.json"
    loose.write_text("\n".join(lines[:2]) + "\n\n" + lines[2] + "\n", encoding="utf-8")
    loose_examples, loose_report = read_dataset(loose)
    assert loose_report.layout == "records" and loose_examples[2].place == "line 4"


def test_a_utf8_bom_is_accepted(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(codecs.BOM_UTF8 + (DATA / "data_records.jsonl").read_bytes())
    assert len(load_examples(path)) == 3


def test_format_forces_a_layout(tmp_path):
    assert read_dataset(DATA / "data_records.jsonl", format="records")[1].layout == "records"
    with pytest.raises(DataError, match="expected one JSON document for the squad layout, found JSON Lines;"):
        read_dataset(DATA / "data_records.jsonl", format="squad")
    with pytest.raises(DataError) as caught:
        read_dataset(DATA / "data_squad_v2.json", format="paragraphs")
    assert str(caught.value) == (
        f'{DATA / "data_squad_v2.json"}: expected a JSON list of paragraphs for the paragraphs layout, '
        'found a JSON object with keys "version", "data"; check --format (format= in Python), or leave it '
        "out to detect the layout"
    )


def test_bad_settings_name_the_allowed_values():
    with pytest.raises(SettingsError) as caught:
        read_dataset(DATA / "data_squad_v2.json", format="xml")
    assert str(caught.value) == 'format must be one of "auto", "squad", "paragraphs", "records"; found the string "xml"'
    with pytest.raises(SettingsError) as caught:
        load_examples(DATA / "data_squad_v2.json", on_error="ignore")
    assert str(caught.value) == 'on_error must be one of "repair", "strict", "skip"; found the string "ignore"'


# --- whole-file problems -----------------------------------------------------------------


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(DataError) as caught:
        read_dataset(tmp_path / "nope.json")
    assert str(caught.value) == f"{tmp_path / 'nope.json'}: expected a data file, found no such file; check the path"
    with pytest.raises(DataError) as caught:
        read_dataset(tmp_path)
    assert str(caught.value) == (
        f"{tmp_path}: expected a data file, found a directory; pass the JSON file inside it"
    )


def test_not_utf8_gives_the_byte_offset(tmp_path):
    path = tmp_path / "latin1.json"
    path.write_bytes(codecs.BOM_UTF8 + b'{"data": [\n{"title": "Caf\xe9"}]}')
    with pytest.raises(DataError) as caught:
        read_dataset(path)
    assert str(caught.value) == (
        f"{path}: expected UTF-8 text, found the byte 0xe9 at byte offset 28 (line 2), "
        "which is not valid UTF-8; save the file as UTF-8"
    )


def test_bad_json_gives_line_and_column(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"data": [\n  {"title": "x",, "paragraphs": []}\n]}', encoding="utf-8")
    with pytest.raises(DataError) as caught:
        read_dataset(path)
    assert str(caught.value) == (
        f"{path}: expected valid JSON, found a syntax error at line 2, column 17 "
        "(Expecting property name enclosed in double quotes); fix the JSON there"
    )


def test_bad_json_lines_gives_the_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    good = (DATA / "data_records.jsonl").read_text(encoding="utf-8").splitlines()[0]
    path.write_text(f"{good}\n{good[:-1]}\n", encoding="utf-8")
    with pytest.raises(DataError) as caught:
        read_dataset(path)
    assert str(caught.value) == (
        f"{path}: line 2: expected one JSON object per line (JSON Lines), found a syntax error at "
        f"column {len(good)} (Expecting ',' delimiter); fix that line"
    )


def test_empty_file(tmp_path):
    path = tmp_path / "empty.json"
    path.write_text("  \n", encoding="utf-8")
    with pytest.raises(DataError, match="expected JSON data, found an empty file; add the data"):
        read_dataset(path)


def test_json_that_python_cannot_hold(tmp_path):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000, encoding="utf-8")
    with pytest.raises(DataError, match="expected valid JSON, found JSON that cannot be read"):
        read_dataset(deep)
    huge = tmp_path / "huge.jsonl"
    huge.write_text('{"id": ' + "9" * 5000 + "}\n", encoding="utf-8")
    with pytest.raises(DataError, match="line 1: expected one JSON object per line"):
        read_dataset(huge)


def test_json_lines_without_a_line_is_an_empty_file(tmp_path):
    for text in ("", "\n  \n"):
        path = tmp_path / "empty.jsonl"
        path.write_text(text, encoding="utf-8")
        with pytest.raises(DataError, match="empty.jsonl: expected JSON data, found an empty file; add the data"):
            read_dataset(path)


@pytest.mark.parametrize(
    "text, line, found",
    [
        # Python's reader would keep the second "answers" alone: an answerable question turned unanswerable
        ('{"data": [{"paragraphs": [{"context": "Alpha beta.", "qas": [\n{"id": "a", "question": "Which?", '
         '"answers": [{"text": "beta", "answer_start": 6}], "answers": []}]}]}]}',
         2, 'the key "answers" twice in one object'),
        ('{"data": [],\n "extra": {"score": NaN}}', 2, "NaN, which is not JSON"),
        ('{"data": [],\n\n "extra": [{"big": 1e400}]}', 3, "the number 1e400, beyond what a double holds"),
    ],
)
def test_json_that_python_reads_but_would_lose_or_not_write_back_names_its_line(tmp_path, text, line, found):
    path = tmp_path / "data.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataError) as caught:
        read_dataset(path)
    assert str(caught.value).startswith(f"{path}: line {line}: expected plain JSON, found {found}")
    records = tmp_path / "data.jsonl"
    records.write_text('{"question": "Q?", "context": "C.", "answers": {"text": [], "answer_start": []}}\n'
                       '{"id": "x", "id": "y"}\n', encoding="utf-8")
    with pytest.raises(DataError, match='line 2: expected plain JSON, found the key "id" twice in one object'):
        read_dataset(records)


@pytest.mark.parametrize(
    "encoding, found",
    [("utf-16", "a UTF-16 byte order mark: the file is UTF-16 text"),
     ("utf-16-le", "a NUL byte at byte offset 1 (line 1): the file looks like UTF-16 or UTF-32 text"),
     ("utf-32", "a UTF-32 byte order mark: the file is UTF-32 text")],
)
def test_utf16_and_utf32_are_named(tmp_path, encoding, found):
    path = tmp_path / "wide.json"
    path.write_text(json.dumps({"data": []}), encoding=encoding)
    with pytest.raises(DataError) as caught:
        read_dataset(path)
    assert str(caught.value) == f"{path}: expected UTF-8 text, found {found}; save the file as UTF-8"


def test_one_record_alone_in_a_json_file_is_read_as_a_record(tmp_path):
    record = {"id": "r", "question": "Which country?", "context": CONTEXT,
              "answers": {"text": ["France"], "answer_start": [24]}}
    for text, line in ((json.dumps(record, indent=1), 1), ("\n\n" + json.dumps(record) + "\n", 3)):
        path = tmp_path / "one.json"
        path.write_text(text, encoding="utf-8")
        for format in ("auto", "records"):
            examples, report = read_dataset(path, format=format)
            assert report.layout == "records" and report.ok
            assert [(e.id, e.answers, e.place) for e in examples] == [("r", (GoldAnswer("France", 24),), f"line {line}")]
    # JSON Lines in a .json file whose first line is blank
    path = tmp_path / "lines.json"
    path.write_text("\n" + json.dumps(record) + "\n" + json.dumps({**record, "id": "s"}) + "\n", encoding="utf-8")
    assert [e.place for e in load_examples(path)] == ["line 2", "line 3"]


def test_unknown_layout_names_the_three_layouts(tmp_path):
    path = write(tmp_path, {"articles": []})
    with pytest.raises(DataError) as caught:
        read_dataset(path)
    assert str(caught.value) == (
        f"{path}: cannot tell the layout of this file: expected squad "
        '({"data": [{"title", "paragraphs": [{"context", "qas": [...]}]}]}), paragraphs '
        '([{"context", "qas": [{"question", "answers"}]}]) or records (JSON Lines or a list of '
        '{"id", "question", "context", "answers": {"text": [...], "answer_start": [...]}}), found '
        'a JSON object with keys "articles"; convert the file to one of these layouts, or name its '
        "layout with --format (format= in Python)"
    )


def test_data_that_is_not_a_list(tmp_path):
    with pytest.raises(DataError) as caught:
        read_dataset(write(tmp_path, {"data": {"title": "x"}}))
    assert str(caught.value).endswith(
        'data: expected a list of articles, found an object; write the articles as '
        '"data": [{"title": ..., "paragraphs": [...]}]'
    )


# --- problems with a place ---------------------------------------------------------------


FIX_START = "set it to the character index where the answer begins in the context (0 is the first)"


@pytest.mark.parametrize(
    "start, message",
    [
        (-3, f'expected "answer_start" >= 0, found -3; {FIX_START}'),
        (24.0, 'expected an integer "answer_start" (the character index where the answer begins in '
               f"the context), found the number 24.0; {FIX_START}"),
        ("24", 'expected an integer "answer_start" (the character index where the answer begins in '
               f'the context), found the string "24"; {FIX_START}'),
        (True, 'expected an integer "answer_start" (the character index where the answer begins in '
               f"the context), found true; {FIX_START}"),
    ],
)
def test_bad_offsets(tmp_path, start, message):
    assert errors(squad_file(tmp_path, [qa(start=start)])) == [f"{Q}.answers[0]: {message}"]


def test_a_start_past_the_context_end_is_repaired_like_any_wrong_start(tmp_path):
    # byte offsets of non-ASCII text overshoot: each accented letter is 2 bytes in UTF-8
    context = "Zürich, Genève, Bâle, Göschenen, Bündner Bär, Fähre, Müller, Öl: Schweiz."
    byte_start = context.encode("utf-8").index(b"Schweiz")
    assert byte_start == 74 > len(context) == 73
    path = squad_file(tmp_path, [qa(text="Schweiz", start=byte_start)], context=context)
    examples, report = read_dataset(path)
    assert report.errors == [] and report.repaired["reanchored"] == 1
    assert examples[0].answers[0].start == context.index("Schweiz") == 65
    assert "moved from 74 to 65" in str(report.repairs[0])
    strict = errors(path, on_error="strict")
    assert len(strict) == 1 and 'expected the context at [74:81] to read "Schweiz", found ""' in strict[0]


def test_missing_offset_and_empty_text_are_both_reported(tmp_path):
    path = squad_file(tmp_path, [{"id": "q1", "question": "Which?", "answers": [{"text": " "}]}])
    assert errors(path) == [
        f'{Q}.answers[0]: expected a non-empty answer "text", found a string of only whitespace (" "); '
        "copy the answer text from the context, or remove this answer",
        f'{Q}.answers[0]: expected an integer "answer_start" (the character index where the answer '
        f"begins in the context), found nothing (the field is missing); {FIX_START}",
    ]


def test_answer_not_in_the_context(tmp_path):
    assert errors(squad_file(tmp_path, [qa(text="Lyon", start=24)])) == [
        f'{Q}.answers[0]: expected the answer text "Lyon" to occur in the context, found it nowhere '
        '(the context at [24:28] reads "Fran"); copy the answer text exactly from the context, '
        "or remove this answer"
    ]


def test_question_and_context_problems(tmp_path):
    path = squad_file(tmp_path, [{"id": "q1", "question": "", "answers": []}, {"id": "q2", "answers": []}],
                      context=" \n")
    assert errors(path) == [
        'data[0].paragraphs[0].context: expected a "context" (a non-empty string), found a string of '
        'only whitespace (" \\n"); put the passage the answers come from in "context"',
        f'{Q}.question: expected a "question" (a non-empty string), found an empty string; write the '
        "question text, or remove this question",
        'data[0].paragraphs[0].qas[1].question: expected a "question" (a non-empty string), found '
        "nothing (the field is missing); write the question text, or remove this question",
    ]


def test_a_question_of_invisible_characters_is_as_blank_as_an_empty_one(tmp_path):
    path = squad_file(tmp_path, [{"id": "q1", "question": "\u200b\u0301", "answers": []},
                                 {"id": "q2", "question": "Who? \u200b", "answers": []}], context="Ada wrote it.")
    assert errors(path) == [
        f'{Q}.question: expected a "question" (a non-empty string), found text with no visible character '
        '(U+200B U+0301); write the question text, or remove this question',
    ]


def test_wrong_types_of_fields(tmp_path):
    qas = [
        {"id": 1.5, "question": "Which?", "answers": []},
        {"id": "b", "question": ["Which?"], "answers": {"text": "France"}},
        {"id": "c", "question": "Which?", "answers": ["France"], "is_impossible": "false"},
    ]
    assert errors(squad_file(tmp_path, qas, title=3)) == [
        'data[0].title: expected a "title" that is a string, found the number 3; write the title '
        "as a string or remove it",
        f'{Q}.id: expected an "id" that is a non-empty string or an integer, found the number 1.5; '
        "give the question an id, or remove the field to have one generated",
        'data[0].paragraphs[0].qas[1].answers: expected a list of {"text", "answer_start"} objects '
        '([] for a question with no answer), found an object; write "answers": [...]',
        'data[0].paragraphs[0].qas[1].question: expected a "question" (a non-empty string), found a '
        "list of 1 items; write the question text, or remove this question",
        'data[0].paragraphs[0].qas[2].is_impossible: expected "is_impossible" to be true or false, '
        'found the string "false"; write true or false',
    ]


def test_structure_problems_above_the_questions(tmp_path):
    path = write(tmp_path, {"data": [[], {"paragraphs": "x"}, {"paragraphs": [3, {"context": "c"}]}]})
    assert errors(path, on_error="skip") == [
        'data[0]: expected an article object {"title", "paragraphs"}, found a list of 0 items; write '
        "each article as such an object",
        'data[1].paragraphs: expected a list of paragraphs, found the string "x"; write "paragraphs": [...]',
        'data[2].paragraphs[0]: expected a paragraph object {"context", "qas"}, found the number 3; '
        "write each paragraph as such an object",
        'data[2].paragraphs[1].qas: expected a list of questions, found nothing (the field is '
        'missing); write "qas": [...] (an empty list if it has none)',
    ]


def test_impossible_question_with_answers(tmp_path):
    assert errors(squad_file(tmp_path, [qa(is_impossible=True)])) == [
        f'{Q}.is_impossible: expected no answers for a question marked "is_impossible": true, found '
        '1 answers; remove the answers or set "is_impossible" to false'
    ]


def test_duplicate_ids_name_both_places(tmp_path):
    path = squad_file(tmp_path, [qa(), qa(id="q2"), qa()])
    examples, report = read_dataset(path)
    assert report.duplicate_ids == 1 and [e.id for e in examples] == ["q1", "q2"]
    assert [str(p) for p in report.errors] == [
        'data[0].paragraphs[0].qas[2].id: expected a unique id, found "q1", already used at '
        f"{Q}; give each question its own id, or remove the ids to have them generated"
    ]


def test_under_skip_a_dropped_question_leaves_its_id_free(tmp_path):
    blank, good = qa(id="x", question=" "), qa(id="x")
    path = squad_file(tmp_path, [blank, good, qa(id="x", text="Lyon"), qa(id="x")])
    examples, report = read_dataset(path, on_error="skip")
    assert [e.place for e in examples] == ["data[0].paragraphs[0].qas[1]"]
    assert report.duplicate_ids == 2 and report.skipped_questions == 3  # the third and fourth repeat the kept id
    out = tmp_path / "fixed.json"
    assert write_fixed(path, out, on_error="skip")[2] and [e.id for e in load_examples(out)] == ["x"]
    # under repair the file has a repeated id whatever else is wrong with its question
    assert read_dataset(path)[1].duplicate_ids == 3


def test_integer_and_string_ids_collide(tmp_path):
    path = squad_file(tmp_path, [qa(id=12), qa(id="12")])
    assert read_dataset(path)[1].duplicate_ids == 1


def test_records_problems(tmp_path):
    record = {"id": "r", "question": "Which?", "context": CONTEXT}
    lines = [
        json.dumps({**record, "answers": {"text": ["France", "Paris"], "answer_start": [24]}}),
        json.dumps({**record, "id": "s", "answers": {"text": ["France"], "answer_start": [-1]}}),
        json.dumps([1]),
        json.dumps({**record, "id": "t", "answers": ["France"]}),
    ]
    path = tmp_path / "records.jsonl"
    path.write_text("\n".join(lines), encoding="utf-8")
    assert errors(path) == [
        'line 1: answers: expected as many "answer_start" values as "text" values, found 2 texts '
        "and 1 starts; give each text its start",
        f'line 2: answers.answer_start[0]: expected "answer_start" >= 0, found -1; {FIX_START}',
        'line 3: expected a record object {"id", "question", "context", "answers"}, found a list '
        "of 1 items; write each record as such an object",
        'line 4: answers: expected an object {"text": [...], "answer_start": [...]}, found a list '
        "of 1 items; write the answers that way (empty lists for a question with no answer)",
    ]


def test_answers_of_a_record_that_cannot_be_read_one_by_one_are_counted(tmp_path):
    record = {"id": "r", "question": "Which?", "context": CONTEXT}
    path = tmp_path / "records.jsonl"
    lines = [{**record, "answers": {"text": ["France", "Paris"], "answer_start": [24]}},
             {**record, "id": "s", "answers": {"text": ["France"], "answer_start": 24}},
             {**record, "id": "t", "answers": {"text": ["France"], "answer_start": [24]}}]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    report = read_dataset(path, on_error="skip")[1]
    assert (report.questions, report.answers, report.kept_questions) == (3, 4, 1)
    assert (report.skipped_questions, report.skipped_answers) == (2, 3)
    assert read_dataset(path)[1].answers == 4


def test_no_questions_is_an_error(tmp_path):
    assert errors(write(tmp_path, {"data": []})) == [
        "file: expected at least one usable question, found none; add questions"
    ]


# --- repairs -----------------------------------------------------------------------------


def test_repairs_whitespace_and_reanchoring():
    examples, report = read_dataset(DATA / "data_needs_repair.json")
    assert report.ok and report.repaired == {"whitespace": 2, "reanchored": 1} and report.max_shift == 9
    assert [e.answers[0] for e in examples] == [
        GoldAnswer("France", 24),  # "France " at 24: trailing space stripped
        GoldAnswer("2024", 49),  # "2024" at 40: moved to where it occurs
        GoldAnswer("Paris", 32),  # "\tParis" at 31: start moves past the stripped tab
        GoldAnswer("Paris", 0),  # already right
    ]
    assert [p.place for p in report.repairs] == [f"data[0].paragraphs[0].qas[{i}].answers[0]" for i in range(3)]


@pytest.mark.parametrize(
    "start, expected",
    [(30, 32), (10, 0), (16, 0), (17, 32), (62, 32)],  # "Paris" occurs at 0 and 32; 16 is a tie
)
def test_reanchoring_picks_the_nearest_occurrence_and_the_earlier_on_a_tie(tmp_path, start, expected):
    examples, report = read_dataset(squad_file(tmp_path, [qa(text="Paris", start=start)]))
    assert examples[0].answers == (GoldAnswer("Paris", expected),)
    assert report.repaired["reanchored"] == 1 and report.max_shift == abs(expected - start)


def test_a_start_that_is_the_byte_offset_of_an_occurrence_picks_it_over_a_nearer_one(tmp_path):
    context = "Çà é Öl, Öl and Öl"  # "Öl" at 5, 9 and 16; before them 3, 4 and 4 two-byte letters
    for first in (5, 9, 16):
        in_bytes = len(context[:first].encode("utf-8"))  # 8, 13, 21: nearer a later "Öl", or past the end
        path = squad_file(tmp_path, [qa("Öl", in_bytes)], context=context)
        assert load_examples(path)[0].answers == (GoldAnswer("Öl", first),)
    # an offset that no occurrence has in bytes is re-anchored to the nearest, as before
    assert load_examples(squad_file(tmp_path, [qa("Öl", 11)], context=context))[0].answers == (GoldAnswer("Öl", 9),)


def test_strict_repairs_nothing_and_says_what_repair_would_do():
    examples, report = read_dataset(DATA / "data_needs_repair.json", on_error="strict")
    assert not report.ok and report.repaired == {"whitespace": 0, "reanchored": 0}
    assert [e.id for e in examples] == ["f4"]
    assert str(report.errors[1]) == (
        'data[0].paragraphs[0].qas[1].answers[0]: expected the context at [40:44] to read "2024", '
        'found "sted"; fix the answer ("2024" occurs at 49), or let qatune repair it with --on-error repair'
    )


@pytest.mark.parametrize(
    "text, start, gold, note",
    [
        # the start already points at the stripped text
        (" France", 24, GoldAnswer("France", 24), 'stripped whitespace: " France" at 24 -> "France" at 24'),
        (" France ", 24, GoldAnswer("France", 24), 'stripped whitespace: " France " at 24 -> "France" at 24'),
        ("France ", 24, GoldAnswer("France", 24), 'stripped whitespace: "France " at 24 -> "France" at 24'),
        # the start points into the whitespace before the stripped text (context[31] is " ")
        ("  Paris", 31, GoldAnswer("Paris", 32), 'stripped whitespace: "  Paris" at 31 -> "Paris" at 32'),
        # the start plus the leading whitespace of the text points at it
        ("\tParis", 31, GoldAnswer("Paris", 32), 'stripped whitespace: "\\tParis" at 31 -> "Paris" at 32'),
        # a start that misses by more than the leading whitespace is a re-anchoring
        (" Paris", 30, GoldAnswer("Paris", 32),
         're-anchored: "Paris" moved from 30 to 32 (2 characters), where it occurs in the context'),
        ("Paris ", 31, GoldAnswer("Paris", 32),
         're-anchored: "Paris" moved from 31 to 32 (1 characters), where it occurs in the context'),
    ],
)
def test_whitespace_repairs(tmp_path, text, start, gold, note):
    examples, report = read_dataset(squad_file(tmp_path, [qa(text=text, start=start)]))
    assert examples[0].answers == (gold,)
    assert [str(p) for p in report.repairs] == [f"{Q}.answers[0]: {note}"]
    kind = "whitespace" if note.startswith("stripped") else "reanchored"
    assert report.repaired == {"whitespace": 0, "reanchored": 0, kind: 1}



# --- the skip policy ---------------------------------------------------------------------


def test_skip_drops_bad_answers_and_questions_and_counts_them(tmp_path):
    qas = [
        {"id": "a", "question": "Which?", "answers": [{"text": "France", "answer_start": 24},
                                                      {"text": "Lyon", "answer_start": 0}]},
        {"id": "b", "question": "Which?", "answers": [{"text": "Lyon", "answer_start": 0}]},
        {"id": "c", "question": " ", "answers": [{"text": "France", "answer_start": 24}]},
        {"id": "a", "question": "Again?", "answers": []},
        {"id": "d", "question": "None?", "answers": []},
        "not a question",
    ]
    examples, report = read_dataset(squad_file(tmp_path, qas), on_error="skip")
    assert report.ok and report.errors == []
    assert [(e.id, len(e.answers)) for e in examples] == [("a", 1), ("d", 0)]
    # "b" lost its only answer: dropped, never turned into an unanswerable question
    assert (report.skipped_questions, report.skipped_answers) == (4, 3)
    assert report.questions == len(examples) + report.skipped_questions
    assert report.answers == sum(len(e.answers) for e in examples) + report.skipped_answers
    assert report.unanswerable == 1 and report.duplicate_ids == 1
    assert "data[0].paragraphs[0].qas[1]: dropped: none of its 1 answers could be used (it is not " \
           "turned into an unanswerable question)" in [str(p) for p in report.skips]


def test_skip_counts_an_answer_with_two_problems_once(tmp_path):
    question = {"id": "a", "question": "Which?", "answers": [{}, {"text": "France", "answer_start": 24}]}
    examples, report = read_dataset(squad_file(tmp_path, [question]), on_error="skip")
    assert examples[0].answers == (GoldAnswer("France", 24),)
    assert (report.answers, report.skipped_answers, len(report.skips)) == (2, 1, 2)


def test_skip_drops_every_question_of_a_bad_context(tmp_path):
    examples, report = read_dataset(squad_file(tmp_path, [qa(), qa(id="q2")], context=5), on_error="skip")
    assert examples == [] and report.skipped_questions == 2 and report.skipped_answers == 2
    assert [p.place for p in report.errors] == ["file"]  # nothing usable is left


def test_repair_policy_reports_what_skip_would_drop(tmp_path):
    path = squad_file(tmp_path, [qa(), qa(id="q2", text="Lyon")])
    examples, report = read_dataset(path)
    assert [e.id for e in examples] == ["q1"] and len(report.errors) == 1
    assert (report.skipped_questions, report.skipped_answers) == (0, 0)


# --- load_examples and write_squad_v2 ------------------------------------------------------


def test_load_examples_raises_the_first_problem_and_counts_the_rest(tmp_path):
    path = squad_file(tmp_path, [qa(start=-1), qa(id="q2", start=-2), qa(id="q3", start=-3)])
    with pytest.raises(DataError) as caught:
        load_examples(path)
    assert str(caught.value) == (
        f'{path}: {Q}.answers[0]: expected "answer_start" >= 0, found -1; {FIX_START} '
        f"(and 2 more problems; run `qatune validate {path}` to see them all)"
    )


def test_load_examples_with_one_problem_has_no_tail(tmp_path):
    path = squad_file(tmp_path, [qa(start=-1)])
    with pytest.raises(DataError) as caught:
        load_examples(path)
    assert str(caught.value) == f'{path}: {Q}.answers[0]: expected "answer_start" >= 0, found -1; {FIX_START}'


@pytest.mark.parametrize("name", ["data_needs_repair.json", "data_paragraphs.json", "data_records.jsonl",
                                  "data_squad_v2.json"])
def test_write_squad_v2_round_trips_with_zero_repairs(tmp_path, name):
    examples = load_examples(DATA / name)
    out = tmp_path / "fixed.json"
    write_squad_v2(examples, out)
    again, report = read_dataset(out)
    assert report.layout == "squad" and report.ok
    assert report.repaired == {"whitespace": 0, "reanchored": 0}
    assert json.loads(out.read_text(encoding="utf-8"))["version"] == "v2.0"
    assert sorted(strip_place(again), key=lambda e: e.id) == sorted(strip_place(examples), key=lambda e: e.id)


def test_write_squad_v2_groups_by_title_then_context(tmp_path):
    def example(id_: str, title: str, context: str) -> Example:
        return Example(id_, "Q?", context, (GoldAnswer(context[:1], 0),), title=title)

    examples = [example("1", "A", "x1"), example("2", "B", "y1"), example("3", "A", "x2"), example("4", "A", "x1")]
    out = tmp_path / "out.json"
    write_squad_v2(examples, out)
    data = json.loads(out.read_text(encoding="utf-8"))["data"]
    layout = [(a["title"], [(p["context"], [q["id"] for q in p["qas"]]) for p in a["paragraphs"]]) for a in data]
    assert layout == [("A", [("x1", ["1", "4"]), ("x2", ["3"])]), ("B", [("y1", ["2"])])]


def test_write_fixed_removes_only_what_skip_drops(tmp_path):
    lyon_and_paris = [{"text": "Lyon", "answer_start": 0}, {"text": "Paris", "answer_start": 0}]
    doc = {"data": [{"title": "Paris", "note": "\ud800", "paragraphs": [
        {"context": " ", "qas": [qa(id="q0")]},
        {"context": CONTEXT, "qas": ["not a question", qa(), qa(id="q2", answers=lyon_and_paris)]},
    ]}]}
    path, out = tmp_path / "data.json", tmp_path / "fixed.json"
    path.write_text(json.dumps(doc), encoding="utf-8")  # the lone surrogate as an escape
    examples, report, written = write_fixed(path, out, on_error="skip")
    assert written and (report.skipped_questions, report.skipped_answers) == (2, 2)
    paragraphs = doc["data"][0]["paragraphs"]
    del paragraphs[1]["qas"][2]["answers"][0]  # "Lyon" is not in the context
    del paragraphs[1]["qas"][0]  # not a question
    del paragraphs[0]  # its context is only whitespace (and its question goes with it)
    assert json.loads(out.read_text(encoding="utf-8")) == doc
    again, again_report = read_dataset(out)
    assert again_report.ok and again_report.skips == [] and strip_place(again) == strip_place(examples)


def test_write_fixed_keeps_records_as_a_json_list_and_writes_nothing_when_errors_remain(tmp_path):
    records = [{"question": "Which country?", "context": CONTEXT, "answers": {"text": ["France"], "answer_start": [24]}}]
    out = tmp_path / "fixed.json"
    examples, _, written = write_fixed(write(tmp_path, records), out)
    assert written and json.loads(out.read_text(encoding="utf-8")) == [{**records[0], "id": examples[0].id}]
    _, report, written = write_fixed(squad_file(tmp_path, [qa(start=-1)]), tmp_path / "not.json")
    assert not written and not report.ok and not (tmp_path / "not.json").exists()


def test_report_to_dict_and_summary():
    _, report = read_dataset(DATA / "data_needs_repair.json")
    as_dict = report.to_dict()
    assert json.loads(json.dumps(as_dict)) == as_dict
    assert {"questions", "answers", "unanswerable", "repaired", "skipped", "errors"} <= set(as_dict)
    assert as_dict["repaired"] == {"whitespace": 2, "reanchored": 1}
    assert as_dict["skipped"] == {"questions": 0, "answers": 0}
    text = report.summary(max_problems=1)
    assert "  1 articles, 1 contexts, 4 questions, 4 answers, 0 unanswerable" in text
    assert "  repaired: 2 whitespace, 1 re-anchored (largest shift 9 characters)" in text
    assert "... and 2 more (see --max-problems)" in text
    assert text.endswith("verdict: OK: 4 questions ready to use (0 unanswerable)")


def test_repair_line_uses_the_words_of_the_summary(tmp_path):
    _, report = read_dataset(DATA / "data_needs_repair.json")
    assert report.repair_line() == (
        "3 answers repaired: 2 whitespace, 1 re-anchored (largest shift 9 characters); "
        "skipped: 0 questions, 0 answers"
    )
    summary = report.summary().splitlines()
    assert summary[2:4] == [
        "  repaired: 2 whitespace, 1 re-anchored (largest shift 9 characters)",
        "  skipped: 0 questions, 0 answers",
    ]
    path = squad_file(tmp_path, [qa(), qa(id="q2", text="Lyon"), qa(id="q3", text="Paris", start=30)])
    _, skipped = read_dataset(path, on_error="skip")
    assert skipped.repair_line() == (
        "1 answers repaired: 0 whitespace, 1 re-anchored (largest shift 2 characters); "
        "skipped: 1 questions, 1 answers"
    )


# --- the real data files -------------------------------------------------------------------


def real(name: str) -> Path:
    """A file of the shared data folder; skipped in a plain clone, a failure where CI requires it."""
    import os  # only here: the one test helper that reads the environment

    path = SHARED / name
    if not path.exists():
        missing = f"{path} is not here (the shared data folder sits beside the repository)"
        required = os.environ.get("QATUNE_REQUIRE_SHARED_DATA", "")
        if required not in ("", "0"):
            pytest.fail(
                f"{missing} and QATUNE_REQUIRE_SHARED_DATA={required} says these tests must run: "
                "put a copy of shared/ beside the repository, or unset QATUNE_REQUIRE_SHARED_DATA "
                "to skip them"
            )
        pytest.skip(missing)
    return path


def test_missing_shared_data_is_a_skip_in_a_clone_and_a_failure_where_required(monkeypatch):
    monkeypatch.delenv("QATUNE_REQUIRE_SHARED_DATA", raising=False)
    with pytest.raises(pytest.skip.Exception):
        real("no-such-file.json")
    monkeypatch.setenv("QATUNE_REQUIRE_SHARED_DATA", "1")  # as .ci/run sets it
    with pytest.raises((pytest.skip.Exception, pytest.fail.Exception)) as caught:
        real("no-such-file.json")
    assert caught.type is pytest.fail.Exception
    assert str(caught.value) == (
        f"{SHARED / 'no-such-file.json'} is not here (the shared data folder sits beside the "
        "repository) and QATUNE_REQUIRE_SHARED_DATA=1 says these tests must run: put a copy of "
        "shared/ beside the repository, or unset QATUNE_REQUIRE_SHARED_DATA to skip them"
    )


@pytest.mark.parametrize(
    "name, questions, unanswerable, answers, contexts",
    [
        ("squad-v2.0-train-first10articles.json", 4719, 348, 4371, 694),
        ("tydiqa-goldp-v1.1-en-train.json", 3696, 0, 3696, 3429),
        ("tydiqa-goldp-v1.1-en-dev.json", 440, 0, 686, 429),
    ],
)
def test_real_files_load_and_need_no_repairs(name, questions, unanswerable, answers, contexts):
    examples, report = read_dataset(real(name))
    assert report.ok and len(examples) == report.questions == questions
    assert (report.unanswerable, report.answers, report.contexts) == (unanswerable, answers, contexts)
    assert report.repaired == {"whitespace": 0, "reanchored": 0} and report.max_shift == 0
    assert report.duplicate_ids == 0 and report.skipped_questions == 0
    assert read_dataset(real(name), on_error="strict")[1].ok  # not one answer is misplaced
    impossible = [e for e in examples if e.is_impossible]
    assert len(impossible) == unanswerable and all(e.answers == () for e in impossible)


@pytest.mark.parametrize("name", ["questions.csv", "questions.TSV"])
def test_a_table_is_refused_as_a_table_not_as_broken_json(tmp_path, name):
    path = tmp_path / name
    path.write_text("question,context,answer\nWho?,Ada wrote it.,Ada\n", encoding="utf-8")
    with pytest.raises(DataError) as caught:
        read_dataset(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: expected JSON or JSON Lines, found a file named as a table")
    assert "qatune does not read" in message and '"answer_start"' in message and "syntax error" not in message
