"""Whatever a data file holds, reading it gives Examples or a QATuneError, nothing else.

Random JSON values, mutated valid files (fields dropped, altered, retyped, offsets shifted)
and random bytes go through `read_dataset` and `load_examples`; what comes back must keep
the promises of qatune.data (answers at their offsets, unique ids, counts that add up).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qatune.data import FORMATS, POLICIES, ValidationReport, load_examples, read_dataset
from qatune.errors import DataError, QATuneError

DATA = Path(__file__).parent / "data"
VALID = {name: (DATA / name).read_bytes() for name in
         ("data_squad_v2.json", "data_paragraphs.json", "data_records.jsonl", "data_needs_repair.json")}
FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 300), st.floats(allow_nan=True),
    st.text(max_size=12), st.sampled_from(["", " ", "France", "Paris", "\ud800", "24", "data", "qas"]),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.sampled_from(["data", "paragraphs", "qas", "context", "question", "answers",
                                         "text", "answer_start", "id", "title", "is_impossible"]),
                        inner, max_size=5),
    ),
    max_leaves=25,
)
choices = st.tuples(st.sampled_from(FORMATS), st.sampled_from(POLICIES))


def check(path: Path, format: str, on_error: str) -> None:
    """Read `path` both ways; only Examples or a QATuneError may come out."""
    try:
        examples, report = read_dataset(path, format=format, on_error=on_error)
    except QATuneError:
        return
    check_promises(examples, report)
    try:
        loaded = load_examples(path, format=format, on_error=on_error)
    except DataError:
        assert report.errors
    else:
        assert not report.errors and loaded == examples


def check_promises(examples: list, report: ValidationReport) -> None:
    ids = [example.id for example in examples]
    assert len(set(ids)) == len(ids)
    for example in examples:
        assert example.question.strip() and example.context.strip()
        assert example.is_impossible == (example.answers == ())
        for answer in example.answers:
            assert example.context[answer.start:answer.end] == answer.text
    assert report.kept_questions == len(examples) <= report.questions
    assert report.unanswerable == sum(example.is_impossible for example in examples)
    if report.on_error == "skip" and report.ok:
        assert report.questions == len(examples) + report.skipped_questions
        assert report.answers == sum(len(e.answers) for e in examples) + report.skipped_answers
    json.dumps(report.to_dict())
    report.summary()


@FUZZ
@given(value=json_values, how=choices, jsonl=st.booleans())
def test_random_json_values(tmp_path, value, how, jsonl):
    if jsonl:
        path = tmp_path / "fuzz.jsonl"
        items = value if isinstance(value, list) else [value]
        path.write_text("\n".join(json.dumps(item) for item in items), encoding="utf-8")
    else:
        path = tmp_path / "fuzz.json"
        path.write_text(json.dumps(value), encoding="utf-8")
    check(path, *how)


def places(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path (a tuple of keys and indexes) into a JSON value."""
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += places(item, prefix + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += places(item, prefix + (index,))
    return found


def mutate(value: Any, draw: Any) -> Any:
    """Drop, replace, retype or shift one thing somewhere in `value`."""
    value = copy.deepcopy(value)
    path = draw(st.sampled_from(places(value)[1:]))
    parent = value
    for key in path[:-1]:
        parent = parent[key]
    key, old = path[-1], parent[path[-1]]
    action = draw(st.sampled_from(["drop", "replace", "retype", "shift"]))
    if action == "drop":
        del parent[key]
    elif action == "replace":
        parent[key] = draw(json_values)
    elif action == "retype":
        parent[key] = [old] if not isinstance(old, list) else (str(old) if old else {})
    elif isinstance(old, int) and not isinstance(old, bool):
        parent[key] = old + draw(st.integers(-40, 40))
    elif isinstance(old, str):
        parent[key] = " " + old if draw(st.booleans()) else old[1:]
    return value


@FUZZ
@given(name=st.sampled_from(sorted(VALID)), how=choices, data=st.data())
def test_mutated_valid_files(tmp_path, name, how, data):
    text = VALID[name].decode("utf-8-sig")
    path = tmp_path / name
    if name.endswith(".jsonl"):
        records = [json.loads(line) for line in text.splitlines()]
        mutated = mutate(records, data.draw)
        items = mutated if isinstance(mutated, list) else [mutated]
        path.write_text("\n".join(json.dumps(item) for item in items), encoding="utf-8")
    else:
        times = data.draw(st.integers(1, 3))
        value = json.loads(text)
        for _ in range(times):
            if not places(value)[1:]:
                break
            value = mutate(value, data.draw)
        path.write_text(json.dumps(value), encoding="utf-8")  # \ud800 stays an escape
    check(path, *how)


@FUZZ
@given(name=st.sampled_from(sorted(VALID)), how=choices, data=st.data())
def test_random_bytes(tmp_path, name, how, data):
    raw = bytearray(VALID[name])
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(raw)))
        chunk = data.draw(st.binary(min_size=0, max_size=4))
        if data.draw(st.booleans()):
            raw[position:position + len(chunk)] = chunk  # overwrite
        else:
            raw[position:position] = chunk  # insert
    path = tmp_path / name
    path.write_bytes(bytes(raw))
    check(path, *how)


@FUZZ
@given(raw=st.binary(max_size=200), how=choices)
def test_pure_noise(tmp_path, raw, how):
    path = tmp_path / "noise.json"
    path.write_bytes(raw)
    check(path, *how)
