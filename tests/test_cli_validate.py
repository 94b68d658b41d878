"""`qatune validate`, run the way a user runs it: in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
    # sb1 lost its only answer; sb2 keeps two of its three; the (unanswerable) repeat of sb1 goes
    assert "  skipped: 2 questions, 2 answers" in result.stdout
    assert "  verdict: OK: 4 questions ready to use (1 unanswerable)" in result.stdout


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
    assert result.stdout.splitlines()[-1] == f"wrote 4 questions to {out} (SQuAD v2.0 layout)"
    again = json.loads(qatune("validate", out, "--json").stdout)
    assert again["ok"] and again["questions"] == 4
    assert again["repaired"] == {"whitespace": 0, "reanchored": 0}


def test_write_fixed_keeps_what_skip_keeps(tmp_path):
    out = tmp_path / "fixed.json"
    result = qatune("validate", broken_copy(tmp_path), "--on-error", "skip", "--write-fixed", out)
    assert result.returncode == 0 and f"wrote 4 questions to {out}" in result.stdout
    again = json.loads(qatune("validate", out, "--json").stdout)
    assert (again["questions"], again["skipped"], again["duplicate_ids"]) == (4, {"questions": 0, "answers": 0}, 0)


def test_write_fixed_refuses_a_file_with_errors(tmp_path):
    out = tmp_path / "fixed.json"
    result = qatune("validate", broken_copy(tmp_path), "--write-fixed", out)
    assert result.returncode == 1 and not out.exists()
    assert result.stdout.splitlines()[-1] == (
        f"not written: {out}: 3 errors remain; fix them, or use --on-error skip to drop what cannot be used"
    )


def test_write_fixed_with_json_reports_what_was_written(tmp_path):
    out = tmp_path / "fixed.json"
    result = qatune("validate", NEEDS_REPAIR, "--json", "--write-fixed", out)
    assert result.returncode == 0
    assert json.loads(result.stdout)["written"]["questions"] == 4
    assert result.stderr == f"wrote 4 questions to {out} (SQuAD v2.0 layout)\n"


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
