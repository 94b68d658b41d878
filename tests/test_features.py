"""Windows and labels: exact character-to-token mapping of half-open answer spans."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from qatune.data import Example, GoldAnswer, load_examples
from qatune.decoding import decode
from qatune.errors import SettingsError
from qatune.features import NOT_CONTEXT, _context_offsets, _save_windows, cached_windows, label_windows, make_windows
from qatune.modeling import load_tokenizer
from qatune.settings import QASettings

from conftest import TINY_QA

CONTEXT = "Riverside Athletic won the cup final 3-0 in 1998 at Hampden Park."
SMALL = QASettings(max_seq_length=16, doc_stride=4, max_question_length=4)


def answer(text: str, occurrence_of: str | None = None) -> GoldAnswer:
    return GoldAnswer(text, CONTEXT.index(occurrence_of or text))


def example(*answers: GoldAnswer, question: str = "Who won?", context: str = CONTEXT) -> Example:
    return Example(id="q", question=question, context=context, answers=tuple(answers))


@pytest.fixture(scope="module")
def tokenizer(tiny_bert):
    return load_tokenizer(tiny_bert)


def labelled_texts(examples, tokenizer, settings):
    """(window, answer text the labels point at, or None for CLS) for every training item."""
    windows = make_windows(examples, tokenizer, settings)
    items = label_windows(examples, windows)
    texts = []
    for window, start, end in zip(items.window, items.start, items.end):
        offsets = windows.offsets[window]
        context = examples[windows.example_index[window]].context
        texts.append((int(window), None if start == 0 else context[offsets[start][0] : offsets[end][1]]))
    return windows, items, texts


def test_answer_at_first_context_token(tokenizer):
    _, items, texts = labelled_texts([example(answer("Riverside"))], tokenizer, QASettings())
    assert texts == [(0, "Riverside")]
    assert items.start[0] == 5  # [CLS] who won ? [SEP] -> the first context token is 5


def test_answer_at_last_context_token(tokenizer):
    _, items, texts = labelled_texts([example(answer("."))], tokenizer, QASettings())
    windows = make_windows([example(answer("."))], tokenizer, QASettings())
    assert texts == [(0, ".")]
    assert items.end[0] == len(windows.input_ids[0]) - 2  # the token before the final [SEP]


def test_windows_overlap_by_doc_stride_tokens(tokenizer):
    windows = make_windows([example()], tokenizer, SMALL)
    assert len(windows) == 2 and windows.example_index.tolist() == [0, 0]
    first = windows.input_ids[0][windows.offsets[0][:, 0] != NOT_CONTEXT]
    second = windows.input_ids[1][windows.offsets[1][:, 0] != NOT_CONTEXT]
    assert first[-SMALL.doc_stride :].tolist() == second[: SMALL.doc_stride].tolist()


def test_labels_across_window_borders(tokenizer):
    # "Riverside" only in window 0, "Hampden Park" only in window 1, "3-0 in" in both (the overlap).
    examples = [example(answer("Riverside"), answer("Hampden Park"), answer("3-0 in"))]
    _, items, texts = labelled_texts(examples, tokenizer, SMALL)
    assert sorted(texts, key=str) == sorted(
        [(0, "Riverside"), (1, None), (0, None), (1, "Hampden Park"), (0, "3-0 in"), (1, "3-0 in")], key=str
    )
    assert items.answers_outside == 0


def test_answer_held_by_no_window_is_counted_not_trained(tokenizer):
    long_answer = answer("won the cup final 3-0 in 1998 at Hampden")
    _, items, texts = labelled_texts([example(long_answer)], tokenizer, SMALL)
    assert items.answers_outside == 1
    assert texts == []
    assert "won the cup final" in items.answer_places[0]


def test_unanswerable_question_points_every_window_at_cls(tokenizer):
    unanswerable = Example(id="u", question="Who won?", context=CONTEXT, answers=(), is_impossible=True)
    windows, items, texts = labelled_texts([unanswerable], tokenizer, SMALL)
    assert len(windows) == 2
    assert texts == [(0, None), (1, None)]
    assert items.start.tolist() == [0, 0] and items.end.tolist() == [0, 0]


def test_one_item_per_distinct_answer(tokenizer):
    gold = (answer("Hampden Park"), answer("Hampden Park"), answer("Hampden"))
    _, items, texts = labelled_texts([example(*gold)], tokenizer, QASettings())
    assert sorted(text for _, text in texts) == ["Hampden", "Hampden Park"]


def test_question_and_special_tokens_are_not_context(tokenizer):
    windows = make_windows([example()], tokenizer, QASettings())
    ids, offsets = windows.input_ids[0], windows.offsets[0]
    tokens = tokenizer.convert_ids_to_tokens(ids.tolist())
    question_part = tokens.index("[SEP]") + 1
    assert (offsets[:question_part] == NOT_CONTEXT).all()
    assert (offsets[-1] == NOT_CONTEXT).all()
    assert (offsets[question_part:-1] != NOT_CONTEXT).all()


def test_every_label_of_the_tiny_data_maps_back_to_its_answer(tokenizer):
    examples = load_examples(TINY_QA)
    settings = QASettings(max_seq_length=24, doc_stride=6, max_question_length=8)
    windows, items, texts = labelled_texts(examples, tokenizer, settings)
    assert len(set(windows.example_index.tolist())) == len(examples)
    for window, text in texts:
        if text is not None:
            gold = {a.text for a in examples[windows.example_index[window]].answers}
            assert text in gold


def test_long_questions_are_cut_and_counted(tokenizer):
    long_question = "who " * 30 + "won?"
    windows = make_windows([example(question=long_question)], tokenizer, SMALL)
    assert windows.truncated_questions == 1
    question_tokens = int(np.flatnonzero(windows.offsets[0][:, 0] != NOT_CONTEXT)[0]) - 2
    assert question_tokens == SMALL.max_question_length


def test_doc_stride_must_leave_room_for_the_context():
    with pytest.raises(SettingsError) as error:
        QASettings(max_seq_length=128, doc_stride=64, max_question_length=64)
    assert str(error.value) == (
        "doc_stride (64) must be smaller than the room left for the context in a window "
        "(61 tokens = max_seq_length 128 - max_question_length 64 - 3 special tokens); "
        "use a doc_stride below 61, e.g. 20"
    )


def test_max_seq_length_beyond_the_model_is_refused(tokenizer):
    with pytest.raises(SettingsError, match=r"max_seq_length \(600\) is longer than this model accepts \(512"):
        make_windows([example()], tokenizer, QASettings(max_seq_length=600))


def test_cached_windows_equal_fresh_ones_and_depend_on_the_settings(tokenizer, tmp_path):
    examples = load_examples(TINY_QA)
    fresh = make_windows(examples, tokenizer, SMALL)
    first = cached_windows(examples, tokenizer, SMALL, tmp_path)
    second = cached_windows(examples, tokenizer, SMALL, tmp_path)
    assert len(list(tmp_path.glob("windows-*.npz"))) == 1
    for windows in (first, second):
        assert all((a == b).all() for a, b in zip(windows.input_ids, fresh.input_ids))
        assert all((a == b).all() for a, b in zip(windows.offsets, fresh.offsets))
        assert all((a == b).all() for a, b in zip(windows.word_offsets, fresh.word_offsets))
        assert windows.example_index.tolist() == fresh.example_index.tolist()
        assert windows.truncated_questions == fresh.truncated_questions
    cached_windows(examples, tokenizer, QASettings(max_seq_length=20, doc_stride=4, max_question_length=4), tmp_path)
    assert len(list(tmp_path.glob("windows-*.npz"))) == 2
    cached_windows(examples, tokenizer, SMALL, tmp_path)  # after other settings: still the same key
    assert len(list(tmp_path.glob("windows-*.npz"))) == 2


def test_a_damaged_cache_file_is_rebuilt(tokenizer, tmp_path):
    examples = load_examples(TINY_QA)
    cached_windows(examples, tokenizer, SMALL, tmp_path)
    (cache_file,) = tmp_path.glob("windows-*.npz")
    cache_file.write_bytes(b"not a zip archive")
    rebuilt = cached_windows(examples, tokenizer, SMALL, tmp_path)
    assert rebuilt.example_index.tolist() == make_windows(examples, tokenizer, SMALL).example_index.tolist()
    assert cache_file.read_bytes()[:2] == b"PK"  # written again as a real archive


def stored_arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as stored:
        return dict(stored)


def assert_same_windows(windows, fresh) -> None:
    assert len(windows) == len(fresh)
    for name in ("input_ids", "token_type_ids", "offsets", "word_offsets"):
        assert all(np.array_equal(a, b) for a, b in zip(getattr(windows, name), getattr(fresh, name))), name
    assert windows.example_index.tolist() == fresh.example_index.tolist()
    assert windows.truncated_questions == fresh.truncated_questions


def without(arrays: dict, name: str) -> dict:
    return {key: value for key, value in arrays.items() if key != name}


# Valid archives whose arrays do not fit together, made from a good cache file's arrays.
SPOILED_CACHE = {
    "lengths that do not add up to the tokens": lambda a: a | {"lengths": a["lengths"] + 1},
    "lengths as one number": lambda a: a | {"lengths": a["lengths"].sum()},
    "lengths as text": lambda a: a | {"lengths": a["lengths"].astype(str)},
    "example_index shorter than the windows": lambda a: a | {"example_index": a["example_index"][:-1]},
    "example_index past the last example": lambda a: a | {"example_index": a["example_index"] + 100},
    "offsets of another length": lambda a: a | {"offsets": a["offsets"][:-1]},
    "word_offsets of another shape": lambda a: a | {"word_offsets": a["word_offsets"][:, :1]},
    "token_type_ids of another length": lambda a: a | {"token_type_ids": a["token_type_ids"][:-2]},
    "input_ids as floats": lambda a: a | {"input_ids": a["input_ids"].astype(np.float32)},
    "a missing array": lambda a: without(a, "offsets"),
}


@pytest.mark.parametrize("problem", list(SPOILED_CACHE))
def test_an_inconsistent_cache_file_is_rebuilt(problem, tokenizer, tmp_path):
    examples = load_examples(TINY_QA)
    cached_windows(examples, tokenizer, SMALL, tmp_path)
    (cache_file,) = tmp_path.glob("windows-*.npz")
    good = stored_arrays(cache_file)
    np.savez(cache_file, **SPOILED_CACHE[problem](good))

    rebuilt = cached_windows(examples, tokenizer, SMALL, tmp_path)

    assert_same_windows(rebuilt, make_windows(examples, tokenizer, SMALL))
    rewritten = stored_arrays(cache_file)
    assert sorted(rewritten) == sorted(good)
    assert all(np.array_equal(rewritten[name], good[name]) for name in good)
    assert all(rewritten[name].dtype == good[name].dtype for name in good)


def test_each_cache_writer_uses_its_own_temporary_file(tokenizer, tmp_path, monkeypatch):
    windows = make_windows(load_examples(TINY_QA), tokenizer, SMALL)
    path = tmp_path / "windows-key.npz"
    moved, replace = [], os.replace

    def recording_replace(source, destination):
        moved.append(Path(source))
        replace(source, destination)

    monkeypatch.setattr(os, "replace", recording_replace)
    _save_windows(windows, path)
    _save_windows(windows, path)

    assert moved[0] != moved[1]
    assert {source.parent for source in moved} == {tmp_path}  # same folder: the rename is atomic
    assert list(tmp_path.iterdir()) == [path]


def test_a_failed_cache_write_leaves_no_temporary_file(tokenizer, tmp_path, monkeypatch):
    windows = make_windows(load_examples(TINY_QA), tokenizer, SMALL)

    def disk_full(file, **arrays):
        Path(file).write_bytes(b"PK half an archive")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", disk_full)
    with pytest.raises(OSError, match="No space left on device"):
        _save_windows(windows, tmp_path / "windows-key.npz")
    assert list(tmp_path.iterdir()) == []


# Each process writes the same cache file many times, all starting when `go` appears.
CONCURRENT_WRITER = """
import pickle, sys, time
from pathlib import Path
from qatune.features import _save_windows

windows = pickle.loads(Path(sys.argv[1]).read_bytes())
go = Path(sys.argv[3])
while not go.exists():
    time.sleep(0.005)
for _ in range(40):
    _save_windows(windows, Path(sys.argv[2]))
"""


def test_processes_writing_the_same_cache_file_at_once_all_succeed(tokenizer, tmp_path):
    import pickle

    examples = load_examples(TINY_QA)
    fresh = make_windows(examples, tokenizer, SMALL)
    (tmp_path / "windows.pickle").write_bytes(pickle.dumps(fresh))
    cache, go = tmp_path / "cache", tmp_path / "go"
    path = cache / "windows-key.npz"
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", CONCURRENT_WRITER, tmp_path / "windows.pickle", path, go],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for _ in range(4)
    ]
    go.touch()
    results = [(writer.wait(timeout=120), writer.stderr.read()) for writer in writers]

    assert results == [(0, "")] * 4
    assert list(cache.iterdir()) == [path]
    from qatune.features import _load_windows

    assert_same_windows(_load_windows(path, len(examples)), fresh)


def test_word_offsets_cover_the_whole_word_of_each_token(tokenizer):
    context = "Riverside won at Qwzxv Park, 3-0."  # "qwzxv" is not in the vocabulary: sub-words
    windows = make_windows([example(context=context)], tokenizer, QASettings())
    offsets, words = windows.offsets[0], windows.word_offsets[0]
    word_spans = [m.span() for m in re.finditer(r"\w+|[^\w\s]", context)]
    tokens = tokenizer.convert_ids_to_tokens(windows.input_ids[0].tolist())
    assert tokens.count("##w") == 1  # the unknown word really is split
    for (start, end), (word_start, word_end) in zip(offsets.tolist(), words.tolist()):
        if start == NOT_CONTEXT:
            assert (word_start, word_end) == (NOT_CONTEXT, NOT_CONTEXT)
        else:
            assert (word_start, word_end) == next(span for span in word_spans if span[0] <= start < span[1])
    assert {context[a:b] for a, b in words.tolist() if a >= 0} == {context[a:b] for a, b in word_spans}


def test_a_word_cut_by_a_window_border_is_whole_in_every_window(tokenizer):
    context = "qwzxvqwzxv " * 3  # each word is ten one-letter tokens
    settings = QASettings(max_seq_length=16, doc_stride=4, max_question_length=4)
    contexts = [context, "Short one.", context]  # windows of one example widen only its own words
    windows = make_windows([example(context=text) for text in contexts], tokenizer, settings)
    cut = 0
    for window, example_index in enumerate(windows.example_index.tolist()):
        word_spans = [m.span() for m in re.finditer(r"\w+|[^\w\s]", contexts[example_index])]
        offsets, words = windows.offsets[window], windows.word_offsets[window]
        inside = offsets[:, 0] >= 0
        for (start, _), span in zip(offsets[inside].tolist(), words[inside].tolist()):
            assert tuple(span) == next(s for s in word_spans if s[0] <= start < s[1])
        # the border really cuts a word here: its span reaches past the window's own characters
        cut += words[inside][:, 0].min() < offsets[inside][0, 0] or words[inside][:, 1].max() > offsets[inside][-1, 1]
    assert cut > 0


# NFD text: "e" + COMBINING ACUTE ACCENT. The tiny tokenizer lower-cases and so strips accents:
# its own offsets for "jose" end before the mark.
NFD_CONTEXTS = ["The cup went to Jose\u0301", "Jose\u0301 won the cup in 1998."]


def nfd_example(context: str) -> Example:
    return example(GoldAnswer("Jose\u0301", context.index("Jose")), context=context)


@pytest.mark.parametrize("context", NFD_CONTEXTS)  # at the window's end, and inside it
def test_an_answer_ending_in_a_combining_mark_is_labelled_whole(tokenizer, context):
    windows, items, texts = labelled_texts([nfd_example(context)], tokenizer, QASettings())
    assert items.answers_outside == 0
    assert texts == [(0, "Jose\u0301")]
    assert windows.offsets[0][items.end[0], 1] == nfd_example(context).answers[0].end


@pytest.mark.parametrize("spans", ["offsets", "word_offsets"])
def test_a_decoded_word_keeps_its_final_combining_mark(tokenizer, spans):
    context = NFD_CONTEXTS[1]
    windows = make_windows([nfd_example(context)], tokenizer, QASettings())
    offsets = getattr(windows, spans)[0]
    tokens = tokenizer.convert_ids_to_tokens(windows.input_ids[0].tolist())
    first = tokens.index("[SEP]") + 1
    assert tokens[first : first + 4] == ["j", "##o", "##s", "##e"]  # the logits peak on j .. e
    start, end = np.zeros(len(offsets)), np.zeros(len(offsets))
    start[first], end[first + 3] = 10.0, 10.0
    (best, *_) = decode(context, [start], [end], [offsets]).answers
    assert (best.text, best.start, best.end) == ("Jose\u0301", 0, 5)


@pytest.mark.parametrize("context", [CONTEXT, "Jos\u00e9 M\u00fcller won in Z\u00fcrich, \u65e5\u672c \u00e9t\u00e9."])
def test_offsets_without_combining_marks_are_the_tokenizers_own(tokenizer, context):
    windows = make_windows([example(context=context)], tokenizer, QASettings())
    encoded = tokenizer("Who won?", context, return_offsets_mapping=True)
    own = [span for span, sequence in zip(encoded["offset_mapping"], encoded.sequence_ids()) if sequence == 1]
    offsets = windows.offsets[0]
    assert offsets[offsets[:, 0] != NOT_CONTEXT].tolist() == [list(span) for span in own]


def test_a_combining_mark_that_a_token_covers_itself_is_left_to_it():
    # A tokenizer that keeps marks may give one its own token: "e" is not widened over it.
    context = "Jose\u0301 x"
    offsets = _context_offsets([(0, 0), (0, 4), (4, 5), (6, 7), (0, 0)], [None, 1, 1, 1, None], context)
    assert offsets.tolist() == [[-1, -1], [0, 4], [4, 5], [6, 7], [-1, -1]]
