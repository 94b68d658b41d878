"""Decoding: start/end logits and token offsets -> ranked character spans.

Plain numpy: this module never imports torch.

An example's context may be cut into several overlapping windows. For each window the
model gives one start logit and one end logit per token; `offsets[i]` is token i's
half-open character span `[char_start, char_end)` in the original, unmodified context
(Python `str` indices), or `(-1, -1)` for a token that is not part of the context
(question, special and padding tokens). Token 0 is the CLS token: its logits score the
answer "there is no answer" (the null answer).

Every answer is the half-open span `context[start:end]`; its score is a probability from
one softmax over every candidate span of every window plus the null answer, so scores
compare across questions. Candidates that give the same answer add up: token pairs of one
window that cover the same characters (with word offsets, "trough" and "trough"+"s" of
"troughs"), and the same text found at several places. The same span seen again in an
overlapping window is the same evidence twice and counts once.
"""

from __future__ import annotations

import math

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from qatune.errors import ModelError, SettingsError


@dataclass(frozen=True)
class Answer:
    """A span of the context: `text == context[start:end]`, `score` a probability."""

    text: str
    start: int
    end: int
    score: float


@dataclass(frozen=True)
class Decoded:
    """The best spans of one example, best first, and the probability of no answer."""

    answers: list[Answer]
    null_prob: float


@dataclass(frozen=True)
class _Candidates:
    """Candidate spans of one window (or of many, concatenated): parallel arrays."""

    starts: np.ndarray  # character start, int64
    ends: np.ndarray  # character end (exclusive), int64
    logits: np.ndarray  # start logit + end logit, float64


def decode(
    context: str,
    start_logits: Sequence[np.ndarray],
    end_logits: Sequence[np.ndarray],
    offsets: Sequence[np.ndarray],
    *,
    n_best: int = 20,
    max_answer_length: int = 30,
    top_k: int = 1,
    temperature: float = 1.0,
) -> Decoded:
    """Rank the answer spans of one example from the model's logits over its windows.

    `start_logits[w]`, `end_logits[w]` and `offsets[w]` belong to window w. The logits
    may be longer than the offsets (padding); positions past `len(offsets[w])` are ignored.
    Per window, the `n_best` highest start and the `n_best` highest end positions among
    context tokens are paired (ties go to the earlier token); a context token whose span is
    empty (`char_start == char_end`, e.g. a character the tokenizer normalized away) covers
    no character, so it never starts or ends an answer. A pair is kept when start
    <= end and it covers at most `max_answer_length` tokens. A pair's span runs from its
    start token's `char_start` to its end token's `char_end`: pass word offsets (each
    token's whole word) to get whole words. Pairs of one window with the same span add
    their probabilities; a span found in several windows counts once, with its highest;
    spans with the same text add their probabilities and are reported at the place that
    scored highest. The null answer's logit is the lowest CLS logit over the windows. Spans
    whose text would be empty are skipped. Answers are ranked by score, then by earlier
    start, then by earlier end. Only the logits of CLS and of context tokens are read, so
    the others may be masked (even -inf). The answers' logits (and the null answer's) are
    divided by `temperature` before the softmax: the model's calibration, fitted on dev data
    (`qatune.calibration`). It changes the scores, never the answers or their order; 1.0 keeps
    the model's own scores.

    Raises SettingsError for a bad setting or mismatched windows, ModelError for a NaN
    or infinite logit at CLS or at a context token.

    Example:
        >>> import numpy as np
        >>> context = "Kickoff at 3-0 today"
        >>> offsets = [np.array([[-1, -1], [0, 7], [8, 10], [11, 12], [12, 13], [13, 14]])]
        >>> start = [np.array([0.0, 0.0, 0.0, 5.0, 0.0, 1.0])]
        >>> end = [np.array([0.0, 0.0, 6.0, 0.0, 0.0, 4.0])]
        >>> decoded = decode(context, start, end, offsets)
        >>> decoded.answers[0].text, decoded.answers[0].start, decoded.answers[0].end
        ('3-0', 11, 14)
        >>> round(decoded.answers[0].score, 3), round(decoded.null_prob, 5)
        (0.851, 0.0001)
    """
    _check_settings(n_best=n_best, max_answer_length=max_answer_length, top_k=top_k)
    _check_temperature(temperature)
    candidates, null_logit = _ranked_answers(context, start_logits, end_logits, offsets, n_best, max_answer_length)
    span_probs, null_prob = _softmax_with_null(candidates.logits / temperature, null_logit / temperature)
    return Decoded(_top_answers(context, candidates, span_probs, top_k), null_prob)


@dataclass(frozen=True)
class AnswerLogits:
    """Every candidate answer of one example as `decode` ranks them (before the softmax): the
    best one's text (None without any), every answer's logit best first, and the null logit."""

    best_text: str | None
    logits: np.ndarray
    null_logit: float


def answer_logits(
    context: str,
    start_logits: Sequence[np.ndarray],
    end_logits: Sequence[np.ndarray],
    offsets: Sequence[np.ndarray],
    *,
    n_best: int = 20,
    max_answer_length: int = 30,
) -> AnswerLogits:
    """What `decode` forms its scores from, for `qatune.calibration` to try temperatures on:
    `decode(..., temperature=T)` scores answer i `softmax([logits, null_logit] / T)[i]`."""
    _check_settings(n_best=n_best, max_answer_length=max_answer_length)
    candidates, null_logit = _ranked_answers(context, start_logits, end_logits, offsets, n_best, max_answer_length)
    best = context[candidates.starts[0] : candidates.ends[0]] if candidates.starts.size else None
    return AnswerLogits(best, candidates.logits, null_logit)


def _ranked_answers(context, start_logits, end_logits, offsets, n_best: int, max_answer_length: int) -> tuple[_Candidates, float]:
    """One candidate per answer text, best first, with its logit; and the null answer's logit."""
    windows = _check_windows(context, start_logits, end_logits, offsets)
    per_window = [
        _add_up_same_spans(_window_candidates(start, end, offs, n_best, max_answer_length))
        for start, end, offs in windows
    ]
    candidates = _add_up_same_texts(context, _best_of_same_spans(_concat(per_window)))
    null_logit = min(float(start[0] + end[0]) for start, end, _ in windows)
    return candidates, null_logit


def best_answer(decoded: Decoded, null_threshold: float = 1.0) -> Answer | None:
    """The best span, or None (no answer) when `decoded.null_prob > null_threshold`.

    With the default threshold 1.0 the best span is always returned when there is one;
    lower it to let the model say "no answer".

    Example:
        >>> decoded = Decoded([Answer("3-0", 11, 14, score=0.3)], null_prob=0.6)
        >>> best_answer(decoded)
        Answer(text='3-0', start=11, end=14, score=0.3)
        >>> best_answer(decoded, null_threshold=0.5) is None
        True
    """
    if not _is_number(null_threshold) or not 0.0 <= null_threshold <= 1.0:
        raise SettingsError(
            f"null_threshold must be a probability between 0 and 1, got {null_threshold!r}; "
            "pass e.g. null_threshold=0.5 to answer 'no answer' when the model gives that more "
            "than even odds, or 1.0 to always answer with the best span"
        )
    if not decoded.answers or decoded.null_prob > null_threshold:
        return None
    return decoded.answers[0]


# --- checking arguments ------------------------------------------------------------------


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _check_settings(**settings: int) -> None:
    """Each setting must be an integer >= 1."""
    hints = {
        "n_best": "the number of start and end positions to pair per window, e.g. n_best=20",
        "max_answer_length": "the longest answer in tokens, e.g. max_answer_length=30",
        "top_k": "how many answers to return, e.g. top_k=1",
    }
    for name, value in settings.items():
        is_int = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
        if not is_int or value < 1:
            raise SettingsError(
                f"{name} must be an integer >= 1, got {value!r}; pass {hints[name]}"
            )


def _check_temperature(temperature: float) -> None:
    if not _is_number(temperature) or not 0.0 < temperature < math.inf:
        raise SettingsError(
            f"temperature must be a positive number, got {temperature!r}; pass 1.0 to keep the "
            "model's own scores, or the temperature fitted on dev data (qatune.json)"
        )


def _check_windows(
    context: str,
    start_logits: Sequence[np.ndarray],
    end_logits: Sequence[np.ndarray],
    offsets: Sequence[np.ndarray],
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Check lengths, shapes and values; return (start, end, offsets) per window, cut to L."""
    counts = (len(start_logits), len(end_logits), len(offsets))
    if len(set(counts)) != 1 or counts[0] == 0:
        raise SettingsError(
            "start_logits, end_logits and offsets must hold one entry per window and at "
            f"least one window, got {counts[0]}, {counts[1]} and {counts[2]} entries; "
            "pass the windows of one example, in the same order, to all three"
        )
    return [
        _check_window(context, w, start, end, offs)
        for w, (start, end, offs) in enumerate(zip(start_logits, end_logits, offsets))
    ]


def _check_window(
    context: str, w: int, start: np.ndarray, end: np.ndarray, offs: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    offs = np.asarray(offs)
    if offs.ndim != 2 or offs.shape[0] < 1 or offs.shape[1] != 2:
        raise SettingsError(
            f"offsets[{w}] must have shape (L, 2) with L >= 1 (one [char_start, char_end) "
            f"pair per token, CLS first), got shape {offs.shape}; pass the window's offset "
            "mapping with (-1, -1) for tokens outside the context"
        )
    offs = offs.astype(np.int64)
    _check_offsets(context, w, offs)
    # Only CLS and context tokens are read: other logits may be masked, even with -inf.
    used = offs[:, 0] >= 0
    used[0] = True
    start = _check_logits("start_logits", w, start, used)
    end = _check_logits("end_logits", w, end, used)
    return start, end, offs


def _check_logits(name: str, w: int, logits: np.ndarray, used: np.ndarray) -> np.ndarray:
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 1 or logits.shape[0] < used.size:
        raise SettingsError(
            f"{name}[{w}] must be a 1-D array at least as long as offsets[{w}] ({used.size} "
            f"tokens), got shape {logits.shape}; pass the logits of the same window as "
            f"offsets[{w}], without a batch dimension"
        )
    logits = logits[: used.size]  # the rest is padding
    bad = np.flatnonzero(used & ~np.isfinite(logits))
    if bad.size:
        raise ModelError(
            f"{name}[{w}][{bad[0]}] must be a finite number, got {logits[bad[0]]}; the "
            "model produced invalid scores: check that its weights loaded and that training "
            "did not diverge"
        )
    return logits


def _check_offsets(context: str, w: int, offs: np.ndarray) -> None:
    """Each row is (-1, -1) or a span 0 <= char_start <= char_end <= len(context)."""
    char_start, char_end = offs[:, 0], offs[:, 1]
    outside = (char_start == -1) & (char_end == -1)
    inside = (0 <= char_start) & (char_start <= char_end) & (char_end <= len(context))
    bad = np.flatnonzero(~(outside | inside))
    if bad.size:
        i = bad[0]
        raise SettingsError(
            f"offsets[{w}][{i}] must be (-1, -1) for a token outside the context or a "
            f"span 0 <= char_start <= char_end <= {len(context)} (the context's length), "
            f"got ({char_start[i]}, {char_end[i]}); pass offsets into the original, "
            "unmodified context, with (-1, -1) for question, special and padding tokens"
        )


# --- finding and scoring spans ------------------------------------------------------------


def _top_positions(logits: np.ndarray, allowed: np.ndarray, n: int) -> np.ndarray:
    """Indices of the n highest logits among the allowed positions; ties go to the earlier."""
    positions = np.flatnonzero(allowed)
    if positions.size <= n:
        return positions
    values = logits[positions]
    kth = np.partition(values, values.size - n)[values.size - n]  # n-th highest value
    above = positions[values > kth]
    ties = positions[values == kth][: n - above.size]
    return np.concatenate([above, ties])


def _window_candidates(
    start: np.ndarray, end: np.ndarray, offs: np.ndarray, n_best: int, max_answer_length: int
) -> _Candidates:
    """All kept (start, end) pairs of one window, as character spans with their logits."""
    # An empty token points at no character: cut there, a span would start or end on the
    # gap around it. (-1, -1) rows, outside the context, are empty too.
    covers_a_character = offs[:, 1] > offs[:, 0]
    covers_a_character[0] = False  # CLS scores the null answer, never a span
    s = _top_positions(start, covers_a_character, n_best)[:, None]  # column: broadcast to a grid
    e = _top_positions(end, covers_a_character, n_best)[None, :]  # row
    char_start = np.broadcast_to(offs[s, 0], (s.size, e.size))
    char_end = np.broadcast_to(offs[e, 1], (s.size, e.size))
    keep = (s <= e) & (e - s + 1 <= max_answer_length) & (char_end > char_start)
    logits = start[s] + end[e]
    return _Candidates(char_start[keep], char_end[keep], logits[keep])


def _concat(parts: list[_Candidates]) -> _Candidates:
    return _Candidates(
        np.concatenate([p.starts for p in parts]),
        np.concatenate([p.ends for p in parts]),
        np.concatenate([p.logits for p in parts]),
    )


def _rank(candidates: _Candidates) -> _Candidates:
    """Best first: highest logit, then earlier start, then earlier end."""
    order = np.lexsort((candidates.ends, candidates.starts, -candidates.logits))
    return _Candidates(candidates.starts[order], candidates.ends[order], candidates.logits[order])


def _span_keys(candidates: _Candidates) -> np.ndarray:
    """One int64 per character span, equal for equal spans (a 1-D key sorts ~3x faster than rows)."""
    starts, ends = candidates.starts.astype(np.int64), candidates.ends.astype(np.int64)
    return starts * (int(ends.max(initial=0)) + 1) + ends


def _groups(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For keys in rank order: each key's group (numbered by first appearance), and each
    group's first (best) row."""
    # np.unique sorts stably when asked for indices: `first` is each key's first row
    _, first, group = np.unique(keys, return_index=True, return_inverse=True)
    group = group.reshape(-1)
    # Renumber the groups by their first row, so that group g's best row is firsts[g].
    renumber = np.empty_like(first)
    renumber[np.argsort(first)] = np.arange(first.size)
    return renumber[group], np.sort(first)


def _log_sum_by_group(logits: np.ndarray, group: np.ndarray, count: int) -> np.ndarray:
    """log(sum(exp(logits))) of each group, stable."""
    peak = np.full(count, -np.inf)
    np.maximum.at(peak, group, logits)
    total = np.zeros(count)
    np.add.at(total, group, np.exp(logits - peak[group]))
    return peak + np.log(total)


def _add_up_same_spans(candidates: _Candidates) -> _Candidates:
    """One candidate per character span of one window, its pairs' probabilities added."""
    ranked = _rank(candidates)
    group, firsts = _groups(_span_keys(ranked))
    logits = _log_sum_by_group(ranked.logits, group, firsts.size)
    return _rank(_Candidates(ranked.starts[firsts], ranked.ends[firsts], logits))


def _best_of_same_spans(candidates: _Candidates) -> _Candidates:
    """One candidate per character span over all windows, with its highest logit, ranked."""
    ranked = _rank(candidates)
    _, firsts = _groups(_span_keys(ranked))
    return _Candidates(ranked.starts[firsts], ranked.ends[firsts], ranked.logits[firsts])


def _add_up_same_texts(context: str, candidates: _Candidates) -> _Candidates:
    """One candidate per answer text, at its best place, the places' probabilities added; ranked.

    `candidates` must be ranked, so that the first place of a text is its best.
    """
    if candidates.starts.size == 0:
        return candidates
    # Number the texts in Python: numpy's fixed-width strings drop trailing NULs ("0\x00" == "0").
    numbers: dict[str, int] = {}
    spans = zip(candidates.starts.tolist(), candidates.ends.tolist())
    text_numbers = np.array([numbers.setdefault(context[a:b], len(numbers)) for a, b in spans])
    group, firsts = _groups(text_numbers)
    logits = _log_sum_by_group(candidates.logits, group, firsts.size)
    return _rank(_Candidates(candidates.starts[firsts], candidates.ends[firsts], logits))


def _softmax_with_null(span_logits: np.ndarray, null_logit: float) -> tuple[np.ndarray, float]:
    """Softmax over the spans and the null answer together, in float64, stable."""
    logits = np.append(span_logits.astype(np.float64), null_logit)
    weights = np.exp(logits - logits.max())  # the largest becomes exp(0) = 1: no overflow
    probs = weights / weights.sum()
    return probs[:-1], float(probs[-1])


def _top_answers(
    context: str, ranked: _Candidates, probs: np.ndarray, top_k: int
) -> list[Answer]:
    """The first top_k candidates (already ranked best first) as Answers."""
    count = min(top_k, ranked.starts.size)
    return [
        Answer(
            text=context[ranked.starts[i] : ranked.ends[i]],
            start=int(ranked.starts[i]),
            end=int(ranked.ends[i]),
            score=float(probs[i]),
        )
        for i in range(count)
    ]




def close_call_margin(decoded: Decoded, null_threshold: float = 1.0) -> float:
    """How far an answer is from changing: the log-ratio of the best answer's probability to
    the runner-up's, or of the no-answer probability to the threshold, whichever is smaller
    (inf when neither exists). Decode with top_k >= 2 so that the runner-up is there.

        >>> round(close_call_margin(Decoded([Answer("a", 0, 1, 0.5), Answer("b", 2, 3, 0.4)], 0.1)), 3)
        0.223
    """
    margin = math.inf
    answers = decoded.answers
    if len(answers) >= 2 and answers[1].score > 0:
        margin = math.log(answers[0].score / answers[1].score)
    # At 0 the decision is null_prob > 0, which a little noise in the logits cannot flip.
    if 0.0 < null_threshold < 1.0 and decoded.null_prob > 0:
        margin = min(margin, abs(math.log(decoded.null_prob / null_threshold)))
    return margin


__all__ = ["Answer", "AnswerLogits", "Decoded", "answer_logits", "best_answer", "close_call_margin", "decode"]
