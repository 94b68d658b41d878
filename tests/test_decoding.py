"""Tests of qatune.decoding: hand-built windows, then random ones checked against a brute force."""

from __future__ import annotations

import math
import re

import hypothesis
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qatune.decoding import Answer, Decoded, best_answer, decode
from qatune.errors import ModelError, SettingsError

TOKEN = re.compile(r"\w+|[^\w\s]")  # words and single punctuation marks, like a real tokenizer
N_QUESTION = 2  # question tokens in every hand-built window


# --- helpers --------------------------------------------------------------------------------


def token_spans(context: str) -> list[tuple[int, int]]:
    return [m.span() for m in TOKEN.finditer(context)]


def make_window(context: str, first: int = 0, stop: int | None = None) -> np.ndarray:
    """Offsets of a window [CLS] q q [SEP] context tokens first..stop [SEP]."""
    outside = [(-1, -1)]
    spans = token_spans(context)[first:stop]
    return np.array(outside * (2 + N_QUESTION) + spans + outside)


def position(context_token: int, first: int = 0) -> int:
    """Index in the window of context token `context_token` (a window starting at `first`)."""
    return 2 + N_QUESTION + context_token - first


def logits(offsets: np.ndarray, values: dict[int, float], default: float = 0.0) -> np.ndarray:
    out = np.full(len(offsets), default)
    for index, value in values.items():
        out[index] = value
    return out


def softmax(values: list[float]) -> list[float]:
    top = max(values)
    weights = [math.exp(v - top) for v in values]
    total = math.fsum(weights)
    return [w / total for w in weights]


# --- hand-built cases -----------------------------------------------------------------------

SCORE = "The final score was 3-0 for the home side."
# tokens: The=0 final=1 score=2 was=3 3=4 -=5 0=6 for=7 the=8 home=9 side=10 .=11


def test_finds_the_right_span_and_its_characters() -> None:
    offs = make_window(SCORE)
    start = logits(offs, {position(9): 8.0})
    end = logits(offs, {position(10): 8.0})
    decoded = decode(SCORE, [start], [end], [offs])
    (answer,) = decoded.answers
    assert (answer.text, answer.start, answer.end) == ("home side", 32, 41)
    assert SCORE[answer.start : answer.end] == answer.text


def test_an_end_before_the_start_is_never_returned() -> None:
    # Independent argmax would pick start "3" and end "score" (before it) and cut a wrong
    # span; the best valid pair is "3" .. "0".
    offs = make_window(SCORE)
    start = logits(offs, {position(4): 5.0}, default=-5.0)
    end = logits(offs, {position(2): 9.0, position(6): 4.0})
    decoded = decode(SCORE, [start], [end], [offs])
    assert decoded.answers[0].text == "3-0"


def test_spans_longer_than_max_answer_length_are_excluded() -> None:
    offs = make_window(SCORE)
    start = logits(offs, {position(0): 9.0, position(4): 6.0})
    end = logits(offs, {position(3): 9.0, position(6): 6.0})  # "The final score was": 4 tokens
    short = decode(SCORE, [start], [end], [offs], max_answer_length=3, top_k=100)
    assert short.answers[0].text == "3-0"
    assert all(len(token_spans(a.text)) <= 3 for a in short.answers)
    long = decode(SCORE, [start], [end], [offs], max_answer_length=4)
    assert long.answers[0].text == "The final score was"


def test_question_special_and_padding_tokens_are_never_part_of_a_span() -> None:
    offs = make_window(SCORE)
    high = {i: 50.0 for i in range(1, 2 + N_QUESTION)}  # question tokens and [SEP]
    high[len(offs) - 1] = 50.0  # the final [SEP]
    start = np.append(logits(offs, {**high, position(7): 2.0}), [99.0, 99.0])  # + padding
    end = np.append(logits(offs, {**high, position(10): 2.0}), [99.0, 99.0])
    decoded = decode(SCORE, [start], [end], [offs], top_k=1000)
    assert decoded.answers[0].text == "for the home side"
    spans = token_spans(SCORE)
    for answer in decoded.answers:
        assert answer.start in {s for s, _ in spans} and answer.end in {e for _, e in spans}


def test_the_same_span_in_two_windows_is_one_candidate_with_its_best_logit() -> None:
    first, second = make_window(SCORE, 0, 8), make_window(SCORE, 4, None)  # both hold "3-0"
    s1, e1 = logits(first, {position(4): 2.0}), logits(first, {position(6): 2.0})
    s2, e2 = logits(second, {position(4, 4): 3.0}), logits(second, {position(6, 4): 3.0})
    # n_best=1: each window offers only "3-0", at logit 4 and 6; the null logit is 0.
    decoded = decode(SCORE, [s1, s2], [e1, e2], [first, second], n_best=1, top_k=10)
    (answer,) = decoded.answers
    assert answer.text == "3-0"
    assert answer.score == pytest.approx(softmax([6.0, 0.0])[0])
    assert decoded.null_prob == pytest.approx(softmax([6.0, 0.0])[1])


TROUGHS = "It used parabolic troughs."
# tokens: It=0 used=1 parabolic=2 trough=3 ##s=4 .=5 ("troughs" is two sub-words)
TROUGH_TOKENS = [(0, 2), (3, 7), (8, 17), (18, 24), (24, 25), (25, 26)]
TROUGH_WORDS = [(0, 2), (3, 7), (8, 17), (18, 25), (18, 25), (25, 26)]


def window_of(spans: list[tuple[int, int]]) -> np.ndarray:
    outside = [(-1, -1)]
    return np.array(outside * (2 + N_QUESTION) + spans + outside)


def test_word_offsets_give_whole_words_and_add_up_the_pairs_inside_one() -> None:
    tokens, words = window_of(TROUGH_TOKENS), window_of(TROUGH_WORDS)
    # "parabolic" .. "trough" at logit 3, "parabolic" .. "##s" at logit 2, the null at 0.
    start = logits(tokens, {0: 0.0, position(2): 1.0}, default=-30.0)
    end = logits(tokens, {0: 0.0, position(3): 2.0, position(4): 1.0}, default=-30.0)
    by_token = decode(TROUGHS, [start], [end], [tokens], n_best=1, top_k=5)
    assert [a.text for a in by_token.answers] == ["parabolic trough"]
    by_word = decode(TROUGHS, [start], [end], [words], n_best=2, top_k=5)
    answer = by_word.answers[0]
    assert (answer.text, answer.start, answer.end) == ("parabolic troughs", 8, 25)
    # Both pairs give "parabolic troughs": their probabilities add.
    assert answer.score == pytest.approx(softmax([3.0, 2.0, 0.0])[0] + softmax([3.0, 2.0, 0.0])[1])
    assert [a.text for a in by_word.answers].count("parabolic troughs") == 1


def test_the_same_text_at_two_places_adds_up_at_the_better_place() -> None:
    context = "Paris or Lyon? Paris."
    spans = [(0, 5), (6, 8), (9, 13), (13, 14), (15, 20), (20, 21)]  # Paris or Lyon ? Paris .
    offs = window_of(spans)
    # "Lyon" alone beats either "Paris" (logit 2.8 against 2.5 and 2), but not both together.
    start = logits(offs, {0: 0.0, position(0): 1.0, position(2): 1.4, position(4): 1.25}, default=-30.0)
    end = logits(offs, {0: 0.0, position(0): 1.0, position(2): 1.4, position(4): 1.25}, default=-30.0)
    decoded = decode(context, [start], [end], [offs], n_best=3, max_answer_length=1, top_k=5)
    best, runner_up = decoded.answers
    assert (best.text, best.start, best.end) == ("Paris", 15, 20)  # the later place scored higher
    assert runner_up.text == "Lyon"
    expected = softmax([2.0, 2.8, 2.5, 0.0])
    assert best.score == pytest.approx(expected[0] + expected[2])
    assert runner_up.score == pytest.approx(expected[1])


def test_texts_that_differ_only_by_nul_characters_are_different_answers() -> None:
    # numpy's fixed-width strings drop trailing NULs: "0\x00" must not count as "0".
    context = "0\x00"
    offs = window_of([(0, 1), (1, 2)])
    flat = np.zeros(len(offs))
    decoded = decode(context, [flat], [flat], [offs], top_k=10)
    assert [(a.text, a.start, a.end) for a in decoded.answers] == [
        ("0", 0, 1), ("0\x00", 0, 2), ("\x00", 1, 2)
    ]
    assert [a.score for a in decoded.answers] == pytest.approx([0.25, 0.25, 0.25])


def test_a_token_that_covers_no_character_never_starts_or_ends_an_answer() -> None:
    # A context token with offsets (k, k) (a character the tokenizer normalized away) points
    # at no character: a span cut at it would start or end on the gap around it ("3-0 ").
    context = "won 3-0  today"
    spans = [(0, 3), (4, 5), (5, 6), (6, 7), (8, 8), (9, 14)]  # won 3 - 0 <empty> today
    offs = window_of(spans)
    start = logits(offs, {position(1): 5.0, position(4): 9.0})
    end = logits(offs, {position(3): 5.0, position(4): 9.0})
    decoded = decode(context, [start], [end], [offs], n_best=1, top_k=10)
    assert [(a.text, a.start, a.end) for a in decoded.answers] == [("3-0", 4, 7)]
    everything = decode(context, [start], [end], [offs], n_best=6, top_k=100)
    assert all(a.start not in {7, 8} and a.end not in {8, 9} for a in everything.answers)


def test_the_null_answer_wins_when_the_cls_logits_dominate() -> None:
    offs = make_window(SCORE)
    start = logits(offs, {0: 10.0, position(4): 2.0})
    end = logits(offs, {0: 10.0, position(6): 2.0})
    decoded = decode(SCORE, [start], [end], [offs])
    assert decoded.null_prob > 0.99
    assert decoded.answers[0].text == "3-0"  # still ranked, for callers that want it
    assert best_answer(decoded, null_threshold=0.5) is None


def test_the_null_logit_is_the_lowest_over_the_windows() -> None:
    first, second = make_window(SCORE, 0, 6), make_window(SCORE, 3, None)
    s1, e1 = logits(first, {0: 6.0}), logits(first, {0: 6.0})  # null logit 12
    s2, e2 = logits(second, {0: 1.0}), logits(second, {0: 0.5})  # null logit 1.5: the one used
    decoded = decode(SCORE, [s1, s2], [e1, e2], [first, second], top_k=1000)
    span_logits = [0.0] * len(decoded.answers)  # every span sums two zero logits
    assert decoded.null_prob == pytest.approx(softmax([1.5, *span_logits])[0])


def test_logits_outside_cls_and_the_context_may_be_masked_with_minus_infinity() -> None:
    offs = make_window(SCORE)
    start = np.append(logits(offs, {position(4): 3.0}), [-np.inf, np.nan])  # + padding
    end = np.append(logits(offs, {position(6): 3.0}), [-np.inf, np.nan])
    start[1 : position(0)] = end[1 : position(0)] = -np.inf  # question tokens and [SEP]
    start[-3] = end[-3] = -np.inf  # the final [SEP]
    assert decode(SCORE, [start], [end], [offs]).answers[0].text == "3-0"


def test_cls_is_never_part_of_a_span_even_with_context_like_offsets() -> None:
    offs = make_window(SCORE, first=1)  # the window starts at "final"
    offs[0] = (0, 3)  # as if CLS covered "The"
    start = logits(offs, {0: 20.0, position(1, first=1): 1.0})
    end = logits(offs, {0: 20.0, position(1, first=1): 1.0})
    decoded = decode(SCORE, [start], [end], [offs], top_k=1000)
    assert decoded.answers[0].text == "final"
    assert all(a.start >= SCORE.index("final") for a in decoded.answers)


def test_ties_for_the_n_best_positions_go_to_the_earlier_token() -> None:
    offs = make_window(SCORE)
    flat = np.zeros(len(offs))
    decoded = decode(SCORE, [flat], [flat], [offs], n_best=2, top_k=10)
    assert [a.text for a in decoded.answers] == ["The", "The final", "final"]


def test_scores_stay_finite_for_huge_logits() -> None:
    offs = make_window(SCORE)
    start = logits(offs, {0: 1e4, position(4): 1e5})
    end = logits(offs, {0: 1e4, position(6): 1e5})
    decoded = decode(SCORE, [start], [end], [offs], top_k=5)
    assert decoded.answers[0].text == "3-0"
    assert decoded.answers[0].score == pytest.approx(1.0)
    assert all(math.isfinite(a.score) for a in decoded.answers)


def test_a_window_without_context_tokens_gives_only_the_null_answer() -> None:
    offs = np.array([(-1, -1)] * 4)
    decoded = decode(SCORE, [np.zeros(4)], [np.zeros(4)], [offs], top_k=3)
    assert decoded == Decoded(answers=[], null_prob=1.0)
    assert best_answer(decoded) is None


def test_top_k_returns_at_most_k_answers_best_first() -> None:
    offs = make_window("a b c")
    start = logits(offs, {position(0): 3.0, position(1): 2.0, position(2): 1.0})
    end = logits(offs, {position(0): 0.0, position(1): 0.0, position(2): 0.0})
    decoded = decode("a b c", [start], [end], [offs], top_k=2)
    assert [a.text for a in decoded.answers] == ["a", "a b"]
    everything = decode("a b c", [start], [end], [offs], top_k=50)
    assert len(everything.answers) == 6  # every pair start <= end of three tokens


def test_best_answer_compares_the_null_probability_with_the_threshold() -> None:
    answer = Answer("3-0", 20, 23, score=0.3)
    decoded = Decoded([answer], null_prob=0.6)
    assert best_answer(decoded) == answer
    assert best_answer(decoded, null_threshold=0.6) == answer  # not above: still answers
    assert best_answer(decoded, null_threshold=0.59) is None
    assert best_answer(Decoded([], null_prob=0.0)) is None


# --- argument errors ------------------------------------------------------------------------


def one_window() -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    offs = make_window(SCORE)
    return [np.zeros(len(offs))], [np.zeros(len(offs))], [offs]


@pytest.mark.parametrize(
    ("name", "value", "hint"),
    [
        ("n_best", 0, "the number of start and end positions to pair per window, e.g. n_best=20"),
        ("max_answer_length", -3, "the longest answer in tokens, e.g. max_answer_length=30"),
        ("top_k", True, "how many answers to return, e.g. top_k=1"),
        ("top_k", 1.5, "how many answers to return, e.g. top_k=1"),
    ],
)
def test_bad_settings_are_named(name: str, value: object, hint: str) -> None:
    with pytest.raises(SettingsError) as caught:
        decode(SCORE, *one_window(), **{name: value})
    assert str(caught.value) == f"{name} must be an integer >= 1, got {value!r}; pass {hint}"


def test_window_counts_must_match() -> None:
    start, end, offs = one_window()
    with pytest.raises(SettingsError) as caught:
        decode(SCORE, start * 2, end, offs)
    assert str(caught.value) == (
        "start_logits, end_logits and offsets must hold one entry per window and at least "
        "one window, got 2, 1 and 1 entries; pass the windows of one example, in the same "
        "order, to all three"
    )


def test_logits_shorter_than_the_offsets_are_refused() -> None:
    start, end, offs = one_window()
    with pytest.raises(SettingsError) as caught:
        decode(SCORE, start, [end[0][:5]], offs)
    assert str(caught.value) == (
        "end_logits[0] must be a 1-D array at least as long as offsets[0] (17 tokens), got "
        "shape (5,); pass the logits of the same window as offsets[0], without a batch "
        "dimension"
    )


def test_offsets_must_have_two_columns() -> None:
    start, end, offs = one_window()
    with pytest.raises(SettingsError) as caught:
        decode(SCORE, start, end, [offs[0][:, 0]])
    assert str(caught.value) == (
        "offsets[0] must have shape (L, 2) with L >= 1 (one [char_start, char_end) pair per "
        "token, CLS first), got shape (17,); pass the window's offset mapping with (-1, -1) "
        "for tokens outside the context"
    )


def test_offsets_outside_the_context_are_refused() -> None:
    start, end, offs = one_window()
    offs[0][6] = (40, 99)
    with pytest.raises(SettingsError) as caught:
        decode(SCORE, start, end, offs)
    assert str(caught.value) == (
        "offsets[0][6] must be (-1, -1) for a token outside the context or a span 0 <= "
        "char_start <= char_end <= 42 (the context's length), got (40, 99); pass offsets "
        "into the original, unmodified context, with (-1, -1) for question, special and "
        "padding tokens"
    )


@pytest.mark.parametrize(("index", "value"), [(0, np.inf), (position(1), np.nan)])
def test_invalid_logits_at_cls_or_a_context_token_are_a_model_error(index, value) -> None:
    start, end, offs = one_window()
    start[0][index] = value
    with pytest.raises(ModelError) as caught:
        decode(SCORE, start, end, offs)
    assert str(caught.value) == (
        f"start_logits[0][{index}] must be a finite number, got {value}; the model produced "
        "invalid scores: check that its weights loaded and that training did not diverge"
    )


@pytest.mark.parametrize("threshold", [-0.1, 1.5, float("nan"), "0.5"])
def test_best_answer_refuses_a_threshold_that_is_not_a_probability(threshold: object) -> None:
    with pytest.raises(SettingsError) as caught:
        best_answer(Decoded([], null_prob=1.0), null_threshold=threshold)  # type: ignore[arg-type]
    assert str(caught.value) == (
        f"null_threshold must be a probability between 0 and 1, got {threshold!r}; pass e.g. "
        "null_threshold=0.5 to answer 'no answer' when the model gives that more than even "
        "odds, or 1.0 to always answer with the best span"
    )


# --- random windows against a brute force ---------------------------------------------------


def log_sum(logits: list[float]) -> float:
    top = max(logits)
    return top + math.log(math.fsum(math.exp(v - top) for v in logits))


def brute_force(context, starts, ends, offsets, n_best, max_answer_length):
    """Every pair of the n_best start and end tokens (context tokens that cover a character)
    of every window, one by one: pairs of a window with the same span add up, a span counts
    once over the windows (its best), the places of one text add up (reported at the best
    place)."""
    best: dict[tuple[int, int], float] = {}
    for start, end, offs in zip(starts, ends, offsets):
        tokens = [i for i in range(1, len(offs)) if offs[i][0] >= 0 and offs[i][1] > offs[i][0]]
        top_starts = sorted(tokens, key=lambda i: (-start[i], i))[:n_best]
        top_ends = sorted(tokens, key=lambda i: (-end[i], i))[:n_best]
        in_window: dict[tuple[int, int], list[float]] = {}
        for s in top_starts:
            for e in top_ends:
                char_start, char_end = int(offs[s][0]), int(offs[e][1])
                if s <= e and e - s + 1 <= max_answer_length and char_end > char_start:
                    in_window.setdefault((char_start, char_end), []).append(float(start[s]) + float(end[e]))
        for span, pair_logits in in_window.items():
            best[span] = max(log_sum(pair_logits), best.get(span, -math.inf))
    places: dict[str, list[tuple[float, int, int]]] = {}
    for (s, e), logit in best.items():
        places.setdefault(context[s:e], []).append((logit, s, e))
    answers = []
    for text, found in places.items():
        _, s, e = min(found, key=lambda place: (-place[0], place[1], place[2]))
        answers.append((text, s, e, log_sum([place[0] for place in found])))
    answers.sort(key=lambda a: (-a[3], a[1], a[2]))
    null_logit = min(float(s[0]) + float(e[0]) for s, e in zip(starts, ends))
    probs = softmax([null_logit] + [a[3] for a in answers])
    return [(text, s, e, p) for (text, s, e, _), p in zip(answers, probs[1:])], probs[0]


@st.composite
def examples(draw):
    """A context, its tokens (with gaps), and overlapping windows with random logits."""
    # A few characters often (NUL, whitespace, repeats: the same text at several places),
    # any character sometimes.
    character = st.one_of(st.sampled_from("a0 \t\x00"), st.characters())
    context = draw(st.text(character, min_size=1, max_size=30))
    cuts = draw(st.lists(st.integers(0, len(context)), max_size=12))
    bounds = sorted({0, len(context), *cuts})
    spans = []
    for span in zip(bounds, bounds[1:]):
        # 0: a gap (a space between words); 2 or 3: a character split into several tokens
        # that share its offsets, as byte-level tokenizers do
        spans += [span] * draw(st.sampled_from([0, 1, 1, 1, 2, 3]))
        if draw(st.integers(0, 9)) == 0:
            spans.append((span[1], span[1]))  # a token that covers no character
    size = draw(st.integers(1, max(1, len(spans))))
    stride = draw(st.integers(1, size))
    logit = st.one_of(st.floats(-20, 20), st.sampled_from([0.0, 1.0, -1.0]))  # ties too
    starts, ends, offsets = [], [], []
    for first in range(0, max(1, len(spans) - size + stride), stride):
        n_question = draw(st.integers(0, 3))
        n_padding = draw(st.integers(0, 2))
        outside = [(-1, -1)]
        rows = outside * (2 + n_question) + spans[first : first + size] + outside * (1 + n_padding)
        length = len(rows) + draw(st.integers(0, 2))  # logits may run past the offsets
        starts.append(np.array(draw(st.lists(logit, min_size=length, max_size=length))))
        ends.append(np.array(draw(st.lists(logit, min_size=length, max_size=length))))
        offsets.append(np.array(rows, dtype=np.int64))
    n_best = draw(st.integers(1, 6))
    max_answer_length = draw(st.integers(1, 6))
    return context, starts, ends, offsets, n_best, max_answer_length


def fixed_example(context, windows, n_best=6, max_answer_length=6):
    """A draw of `examples()` by hand: one window per list of spans, every logit 0 (all tied)."""
    offsets = [window_of(spans) for spans in windows]
    flat = [np.zeros(len(offs)) for offs in offsets]
    return context, flat, [f.copy() for f in flat], offsets, n_best, max_answer_length


EDGE_CASES = [
    fixed_example("0\x000", [[(0, 1), (2, 2), (2, 3)]]),  # an empty token; "0\x00" ends in NUL
    fixed_example("0\x00", [[(0, 1), (1, 2)]]),  # a token covering a NUL
    fixed_example("\x00\x00", [[(0, 1), (1, 2), (0, 2)]]),  # NUL only
    fixed_example(" \t ", [[(0, 1), (1, 2), (2, 3)]]),  # whitespace only
    fixed_example("a b", [[(0, 0), (0, 1), (1, 1), (2, 3), (3, 3)]], n_best=2),  # empty tokens at the edges
    fixed_example("x", [[(0, 1), (0, 1), (1, 1)]], n_best=1),  # one character split in two tokens
    fixed_example("ab c", [[(0, 1), (1, 2)], [(1, 2), (3, 4)]], n_best=1, max_answer_length=1),  # two windows
    fixed_example("a a", [[(0, 1), (2, 3)]], max_answer_length=1),  # one text at two places
]


def with_edge_cases(*more_args):
    """Hypothesis tries each of EDGE_CASES (with `more_args`) first, on every run."""
    def decorate(test):
        for case in EDGE_CASES:
            test = hypothesis.example(case, *more_args)(test)
        return test
    return decorate


@settings(max_examples=1000, deadline=None)
@with_edge_cases()
@given(examples())
def test_random_windows_agree_with_the_brute_force(example) -> None:
    context, starts, ends, offsets, n_best, max_answer_length = example
    decoded = decode(
        context, starts, ends, offsets,
        n_best=n_best, max_answer_length=max_answer_length, top_k=10_000,
    )
    expected, expected_null = brute_force(context, starts, ends, offsets, n_best, max_answer_length)

    assert [(a.text, a.start, a.end) for a in decoded.answers] == [a[:3] for a in expected]
    expected_scores = [a[3] for a in expected]
    assert [a.score for a in decoded.answers] == pytest.approx(expected_scores, rel=1e-9, abs=1e-15)
    assert decoded.null_prob == pytest.approx(expected_null, rel=1e-9, abs=1e-15)


@settings(max_examples=500, deadline=None)
@with_edge_cases(2)
@given(examples(), st.integers(1, 5))
def test_random_windows_give_valid_ranked_spans(example, top_k) -> None:
    context, starts, ends, offsets, n_best, max_answer_length = example
    everything = decode(
        context, starts, ends, offsets,
        n_best=n_best, max_answer_length=max_answer_length, top_k=10_000,
    )
    top = decode(
        context, starts, ends, offsets,
        n_best=n_best, max_answer_length=max_answer_length, top_k=top_k,
    )

    assert top.answers == everything.answers[:top_k]
    assert 0.0 <= everything.null_prob <= 1.0
    assert math.fsum(a.score for a in everything.answers) + everything.null_prob <= 1 + 1e-9
    for answer in everything.answers:
        assert 0 <= answer.start < answer.end <= len(context)
        assert answer.text == context[answer.start : answer.end]
        assert 0.0 <= answer.score <= 1.0
    scores = [a.score for a in everything.answers]
    assert scores == sorted(scores, reverse=True)
    assert len({(a.start, a.end) for a in everything.answers}) == len(everything.answers)
