"""Reading a data file: bytes -> text -> JSON -> layout, then every question through the
layout reader; `read_dataset` and `load_examples` are the entry points."""

from __future__ import annotations

import codecs
import json
import json.decoder
import json.scanner
import math
from pathlib import Path
from typing import Any

from qatune.data.examples import Example, PathLike
from qatune.data.layouts import _Reader
from qatune.data.messages import _MISSING, _describe, _describe_top
from qatune.data.report import ValidationReport
from qatune.errors import DataError, SettingsError
from qatune.files import check_path_argument

FORMATS = ("auto", "squad", "paragraphs", "records")
POLICIES = ("repair", "strict", "skip")
_LAYOUT_HELP_RECORDS = '{"id", "question", "context", "answers": {"text": [...], "answer_start": [...]}}'
_LAYOUT_HELP = (
    'squad ({"data": [{"title", "paragraphs": [{"context", "qas": [...]}]}]}), '
    'paragraphs ([{"context", "qas": [{"question", "answers"}]}]) or '
    f"records (JSON Lines or a list of {_LAYOUT_HELP_RECORDS})"
)
# Spreadsheet exports: named in the error, since a JSON syntax error alone would puzzle their users.
_TABLE_SUFFIXES = (".csv", ".tsv", ".xlsx", ".xls")


def read_dataset(
    path: PathLike, *, format: str = "auto", on_error: str = "repair", answers: bool = True
) -> tuple[list[Example], ValidationReport]:
    """Read a data file; return the usable examples and a report of every problem found.

    Raises DataError only for whole-file problems (missing file, not UTF-8, bad JSON,
    unknown layout); every other problem is collected in `report.errors`. answers=False reads
    questions and contexts alone (a transfer set): answers and `is_impossible` are neither read
    nor checked, and every example has no answer.

    >>> examples, report = read_dataset("tests/data/data_records.jsonl")
    >>> report.layout, len(examples), report.errors
    ('records', 3, [])
    """
    check_path_argument("path", path)
    reader, _, _ = _read(path, format, on_error, answers)
    return reader.finish()


def load_examples(path: PathLike, *, format: str = "auto", on_error: str = "repair") -> list[Example]:
    """Read a data file and return its examples; raise DataError if it has any error.

    >>> [e.id for e in load_examples("tests/data/data_paragraphs.json")]
    ['p1', 'p2', 'a98872ea7e23']
    """
    examples, report = read_dataset(path, format=format, on_error=on_error)
    report.raise_for_errors()
    return examples


def _check_choice(name: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        names = ", ".join(f'"{a}"' for a in allowed)
        raise SettingsError(f"{name} must be one of {names}; found {_describe(value)}")


def _read(path: PathLike, format: str, on_error: str, answers: bool = True) -> tuple[_Reader, Any, bool]:
    """(the reader after walking the file, the parsed JSON, whether it is JSON Lines).

    For JSON Lines the parsed JSON is the list of records; the reader's edits refer to it.
    """
    _check_choice("format", format, FORMATS)
    _check_choice("on_error", on_error, POLICIES)
    path = Path(path)
    value, lines = _parse(read_text_file(path), path)
    jsonl = lines is not None
    layout = _detect_layout(value, jsonl, path) if format == "auto" else format
    items = _top_level_items(value, jsonl, layout, path)
    reader = _Reader(str(path), layout, on_error, answers)
    if layout == "squad":
        reader.read_squad(items)
    elif layout == "paragraphs":
        reader.read_paragraphs(items)
    else:
        reader.read_records(items, lines or [f"[{i}]" for i in range(len(items))])
    return reader, value, jsonl


# ---------------------------------------------------------------------------------------
# Whole-file reading: bytes -> text -> JSON -> layout.


def read_text_file(path: Path) -> str:
    """A file's text exactly as written (line endings kept, a UTF-8 BOM skipped), so that
    character offsets index it; DataError naming the file when it cannot be read as UTF-8."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: expected a data file, found no such file; check the path") from None
    except IsADirectoryError:
        raise DataError(
            f"{path}: expected a data file, found a directory; pass the JSON file inside it"
        ) from None
    except OSError as error:
        raise DataError(f"{path}: cannot read the file ({error.strerror}); check its permissions") from None
    _check_not_utf16_or_utf32(raw, path)
    skip = len(codecs.BOM_UTF8) if raw.startswith(codecs.BOM_UTF8) else 0
    try:
        return raw[skip:].decode("utf-8")
    except UnicodeDecodeError as error:
        offset = skip + error.start
        line = raw[:offset].count(b"\n") + 1
        raise DataError(
            f"{path}: expected UTF-8 text, found the byte 0x{raw[offset]:02x} at byte offset "
            f"{offset} (line {line}), which is not valid UTF-8; save the file as UTF-8"
        ) from None


def _check_not_utf16_or_utf32(raw: bytes, path: Path) -> None:
    """A DataError for UTF-16 or UTF-32 text (a byte order mark, or NUL bytes, which UTF-8 JSON
    never holds), which would otherwise read as a puzzling syntax error."""
    for bom, encoding in _WIDE_BOMS:
        if raw.startswith(bom):
            found = f"a {encoding} byte order mark: the file is {encoding} text"
            break
    else:
        nul = raw.find(b"\x00")
        if nul == -1:
            return
        line = raw[:nul].count(b"\n") + 1
        found = f"a NUL byte at byte offset {nul} (line {line}): the file looks like UTF-16 or UTF-32 text"
    raise DataError(f"{path}: expected UTF-8 text, found {found}; save the file as UTF-8")


_WIDE_BOMS = (
    (codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"),  # before UTF-16: FF FE 00 00 starts with FF FE
    (codecs.BOM_UTF16_LE, "UTF-16"), (codecs.BOM_UTF16_BE, "UTF-16"),
)


def _parse(text: str, path: Path) -> tuple[Any, list[str] | None]:
    """Return (parsed JSON, None), or for JSON Lines ([record, ...], ["line 1", ...])."""
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        return _parse_jsonl(text, path)
    if not text.strip():
        raise _empty_file(path)
    try:
        value = _loads(text)
    except json.JSONDecodeError as error:
        if error.msg == "Extra data" and _first_line_is_object(text):
            return _parse_jsonl(text, path)
        if path.suffix.lower() in _TABLE_SUFFIXES:
            raise DataError(
                f"{path}: expected JSON or JSON Lines, found a file named as a table ({path.suffix}), which "
                f"qatune does not read; write one question per line as JSON Lines ({_LAYOUT_HELP_RECORDS})"
            ) from None
        raise DataError(
            f"{path}: expected valid JSON, found a syntax error at line {error.lineno}, column "
            f"{error.colno} ({error.msg}); fix the JSON there"
        ) from None
    except _NotPlainJSON as refused:
        where = "" if (line := _line_of(refused, text)) is None else f" line {line}:"
        raise DataError(f"{path}:{where} {refused}") from None
    except (RecursionError, ValueError) as error:  # absurd nesting, integers of 4300+ digits
        raise DataError(f"{path}: expected valid JSON, found JSON that cannot be read ({error})") from None
    if isinstance(value, dict) and "question" in value and "data" not in value:
        # one record alone: JSON Lines of one line (or one record spread over several lines)
        return [value], [f"line {_first_content_line(text)}"]
    return value, None


def _empty_file(path: Path) -> DataError:
    return DataError(f"{path}: expected JSON data, found an empty file; add the data")


def _first_content_line(text: str) -> int:
    """The number of the first line that is not blank."""
    return next(number for number, line in enumerate(text.split("\n"), start=1) if line.strip())


def _first_line_is_object(text: str) -> bool:
    first = text.split("\n")[_first_content_line(text) - 1]
    try:
        return isinstance(json.loads(first), dict)
    except (ValueError, RecursionError):
        return False


def _parse_jsonl(text: str, path: Path) -> tuple[list[Any], list[str]]:
    """The records of a JSON Lines file and their places ("line 3")."""
    records, places = [], []
    # split on "\n" only: JSON strings may hold U+2028 and friends that splitlines() splits on
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            records.append(_loads(line))
            places.append(f"line {number}")
        except json.JSONDecodeError as error:
            raise DataError(
                f"{path}: line {number}: expected one JSON object per line (JSON Lines), found a "
                f"syntax error at column {error.colno} ({error.msg}); fix that line"
            ) from None
        except _NotPlainJSON as refused:
            raise DataError(f"{path}: line {number}: {refused}") from None
        except (RecursionError, ValueError) as error:
            raise DataError(
                f"{path}: line {number}: expected one JSON object per line (JSON Lines), found "
                f"JSON that cannot be read ({error})"
            ) from None
    if not records:
        raise _empty_file(path)
    return records, places


# ---------------------------------------------------------------------------------------
# What Python's JSON reader accepts but would lose or could not write back as JSON.


class _NotPlainJSON(ValueError):
    """A repeated key (the reader keeps only its last value), NaN or Infinity (not JSON), or a
    number beyond a double (read as Infinity, which --write-fixed could not write as JSON)."""

    def __init__(self, found: str, fix: str):
        super().__init__(f"expected plain JSON, found {found}; {fix}")
        self.line: int | None = None  # the line of the object holding it, once located


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value = dict(pairs)
    if len(value) < len(pairs):
        seen: set[str] = set()
        repeated = next(key for key, _ in pairs if key in seen or seen.add(key))
        raise _NotPlainJSON(
            f"the key {json.dumps(repeated, ensure_ascii=False)} twice in one object (a JSON reader "
            "keeps only the last, so the first would be lost without a word)",
            "keep one of them",
        )
    return value


def _finite_number(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise _NotPlainJSON(
            f"the number {text[:40]}, beyond what a double holds (it would be read as Infinity)",
            "write a smaller number, or the number as a string",
        )
    return value


def _no_constant(name: str) -> Any:
    raise _NotPlainJSON(f"{name}, which is not JSON", "write a number, null or a string instead")


# how `_loads` and `_line_of` read: what would be lost or not written back raises _NotPlainJSON
_PLAIN_JSON = {"object_pairs_hook": _unique_keys, "parse_float": _finite_number, "parse_constant": _no_constant}


def _loads(text: str) -> Any:
    return json.loads(text, **_PLAIN_JSON)


def _line_of(refused: _NotPlainJSON, text: str) -> int | None:
    """The line of the object that holds what `_loads` refused: read again with Python's own
    (slower) scanner, which tells where each object starts. Only on the way to an error."""
    decoder = json.JSONDecoder(**_PLAIN_JSON)

    def parse_object(s_and_end, *args):
        try:
            return json.decoder.JSONObject(s_and_end, *args)
        except _NotPlainJSON as error:
            if error.line is None:  # the innermost object holding it
                string, end = s_and_end
                error.line = string.count("\n", 0, end) + 1
            raise

    decoder.parse_object = parse_object
    decoder.scan_once = json.scanner.py_make_scanner(decoder)
    try:
        decoder.decode(text)
    except _NotPlainJSON as error:
        return error.line
    except (ValueError, RecursionError):
        pass
    return refused.line


def _detect_layout(value: Any, jsonl: bool, path: Path) -> str:
    if jsonl:
        return "records"
    if isinstance(value, dict) and "data" in value:
        return "squad"
    if isinstance(value, list) and value and isinstance(value[0], dict):
        if "qas" in value[0]:
            return "paragraphs"
        if "question" in value[0]:
            return "records"
    raise DataError(
        f"{path}: cannot tell the layout of this file: expected {_LAYOUT_HELP}, found "
        f"{_describe_top(value)}; convert the file to one of these layouts, or name its layout "
        f"with --format (format= in Python)"
    )


def _top_level_items(value: Any, jsonl: bool, layout: str, path: Path) -> Any:
    """Check the outermost shape that `layout` needs; return what its reader walks."""
    if layout == "records":
        if jsonl or isinstance(value, list):
            return value
        expected = "a JSON list of records, or JSON Lines (one record per line)"
    elif jsonl:
        expected = "one JSON document"
    elif layout == "squad" and isinstance(value, dict):
        if isinstance(value.get("data"), list):
            return value["data"]
        raise DataError(
            f'{path}: data: expected a list of articles, found {_describe(value.get("data", _MISSING))}; '
            f'write the articles as "data": [{{"title": ..., "paragraphs": [...]}}]'
        )
    elif layout == "paragraphs" and isinstance(value, list):
        return value
    else:
        expected = 'a JSON object with a "data" list' if layout == "squad" else "a JSON list of paragraphs"
    found = "JSON Lines" if jsonl else _describe_top(value)
    raise DataError(
        f"{path}: expected {expected} for the {layout} layout, found {found}; "
        f"check --format (format= in Python), or leave it out to detect the layout"
    )
