"""Micro-batching: concurrent callers' questions answered together in one forward pass.

Each request's questions are cut into windows as they arrive (on the engine's thread, off the
event loop). One task takes requests from the queue until `max_batch_windows` windows are gathered or
`max_wait_ms` have passed since the first was queued (it waits only while other requests are
being cut into windows, so a lone caller never waits), answers them together on the engine's
own thread, and gives each caller its own answers. The callers' windows are sorted by length and
answered in forward passes of `batch_size` windows, so a pass holds windows of similar length.

Batching never changes an answer: callers' windows share a forward pass only when the engine
is batch-invariant (a window's logits do not depend on what else is in its batch); otherwise
each request gets passes of its own.
"""

from __future__ import annotations

import asyncio
import collections
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, NamedTuple

from qatune.data import Example
from qatune.decoding import Decoded
from qatune.features import Windows, concat_windows, make_windows, questions_cut
from qatune.inference import ANSWER_BATCH_SIZE, QAModel


class QueueFull(Exception):
    """More questions are waiting than the queue holds: the caller should come back later."""


class LargerThanQueue(Exception):
    """One request has more questions than the queue holds: no retry can succeed."""


class AnsweredQuestion(NamedTuple):
    """One question's ranked answers, and whether the question was longer than the model's
    max_question_length tokens (answered from its first tokens, as `QAModel.ask` answers it)."""

    decoded: Decoded
    question_cut: bool


@dataclass
class _Request:
    examples: list[Example]
    windows: Windows
    top_k: int
    future: asyncio.Future = field(repr=False)
    arrived: float = 0.0  # time.monotonic() when it was queued

    @property
    def window_count(self) -> int:
        return len(self.windows)


@dataclass
class BatchObserver:
    """What the batcher reports, for metrics: each forward batch's windows and requests, and
    the number of questions waiting."""

    batch: Callable[[int, int], None] = lambda windows, requests: None
    queue_depth: Callable[[int], None] = lambda questions: None


class MicroBatcher:
    def __init__(
        self,
        model: QAModel,
        *,
        max_batch_windows: int = 32,
        batch_size: int = ANSWER_BATCH_SIZE,
        max_wait_ms: float = 5.0,
        max_queue_questions: int = 1024,
        observer: BatchObserver | None = None,
    ) -> None:
        self.model = model
        self.max_batch_windows = max_batch_windows
        self.batch_size = batch_size
        self.max_wait = max_wait_ms / 1000.0
        self.max_queue_questions = max_queue_questions
        self.across_requests = model.engine.batch_invariant and max_batch_windows > 1
        self.observer = observer or BatchObserver()
        self._waiting: collections.deque[_Request] = collections.deque()
        self._queued_questions = 0
        self._coming = 0  # requests taken but not yet in a batch (being tokenized, or queued)
        self._in_flight: list[_Request] = []  # the batch being answered
        self._arrived: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        # One thread runs the engine (engines are not made to be called from two threads at
        # once) and cuts the windows too: tokenizing beside a forward pass took CPU time from the
        # engine's own threads, which wait for each other (64 clients, 2 cores: 66 against 82
        # questions/s).
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="qatune-engine")

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        self._arrived = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._serve_forever(), name="qatune-micro-batcher")

    async def stop(self, timeout: float = 30.0) -> None:
        """Answer what is queued and in flight (for at most `timeout` seconds), fail what is
        left, then stop."""
        deadline = time.monotonic() + timeout
        while (self._waiting or self._in_flight) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        for request in [*self._waiting, *self._in_flight]:
            if not request.future.done():
                request.future.set_exception(RuntimeError("the server stopped before answering"))
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        await asyncio.to_thread(self._thread.shutdown, wait=True)

    # --- callers -------------------------------------------------------------------------------

    async def answer(self, examples: list[Example], top_k: int) -> list[AnsweredQuestion]:
        """The decoded answers of `examples` (ranked, top_k of them), as `QAModel.predict` gives
        them, each with whether its question was cut. Raises QueueFull when the queue has no room
        for them now, LargerThanQueue when it never will."""
        if len(examples) > self.max_queue_questions:
            raise LargerThanQueue(f"{len(examples)} questions in one request; the queue holds at most {self.max_queue_questions}")
        if self._queued_questions + len(examples) > self.max_queue_questions:
            raise QueueFull(f"{self._queued_questions} questions are waiting (the queue holds {self.max_queue_questions})")
        self._count_queued(len(examples))
        self._coming += 1
        request = None
        try:
            loop = asyncio.get_running_loop()
            windows, cut = await loop.run_in_executor(self._thread, self._prepare, examples)
            request = _Request(examples, windows, top_k, loop.create_future(), time.monotonic())
            self._waiting.append(request)
            assert self._arrived is not None, "MicroBatcher.start() was not called"
            self._arrived.set()
            # shielded: a caller that goes away leaves its request to be answered or dropped below
            decoded = await asyncio.shield(request.future)
            return [AnsweredQuestion(one, was_cut) for one, was_cut in zip(decoded, cut)]
        except asyncio.CancelledError:
            if request is not None and request in self._waiting:  # not taken yet: no one will want it
                self._waiting.remove(request)
                self._coming -= 1
                self._count_queued(-len(examples))
            raise
        finally:
            if request is None:  # failed or cancelled while its windows were cut
                self._coming -= 1
                self._count_queued(-len(examples))

    def _prepare(self, examples: list[Example]) -> tuple[Windows, list[bool]]:
        """On the engine thread: the examples' windows, and which of their questions are cut."""
        tokenizer, settings = self.model.tokenizer, self.model.settings
        return make_windows(examples, tokenizer, settings), questions_cut([e.question for e in examples], tokenizer, settings)

    def _count_queued(self, change: int) -> None:
        """Questions taken and not answered yet: counted until their batch is done."""
        self._queued_questions += change
        self.observer.queue_depth(self._queued_questions)

    # --- the batching task ---------------------------------------------------------------------

    async def _serve_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather()
            self._in_flight = batch
            try:
                outcomes = await loop.run_in_executor(self._thread, self._answer_batch, batch)
            finally:
                self._in_flight = []
                self._count_queued(-sum(len(request.examples) for request in batch))
            for request, outcome in zip(batch, outcomes):
                if request.future.done():
                    continue
                if isinstance(outcome, Exception):
                    request.future.set_exception(outcome)
                else:
                    request.future.set_result(outcome)

    async def _gather(self) -> list[_Request]:
        """The next batch: the first request waiting, then others while their windows fit in
        max_batch_windows. It waits for more (up to max_wait after the first was queued) only
        while other requests are on their way (being tokenized): a lone caller never waits."""
        while not self._waiting:
            self._arrived.clear()
            await self._arrived.wait()
        batch = [self._take()]
        if not self.across_requests:
            return batch
        windows = batch[0].window_count
        deadline = batch[0].arrived + self.max_wait
        while windows < self.max_batch_windows:
            if not self._waiting:
                remaining = deadline - time.monotonic()
                if self._coming == 0 or remaining <= 0:
                    break
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), remaining)
                except asyncio.TimeoutError:
                    break
                continue
            if windows + self._waiting[0].window_count > self.max_batch_windows:
                break
            batch.append(self._take())
            windows += batch[-1].window_count
        return batch

    def _take(self) -> _Request:
        self._coming -= 1
        return self._waiting.popleft()

    def _answer_batch(self, batch: list[_Request]) -> list[list[Decoded] | Exception]:
        """On the engine thread: the requests' questions answered together in one `predict` call
        (each request alone where the engine's logits depend on the batch, as `ask` answers it).
        Where a batch fails, each request is answered alone, so that only the one at fault fails."""
        if self.across_requests and len(batch) > 1:
            try:
                return self._answer_together(batch)
            except Exception:
                pass
        outcomes: list[list[Decoded] | Exception] = []
        for request in batch:
            try:
                outcomes.append(self._answer_together([request])[0])
            except Exception as error:  # this caller gets the error; the others their answers
                outcomes.append(error)
        return outcomes

    def _answer_together(self, batch: list[_Request]) -> list[list[Decoded]]:
        examples = [example for request in batch for example in request.examples]
        windows = concat_windows([request.windows for request in batch], [len(request.examples) for request in batch])
        self.observer.batch(len(windows), len(batch))
        top_k = max(request.top_k for request in batch)
        # forward passes of batch_size windows of similar length: on a CPU, one pass of every
        # window padded to the longest was slower than no batching at all (BENCHMARKS.md)
        if self.across_requests:
            decoded = self.model.predict(examples, batch_size=self.batch_size, top_k=top_k, windows=windows)
        else:  # as `ask` answers each question: its own windows only
            decoded = [
                self.model.predict([example], batch_size=self.batch_size, top_k=top_k)[0] for example in examples
            ]
        results, first = [], 0
        for request in batch:
            # the first top_k of a longer ranking are the top_k ranking itself
            results.append([Decoded(d.answers[: request.top_k], d.null_prob) for d in decoded[first : first + len(request.examples)]])
            first += len(request.examples)
        return results
