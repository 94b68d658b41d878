"""Answering questions with a fine-tuned model: batched windows in, ranked answers out.

    >>> model = QAModel.from_pretrained("./qatune-model")          # doctest: +SKIP
    >>> model.ask("When did it open?", "The bridge opened in 1932.")  # doctest: +SKIP
    [Answer(text='1932', start=21, end=25, score=0.91)]
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Iterable, Iterator, Sequence

import numpy as np

from qatune.batching import pad_windows
from qatune.calibration import Calibration, TemperatureFit
from qatune.data import Example
from qatune.data.examples import as_examples, check_unique_ids
from qatune.decoding import Answer, Decoded, answer_logits, best_answer, close_call_margin, decode
from qatune.engines import Engine, check_answering_options, load_engine
from qatune.errors import ModelError, SettingsError
from qatune.evaluation import Evaluation, evaluate_decoded, robust_null_threshold
from qatune.features import Windows, check_tokenizer_room, make_windows
from qatune.files import check_path_argument
from qatune.modeling import check_tokenizer_fits, load_config, load_tokenizer, locate_model, model_vocab_size
from qatune.settings import SETTINGS_FILE, QASettings, read_settings

# Examples are answered in chunks: windows are cut, answered and decoded a chunk at a time, so
# that memory does not grow with the number of questions. A chunk ends at this many examples or
# this many characters of context, whichever comes first (about 50,000 tokens: a few hundred
# windows, a few MB of arrays).
CHUNK_EXAMPLES = 256
# Windows per forward pass. 8 answers as fast as 16 on a CPU and needs less memory for the
# attention of long windows (`qatune predict`, 477 SQuAD questions, OpenVINO bf16: 527 against
# 621 MiB peak, 6.5 s either way; Intel Xeon with AMX, 2 cores).
ANSWER_BATCH_SIZE = 8
# Batches are padded to a multiple of this many tokens: every new batch shape costs an engine
# time (OpenVINO prepares its kernels and buffers per shape) and memory; with few shapes the
# first pass over 477 SQuAD questions ran at 112 instead of 97 questions/s (OpenVINO bf16).
PAD_TO_MULTIPLE = 16
CHUNK_CHARACTERS = 200_000


def window_logits(
    engine: Engine,
    windows: Windows,
    *,
    pad_token_id: int,
    batch_size: int = ANSWER_BATCH_SIZE,
    only: Sequence[int] | None = None,
    max_length: int | None = None,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Start and end logits of every window (float32, unpadded), in window order.

    Windows are batched by length, so a batch holds windows of similar length and little padding.
    `only` restricts the work to some windows; the others get empty arrays. Batches are padded to
    a multiple of PAD_TO_MULTIPLE tokens, never past `max_length` (the model's max_seq_length).
    """
    wanted = np.arange(len(windows)) if only is None else np.asarray(only, dtype=np.int64)
    lengths = windows.lengths
    order = wanted[np.argsort(lengths[wanted], kind="stable")]
    starts: list[np.ndarray] = [_EMPTY] * len(windows)
    ends: list[np.ndarray] = [_EMPTY] * len(windows)
    for first in range(0, len(order), batch_size):
        indices = order[first : first + batch_size]
        start_batch, end_batch = engine.logits(pad_windows(windows, indices, pad_token_id, PAD_TO_MULTIPLE, max_length))
        for row, window in enumerate(indices):
            length = lengths[window]
            # copies, so that the batch's arrays are freed with the batch
            starts[window] = start_batch[row, :length].copy()
            ends[window] = end_batch[row, :length].copy()
    return starts, ends


_EMPTY = np.empty(0, dtype=np.float32)


def decode_examples(
    examples: Sequence[Example],
    windows: Windows,
    start_logits: Sequence[np.ndarray],
    end_logits: Sequence[np.ndarray],
    settings: QASettings,
    top_k: int = 1,
    only: Sequence[int] | None = None,
) -> list[Decoded]:
    """Gather each example's windows and decode its ranked answers (of the examples `only`
    names, in that order, when given)."""
    spans = windows.word_offsets if settings.align_to_words else windows.offsets
    groups = windows.of_example()
    return [
        decode(
            examples[i].context,
            [start_logits[w] for w in groups[i]],
            [end_logits[w] for w in groups[i]],
            [spans[w] for w in groups[i]],
            n_best=settings.n_best,
            max_answer_length=settings.answer_length,
            top_k=top_k,
            temperature=settings.temperature,
        )
        for i in (range(len(examples)) if only is None else only)
    ]


def _check_saved_settings_fit(tokenizer, settings: QASettings, source) -> None:
    """The settings saved with a model fit its tokenizer; else an error naming the file they
    came from (the command-line fix that training's message ends with does not apply here)."""
    try:
        check_tokenizer_room(tokenizer, settings)
    except SettingsError as error:
        fact = str(error).rpartition("; ")[0] or str(error)
        card = Path(source) / SETTINGS_FILE
        if not card.is_file():  # a model from elsewhere, whose limit is below qatune's defaults
            raise ModelError(
                f"{source}: qatune's default settings do not fit this model ({fact}); write a {SETTINGS_FILE} "
                'there with settings it accepts, e.g. {"settings": {"max_seq_length": 128, "doc_stride": 32}}'
            ) from None
        raise ModelError(
            f"{card}: the saved settings do not fit this model ({fact}); fix the value "
            "there, or copy the file again from the trained model"
        ) from None


@dataclass
class QAModel:
    """A question-answering model: an answering engine, its tokenizer and the settings it was
    trained with. Every engine answers through the same windows and decoding."""

    engine: Engine
    tokenizer: object
    settings: QASettings

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        engine: str = "auto",
        device: str | None = None,
        bf16: bool | None = None,
        trust_remote_code: bool = False,
    ) -> "QAModel":
        """Load a model folder written by qatune or `qatune export` (or any QA model: default
        settings then) with the engine `engine` picks (`qatune.engines.load_engine`).

        bf16=None computes in bf16 where the CPU or GPU has fast bf16 units, re-checking close
        calls in float32; False keeps float32.
        """
        check_path_argument("path", path)
        check_answering_options(engine, device, bf16)
        source = locate_model(path)
        settings = read_settings(source) if Path(source).is_dir() else QASettings()
        tokenizer = load_tokenizer(source, trust_remote_code=trust_remote_code)
        _check_saved_settings_fit(tokenizer, settings, source)
        if Path(source).is_dir():  # config.json read as JSON: loading a transformers config imports torch
            config = SimpleNamespace(vocab_size=model_vocab_size(source))
        else:
            config = load_config(source, trust_remote_code=trust_remote_code)
        check_tokenizer_fits(tokenizer, config, source)
        answering = load_engine(
            source, tokenizer, engine=engine, device=device, bf16=bf16, trust_remote_code=trust_remote_code
        )
        model = cls(answering, tokenizer, settings)
        # the first real question runs at full speed: the engine (and those that re-check its
        # close calls) has prepared itself
        model.ask("Warm-up?", "A first question sets the engine up.")
        checkers = list(_rechecks(answering))
        if checkers:
            window = make_windows([Example(id="warm-up", question="Warm-up?", context="Ready.")], tokenizer, settings)
            for checker in checkers:
                window_logits(checker, window, pad_token_id=tokenizer.pad_token_id or 0, max_length=settings.max_seq_length)
        return model

    @property
    def bf16(self) -> bool:
        return self.engine.precision == "bf16"

    def ask(self, question: str, context: str, top_k: int = 1) -> list[Answer]:
        """The `top_k` best answers to one question, best first.

        An empty list means "no answer": the no-answer probability exceeds the model's
        null_threshold (only models trained on data with unanswerable questions say so). A
        question longer than `settings.max_question_length` tokens is answered from its first
        tokens (`qatune.features.questions_cut` says which questions are).
        """
        check_text("question", question)
        check_text("context", context)
        example = Example(id="question", question=question, context=context)
        return self.answers_of(self.predict([example], top_k=top_k)[0], top_k)

    def answers_of(self, decoded: Decoded, top_k: int) -> list[Answer]:
        """What `ask` returns for a decoded question: its `top_k` best answers, or [] when the
        no-answer probability passes the model's null_threshold."""
        if best_answer(decoded, self.settings.null_threshold) is None:
            return []
        return decoded.answers[:top_k]

    def predict(
        self,
        examples: Iterable[Example],
        *,
        batch_size: int = ANSWER_BATCH_SIZE,
        top_k: int = 1,
        progress: bool = False,
        windows: Windows | None = None,
    ) -> list[Decoded]:
        """Ranked answers and the no-answer probability of every example, in order.

        Examples are answered a chunk at a time (windows cut, answered, decoded, let go), so
        memory stays flat however many there are. `windows` are the examples' windows when
        the caller has them already (cut with this model's tokenizer and settings, e.g. from
        the window cache); None cuts them here.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise SettingsError(f"batch_size must be a whole number of at least 1 (windows per forward pass), got {batch_size!r}")
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise SettingsError(f"top_k must be a whole number of at least 1 (how many answers to give), got {top_k!r}")
        examples = as_examples("examples", examples)
        decoded: list[Decoded] = []
        bar = _progress_bar(len(examples), progress)
        try:
            for chunk, chunk_windows in self._chunks_with_windows(examples, windows):
                decoded += self._answer(chunk, chunk_windows, batch_size, top_k)
                if bar is not None:
                    bar.update(len(chunk))
        finally:
            if bar is not None:
                bar.close()
        return decoded

    def _chunks_with_windows(self, examples: list[Example], windows: Windows | None) -> Iterator[tuple[list[Example], Windows]]:
        """The examples a chunk at a time, each chunk with its windows (cut here, or taken from `windows`)."""
        for first, last in _chunks(examples):
            chunk = examples[first:last]
            if windows is None:
                yield chunk, make_windows(chunk, self.tokenizer, self.settings)
            else:
                yield chunk, _windows_of(windows, first, last)

    def fit_temperature(
        self, examples: Sequence[Example], *, batch_size: int = ANSWER_BATCH_SIZE, windows: Windows | None = None
    ) -> Calibration:
        """Fit the temperature that makes the scores match how often the answers are right on
        `examples` (dev data with gold answers), set it in the settings, and return the fit with
        the calibration error before and after (`qatune.calibration.TemperatureFit`).

        The logits are the engine's own (no float32 re-check): the fit is a statistic of many
        questions, which the noise of bf16 on a few close calls does not move.
        """
        fit, settings = TemperatureFit(), self.settings
        padding = {"pad_token_id": self.tokenizer.pad_token_id or 0, "max_length": settings.max_seq_length}
        for chunk, chunk_windows in self._chunks_with_windows(as_examples("examples", examples), windows):
            starts, ends = window_logits(self.engine, chunk_windows, batch_size=batch_size, **padding)
            spans = chunk_windows.word_offsets if settings.align_to_words else chunk_windows.offsets
            for example, group in zip(chunk, chunk_windows.of_example()):
                logits = answer_logits(
                    example.context, [starts[w] for w in group], [ends[w] for w in group], [spans[w] for w in group],
                    n_best=settings.n_best, max_answer_length=settings.answer_length,
                )
                fit.add(example, logits)
        calibration = fit.fit()
        self.settings = dataclasses.replace(self.settings, temperature=calibration.temperature)
        return calibration

    def _answer(self, examples: list[Example], windows: Windows, batch_size: int, top_k: int) -> list[Decoded]:
        padding = {"pad_token_id": self.tokenizer.pad_token_id or 0, "max_length": self.settings.max_seq_length}
        starts, ends = window_logits(self.engine, windows, batch_size=batch_size, **padding)
        ranked = max(top_k, 2)  # the runner-up tells a close call
        decoded = decode_examples(examples, windows, starts, ends, self.settings, top_k=ranked)
        # less than float32 moves logits a little: where that could flip the answer, ask again,
        # in float32 or in a precision that re-checks its own close calls in turn (int8 -> bf16 -> float32)
        answered_by, candidates = self.engine, range(len(decoded))
        for checker in _rechecks(self.engine):
            # the margin is a log-ratio of logits' noise; scores divided by the temperature shrink it alike
            margin = answered_by.recheck_margin / self.settings.temperature
            close = [i for i in candidates if _close_call(decoded[i], self.settings.null_threshold, margin)]
            if not close:
                break
            redo = np.flatnonzero(np.isin(windows.example_index, close))
            checked_starts, checked_ends = window_logits(checker, windows, batch_size=batch_size, only=redo, **padding)
            for window in redo:
                starts[window], ends[window] = checked_starts[window], checked_ends[window]
            redecoded = decode_examples(examples, windows, starts, ends, self.settings, top_k=ranked, only=close)
            for i, answer in zip(close, redecoded):
                decoded[i] = answer
            answered_by, candidates = checker, close
        return [Decoded(d.answers[:top_k], d.null_prob) for d in decoded]

    def evaluate(
        self,
        examples: Sequence[Example],
        *,
        batch_size: int = ANSWER_BATCH_SIZE,
        progress: bool = False,
        windows: Windows | None = None,
    ) -> Evaluation:
        """Answer every example with the model's null_threshold and score the answers."""
        examples = as_examples("examples", examples)
        check_unique_ids(examples)  # before the answering, which the scores need them for
        decoded = self.predict(examples, batch_size=batch_size, progress=progress, windows=windows)
        return evaluate_decoded(examples, decoded, self.settings.null_threshold)

    def tune_null_threshold(
        self, examples: Sequence[Example], *, batch_size: int = ANSWER_BATCH_SIZE, windows: Windows | None = None
    ) -> Evaluation:
        """Set the no-answer threshold that gives the best F1 on `examples` (dev data), then
        score them with it exactly as `evaluate` would (1.0, always answer, when no example
        is unanswerable).

        The threshold is placed midway (in log space) between two neighbouring no-answer
        probabilities, never on one, so that the float noise of another batch shape or another
        CPU cannot move a question across it.
        """
        examples = as_examples("examples", examples)
        check_unique_ids(examples)
        self.settings = dataclasses.replace(self.settings, null_threshold=1.0)
        always_answer = self.predict(examples, batch_size=batch_size, windows=windows)
        threshold = robust_null_threshold(examples, always_answer)
        self.settings = dataclasses.replace(self.settings, null_threshold=threshold)
        if threshold == 1.0:  # nothing changes: the answers are those already computed
            return evaluate_decoded(examples, always_answer, threshold)
        return self.evaluate(examples, batch_size=batch_size, windows=windows)


def _chunks(examples: Sequence[Example]) -> Iterator[tuple[int, int]]:
    """(first, last) example ranges of at most CHUNK_EXAMPLES examples and about CHUNK_CHARACTERS
    characters of context (one example at least)."""
    first, characters = 0, 0
    for index, example in enumerate(examples):
        if index > first and (index - first >= CHUNK_EXAMPLES or characters + len(example.context) > CHUNK_CHARACTERS):
            yield first, index
            first, characters = index, 0
        characters += len(example.context)
    if first < len(examples):
        yield first, len(examples)


def _windows_of(windows: Windows, first: int, last: int) -> Windows:
    """The windows of examples first..last-1 (windows come example by example), re-numbered from 0."""
    lo, hi = np.searchsorted(windows.example_index, [first, last])
    return _take(windows, range(lo, hi), windows.example_index[lo:hi] - first)


def _take(windows: Windows, picked, example_index: np.ndarray) -> Windows:
    picked = list(picked)
    return Windows(
        input_ids=[windows.input_ids[w] for w in picked],
        token_type_ids=None if windows.token_type_ids is None else [windows.token_type_ids[w] for w in picked],
        offsets=[windows.offsets[w] for w in picked],
        word_offsets=[windows.word_offsets[w] for w in picked],
        example_index=example_index,
        truncated_questions=windows.truncated_questions,
    )


def _rechecks(engine: Engine) -> Iterator[Engine]:
    """The engines that answer close calls again, in turn: each one re-checks the close calls
    of the one before it (e.g. int8 -> bf16 -> float32)."""
    while engine.recheck_margin > 0 and (checker := engine.rechecker()) is not None and checker is not engine:
        yield checker
        engine = checker


def _close_call(decoded: Decoded, null_threshold: float, margin: float) -> bool:
    """Whether the best answer, or the answer/no-answer decision, is within `margin` (a log-ratio)."""
    return close_call_margin(decoded, null_threshold) < margin


def check_text(name: str, value: object) -> None:
    """A SettingsError unless `value` is a non-blank string that has a UTF-8 form (no lone
    surrogate); blank includes text of zero-width or combining characters alone."""
    import re

    from qatune.data.text import code_points, has_visible_character

    if not isinstance(value, str) or not value.strip():
        raise SettingsError(f"the {name} must be a non-empty string, got {value!r}")
    # A lone surrogate has no UTF-8 form: the tokenizer would fail with a TypeError deep inside.
    lone = re.search("[\ud800-\udfff]", value)
    if lone is None:
        if not has_visible_character(value):
            raise SettingsError(
                f"the {name} has no visible character (only spaces, zero-width, control or combining characters: "
                f"{code_points(value)}); write the {name}"
            )
        return
    code, position = ord(lone.group()), lone.start()
    if 0xDC80 <= code <= 0xDCFF:  # how Python's surrogateescape holds a byte of argv that is not UTF-8
        found = (
            f"the byte 0x{code - 0xDC00:02x} at character {position}, which is not UTF-8 "
            f"(Python holds it as the lone surrogate U+{code:04X})"
        )
    else:
        found = f"the lone surrogate U+{code:04X} at character {position}, which has no UTF-8 form"
    raise SettingsError(f"the {name} must be valid UTF-8 text, found {found}; pass the {name} as UTF-8 text")


def _progress_bar(total: int, enabled: bool):
    if not enabled or total == 0:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="answering", unit="question", leave=False)
