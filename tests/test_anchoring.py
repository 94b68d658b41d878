"""Answers move with their text when a paragraph's text is edited."""

from __future__ import annotations

import pytest

from qatune.annotation.anchoring import LostAnswer, reanchor


def spans_of(text: str, *answers: str) -> list[tuple[int, int]]:
    return [(text.index(a), text.index(a) + len(a)) for a in answers]


def test_an_answer_outside_the_edit_shifts_with_the_text_before_it():
    old = "The bridge opened in 1932. It is 🌉 long."
    new = "Built by the city, the bridge opened in 1932. It is 🌉 long."
    assert reanchor(old, new, spans_of(old, "1932", "🌉 long")) == spans_of(new, "1932", "🌉 long")


def test_an_edit_inside_the_answer_finds_its_text_where_it_is_now():
    old = "It opened in 1932."
    new = "It opened in 1931, not 1932."  # the edit cuts through the answer's old place
    assert reanchor(old, new, spans_of(old, "1932")) == spans_of(new, "1932")


def test_a_repeated_text_keeps_the_occurrence_the_answer_had():
    old = "x 東京 y 東京 z"
    new = "x 東京 y 東京 z!"
    first, second = (2, 4), (old.rindex("東京"), old.rindex("東京") + 2)
    assert reanchor(old, new, [first, second]) == [first, second]


def test_an_answer_whose_text_is_gone_is_named():
    with pytest.raises(LostAnswer) as lost:
        reanchor("It opened in 1932 in Paris.", "It opened long ago in Rome.", [(3, 9), (13, 17), (21, 26)])
    assert lost.value.lost == [(1, "1932"), (2, "Paris")]


def test_line_endings_and_combining_marks_count_as_code_points():
    old = "Cafe\u0301\r\nopened in 1932."
    new = "Le cafe\u0301\r\nopened in 1932."
    assert reanchor(old, new, spans_of(old, "1932", "e\u0301")) == spans_of(new, "1932", "e\u0301")


def test_a_typo_in_the_answer_loses_it_rather_than_moving_it_to_another_occurrence():
    old = "Paris and Paris."
    with pytest.raises(LostAnswer):
        reanchor(old, "Paris and Parris.", [(10, 15)])


def test_a_long_paragraph_with_one_word_inserted_diffs_only_around_the_edit(monkeypatch):
    import difflib

    from qatune.annotation import anchoring

    class Small(difflib.SequenceMatcher):  # what is diffed is the changed middle, not the whole text
        def __init__(self, junk, a, b, **options):
            assert len(a) + len(b) < 1000, (len(a), len(b))
            super().__init__(junk, a, b, **options)

    monkeypatch.setattr(anchoring.difflib, "SequenceMatcher", Small)
    words = [f"w{i}" for i in range(40_000)]
    old = " ".join(words)[:200_000]
    middle = old.index(" ", 100_000)
    new = old[:middle] + " inserted" + old[middle:]
    assert len(old) == 200_000
    spans = spans_of(old, "w3 ", "w19000 ", "w30000 ") + [(middle - 5, middle + 1)]  # the last one around the edit
    moved = reanchor(old, new, spans)
    assert moved[:3] == spans_of(new, "w3 ", "w19000 ", "w30000 ")
    assert moved[3] == (middle - 5, middle + 1)  # its text, and what is before it, unchanged
