"""Walking the layouts. Every question, whatever its layout, goes through `_Reader.question`,
which checks it, repairs its answers or counts what it drops, under the chosen policy, and
records in `_Reader.edits` what `--write-fixed` changes in the parsed file."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from qatune.data.checking import (
    _CONTEXT_FIX,
    _QUESTION_FIX,
    _SURROGATE,
    _TEXT_FIX,
    _generated_id,
    _impossible_problem,
    _repair,
    _start_problem,
    _text_problem,
)
from qatune.data.edits import _Edits, _Slot
from qatune.data.examples import Example, GoldAnswer
from qatune.data.messages import _MISSING, _at, _describe, _not_an_object, _quote
from qatune.data.report import Problem, ValidationReport


@dataclass
class _RawAnswer:
    place: str  # where text problems (and mismatches) are reported
    start_place: str  # where answer_start problems are reported
    text: Any
    start: Any
    problem: str | None = None  # the answer is not even an object
    text_slot: _Slot | None = None  # where a repaired text is written back (None: not an object)
    start_slot: _Slot | None = None
    items: tuple[_Slot, ...] = ()  # the list items removed when the answer is dropped


class _Reader:
    """Turns the parsed JSON of one file into Examples and a ValidationReport."""

    def __init__(self, path: str, layout: str, on_error: str, answers: bool = True):
        self.report = ValidationReport(path=path, layout=layout, on_error=on_error)
        self.answers = answers  # False: questions and contexts alone, answers never looked at
        self.skip = on_error == "skip"
        self.strict = on_error == "strict"
        self.examples: list[Example] = []
        self.id_places: dict[str, str] = {}  # id -> the place of the question that has it
        self.titles: set[str] = set()
        self.contexts: set[str] = set()
        self.edits = _Edits()

    def finish(self) -> tuple[list[Example], ValidationReport]:
        report = self.report
        report.titles = len(self.titles)
        report.contexts = len(self.contexts)
        report.kept_questions = len(self.examples)
        report.unanswerable = sum(e.is_impossible for e in self.examples)
        if not self.examples and not report.errors:
            found = f"{report.questions} read, all skipped" if report.questions else "none"
            message = f"expected at least one usable question, found {found}; add questions"
            self.error("file", message)
        return self.examples, report

    # -- reporting ------------------------------------------------------------------------

    def error(self, place: str, message: str) -> None:
        """A problem that is an error under every policy (the structure above a question)."""
        self.report.errors.append(Problem(place, message))
        self.report.unskippable_errors += 1

    def drop_question(self, item: _Slot, problems: list[Problem], answers: int) -> None:
        """An unusable question: under skip count it (and its answers), otherwise errors.

        `item` is where the question sits in its list.
        """
        if self.skip:
            self.edits.remove(item)
            self.report.skips.extend(problems)
            self.report.skipped_questions += 1
            self.report.skipped_answers += answers
        else:
            self.report.errors.extend(problems)

    # -- layouts --------------------------------------------------------------------------

    def read_squad(self, articles: list[Any]) -> None:
        self.report.articles = len(articles)
        for i, article in enumerate(articles):
            place = f"data[{i}]"
            if not isinstance(article, dict):
                self.error(place, _not_an_object("an article", '{"title", "paragraphs"}', article))
                continue
            title = self.title(article, place)
            paragraphs = article.get("paragraphs", _MISSING)
            if not isinstance(paragraphs, list):
                found = _describe(paragraphs)
                message = f'expected a list of paragraphs, found {found}; write "paragraphs": [...]'
                self.error(_at(place, "paragraphs"), message)
                continue
            for j, paragraph in enumerate(paragraphs):
                self.paragraph(paragraph, f"{place}.paragraphs[{j}]", (paragraphs, j), title)

    def read_paragraphs(self, paragraphs: list[Any]) -> None:
        for i, paragraph in enumerate(paragraphs):
            title = self.title(paragraph, f"[{i}]") if isinstance(paragraph, dict) else None
            self.paragraph(paragraph, f"[{i}]", (paragraphs, i), title)

    def read_records(self, records: list[Any], places: list[str]) -> None:
        for i, (place, record) in enumerate(zip(places, records)):
            if not isinstance(record, dict):
                self.report.questions += 1
                keys = '{"id", "question", "context", "answers"}'
                problem = Problem(place, _not_an_object("a record", keys, record))
                self.drop_question((records, i), [problem], 0)
                continue
            context = self.context(record.get("context", _MISSING), _at(place, "context"))
            title = self.title(record, place)
            answers = self.record_answers(record, place) if self.answers else ([], [], 0)
            self.question(place, (records, i), record, context, title, *answers)

    def paragraph(self, paragraph: Any, place: str, item: _Slot, title: str | None) -> None:
        if not isinstance(paragraph, dict):
            self.error(place, _not_an_object("a paragraph", '{"context", "qas"}', paragraph))
            return
        qas = paragraph.get("qas", _MISSING)
        if not isinstance(qas, list):
            message = (
                f'expected a list of questions, found {_describe(qas)}; '
                'write "qas": [...] (an empty list if it has none)'
            )
            self.error(_at(place, "qas"), message)
            return
        context = self.context(paragraph.get("context", _MISSING), _at(place, "context"))
        if context is None and self.skip:
            self.edits.remove(item)  # its questions are dropped below; a fixed file keeps no bad context
        for k, qa in enumerate(qas):
            qa_place = f"{place}.qas[{k}]"
            if not isinstance(qa, dict):
                self.report.questions += 1
                keys = '{"id", "question", "answers"}'
                problem = Problem(qa_place, _not_an_object("a question", keys, qa))
                self.drop_question((qas, k), [problem], 0)
                continue
            answers = self.squad_answers(qa, qa_place) if self.answers else ([], [])
            self.question(qa_place, (qas, k), qa, context, title, *answers)

    # -- fields ---------------------------------------------------------------------------

    def title(self, holder: dict[str, Any], place: str) -> str | None:
        title = holder.get("title")
        if isinstance(title, str):
            self.titles.add(title)
        elif title is not None:
            message = (
                f'expected a "title" that is a string, found {_describe(title)}; '
                "write the title as a string or remove it"
            )
            self.error(_at(place, "title"), message)
            return None
        return title

    def context(self, value: Any, place: str) -> str | None:
        """The context, or None (reported once here) when it is unusable."""
        problem = _text_problem(value, 'a "context" (a non-empty string)', _CONTEXT_FIX)
        if problem:
            (self.report.skips if self.skip else self.report.errors).append(Problem(place, problem))
            return None
        self.contexts.add(value)
        return value

    def squad_answers(self, qa: dict[str, Any], place: str) -> tuple[list[_RawAnswer], list[Problem]]:
        """The answers of a squad/paragraphs question, or a problem with their container."""
        value = qa.get("answers", _MISSING)
        if value is _MISSING and qa.get("is_impossible") is True:
            return [], []
        where = _at(place, "answers")
        if not isinstance(value, list):
            message = (
                'expected a list of {"text", "answer_start"} objects ([] for a question with no '
                f'answer), found {_describe(value)}; write "answers": [...]'
            )
            return [], [Problem(where, message)]
        answers = []
        for k, answer in enumerate(value):
            answer_place = f"{where}[{k}]"
            item = (value, k)
            if isinstance(answer, dict):
                text, start = answer.get("text", _MISSING), answer.get("answer_start", _MISSING)
                raw = _RawAnswer(
                    answer_place, answer_place, text, start,
                    text_slot=(answer, "text"), start_slot=(answer, "answer_start"), items=(item,),
                )
                answers.append(raw)
            else:
                problem = _not_an_object("an answer", '{"text": ..., "answer_start": ...}', answer)
                answers.append(_RawAnswer(answer_place, answer_place, None, None, problem, items=(item,)))
        return answers, []

    def record_answers(self, record: dict[str, Any], place: str) -> tuple[list[_RawAnswer], list[Problem], int]:
        """The answers of a record ({"text": [...], "answer_start": [...]}), or a problem and
        how many answers the unusable container holds (counted as read, and as skipped)."""
        value = record.get("answers", _MISSING)
        if value is _MISSING and record.get("is_impossible") is True:
            return [], [], 0
        where = _at(place, "answers")
        if not isinstance(value, dict):
            message = (
                f'expected an object {{"text": [...], "answer_start": [...]}}, found {_describe(value)}; '
                "write the answers that way (empty lists for a question with no answer)"
            )
            return [], [Problem(where, message)], 0
        texts, starts = value.get("text", _MISSING), value.get("answer_start", _MISSING)
        held = max((len(items) for items in (texts, starts) if isinstance(items, list)), default=0)
        for name, items in (("text", texts), ("answer_start", starts)):
            if not isinstance(items, list):
                message = (
                    f"expected a list, found {_describe(items)}; "
                    f'write "{name}": [...] (an empty list for a question with no answer)'
                )
                return [], [Problem(f"{where}.{name}", message)], held
        if len(texts) != len(starts):
            message = (
                'expected as many "answer_start" values as "text" values, found '
                f"{len(texts)} texts and {len(starts)} starts; give each text its start"
            )
            return [], [Problem(where, message)], held
        return [
            _RawAnswer(
                f"{where}.text[{k}]", f"{where}.answer_start[{k}]", text, start,
                text_slot=(texts, k), start_slot=(starts, k), items=((texts, k), (starts, k)),
            )
            for k, (text, start) in enumerate(zip(texts, starts))
        ], [], 0

    # -- one question ---------------------------------------------------------------------

    def question(
        self,
        place: str,
        item: _Slot,
        fields: dict[str, Any],
        context: str | None,
        title: str | None,
        answers: list[_RawAnswer],
        problems: list[Problem],
        unusable_answers: int = 0,
    ) -> None:
        """Validate one question and its answers; keep it, skip it or record its errors.

        `item` is where the question sits in its list; `context` is None when it is
        unusable (already reported); `problems` are those found in the answers container,
        which held `unusable_answers` answers that cannot be read one by one.
        """
        self.report.questions += 1
        self.report.answers += len(answers) + unusable_answers
        question = fields.get("question", _MISSING)
        message = _text_problem(question, 'a "question" (a non-empty string)', _QUESTION_FIX)
        if message:
            problems.append(Problem(_at(place, "question"), message))
        problem = _impossible_problem(fields.get("is_impossible", False), len(answers)) if self.answers else None
        if problem:
            problems.append(Problem(_at(place, "is_impossible"), problem))
        example_id = self.question_id(place, fields.get("id"), question, context, problems)
        if context is None or problems:
            self.drop_question(item, problems, len(answers) + unusable_answers)
            return
        bad: list[Problem] = []
        golds = [self.answer(a, context, bad) for a in answers]
        kept = [gold for gold in golds if gold]
        if bad and not self.skip:
            self.report.errors.extend(bad)
            return
        self.report.skips.extend(bad)
        self.report.skipped_answers += len(answers) - len(kept)  # one answer may have 2 problems
        if answers and not kept:  # never turn an answerable question into an unanswerable one
            self.report.skipped_questions += 1
            message = (
                f"dropped: none of its {len(answers)} answers could be used "
                "(it is not turned into an unanswerable question)"
            )
            self.report.skips.append(Problem(place, message))
            self.edits.remove(item)
            return
        for raw, gold in zip(answers, golds):
            if gold is None:
                self.edits.remove(*raw.items)
        if fields.get("id") is None:  # written back, so that predictions keyed by id match the file
            self.report.generated_ids += 1
            self.edits.set((fields, "id"), example_id)
        self.id_places.setdefault(example_id, place)
        example = Example(example_id, question, context, tuple(kept), not kept, title, place)
        self.examples.append(example)

    def question_id(
        self, place: str, value: Any, question: Any, context: str | None, problems: list[Problem]
    ) -> str:
        """The question's id (generated when missing); a bad or repeated id adds a problem."""
        if value is None:
            if not isinstance(question, str) or context is None:
                return ""  # the question is unusable anyway
            value = _generated_id(question, context, self.id_places)
        elif isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        elif not isinstance(value, str) or not value.strip() or _SURROGATE.search(value):
            message = (
                f'expected an "id" that is a non-empty string or an integer, found {_describe(value)}; '
                "give the question an id, or remove the field to have one generated"
            )
            problems.append(Problem(_at(place, "id"), message))
            return ""
        if value in self.id_places:
            self.report.duplicate_ids += 1
            message = (
                f"expected a unique id, found {_quote(value)}, already used at {self.id_places[value]}; "
                "give each question its own id, or remove the ids to have them generated"
            )
            problems.append(Problem(_at(place, "id"), message))
        elif not self.skip:
            self.id_places[value] = place
        # under skip the id is claimed only by a question that is kept (`question`): a dropped
        # one leaves no trace in the examples or a fixed file, so its id is free again
        return value

    def answer(self, raw: _RawAnswer, context: str, bad: list[Problem]) -> GoldAnswer | None:
        """The answer, checked and (unless strict) repaired; or None, with its problems in `bad`."""
        problems = [Problem(raw.place, raw.problem)] if raw.problem else []
        if not raw.problem:
            problem = _text_problem(raw.text, 'a non-empty answer "text"', _TEXT_FIX)
            if problem:
                problems.append(Problem(raw.place, problem))
            problem = _start_problem(raw.start)
            if problem:
                problems.append(Problem(raw.start_place, problem))
        if problems:
            bad.extend(problems)
            return None
        text, start = raw.text, raw.start
        found = context[start : start + len(text)]
        if found == text:
            return GoldAnswer(text, start)
        fixed = _repair(text, start, context)
        if fixed is None:
            message = (
                f"expected the answer text {_quote(text)} to occur in the context, found it nowhere "
                f"(the context at [{start}:{start + len(text)}] reads {_quote(found)}); "
                "copy the answer text exactly from the context, or remove this answer"
            )
            bad.append(Problem(raw.place, message))
            return None
        kind, gold = fixed
        if self.strict:
            message = (
                f"expected the context at [{start}:{start + len(text)}] to read {_quote(text)}, "
                f"found {_quote(found)}; fix the answer ({_quote(gold.text)} occurs at {gold.start}), "
                "or let qatune repair it with --on-error repair"
            )
            bad.append(Problem(raw.place, message))
            return None
        self.note_repair(raw, kind, gold)
        return gold

    def note_repair(self, raw: _RawAnswer, kind: str, gold: GoldAnswer) -> None:
        """Count and describe a repair, and record it for --write-fixed."""
        report = self.report
        report.repaired[kind] += 1
        text, start = raw.text, raw.start
        if kind == "whitespace":
            note = f"stripped whitespace: {_quote(text)} at {start} -> {_quote(gold.text)} at {gold.start}"
        else:
            shift = abs(gold.start - start)
            report.max_shift = max(report.max_shift, shift)
            note = (
                f"re-anchored: {_quote(gold.text)} moved from {start} to {gold.start} "
                f"({shift} characters), where it occurs in the context"
            )
        report.repairs.append(Problem(raw.place, note))
        self.edits.set(raw.text_slot, gold.text)
        self.edits.set(raw.start_slot, gold.start)
