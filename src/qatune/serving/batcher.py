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
from typing import Callable

from qatune.data import Example
from qatune.decoding import Decoded
from qatune.features import Windows, concat_windows, make_windows
from qatune.inference import ANSWER_BATCH_SIZE, QAModel


class QueueFull(Exception):
    """More questions are waiting than the queue holds: the caller should come back later."""


class LargerThanQueue(Exception):
    """One request has more questions than the queue holds: no retry can succeed."""


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

    async def stop(self) -> None:
        """Answer what is queued, then stop."""
        while self._waiting:
            await asyncio.sleep(0.01)
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._thread.shutdown(wait=True)

    # --- callers -------------------------------------------------------------------------------

    async def answer(self, examples: list[Example], top_k: int) -> list[Decoded]:
        """The decoded answers of `examples` (ranked, top_k of them), as `QAModel.predict` gives them.
        Raises QueueFull when the queue has no room for them now, LargerThanQueue when it never will."""
        if len(examples) > self.max_queue_questions:
            raise LargerThanQueue(f"{len(examples)} questions in one request; the queue holds at most {self.max_queue_questions}")
        if self._queued_questions + len(examples) > self.max_queue_questions:
            raise QueueFull(f"{self._queued_questions} questions are waiting (the queue holds {self.max_queue_questions})")
        self._queued_questions += len(examples)
        self.observer.queue_depth(self._queued_questions)
        self._coming += 1
        queued = False
        try:
            loop = asyncio.get_running_loop()
            windows = await loop.run_in_executor(
                self._thread, make_windows, examples, self.model.tokenizer, self.model.settings
            )
            request = _Request(examples, windows, top_k, loop.create_future(), time.monotonic())
            self._waiting.append(request)
            queued = True
            assert self._arrived is not None, "MicroBatcher.start() was not called"
            self._arrived.set()
            return await asyncio.shield(request.future)
        finally:
            if not queued:  # failed before it was queued: no batch will take it
                self._coming -= 1
            self._queued_questions -= len(examples)
            self.observer.queue_depth(self._queued_questions)

    # --- the batching task ---------------------------------------------------------------------

    async def _serve_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather()
            try:
                results = await loop.run_in_executor(self._thread, self._answer_batch, batch)
            except Exception as error:  # the callers get the error; the batcher goes on
                for request in batch:
                    if not request.future.done():
                        request.future.set_exception(error)
                continue
            for request, decoded in zip(batch, results):
                if not request.future.done():
                    request.future.set_result(decoded)

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

    def _answer_batch(self, batch: list[_Request]) -> list[list[Decoded]]:
        """On the engine thread: every request's questions answered in one `predict` call."""
        examples = [example for request in batch for example in request.examples]
        windows = concat_windows([request.windows for request in batch], [len(request.examples) for request in batch])
        self.observer.batch(len(windows), len(batch))
        top_k = max(request.top_k for request in batch)
        # the first top_k of a longer ranking are the top_k ranking itself
        # in forward passes of batch_size windows of similar length: on a CPU, one pass of every
        # window padded to the longest was slower than no batching at all (BENCHMARKS.md)
        decoded = self.model.predict(examples, batch_size=self.batch_size, top_k=top_k, windows=windows)
        results, first = [], 0
        for request in batch:
            results.append([Decoded(d.answers[: request.top_k], d.null_prob) for d in decoded[first : first + len(request.examples)]])
            first += len(request.examples)
        return results
