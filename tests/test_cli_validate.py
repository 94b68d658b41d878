"""`qatune validate`, run the way a user runs it: in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from qatune.data import read_dataset

DATA = Path(__file__).parent / "data"
GOOD = DATA / "data_squad_v2.json"
NEEDS_REPAIR = DATA / "data_needs_repair.json"


def qatune(*args: object) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "qatune", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def broken_copy(tmp_path: Path) -> Path:
    """The good file with a negative offset, an answer that is not in its context and a repeated id."""
    doc = json.loads(GOOD.read_text(encoding="utf-8"))
    qas = doc["data"][0]["paragraphs"][0]["qas"]
    qas[0]["answers"][0]["answer_start"] = -1
    qas[1]["answers"][2]["text"] = "Jaguars"
    doc["data"][1]["paragraphs"][0]["qas"][1]["id"] = "sb1"
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    return path


def test_a_good_file(tmp_path):
    result = qatune("validate", GOOD)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"{GOOD} (squad layout, --on-error repair)"
    assert lines[1] == "  2 articles, 3 contexts, 6 questions, 7 answers, 2 unanswerable"
    assert lines[-1] == "  verdict: OK: 6 questions ready to use (2 unanswerable)"


def test_a_file_that_needs_repairs_is_usable_and_says_what_was_repaired():
    result = qatune("validate", NEEDS_REPAIR)
    assert result.returncode == 0, result.stderr
    assert "  repaired: 2 whitespace, 1 re-anchored (largest shift 9 characters)" in result.stdout
    assert (
        '    repaired: data[0].paragraphs[0].qas[1].answers[0]: re-anchored: "2024" moved from 40 to 49 '
        "(9 characters), where it occurs in the context"
    ) in result.stdout.splitlines()


def test_whitespace_around_an_answer_that_starts_right_is_a_whitespace_repair(tmp_path):
    doc = json.loads(NEEDS_REPAIR.read_text(encoding="utf-8-sig"))
    answer = doc["data"][0]["paragraphs"][0]["qas"][0]["answers"][0]
    answer["text"] = " France"  # answer_start 24 already points at "France"
    path = tmp_path / "space.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    lines = qatune("validate", path).stdout.splitlines()
    assert "  repaired: 2 whitespace, 1 re-anchored (largest shift 9 characters)" in lines
    assert (
        '    repaired: data[0].paragraphs[0].qas[0].answers[0]: stripped whitespace: " France" at 24 -> '
        '"France" at 24'
    ) in lines


def test_the_count_line_of_each_layout():
    squad, paragraphs, records = (
        qatune("validate", DATA / name).stdout.splitlines()[1]
        for name in ("data_squad_v2.json", "data_paragraphs.json", "data_records.jsonl")
    )
    assert squad == "  2 articles, 3 contexts, 6 questions, 7 answers, 2 unanswerable"
    # only the squad layout has articles; the others may have titles
    assert paragraphs == "  no titles, 1 contexts, 3 questions, 3 answers, 0 unanswerable"
    assert records == "  1 titles, 1 contexts, 3 questions, 3 answers, 1 unanswerable"
    report = json.loads(qatune("validate", DATA / "data_paragraphs.json", "--json").stdout)
    assert (report["articles"], report["titles"], report["contexts"]) == (None, 0, 1)


def test_strict_makes_every_mismatch_an_error():
    result = qatune("validate", NEEDS_REPAIR, "--on-error", "strict")
    assert result.returncode == 1
    assert "  verdict: NOT USABLE: 3 errors under --on-error strict;" in result.stdout


def test_a_broken_file_prints_the_places_and_exits_1(tmp_path):
    path = broken_copy(tmp_path)
    result = qatune("validate", path)
    assert result.returncode == 1
    out = result.stdout
    assert "  duplicate ids: 1" in out
    assert "  problems (first 3 of 3):" in out
    assert '    error: data[0].paragraphs[0].qas[0].answers[0]: expected "answer_start" >= 0, found -1;' in out
    assert '    error: data[0].paragraphs[0].qas[1].answers[2]: expected the answer text "Jaguars" to occur' in out
    assert (
        '    error: data[1].paragraphs[0].qas[1].id: expected a unique id, found "sb1", already used at '
        "data[0].paragraphs[0].qas[0];"
    ) in out
    assert out.rstrip().endswith(
        "verdict: NOT USABLE: 3 errors under --on-error repair; fix them, or run with --on-error skip "
        "to drop what cannot be used"
    )


def test_skip_drops_and_counts(tmp_path):
    result = qatune("validate", broken_copy(tmp_path), "--on-error", "skip")
    assert result.returncode == 0, result.stdout
    # sb1 lost its only answer; sb2 keeps two of its three; the (unanswerable) question that repeated
    # sb1's id stays, since no question kept has that id
    assert "  skipped: 1 questions, 2 answers" in result.stdout
    assert "  duplicate ids: 0" in result.stdout
    assert "  verdict: OK: 5 questions ready to use (2 unanswerable)" in result.stdout


def test_max_problems(tmp_path):
    result = qatune("validate", broken_copy(tmp_path), "--max-problems", "1")
    assert "  problems (first 1 of 3):" in result.stdout
    assert "    ... and 2 more (see --max-problems)" in result.stdout
    assert sum(line.startswith("    error: ") for line in result.stdout.splitlines()) == 1


def test_an_unreadable_file_exits_2_without_a_traceback(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"data": [', encoding="utf-8")
    result = qatune("validate", path)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == (
        f"error: {path}: expected valid JSON, found a syntax error at line 1, column 11 "
        "(Expecting value); fix the JSON there\n"
    )


def test_a_file_that_cannot_be_read_does_not_hide_the_reports_of_the_others(tmp_path):
    missing, empty = tmp_path / "nope.json", tmp_path / "empty.json"
    empty.write_text("", encoding="utf-8")
    result = qatune("validate", NEEDS_REPAIR, missing, empty)
    assert result.returncode == 2
    assert result.stdout.startswith(f"{NEEDS_REPAIR} (squad layout, --on-error repair)")
    assert result.stderr == (
        f"error: {missing}: expected a data file, found no such file; check the path\n"
        f"error: {empty}: expected JSON data, found an empty file; add the data\n"
    )
    as_json = qatune("validate", "--json", missing, NEEDS_REPAIR)
    assert as_json.returncode == 2
    document = json.loads(as_json.stdout)
    assert document["ok"] is False
    assert document["files"][0] == {
        "path": str(missing), "ok": False, "error": f"{missing}: expected a data file, found no such file; check the path",
    }
    assert document["files"][1]["path"] == str(NEEDS_REPAIR) and document["files"][1]["ok"] is True


def test_json_output_for_one_and_for_several_files(tmp_path):
    one = qatune("validate", NEEDS_REPAIR, "--json")
    assert one.returncode == 0
    report = json.loads(one.stdout)
    for key in ("questions", "answers", "unanswerable", "repaired", "skipped", "errors", "ok"):
        assert key in report
    assert report["repaired"] == {"whitespace": 2, "reanchored": 1} and report["max_shift"] == 9

    several = qatune("validate", GOOD, broken_copy(tmp_path), "--json")
    assert several.returncode == 1
    document = json.loads(several.stdout)
    assert document["ok"] is False
    assert [(f["ok"], len(f["errors"])) for f in document["files"]] == [(True, 0), (False, 3)]


def test_write_fixed_then_revalidate_gives_zero_repairs(tmp_path):
    out = tmp_path / "fixed.json"
    result = qatune("validate", NEEDS_REPAIR, "--write-fixed", out)
    assert result.returncode == 0
    assert result.stdout.splitlines()[-1] == (
        f"wrote 4 questions to {out} (the input's squad layout; changed: 3 answers repaired, "
        "0 questions and 0 answers removed, 0 generated ids added)"
    )
    again = json.loads(qatune("validate", out, "--json").stdout)
    assert again["ok"] and again["questions"] == 4
    assert again["repaired"] == {"whitespace": 0, "reanchored": 0}


def test_write_fixed_keeps_what_skip_keeps(tmp_path):
    out = tmp_path / "fixed.json"
    result = qatune("validate", broken_copy(tmp_path), "--on-error", "skip", "--write-fixed", out)
    assert result.returncode == 0 and f"wrote 5 questions to {out}" in result.stdout
    again = json.loads(qatune("validate", out, "--json").stdout)
    assert (again["questions"], again["skipped"], again["duplicate_ids"]) == (5, {"questions": 0, "answers": 0}, 0)


def rich_squad() -> dict:
    """Unknown fields at every level, two untitled articles, an answer to repair, a question without an id."""
    context = "Paris is the capital of France. Paris hosted the 2024 Olympics."
    return {
        "version": "v2.0",
        "source": "hand-made",
        "data": [
            {"url": "https://example.org/1", "paragraphs": [{"context": context, "document_id": "d1", "qas": [
                {"id": "q1", "question": "Which country?", "difficulty": 2,
                 "answers": [{"text": " France", "answer_start": 24, "annotator": "a"}]},
            ]}]},
            {"paragraphs": [{"context": context, "document_id": "d2", "qas": [
                {"question": "Which city?", "answers": [{"text": "Paris", "answer_start": 0}], "is_impossible": False},
            ]}]},
        ],
    }


def test_write_fixed_changes_only_what_was_repaired_and_generated(tmp_path):
    source, out = tmp_path / "rich.json", tmp_path / "fixed.json"
    source.write_text(json.dumps(rich_squad()), encoding="utf-8")
    result = qatune("validate", source, "--write-fixed", out)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == (
        f"wrote 2 questions to {out} (the input's squad layout; changed: 1 answers repaired, "
        "0 questions and 0 answers removed, 1 generated ids added)"
    )
    examples, _ = read_dataset(source)
    expected = rich_squad()
    expected["data"][0]["paragraphs"][0]["qas"][0]["answers"][0]["text"] = "France"
    expected["data"][1]["paragraphs"][0]["qas"][0]["id"] = examples[1].id
    assert json.loads(out.read_text(encoding="utf-8")) == expected
    again, report = read_dataset(out)
    assert again == examples and report.repairs == [] and report.generated_ids == 0


def test_write_fixed_removes_only_what_skip_drops(tmp_path):
    source, out = broken_copy(tmp_path), tmp_path / "fixed.json"
    assert qatune("validate", source, "--on-error", "skip", "--write-fixed", out).returncode == 0
    expected = json.loads(source.read_text(encoding="utf-8"))
    first = expected["data"][0]["paragraphs"][0]["qas"]
    del first[1]["answers"][2]  # "Jaguars" is not in the context
    del first[0]  # sb1 lost its only answer (so the later question with its id is no repeat)
    assert json.loads(out.read_text(encoding="utf-8")) == expected


def test_write_fixed_keeps_the_paragraphs_layout_and_writes_generated_ids(tmp_path):
    doc = json.loads((DATA / "data_paragraphs.json").read_text(encoding="utf-8"))
    doc[0].update(title="Marie Curie", document_id="curie-1")
    source = tmp_path / "paragraphs.json"
    source.write_text(json.dumps(doc), encoding="utf-8")
    outs = [tmp_path / "fixed1.json", tmp_path / "fixed2.json"]
    for out in outs:  # two runs, two processes: the same generated id
        assert qatune("validate", source, "--write-fixed", out).returncode == 0
    assert outs[0].read_bytes() == outs[1].read_bytes()
    doc[0]["qas"][2]["id"] = "a98872ea7e23"  # a sha1 of question and context: the same on any machine
    assert json.loads(outs[0].read_text(encoding="utf-8")) == doc
    assert [e.id for e in read_dataset(outs[0])[0]] == ["p1", "p2", "a98872ea7e23"]


def test_write_fixed_keeps_json_lines(tmp_path):
    records = [json.loads(line) for line in (DATA / "data_records.jsonl").read_text(encoding="utf-8").splitlines()]
    records[0]["answers"]["text"][1] = "Pacific Ocean"  # not in the context: skip drops it
    records[1]["answers"]["text"][0] = " Peru"  # repaired
    records[1]["source"] = "hand-made"
    del records[2]["id"]
    source, out = tmp_path / "records.jsonl", tmp_path / "fixed.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    assert qatune("validate", source, "--on-error", "skip", "--write-fixed", out).returncode == 0
    examples, _ = read_dataset(source, on_error="skip")
    records[0]["answers"] = {"text": ["the Atlantic Ocean"], "answer_start": [62]}
    records[1]["answers"]["text"][0] = "Peru"
    records[2]["id"] = examples[2].id
    assert [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()] == records
    again, report = read_dataset(out)
    assert (report.layout, report.repairs, again) == ("records", [], examples)


def test_write_fixed_refuses_a_file_with_errors(tmp_path):
    out = tmp_path / "fixed.json"
    result = qatune("validate", broken_copy(tmp_path), "--write-fixed", out)
    assert result.returncode == 1 and not out.exists()
    assert result.stdout.splitlines()[-1] == (
        f"not written: {out}: 3 errors remain; fix them, or use --on-error skip to drop what cannot be used"
    )


def test_skip_is_suggested_only_where_it_would_help(tmp_path):
    bad_question = tmp_path / "bad_question.json"
    bad_question.write_text(json.dumps({"data": [{"paragraphs": [{"context": "Alpha beta.", "qas": [
        {"id": "a", "question": " ", "answers": []}, {"id": "b", "question": "Which?", "answers": []}]}]}]}))
    bad_structure = tmp_path / "bad_structure.json"
    bad_structure.write_text(json.dumps({"data": [{"paragraphs": [{"context": "Alpha beta.", "qas": None}]}]}))
    for path, helps in ((bad_question, True), (bad_structure, False)):
        for policy in ("repair", "skip"):
            out = tmp_path / f"{path.stem}-{policy}-fixed.json"
            result = qatune("validate", path, "--on-error", policy, "--write-fixed", out)
            suggested = "--on-error skip to drop what cannot be used" in result.stdout
            assert suggested == (helps and policy == "repair"), (path.name, policy, result.stdout)
            assert result.returncode == (0 if helps and policy == "skip" else 1)


def test_write_fixed_with_json_reports_what_was_written(tmp_path):
    out = tmp_path / "fixed.json"
    result = qatune("validate", NEEDS_REPAIR, "--json", "--write-fixed", out)
    assert result.returncode == 0
    assert json.loads(result.stdout)["written"]["questions"] == 4
    assert result.stderr.startswith(f"wrote 4 questions to {out} (the input's squad layout;")


def test_write_fixed_never_overwrites_its_input(tmp_path):
    path = broken_copy(tmp_path)
    before = path.read_bytes()
    result = qatune("validate", path, "--on-error", "skip", "--write-fixed", path)
    assert result.returncode == 2 and path.read_bytes() == before
    assert result.stderr.startswith(f"error: --write-fixed: expected a new file, found the input file {path} itself;")


def test_write_fixed_takes_one_input_file(tmp_path):
    result = qatune("validate", GOOD, NEEDS_REPAIR, "--write-fixed", tmp_path / "out.json")
    assert result.returncode == 2
    assert result.stderr == (
        "error: --write-fixed: expected one input file, found 2; validate and fix the files one at a time\n"
    )


def test_validating_never_imports_torch():
    code = (
        "import argparse, sys\n"
        "from qatune.cli import validate\n"
        "parser = argparse.ArgumentParser()\n"
        "validate.add_arguments(parser)\n"
        f"validate.run(parser.parse_args([{str(NEEDS_REPAIR)!r}, '--json']))\n"
        "print('torch' in sys.modules, file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stderr == "False\n"
