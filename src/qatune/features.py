"""Tokenized windows: question + context cut into overlapping windows, with offsets and labels.

A window is `[CLS] question [SEP] context-part [SEP]`; consecutive windows of one context
share `doc_stride` tokens. Each window keeps the index of its example and, per token, the
half-open character span `[start, end)` of that token in the original context, or (-1, -1)
for tokens that are not context (question, special tokens), so that decoding can never pick
them. A token's span also covers the combining marks right after it, which a tokenizer that
strips accents leaves out ("Jose\u0301" would end before its accent).

Labels map an answer's half-open character span to the first and last token that cover it.
A window that does not hold the whole answer, and every window of an unanswerable question,
points at the CLS token (index 0).

Each window also keeps, per token, the character span of the whole word the token belongs to
(the tokenizer's pre-tokenized word, whole even where a window's border cuts it), so that
decoding can give whole words ("troughs", not the sub-word "trough").
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
import unicodedata
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from qatune.data import Example
from qatune.errors import SettingsError
from qatune.files import with_default_permissions
from qatune.settings import QASettings

NOT_CONTEXT = -1
# Examples tokenized at a time by `cached_windows`: the tokenizer answers with Python lists
# (ids, offset tuples, word ids) several times the size of the windows made from them.
TOKENIZE_CHUNK = 1000


@dataclass
class Windows:
    """The windows of a list of examples, unpadded (batches pad them to their own longest)."""

    input_ids: list[np.ndarray]
    token_type_ids: list[np.ndarray] | None
    offsets: list[np.ndarray]  # (length, 2) int32, NOT_CONTEXT outside the context
    word_offsets: list[np.ndarray]  # like offsets, but each token's whole word
    example_index: np.ndarray  # window -> index of its example in the list given
    truncated_questions: int = 0

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def lengths(self) -> np.ndarray:
        return np.fromiter((len(ids) for ids in self.input_ids), dtype=np.int64, count=len(self))

    def of_example(self) -> list[list[int]]:
        """Window indices grouped by example, in example order."""
        groups: list[list[int]] = [[] for _ in range(int(self.example_index.max(initial=-1)) + 1)]
        for window, example in enumerate(self.example_index.tolist()):
            groups[example].append(window)
        return groups


def with_token_types(windows: Windows, sep_token_id: int) -> Windows:
    """The windows with BERT's token types added (0 up to the first [SEP], the question's part,
    1 after it), for a model that takes them while the tokenizer that cut the windows gave none
    (a BERT teacher of a DistilBERT student: the same ids, types only on one side)."""
    types = []
    for ids in windows.input_ids:
        separators = np.flatnonzero(ids == sep_token_id)
        first = int(separators[0]) if separators.size else len(ids)
        types.append((np.arange(len(ids)) > first).astype(np.uint8))
    return replace(windows, token_type_ids=types)


@dataclass
class TrainingItems:
    """One item per (window, distinct gold answer): what the model learns to point at."""

    window: np.ndarray
    start: np.ndarray
    end: np.ndarray  # inclusive token index of the answer's last token
    answers_outside: int = 0  # answers no window holds whole: not trained on
    answer_places: list[str] = field(default_factory=list)  # where those answers are, first few
    answer_lengths: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # tokens, one per answer held
    teacher_only: int = 0  # the last this many items are transfer windows: no gold answer, the teacher's alone

    def __len__(self) -> int:
        return len(self.window)

    def labelled(self, items: np.ndarray) -> np.ndarray:
        """Whether each of these items has a gold answer (False: a transfer window)."""
        return items < len(self) - self.teacher_only

    def with_teacher_only(self, windows: np.ndarray) -> "TrainingItems":
        """These items and one more for each of `windows`, which no gold answer labels (their
        labels point at CLS and only a teacher's distributions teach them)."""
        none = np.zeros(len(windows), dtype=np.int64)
        return replace(
            self,
            window=np.concatenate([self.window, np.asarray(windows, dtype=np.int64)]),
            start=np.concatenate([self.start, none]),
            end=np.concatenate([self.end, none]),
            teacher_only=self.teacher_only + len(windows),
        )


def concat_windows(parts: Sequence[Windows], example_counts: Sequence[int]) -> Windows:
    """The windows of several example lists as those of the lists joined in order; part k held
    the windows of `example_counts[k]` examples."""
    first_example = np.cumsum([0, *example_counts[:-1]], dtype=np.int64)
    with_types = all(part.token_type_ids is not None for part in parts)
    return Windows(
        input_ids=[ids for part in parts for ids in part.input_ids],
        token_type_ids=[types for part in parts for types in part.token_type_ids] if with_types else None,
        offsets=[spans for part in parts for spans in part.offsets],
        word_offsets=[spans for part in parts for spans in part.word_offsets],
        example_index=np.concatenate(
            [part.example_index + first for part, first in zip(parts, first_example)] or [np.zeros(0, dtype=np.int64)]
        ),
        truncated_questions=sum(part.truncated_questions for part in parts),
    )


def make_windows(examples: Sequence[Example], tokenizer, settings: QASettings) -> Windows:
    """Tokenize every example into windows (no padding)."""
    check_tokenizer_room(tokenizer, settings)
    questions, cut = _cut_questions([example.question for example in examples], tokenizer, settings)
    encoded = tokenizer(
        questions,
        [example.context for example in examples],
        truncation="only_second",
        max_length=settings.max_seq_length,
        stride=settings.doc_stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        padding=False,
    )
    use_token_types = "token_type_ids" in tokenizer.model_input_names and "token_type_ids" in encoded
    input_ids, token_types, offsets, word_offsets, words = [], [], [], [], []
    for index, ids in enumerate(encoded["input_ids"]):
        input_ids.append(np.asarray(ids, dtype=np.int64))
        if use_token_types:
            token_types.append(np.asarray(encoded["token_type_ids"][index], dtype=np.int64))
        context = examples[encoded["overflow_to_sample_mapping"][index]].context
        offsets.append(_context_offsets(encoded["offset_mapping"][index], encoded.sequence_ids(index), context))
        words.append(_word_ids(encoded.word_ids(index)))
        word_offsets.append(_word_offsets(offsets[-1], words[-1]))
    example_index = np.asarray(encoded["overflow_to_sample_mapping"], dtype=np.int64)
    _widen_to_whole_words(word_offsets, words, example_index)
    return Windows(
        input_ids=input_ids,
        token_type_ids=token_types if use_token_types else None,
        offsets=offsets,
        word_offsets=word_offsets,
        example_index=example_index,
        truncated_questions=sum(cut),
    )


def label_windows(examples: Sequence[Example], windows: Windows) -> TrainingItems:
    """Start/end token labels for every window and every distinct gold answer."""
    window_ids, starts, ends, lengths = [], [], [], []
    outside, places = 0, []
    for example_index, group in enumerate(windows.of_example()):
        example = examples[example_index]
        spans = sorted({(answer.start, answer.end) for answer in example.answers})
        if not spans:  # unanswerable: every window points at CLS
            for window in group:
                window_ids.append(window), starts.append(0), ends.append(0)
            continue
        for char_start, char_end in spans:
            located = [_locate(windows.offsets[window], char_start, char_end) for window in group]
            if all(position is None for position in located):
                outside += 1
                if len(places) < 5:
                    places.append(f"{example.place or example.id} ({example.context[char_start:char_end]!r})")
                continue
            first, last = next(position for position in located if position is not None)
            lengths.append(last - first + 1)
            for window, position in zip(group, located):
                start, end = position if position is not None else (0, 0)
                window_ids.append(window), starts.append(start), ends.append(end)
    return TrainingItems(
        window=np.asarray(window_ids, dtype=np.int64),
        start=np.asarray(starts, dtype=np.int64),
        end=np.asarray(ends, dtype=np.int64),
        answers_outside=outside,
        answer_places=places,
        answer_lengths=np.asarray(lengths, dtype=np.int64),
    )


def label_coverage(windows: Windows, items: TrainingItems) -> dict[str, int]:
    """What windowing does to the labels: windows, questions cut into several windows, answers
    no window holds whole, training items labelled "no answer" (the CLS token: unanswerable
    questions, and windows of an answerable question that miss its answer), questions cut to
    max_question_length.

        >>> label_coverage(windows, label_windows(examples, windows))  # doctest: +SKIP
        {'windows': 9, 'multi_window_questions': 2, 'answers_outside_windows': 0, 'items': 10, 'no_answer_items': 3, 'truncated_questions': 0}
    """
    per_question = np.bincount(windows.example_index) if len(windows) else np.zeros(0, dtype=np.int64)
    return {
        "windows": len(windows),
        "multi_window_questions": int(np.count_nonzero(per_question > 1)),
        "answers_outside_windows": items.answers_outside,
        "items": len(items),
        "no_answer_items": int(np.count_nonzero(items.start == 0)),
        "truncated_questions": windows.truncated_questions,
    }


def _locate(offsets: np.ndarray, char_start: int, char_end: int) -> tuple[int, int] | None:
    """First and last token of the span `[char_start, char_end)`, or None when this window
    does not hold all of it."""
    context = np.flatnonzero(offsets[:, 0] != NOT_CONTEXT)
    if len(context) == 0:
        return None
    first, last = int(context[0]), int(context[-1])
    if offsets[first, 0] > char_start or offsets[last, 1] < char_end:
        return None
    token_starts = offsets[first : last + 1, 0]
    token_ends = offsets[first : last + 1, 1]
    # First token ending after the answer starts; last token starting before it ends.
    start = first + int(np.searchsorted(token_ends, char_start, side="right"))
    end = first + int(np.searchsorted(token_starts, char_end, side="left")) - 1
    return (start, end) if start <= end else None


def _context_offsets(offset_mapping, sequence_ids, context: str) -> np.ndarray:
    offsets = np.asarray(offset_mapping, dtype=np.int32).reshape(-1, 2)
    is_context = np.fromiter((sequence_id == 1 for sequence_id in sequence_ids), dtype=bool, count=len(offsets))
    offsets[~is_context] = NOT_CONTEXT
    _cover_following_marks(offsets, context)
    return offsets


def _cover_following_marks(offsets: np.ndarray, context: str) -> None:
    """Extend, in place, each context token's end over the combining marks right after it.

    A tokenizer that strips accents normalizes them away, so on NFD text its offsets for
    "Jose\u0301" end before the accent: an answer ending there would lie outside every window,
    and a decoded answer would lose its accent. A mark the next token starts at is left to it.
    """
    if context.isascii():  # no combining marks: most text stops here
        return
    starts, ends = offsets[:, 0], offsets[:, 1]
    inside = np.flatnonzero((starts != NOT_CONTEXT) & (ends < len(context)))
    codes = _code_points(context)[ends[inside]]
    marks = _combining_marks()
    # Only tokens followed by a mark (or by a code point past the table) are looked at one by one.
    for token in inside[(codes >= len(marks)) | marks[np.minimum(codes, len(marks) - 1)]]:
        end = int(ends[token])
        following = token + 1 < len(offsets) and starts[token + 1] != NOT_CONTEXT
        stop = int(starts[token + 1]) if following else len(context)
        while end < stop and unicodedata.combining(context[end]):
            end += 1
        ends[token] = end


@functools.lru_cache(maxsize=1)  # the windows of one context come one after another
def _code_points(context: str) -> np.ndarray:
    """The context's code points, encoded once for all of its windows (read-only)."""
    return np.frombuffer(context.encode("utf-32-le", "surrogatepass"), dtype="<u4")


@functools.cache
def _combining_marks() -> np.ndarray:
    """Per code point below U+20000 (where every combining mark lies so far), whether it is one:
    built once, ~15 ms, on the first context that is not ASCII."""
    return np.fromiter(map(unicodedata.combining, map(chr, range(0x20000))), dtype=np.uint8, count=0x20000) != 0


def _word_ids(word_ids: list[int | None]) -> np.ndarray:
    """The tokenizer's word ids, -1 for tokens of no word (special tokens)."""
    return np.fromiter((-1 if word is None else word for word in word_ids), dtype=np.int64, count=len(word_ids))


def _word_offsets(offsets: np.ndarray, words: np.ndarray) -> np.ndarray:
    """Per token, the span from its word's first to its word's last token in this window.

    The tokens of one word are consecutive, so a word is a run of context tokens with the
    same word id; tokens without a word id (special tokens) are words of their own.
    """
    is_context = offsets[:, 0] != NOT_CONTEXT
    # A run starts where the word id changes, or where context starts or stops.
    run_start = np.ones(len(offsets), dtype=bool)
    run_start[1:] = (words[1:] != words[:-1]) | (is_context[1:] != is_context[:-1]) | (words[1:] < 0)
    run = np.cumsum(run_start) - 1
    firsts = np.flatnonzero(run_start)
    lasts = np.append(firsts[1:], len(offsets)) - 1
    spans = np.stack([offsets[firsts[run], 0], offsets[lasts[run], 1]], axis=1).astype(np.int32)
    spans[~is_context] = NOT_CONTEXT
    return spans


def _widen_to_whole_words(word_offsets: list[np.ndarray], words: list[np.ndarray], example_index: np.ndarray) -> None:
    """Widen, in place, every word span to the whole word in its context: a word that a
    window's border cuts keeps its other part in the neighbouring window, and an answer aligned
    to words must never be that part alone. Word ids number the words of one context, the same
    in each of its windows."""
    # the windows of one example are consecutive; only examples of several windows have borders
    bounds = np.flatnonzero(np.diff(example_index, prepend=-1, append=-1) != 0)
    for begin, end in zip(bounds[:-1], bounds[1:]):
        if end - begin < 2:
            continue
        group = range(begin, end)
        held = [(word_offsets[w][:, 0] != NOT_CONTEXT) & (words[w] >= 0) for w in group]
        ids = np.concatenate([words[w][mask] for w, mask in zip(group, held)])
        if len(ids) == 0:
            continue
        spans = np.concatenate([word_offsets[w][mask] for w, mask in zip(group, held)])
        first = np.full(ids.max() + 1, np.iinfo(np.int32).max, dtype=np.int32)
        last = np.full(ids.max() + 1, -1, dtype=np.int32)
        np.minimum.at(first, ids, spans[:, 0])
        np.maximum.at(last, ids, spans[:, 1])
        for w, mask in zip(group, held):
            word_offsets[w][mask, 0] = first[words[w][mask]]
            word_offsets[w][mask, 1] = last[words[w][mask]]


def count_cut_questions(questions: Sequence[str], tokenizer, settings: QASettings) -> int:
    """How many of `questions` are longer than `max_question_length` tokens: windows hold their
    first tokens only (what answering reports, as training does)."""
    return sum(questions_cut(questions, tokenizer, settings))


def questions_cut(questions: Sequence[str], tokenizer, settings: QASettings) -> list[bool]:
    """For each of `questions`, whether it is longer than `max_question_length` tokens (the
    server says so with each answer)."""
    return _cut_questions(list(questions), tokenizer, settings)[1]


def _cut_questions(questions: list[str], tokenizer, settings: QASettings) -> tuple[list[str], list[bool]]:
    """Cut questions longer than `max_question_length` tokens at a token border; which were cut."""
    limit = settings.max_question_length
    # verbose=False: a question longer than the model takes is cut here, and counted; the
    # tokenizer's "will result in indexing errors" warning would say the opposite
    encoded = tokenizer(questions, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    kept, cut = [], []
    for question, offsets in zip(questions, encoded["offset_mapping"]):
        cut.append(len(offsets) > limit)
        kept.append(question[: offsets[limit - 1][1]] if cut[-1] else question)
    return kept, cut


def check_tokenizer_room(tokenizer, settings: QASettings) -> None:
    """A SettingsError when the windows the settings ask for do not fit this tokenizer and model."""
    special = tokenizer.num_special_tokens_to_add(pair=True)
    room = settings.max_seq_length - settings.max_question_length - special
    if settings.doc_stride >= room:
        raise SettingsError(
            f"doc_stride ({settings.doc_stride}) must be smaller than the room left for the context "
            f"({room} tokens: max_seq_length {settings.max_seq_length} - max_question_length "
            f"{settings.max_question_length} - {special} special tokens of this tokenizer); "
            f"lower doc_stride or max_question_length"
        )
    model_limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(model_limit, int) and model_limit < 1_000_000 and settings.max_seq_length > model_limit:
        raise SettingsError(
            f"max_seq_length ({settings.max_seq_length}) is longer than this model accepts "
            f"({model_limit} tokens); use --max-seq-length {model_limit} or less"
        )


def cached_windows(examples: Sequence[Example], tokenizer, settings: QASettings, cache_dir: Path | None) -> Windows:
    """`make_windows`, remembered on disk: keyed by the data's content, the tokenizer and the
    window settings, so a second run on the same data (a resume, another learning rate) does
    not tokenize again. `cache_dir=None` turns the cache off."""
    if cache_dir is None:
        return _make_windows_in_chunks(examples, tokenizer, settings)
    path = Path(cache_dir) / f"windows-{_cache_key(examples, tokenizer, settings)}.npz"
    if path.is_file():
        try:
            return _load_windows(path, len(examples))
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            path.unlink(missing_ok=True)  # a damaged or inconsistent cache file is rebuilt
    windows = _make_windows_in_chunks(examples, tokenizer, settings)
    _save_windows(windows, path)
    return windows


def _make_windows_in_chunks(examples: Sequence[Example], tokenizer, settings: QASettings) -> Windows:
    """`make_windows`, TOKENIZE_CHUNK examples at a time (the same windows): for 42,834 questions
    at once, the tokenizer's lists took RSS from 0.46 to 2.4 GB (3.1 GB peak); in chunks, to 0.8 GB."""
    if len(examples) <= TOKENIZE_CHUNK:
        return make_windows(examples, tokenizer, settings)
    starts = range(0, len(examples), TOKENIZE_CHUNK)
    parts = [make_windows(examples[begin : begin + TOKENIZE_CHUNK], tokenizer, settings) for begin in starts]
    return Windows(
        input_ids=[ids for part in parts for ids in part.input_ids],
        token_type_ids=None if parts[0].token_type_ids is None else [t for part in parts for t in part.token_type_ids],
        offsets=[offsets for part in parts for offsets in part.offsets],
        word_offsets=[offsets for part in parts for offsets in part.word_offsets],
        example_index=np.concatenate([part.example_index + begin for part, begin in zip(parts, starts)]),
        truncated_questions=sum(part.truncated_questions for part in parts),
    )


# What cached windows hold changed: word spans were cut to their window before format 2, and
# token ends left out the combining marks after them before format 3.
WINDOWS_FORMAT = b"windows 3: token ends cover the combining marks after them"


def _cache_key(examples: Sequence[Example], tokenizer, settings: QASettings) -> str:
    digest = hashlib.sha256(WINDOWS_FORMAT)
    digest.update(json.dumps(settings.to_dict(), sort_keys=True).encode())
    # The backend's truncation and padding are left over from its last call: not part of the key.
    backend = json.loads(tokenizer.backend_tokenizer.to_str())
    backend.pop("truncation", None), backend.pop("padding", None)
    digest.update(json.dumps(backend, sort_keys=True).encode())
    digest.update(json.dumps(list(tokenizer.model_input_names)).encode())
    for example in examples:
        digest.update(json.dumps([example.question, example.context], ensure_ascii=False).encode())
    return digest.hexdigest()[:32]


def _save_windows(windows: Windows, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {
        "lengths": windows.lengths,
        "input_ids": np.concatenate(windows.input_ids),
        "offsets": np.concatenate(windows.offsets),
        "word_offsets": np.concatenate(windows.word_offsets),
        "example_index": windows.example_index,
        "truncated_questions": np.asarray(windows.truncated_questions),
    }
    if windows.token_type_ids is not None:
        arrays["token_type_ids"] = np.concatenate(windows.token_type_ids)
    # A temporary file of its own per writer (processes may tokenize the same data at once):
    # each writes a whole file and renames it into place; the last rename wins.
    handle, temporary = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".tmp.npz", dir=path.parent)
    os.close(handle)
    try:
        np.savez(temporary, **arrays)  # the name ends in .npz: savez adds nothing to it
        with_default_permissions(temporary)  # mkstemp makes it 0600: a shared cache stays readable
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _load_windows(path: Path, example_count: int) -> Windows:
    """The windows stored at `path`; ValueError when its arrays do not fit together."""
    with np.load(path) as stored:
        arrays = {name: stored[name] for name in stored.files}
    _check_stored_windows(arrays, example_count)
    borders = np.cumsum(arrays["lengths"])[:-1]
    token_types = arrays.get("token_type_ids")
    return Windows(
        input_ids=np.split(arrays["input_ids"], borders),
        token_type_ids=np.split(token_types, borders) if token_types is not None else None,
        offsets=np.split(arrays["offsets"], borders),
        word_offsets=np.split(arrays["word_offsets"], borders),
        example_index=arrays["example_index"],
        truncated_questions=int(arrays["truncated_questions"]),
    )


def _check_stored_windows(arrays: dict[str, np.ndarray], example_count: int) -> None:
    """Raise ValueError unless the stored arrays agree with each other and with the examples:
    a file written by another version, or damaged, must not give windows that are wrong."""
    required = {"lengths", "input_ids", "offsets", "word_offsets", "example_index", "truncated_questions"}
    if required - arrays.keys():
        raise ValueError(f"missing arrays: {sorted(required - arrays.keys())}")
    lengths, example_index = arrays["lengths"], arrays["example_index"]
    if lengths.ndim != 1 or not np.issubdtype(lengths.dtype, np.integer):
        raise ValueError(f"lengths: expected whole numbers in one row, found {lengths.dtype} of shape {lengths.shape}")
    tokens = int(lengths.sum())
    expected_shapes = {
        "example_index": (len(lengths),),
        "input_ids": (tokens,),
        "token_type_ids": (tokens,),
        "offsets": (tokens, 2),
        "word_offsets": (tokens, 2),
        "truncated_questions": (),
    }
    for name, shape in expected_shapes.items():
        array = arrays.get(name)
        if array is not None and (array.shape != shape or not np.issubdtype(array.dtype, np.integer)):
            raise ValueError(f"{name}: expected integers of shape {shape}, found {array.dtype} of shape {array.shape}")
    if (lengths < 1).any():
        raise ValueError("lengths: every window has at least one token")
    # Windows come example by example, every example with at least one window
    if not np.array_equal(np.unique(example_index), np.arange(example_count)) or (np.diff(example_index) < 0).any():
        raise ValueError(f"example_index: expected 0 to {example_count - 1} in order, each at least once")


def default_cache_dir() -> Path:
    """`$QATUNE_CACHE`, else `$XDG_CACHE_HOME/qatune`, else `~/.cache/qatune`."""
    if os.environ.get("QATUNE_CACHE"):
        return Path(os.environ["QATUNE_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "qatune"
