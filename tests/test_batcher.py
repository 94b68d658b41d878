"""The micro-batcher alone, with a stand-in model: what the HTTP tests cannot reach (callers
cancelled while queued, an engine that fails for one request, a stop with a batch in flight)."""

from __future__ import annotations

import asyncio
import threading
from types import SimpleNamespace

import numpy as np
import pytest

import qatune.serving.batcher as batcher_module
from qatune.data import Example
from qatune.decoding import Answer, Decoded
from qatune.features import Windows
from qatune.serving.batcher import MicroBatcher


class StandInModel:
    """Answers each question with its own text; 'boom' fails; waits for `release` when asked to."""

    def __init__(self, batch_invariant: bool = True) -> None:
        self.engine = SimpleNamespace(batch_invariant=batch_invariant)
        self.tokenizer, self.settings = None, None
        self.release = threading.Event()
        self.release.set()
        self.calls: list[list[str]] = []

    def predict(self, examples, *, batch_size, top_k, windows=None):
        self.release.wait(30)
        questions = [e.question for e in examples]
        self.calls.append(questions)
        if "boom" in questions:
            raise RuntimeError("the engine failed on 'boom'")
        return [Decoded([Answer(e.question, 0, len(e.question), 1.0)], 0.0) for e in examples]


def one_window_each(examples, tokenizer, settings) -> Windows:
    ids = [np.zeros(4, dtype=np.int64) for _ in examples]
    return Windows(ids, None, [np.zeros((4, 2), np.int32)] * len(ids), [np.zeros((4, 2), np.int32)] * len(ids), np.arange(len(ids)))


def cut_when_long(questions, tokenizer, settings) -> list[bool]:
    return [question.startswith("long") for question in questions]


@pytest.fixture(autouse=True)
def no_tokenizer(monkeypatch):
    monkeypatch.setattr(batcher_module, "make_windows", one_window_each)
    monkeypatch.setattr(batcher_module, "questions_cut", cut_when_long)


def ask(batcher, question):
    return batcher.answer([Example(id=question, question=question, context="c")], 1)


def test_concurrent_callers_share_a_batch_and_each_gets_its_own_answers():
    async def scenario():
        model = StandInModel()
        batcher = MicroBatcher(model, max_wait_ms=200)
        batcher.start()
        model.release.clear()  # the first batch holds the engine while the others queue up
        first = asyncio.ensure_future(ask(batcher, "q0"))
        await asyncio.sleep(0.05)
        others = [asyncio.ensure_future(ask(batcher, f"q{i}")) for i in range(1, 6)]
        await asyncio.sleep(0.05)
        model.release.set()
        results = await asyncio.gather(first, *others)
        await batcher.stop()
        return model, results

    model, results = asyncio.run(scenario())
    assert [r[0].decoded.answers[0].text for r in results] == [f"q{i}" for i in range(6)]
    assert model.calls == [["q0"], [f"q{i}" for i in range(1, 6)]]


def test_an_engine_that_fails_for_one_request_fails_only_that_one():
    async def scenario():
        model = StandInModel()
        batcher = MicroBatcher(model, max_wait_ms=200)
        batcher.start()
        model.release.clear()
        blocker = asyncio.ensure_future(ask(batcher, "first"))
        await asyncio.sleep(0.05)
        calls = [asyncio.ensure_future(ask(batcher, q)) for q in ("a", "boom", "b")]
        await asyncio.sleep(0.05)
        model.release.set()
        outcomes = await asyncio.gather(blocker, *calls, return_exceptions=True)
        await batcher.stop()
        return outcomes

    first, a, boom, b = asyncio.run(scenario())
    assert a[0].decoded.answers[0].text == "a" and b[0].decoded.answers[0].text == "b" and first[0].decoded.answers[0].text == "first"
    assert isinstance(boom, RuntimeError) and "boom" in str(boom)


def test_a_caller_cancelled_while_queued_frees_its_place_and_is_not_answered():
    async def scenario():
        model = StandInModel()
        batcher = MicroBatcher(model, max_wait_ms=0.001, max_queue_questions=3)
        batcher.start()
        model.release.clear()
        busy = asyncio.ensure_future(ask(batcher, "busy"))
        await asyncio.sleep(0.05)  # "busy" is in the engine
        queued = [asyncio.ensure_future(ask(batcher, f"gone{i}")) for i in range(2)]
        await asyncio.sleep(0.05)
        full = batcher._queued_questions
        for call in queued:
            call.cancel()
        await asyncio.sleep(0.05)
        after_cancel = batcher._queued_questions
        model.release.set()
        await busy
        await batcher.stop()
        return model, full, after_cancel

    model, full, after_cancel = asyncio.run(scenario())
    assert (full, after_cancel) == (3, 1)  # only "busy" still counts
    assert model.calls == [["busy"]]  # the cancelled questions were never computed


def test_stop_answers_what_is_in_flight_and_fails_what_it_cannot():
    async def scenario():
        model = StandInModel()
        batcher = MicroBatcher(model, max_wait_ms=0.001)
        batcher.start()
        model.release.clear()
        in_flight = asyncio.ensure_future(ask(batcher, "in flight"))
        await asyncio.sleep(0.05)
        threading.Timer(0.2, model.release.set).start()
        await batcher.stop(timeout=10)
        answered = await in_flight

        model.release.clear()
        stuck_batcher = MicroBatcher(model, max_wait_ms=0.001)
        stuck_batcher.start()
        stuck = asyncio.ensure_future(ask(stuck_batcher, "stuck"))
        await asyncio.sleep(0.05)
        stopping = asyncio.ensure_future(stuck_batcher.stop(timeout=0.2))
        outcome = await asyncio.gather(stuck, return_exceptions=True)
        model.release.set()
        await stopping
        return answered, outcome[0]

    answered, stuck = asyncio.run(scenario())
    assert answered[0].decoded.answers[0].text == "in flight"
    assert isinstance(stuck, RuntimeError) and "stopped" in str(stuck)


def test_an_engine_whose_logits_depend_on_the_batch_answers_each_question_alone():
    async def scenario():
        model = StandInModel(batch_invariant=False)
        batcher = MicroBatcher(model, max_wait_ms=200)
        batcher.start()
        model.release.clear()
        first = asyncio.ensure_future(ask(batcher, "q0"))
        await asyncio.sleep(0.05)
        many = asyncio.ensure_future(
            batcher.answer([Example(id=q, question=q, context="c") for q in ("x", "y")], 1)
        )
        other = asyncio.ensure_future(ask(batcher, "z"))
        await asyncio.sleep(0.05)
        model.release.set()
        await asyncio.gather(first, many, other)
        await batcher.stop()
        return model

    model = asyncio.run(scenario())
    assert model.calls == [["q0"], ["x"], ["y"], ["z"]]


def test_each_caller_learns_which_of_its_questions_were_cut_also_when_batched_with_others():
    async def scenario():
        model = StandInModel()
        batcher = MicroBatcher(model, max_wait_ms=200)
        batcher.start()
        model.release.clear()
        first = asyncio.ensure_future(ask(batcher, "long q0"))
        await asyncio.sleep(0.05)
        many = asyncio.ensure_future(
            batcher.answer([Example(id=q, question=q, context="c") for q in ("x", "long y", "z")], 1)
        )
        other = asyncio.ensure_future(ask(batcher, "w"))
        await asyncio.sleep(0.05)
        model.release.set()
        results = await asyncio.gather(first, many, other)
        await batcher.stop()
        return model, results

    model, (first, many, other) = asyncio.run(scenario())
    assert model.calls == [["long q0"], ["x", "long y", "z", "w"]]  # the last two requests shared a batch
    assert [(one.decoded.answers[0].text, one.question_cut) for one in first + many + other] == [
        ("long q0", True), ("x", False), ("long y", True), ("z", False), ("w", False),
    ]
