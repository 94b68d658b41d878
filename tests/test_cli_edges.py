"""Edges of the command line, run the way a user runs them: odd files, odd bytes, odd numbers,
a reader that stops early. Each is a clear `error: ...` (or a quiet stop), never a traceback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TINY_QA
from test_cli_model import qatune

CUP_FINAL = "Riverside Athletic won the cup final 3-0 in 1998 at Hampden Park."


def expect_error(result: subprocess.CompletedProcess, message: str) -> None:
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert result.stderr == f"error: {message}\n"


# --- ask --context-file ----------------------------------------------------------------


def test_context_file_offsets_index_its_exact_text(tiny_bert, tmp_path):
    # \r\n and a lone \r before the answers, and a BOM, which is skipped as in data files
    exact_text = "Cup final\r\n\r\nReport\r" + CUP_FINAL + "\r\nThe captain was Maria Lopez."
    context_file = tmp_path / "context.txt"
    context_file.write_bytes(b"\xef\xbb\xbf" + exact_text.encode("utf-8"))
    result = qatune("ask", tiny_bert, "-q", "Who won?", "--context-file", context_file, "--top-k", "20", "--no-bf16")
    answers = json.loads(result.stdout)
    assert any(answer["start"] > exact_text.index("\r\n") for answer in answers)
    for answer in answers:
        assert exact_text[answer["start"] : answer["end"]] == answer["text"]


def test_context_file_that_is_a_directory(tmp_path):
    expect_error(
        qatune("ask", tmp_path / "model", "-q", "Who won?", "--context-file", tmp_path, check=False),
        f"{tmp_path}: expected a UTF-8 text file for --context-file, found a directory; "
        "give the path of a text file",
    )


def test_missing_context_file(tmp_path):
    missing = tmp_path / "nope.txt"
    expect_error(
        qatune("ask", tmp_path / "model", "-q", "Who won?", "--context-file", missing, check=False),
        f"{missing}: context file not found; check the path given to --context-file",
    )


def test_context_file_that_cannot_be_read(tmp_path):
    context_file = tmp_path / "secret.txt"
    context_file.write_text(CUP_FINAL, encoding="utf-8")
    context_file.chmod(0)
    if os.access(context_file, os.R_OK):
        pytest.skip("this user reads files without read permission (root, or not POSIX)")
    expect_error(
        qatune("ask", tmp_path / "model", "-q", "Who won?", "--context-file", context_file, check=False),
        f"{context_file}: cannot read the file (Permission denied); check its permissions",
    )


def test_context_file_that_is_not_utf8(tmp_path):
    context_file = tmp_path / "latin1.txt"
    context_file.write_bytes("Café Riverside won.".encode("latin-1"))
    expect_error(
        qatune("ask", tmp_path / "model", "-q", "Who won?", "--context-file", context_file, check=False),
        f"{context_file}: expected UTF-8 text, found the byte 0xe9 at byte offset 3 (line 1), "
        "which is not valid UTF-8; save the file as UTF-8",
    )


# --- bytes that are not UTF-8 in -q / -c --------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "name", "position"),
    [
        (["-q", "Who w\udcffn?", "-c", CUP_FINAL], "question", 5),
        (["--question", "Who won?", "--context", "Riverside w\udcffn."], "context", 11),
    ],
)
def test_a_byte_that_is_not_utf8_in_an_option(tiny_bert, arguments, name, position):
    # Python decodes argv with surrogateescape: the byte 0xff arrives as the str "\udcff"
    # (and subprocess encodes that str back to the byte 0xff).
    expect_error(
        qatune("ask", tiny_bert, *arguments, "--no-bf16", check=False),
        f"the {name} must be valid UTF-8 text, found the byte 0xff at character {position}, which is "
        f"not UTF-8 (Python holds it as the lone surrogate U+DCFF); pass the {name} as UTF-8 text",
    )


def test_a_lone_surrogate_through_the_python_api(tiny_bert):
    from qatune.errors import SettingsError
    from qatune.inference import QAModel

    model = QAModel.from_pretrained(tiny_bert, bf16=False)
    with pytest.raises(SettingsError) as error:
        model.ask("Who won?", "Riverside \ud800 won.")
    assert str(error.value) == (
        "the context must be valid UTF-8 text, found the lone surrogate U+D800 at character 10, "
        "which has no UTF-8 form; pass the context as UTF-8 text"
    )


# --- a reader that closes stdout early (`qatune validate FILE | head -1`) -----------------


def many_problems(path: Path) -> Path:
    """Data whose report is longer than any stdout buffer, so the write fails mid-command."""
    record = {"question": "Who?", "context": "Ada wrote it.", "answers": {"text": ["Bob"], "answer_start": [0]}}
    lines = [json.dumps({"id": f"r{i}", **record}) for i in range(300)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("long_output", [False, True], ids=["short", "long"])
def test_a_reader_that_closes_early_stops_quietly(tmp_path, long_output):
    arguments = [many_problems(tmp_path / "bad.jsonl"), "--max-problems", "1000"] if long_output else [TINY_QA]
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before qatune writes: no luck with timing needed
    try:
        result = subprocess.run(
            [sys.executable, "-m", "qatune", "validate", *map(str, arguments)],
            stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120,
        )
    finally:
        os.close(write_end)
    assert result.stderr == ""
    assert result.returncode == 141  # 128 + SIGPIPE, what a shell reports for `yes | head -1`


# --- --top-k ---------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5"])
@pytest.mark.parametrize("command", ["ask", "predict"])
def test_top_k_below_one_is_an_argument_error(tmp_path, command, value):
    inputs = ["-q", "Who?", "-c", "Ada."] if command == "ask" else [TINY_QA, "-o", tmp_path / "p.json"]
    result = qatune(command, tmp_path / "model", *inputs, "--top-k", value, check=False)
    assert result.returncode == 2
    assert result.stderr.endswith(
        f"qatune {command}: error: argument --top-k: expected a whole number >= 1, found {value!r}\n"
    )
    assert "Traceback" not in result.stderr


# --- predict --details for data without ids ----------------------------------------------


def test_details_name_the_question_its_context_and_place(tiny_bert, tmp_path):
    first, second = CUP_FINAL, "The captain that day was Maria Lopez, who scored twice."
    paragraphs = [  # no ids; the first context comes again in a third paragraph
        {"context": first, "qas": [{"question": "Who won?", "answers": []}, {"question": "When?", "answers": []}]},
        {"context": second, "qas": [{"question": "Who was the captain?", "answers": []}]},
        {"context": first, "qas": [{"question": "Where?", "answers": []}]},
    ]
    data = tmp_path / "questions.json"
    data.write_text(json.dumps(paragraphs), encoding="utf-8")
    details_file = tmp_path / "details.json"
    qatune("predict", tiny_bert, data, "-o", tmp_path / "p.json", "--details", details_file, "--no-bf16")
    details = json.loads(details_file.read_text(encoding="utf-8"))
    found = [(d["question"], d["context_index"], d["place"]) for d in details.values()]
    assert found == [
        ("Who won?", 0, "[0].qas[0]"),
        ("When?", 0, "[0].qas[1]"),
        ("Who was the captain?", 1, "[1].qas[0]"),
        ("Where?", 0, "[2].qas[0]"),
    ]
    for entry in details.values():
        assert set(entry) == {"question", "context_index", "place", "answers", "null_prob"}


# --- predict reads no gold answers -------------------------------------------------------


def test_predict_answers_questions_without_gold_answers_or_with_broken_ones(tiny_bert, tmp_path):
    records = [
        {"id": "new", "question": "Who won?", "context": CUP_FINAL},  # unlabelled: no answers field
        {"id": "broken", "question": "When?", "context": CUP_FINAL, "answers": {"text": ["2001"], "answer_start": [5]}},
        {"id": "labelled", "question": "Where?", "context": CUP_FINAL,
         "answers": {"text": ["Hampden Park"], "answer_start": [CUP_FINAL.index("Hampden")]}},
    ]
    data = tmp_path / "questions.jsonl"
    data.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    for policy in ("strict", "skip"):
        predictions = tmp_path / f"p-{policy}.json"
        qatune("predict", tiny_bert, data, "-o", predictions, "--on-error", policy, "--no-bf16")
        written = json.loads(predictions.read_text(encoding="utf-8"))
        assert list(written) == ["new", "broken", "labelled"]  # none refused, none skipped
        assert all(text in CUP_FINAL for text in written.values())


def test_details_say_no_answer_as_predictions_and_ask_do(tiny_bert, tmp_path):
    # a threshold of 0: every question whose no-answer probability is above 0 is answered "no answer"
    model = tmp_path / "model"
    shutil.copytree(tiny_bert, model)
    (model / "qatune.json").write_text(json.dumps({"settings": {"null_threshold": 0.0}}), encoding="utf-8")
    data = tmp_path / "q.jsonl"
    data.write_text(json.dumps({"id": "x", "question": "Who won?", "context": CUP_FINAL}) + "\n", encoding="utf-8")
    qatune("predict", model, data, "-o", tmp_path / "p.json", "--details", tmp_path / "d.json", "--top-k", "2", "--no-bf16")
    assert json.loads((tmp_path / "p.json").read_text()) == {"x": ""}
    details = json.loads((tmp_path / "d.json").read_text())["x"]
    assert details["answers"] == [] and details["null_prob"] > 0
    asked = qatune("ask", model, "-q", "Who won?", "-c", CUP_FINAL, "--top-k", "2", "--no-bf16")
    assert json.loads(asked.stdout) == []
    # the same model answering: the top answers are listed
    qatune("predict", tiny_bert, data, "-o", tmp_path / "p.json", "--details", tmp_path / "d.json", "--top-k", "2", "--no-bf16")
    assert len(json.loads((tmp_path / "d.json").read_text())["x"]["answers"]) == 2


# --- a write that fails after the checks: a full disk ------------------------------------------


@pytest.mark.skipif(not Path("/dev/full").is_char_device(), reason="no /dev/full (a device whose writes fail: disk full)")
def test_a_full_disk_is_an_error_that_names_the_file(tiny_bert):
    result = qatune("predict", tiny_bert, TINY_QA, "-o", "/dev/full", "--no-bf16", check=False)
    assert result.returncode == 2
    assert result.stderr.endswith(
        "error: /dev/full: No space left on device (the command stopped there); "
        "check the path, its permissions and the free space\n"
    ), result.stderr
    assert "Traceback" not in result.stderr


def test_a_report_that_cannot_be_written_after_training_says_where_the_model_is(tiny_bert, tmp_path, monkeypatch, capsys):
    import qatune.report
    from qatune.cli import main

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device", str(tmp_path / "r.html"))

    monkeypatch.setattr(qatune.report, "write_report", disk_full)
    output = tmp_path / "m"
    code = main([
        "train", str(TINY_QA), "--model", str(tiny_bert), "--output", str(output), "--epochs", "1", "--no-bf16",
        "--quiet", "--report", str(tmp_path / "r.html"), "--max-seq-length", "48", "--doc-stride", "8",
        "--max-question-length", "12",
    ])
    assert code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"error: --report: could not write {tmp_path / 'r.html'} (No space left on device); the model is written to "
        f"{output}: `qatune report {output} -o FILE` writes its report"
    )
    assert (output / "model.safetensors").is_file() and (output / "qatune.json").is_file()


# --- questions longer than the model's max_question_length ------------------------------------


def test_questions_cut_to_max_question_length_are_counted_when_answering(tiny_bert, tmp_path):
    long_question = "Who won " + "the cup final " * 30 + "?"  # about 90 tokens, past the default 64
    result = qatune("ask", tiny_bert, "-q", long_question, "-c", CUP_FINAL, "--no-bf16")
    assert "1 question longer than max_question_length (64 tokens): answered from its first 64 tokens" in result.stderr
    assert "max_question_length" not in qatune("ask", tiny_bert, "-q", "Who won?", "-c", CUP_FINAL, "--no-bf16").stderr

    data = tmp_path / "long.jsonl"
    records = [{"id": str(k), "question": question, "context": CUP_FINAL, "answers": {"text": ["3-0"], "answer_start": [37]}}
               for k, question in enumerate([long_question, "What was the score?", long_question + " Where?"])]
    data.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    said = "2 questions longer than max_question_length (64 tokens): answered from their first 64 tokens"
    assert said in qatune("predict", tiny_bert, data, "-o", tmp_path / "p.json", "--no-bf16").stderr.splitlines()
    assert said in qatune("evaluate", tiny_bert, data, "--no-bf16").stderr.splitlines()


class _BoundTo:
    """A socket's stand-in: only its port is read."""

    def getsockname(self):
        return ("0.0.0.0", 8123)


def test_the_address_said_for_every_network_is_one_a_browser_here_can_open():
    from qatune.cli.options import address_of

    assert address_of(_BoundTo(), "127.0.0.1") == "http://127.0.0.1:8123"
    assert address_of(_BoundTo(), "0.0.0.0") == "every network, port 8123 (from this machine: http://127.0.0.1:8123)"
    assert address_of(_BoundTo(), "::") == "every network, port 8123 (from this machine: http://[::1]:8123)"
