"""The data file being annotated: every change checked, saved at once and atomically, and
refused when the file changed since the caller last read it.

The data is held in SQuAD v2.0 layout. A SQuAD file is edited in place (every field it has is
kept); a file in another layout stays as it is and the data goes to `<stem>.squad.json` beside it.

The version of the data is a number derived from the file's bytes: a change that names another
version than the file's current one (another tab, another process, an editor) is refused with
`Conflict`, and nothing is written. Changes are serialized across processes by a lock on the
file's folder. A save writes a temporary file, reads it back with `--on-error strict`, then
renames it over the file: a crash loses at most the change being written.
"""

from __future__ import annotations

import copy
import fcntl
import hashlib
import json
import os
import stat
import tempfile
import threading
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from qatune.annotation.anchoring import LostAnswer, reanchor
from qatune.data import read_dataset, write_fixed
from qatune.data.writing import json_text
from qatune.data.report import ValidationReport
from qatune.errors import DataError

NO_QUESTIONS = "expected at least one usable question"  # what the reader says of a file with none yet
UNDO_DEPTH = 100


class Conflict(Exception):
    """The caller's version is not the file's: it must reload."""


class NotFound(Exception):
    """No such paragraph or question."""


class Invalid(Exception):
    """A change that would make the data wrong (an answer outside its context, a lost answer)."""


@dataclass(frozen=True)
class Span:
    start: int
    end: int


class AnnotationStore:
    def __init__(self, path: str | Path, *, format: str = "auto") -> None:
        self.source = Path(path).expanduser().resolve()  # a link is followed: the file it names is edited
        self.kept_original: Path | None = None  # where a repaired SQuAD file's original was kept
        self.reloaded = False  # whether another program's change to the file was taken in since
        self._lock = threading.Lock()
        self._undo: list[tuple[list[_Copy], str]] = []  # what each change touched, as it was before it
        self.report, self.layout, self.doc, self.target, self.version = self._open(format)

    # --- opening and saving -----------------------------------------------------------------------

    def _open(self, format: str):
        if not self.source.parent.is_dir():
            raise DataError(f"{self.source}: the folder {self.source.parent} does not exist; create it or give another path")
        if self.source.is_dir():
            raise DataError(
                f"{self.source}: expected a data file, found a folder; pass the JSON file inside it, "
                "or a new file's name (ending in .json) to start one"
            )
        self.target = self.source  # until another layout sends the data elsewhere
        try:
            with self._file_lock():  # nothing changes the file between reading it and its version
                return self._open_locked(format)
        except Invalid as error:
            raise DataError(f"{self.source}: {error}") from None

    def _open_locked(self, format: str):
        if not self.source.exists():
            if self.source.suffix.lower() != ".json":
                raise DataError(
                    f"{self.source}: a new data file is written as SQuAD v2.0 JSON; give it a name ending in .json"
                )
            doc = {"version": "v2.0", "data": []}
            return None, "squad", doc, self.source, self._save(doc)
        original = self.source.read_bytes()
        with tempfile.TemporaryDirectory() as folder:
            copy_of_original = Path(folder) / "original" / self.source.name  # same name: same layout detection
            copy_of_original.parent.mkdir()
            copy_of_original.write_bytes(original)
            fixed = Path(folder) / self.source.name
            try:
                examples, report, written = write_fixed(copy_of_original, fixed, format=format)
            except DataError as error:  # it names the copy: name the user's file
                raise DataError(str(error).replace(str(copy_of_original), str(self.source))) from None
            if not written and _only_no_questions(report):  # paragraphs but no question yet: as it is
                fixed.write_bytes(original)
                written = True
            if not written:
                problems = "\n".join(report.problem_lines(10))  # without validate's --on-error hints
                raise DataError(
                    f"{self.source}: cannot annotate a file with errors qatune cannot repair "
                    f"({len(report.errors)} errors):\n{problems}\n"
                    f"fix them (`qatune validate {self.source}` lists them with their places), then start again"
                )
            if report.layout == "squad":
                doc = json.loads(fixed.read_text(encoding="utf-8"))
                self._check(doc)  # what is saved later must read back
                if not changes_on_reading(report):  # kept as it is written, however that is
                    return report, report.layout, doc, self.source, _version_of(original)
                # Repaired (or ids added): saved at once, so that the file validates strictly even
                # if no change follows; the original is kept beside it.
                kept = _free_name(self.source.with_name(self.source.stem + ".orig" + self.source.suffix))
                kept.write_bytes(original)
                self.kept_original = kept
                return report, report.layout, doc, self.source, self._save(doc)
        target = self.source.with_name(self.source.stem + ".squad.json")
        if target.exists():
            raise DataError(
                f"{target} exists already (from an earlier annotation session of {self.source}?): "
                f"annotate {target} instead, or move it away to start again from {self.source}"
            )
        self.target = target
        doc = squad_document(examples)
        return report, report.layout, doc, target, self._save(doc)

    def _save(self, doc: dict) -> int:
        """Write `doc` over the target through a temporary file that reads back cleanly."""
        data = (json_text(doc, indent=1) + "\n").encode("utf-8")
        handle, temporary = tempfile.mkstemp(prefix=f".{self.target.name}.", suffix=".tmp", dir=self.target.parent)
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            self._check_file(Path(temporary), doc)
            # the file's own permissions (0644 under the usual umask for a new one)
            mode = stat.S_IMODE(self.target.stat().st_mode) if self.target.exists() else 0o666 & ~_umask()
            os.chmod(temporary, mode)
            os.replace(temporary, self.target)
            _sync_folder(self.target.parent)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return _version_of(data)

    def _check(self, doc: dict) -> None:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "check.json"
            path.write_text(json_text(doc), encoding="utf-8")
            self._check_file(path, doc)

    def _check_file(self, path: Path, doc: dict) -> None:
        """The file reads back under on_error="strict" with every question of `doc`."""
        examples, report = read_dataset(path, format="squad", on_error="strict")
        expected = sum(1 for _ in _questions(doc))
        problems = [p for p in report.errors if not (expected == 0 and p.message.startswith(NO_QUESTIONS))]
        if problems or len(examples) != expected:
            details = "; ".join(str(p) for p in problems[:3]) or f"{len(examples)} questions read back, {expected} written"
            raise Invalid(f"the data would not read back as valid SQuAD v2.0 ({details}); nothing was saved")

    @contextmanager
    def _file_lock(self) -> Iterator[None]:
        """Exclusive across processes (a lock on the folder: the file itself is replaced on each save)."""
        folder = os.open(self.target.parent, os.O_RDONLY)
        try:
            fcntl.flock(folder, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(folder, fcntl.LOCK_UN)
            os.close(folder)

    def _sync(self) -> None:
        """Take in what another process or program wrote since (its undo history is then gone)."""
        try:
            data = self.target.read_bytes()
        except FileNotFoundError:
            raise Conflict(f"{self.target} was removed while being annotated; restart `qatune annotate`") from None
        version = _version_of(data)
        if version == self.version:
            return
        try:
            doc = self._with_ids(data)
        except (ValueError, Invalid, DataError) as error:
            raise Conflict(
                f"{self.target} was changed by another program and is not valid SQuAD v2.0 now ({error}); "
                f"fix it, then reload"
            ) from None
        self.doc, self.version, self._undo = doc, version, []
        self.report = None  # the file read at start is not the one now: its report no longer applies
        self.reloaded = True

    def _with_ids(self, data: bytes) -> dict:
        """The document another program wrote, checked, with the ids that reading it generates
        for questions without one (as opening does): each question is named, and by its own id."""
        with tempfile.TemporaryDirectory() as folder:
            written, fixed = Path(folder) / "written.json", Path(folder) / "fixed.json"
            written.write_bytes(data)
            *_, with_ids = write_fixed(written, fixed, format="squad", on_error="strict")
            doc = json.loads((fixed if with_ids else written).read_bytes().decode("utf-8"))
        self._check(doc)  # says what is wrong when write_fixed refused it
        return doc

    # --- reading ------------------------------------------------------------------------------------

    def view(self) -> dict[str, Any]:
        with self._lock, self._file_lock():
            self._sync()
            return {
                "version": self.version,
                "data": _with_string_ids(copy.deepcopy(self.doc["data"])),
                "file": self.target.name,
                "counts": counts(self.doc),
                "report": report_summary(self.report, self.layout, reloaded=self.reloaded),
                "can_undo": bool(self._undo),
                "undo": self._undo[-1][1] if self._undo else None,
            }

    def current(self) -> tuple[int, dict]:
        """The version and a copy of the document (synced with the file)."""
        with self._lock, self._file_lock():
            self._sync()
            return self.version, copy.deepcopy(self.doc)

    # --- changes ------------------------------------------------------------------------------------

    def change(
        self, version: int, edit: Callable[[dict], Any], description: str, touches: Callable[[dict], list[_Part]]
    ) -> tuple[Any, int]:
        """Apply `edit` to the data if `version` is the file's, save, and return (its result, the new version).
        `touches` names the parts of the data that `edit` changes in place: only those are kept for undo."""
        with self._lock, self._file_lock():
            self._sync()
            if version != self.version:
                raise Conflict(
                    f"the data changed since you read it (version {version}, now {self.version}): reload, then try again"
                )
            before = _copies(touches(self.doc))
            try:
                result = edit(self.doc)
                self.version = self._save(self.doc)
            except BaseException:  # a refused edit or a failed save: the data stays as it was
                _restore(before)
                raise
            self._undo = (self._undo + [(before, description)])[-UNDO_DEPTH:]
            return result, self.version

    def undo(self, version: int) -> tuple[str, int]:
        with self._lock, self._file_lock():
            self._sync()
            if version != self.version:
                raise Conflict(f"the data changed since you read it (version {version}, now {self.version}): reload first")
            if not self._undo:
                raise Invalid("nothing to undo (changes made before the last reload or by another process cannot be undone here)")
            before, description = self._undo[-1]
            now = _copies([(part, deep) for part, _, deep in before])
            _restore(before)
            try:
                self.version = self._save(self.doc)
            except BaseException:  # a failed save: the data stays as it is, the change can still be undone
                _restore(now)
                raise
            self._undo.pop()
            return description, self.version

    def add_paragraph(self, version: int, title: str, context: str) -> tuple[str, int]:
        check_field_text("context", context)

        def edit(doc: dict) -> str:
            for a, article in enumerate(doc["data"]):
                if article.get("title", "") == title:
                    article.setdefault("paragraphs", []).append({"context": context, "qas": []})
                    return f"{a}/{len(article['paragraphs']) - 1}"
            doc["data"].append({"title": title, "paragraphs": [{"context": context, "qas": []}]})
            return f"{len(doc['data']) - 1}/0"

        def touches(doc: dict) -> list[_Part]:  # only added to
            article = next((a for a in doc["data"] if a.get("title", "") == title), None)
            return [(doc["data"], False)] + ([] if article is None else [(article, False), (article.get("paragraphs", []), False)])

        return self.change(version, edit, f"add a paragraph to {title!r}", touches)

    def edit_paragraph(self, version: int, paragraph_id: str, context: str) -> tuple[list[dict], int]:
        check_field_text("context", context)

        def edit(doc: dict) -> list[dict]:
            paragraph = _paragraph(doc, paragraph_id)
            old = paragraph["context"]
            answers = [(qa, key, answer) for qa in paragraph.get("qas", []) for key, answer in _anchored(qa, old)]
            spans = [_span_of(answer) for _, _, answer in answers]
            try:
                new_spans = reanchor(old, context, spans)
            except LostAnswer as error:
                kinds = {"answers": "", "plausible_answers": " (a plausible answer)"}
                named = "; ".join(f"{text!r} of question {answers[i][0].get('id')!r}{kinds[answers[i][1]]}" for i, text in error.lost)
                raise Invalid(
                    f"these answers are not in the new text: {named}; edit or delete those questions first, "
                    f"or keep their answers in the text"
                ) from None
            moved = []
            for (qa, key, answer), (start, end), (old_start, old_end) in zip(answers, new_spans, spans):
                answer["answer_start"] = start
                if key == "answers" and (start, end) != (old_start, old_end):  # what the page lists
                    moved.append({"id": qa.get("id"), "from": [old_start, old_end], "to": [start, end], "text": answer["text"]})
            paragraph["context"] = context
            return moved

        return self.change(version, edit, f"edit the text of paragraph {paragraph_id}", _the_paragraph(paragraph_id))

    def add_question(self, version: int, paragraph_id: str, question: str, spans: Sequence[Span]) -> tuple[str, int]:
        check_field_text("question", question)

        def edit(doc: dict) -> str:
            paragraph = _paragraph(doc, paragraph_id)
            taken = {qa.get("id") for qa in _questions(doc)}
            new_id = next(i for i in (uuid.uuid4().hex[:12] for _ in iter(int, 1)) if i not in taken)
            qa = _qa(new_id, question, paragraph["context"], spans)
            # a file whose questions do without "is_impossible" (SQuAD v1.1) is not given it
            if taken and not any("is_impossible" in other for other in _questions(doc)):
                del qa["is_impossible"]
            paragraph.setdefault("qas", []).append(qa)
            return new_id

        return self.change(version, edit, f"add the question {question!r}", _the_paragraph(paragraph_id))

    def update_question(self, version: int, question_id: str, question: str, spans: Sequence[Span]) -> tuple[str, int]:
        """Only what the edit asks for changes: the question's text, answers removed or added.
        The answers kept stay exactly as they were (duplicates, extra fields), and so do the id,
        `plausible_answers` and every other field."""
        check_field_text("question", question)

        def edit(doc: dict) -> str:
            paragraph, qa = _question(doc, question_id)
            old = qa.get("answers", [])
            answers = _edited_answers(old, paragraph["context"], spans)  # checked before anything changes
            qa["question"] = question
            if answers or "answers" in qa:
                qa["answers"] = answers
            # a file that does without "is_impossible" (SQuAD v1.1) is not given it: no answers says it
            flips = (not answers) != (not old or qa.get("is_impossible") is True)
            if "is_impossible" in qa or flips and any("is_impossible" in q for q in _questions(doc)):
                qa["is_impossible"] = not answers
            return question_id

        return self.change(version, edit, f"edit the question {question_id!r}", _the_paragraph_of(question_id))

    def delete_question(self, version: int, question_id: str) -> tuple[None, int]:
        def edit(doc: dict) -> None:
            paragraph, qa = _question(doc, question_id)
            paragraph["qas"].remove(qa)

        return self.change(version, edit, f"delete the question {question_id!r}", _the_paragraph_of(question_id))


# --- undo: copies of what a change touched ----------------------------------------------------------

_Part = tuple[Any, bool]  # a dict or list of the data, and whether a change edits inside it (else only adds to it)
_Copy = tuple[Any, Any, bool]  # a part, its copy (deep, or of its top level alone), whether deep


def _copies(parts: list[_Part]) -> list[_Copy]:
    return [(part, copy.deepcopy(part) if deep else copy.copy(part), deep) for part, deep in parts]


def _restore(copies: list[_Copy]) -> None:
    """Each part as its copy, in place: the parts stay where the data and older copies hold them."""
    for part, saved, _ in copies:
        if isinstance(part, list):
            part[:] = saved
        else:
            part.clear()
            part.update(saved)


def _the_paragraph(paragraph_id: str) -> Callable[[dict], list[_Part]]:
    return lambda doc: [(_paragraph(doc, paragraph_id), True)]


def _the_paragraph_of(question_id: str) -> Callable[[dict], list[_Part]]:
    return lambda doc: [(_question(doc, question_id)[0], True)]


# --- the document -------------------------------------------------------------------------------------


def _with_string_ids(data: list) -> list:
    """Question ids as qatune reads them (an integer id is a string), as the file keeps them otherwise."""
    for qa in _questions({"data": data}):
        qa["id"] = str(qa.get("id"))
    return data


def _only_no_questions(report: ValidationReport) -> bool:
    return report.layout == "squad" and bool(report.errors) and all(p.message.startswith(NO_QUESTIONS) for p in report.errors)


def changes_on_reading(report: ValidationReport) -> list[str]:
    """What reading the file changed in it, in words: repairs (what was repaired or dropped) and
    generated ids; [] for a file read as it is written."""
    changes = []
    if sum(report.repaired.values()) or report.skipped_questions or report.skipped_answers:
        changes.append("its repairs")
    if report.generated_ids:
        changes.append(f"ids for its {report.generated_ids} questions that had none")
    return changes


def squad_document(examples) -> dict:
    """Examples as a SQuAD v2.0 document, grouped by title then context (first-seen order)."""
    articles: dict[str, dict[str, list[dict]]] = {}
    for example in examples:
        articles.setdefault(example.title or "", {}).setdefault(example.context, []).append(
            {
                "id": example.id,
                "question": example.question,
                "answers": [{"text": a.text, "answer_start": a.start} for a in example.answers],
                "is_impossible": example.unanswerable,
            }
        )
    return {
        "version": "v2.0",
        "data": [
            {"title": title, "paragraphs": [{"context": c, "qas": qas} for c, qas in contexts.items()]}
            for title, contexts in articles.items()
        ],
    }


def counts(doc: dict) -> dict[str, int]:
    paragraphs = [p for article in doc["data"] for p in article.get("paragraphs", [])]
    questions = [qa for p in paragraphs for qa in p.get("qas", [])]
    return {
        "articles": len(doc["data"]),
        "paragraphs": len(paragraphs),
        "questions": len(questions),
        "answers": sum(len(qa.get("answers", [])) for qa in questions),
        "unanswerable": sum(1 for qa in questions if not qa.get("answers")),
    }


def report_summary(report: ValidationReport | None, layout: str, *, reloaded: bool = False) -> dict[str, Any]:
    if report is None:
        line = "reloaded: changed by another program since this session opened it" if reloaded else "a new file"
        return {"line": line, "repaired": 0, "skipped_questions": 0, "skipped_answers": 0, "layout": layout}
    untouched = not sum(report.repaired.values()) and not report.skipped_questions and not report.skipped_answers
    return {
        "line": "valid as read: nothing repaired or skipped" if untouched else report.repair_line(),
        "repaired": sum(report.repaired.values()),
        "skipped_questions": report.skipped_questions,
        "skipped_answers": report.skipped_answers,
        "generated_ids": report.generated_ids,
        "layout": layout,
    }


def paragraphs_of(doc: dict) -> Iterator[tuple[str, dict, str]]:
    """(paragraph id "A/P", paragraph, title) of every paragraph."""
    for a, article in enumerate(doc["data"]):
        for p, paragraph in enumerate(article.get("paragraphs", [])):
            yield f"{a}/{p}", paragraph, article.get("title", "")


def _questions(doc: dict) -> Iterator[dict]:
    for _, paragraph, _ in paragraphs_of(doc):
        yield from paragraph.get("qas", [])


def _paragraph(doc: dict, paragraph_id: str) -> dict:
    try:
        a, p = (int(part) for part in str(paragraph_id).split("/"))
        if a < 0 or p < 0:
            raise ValueError
        return doc["data"][a]["paragraphs"][p]
    except (ValueError, IndexError, KeyError):
        raise NotFound(f"no paragraph {paragraph_id!r}; paragraphs are named 'article/paragraph', e.g. '0/2'") from None


def _question(doc: dict, question_id: str) -> tuple[dict, dict]:
    for _, paragraph, _ in paragraphs_of(doc):
        for qa in paragraph.get("qas", []):
            if str(qa.get("id")) == question_id:
                return paragraph, qa
    raise NotFound(f"no question with id {question_id!r}")


def _qa(question_id: str, question: str, context: str, spans: Sequence[Span]) -> dict:
    answers = _edited_answers([], context, spans)
    return {"id": question_id, "question": question, "answers": answers, "is_impossible": not answers}


def _edited_answers(old: list[dict], context: str, spans: Sequence[Span]) -> list[dict]:
    """The answers after an edit that asks for `spans`: an old answer whose span is asked for is
    kept as it is (of old answers with one span, as many as are asked for, the first ones), a span
    no old answer has is added once, the other old answers are removed."""
    unused = list(old)
    answers: list[dict] = []
    for index, span in enumerate(spans):
        wanted = (span.start, span.end)
        match = next((i for i, answer in enumerate(unused) if _span_of(answer) == wanted), None)
        if match is not None:
            answers.append(unused.pop(match))
        else:
            new = _new_answer(index, span, context)
            if wanted not in {_span_of(answer) for answer in answers}:
                answers.append(new)
    return answers


def _anchored(qa: dict, context: str) -> Iterator[tuple[str, dict]]:
    """(field, answer) of the question's answers and plausible answers. Plausible answers are not
    checked on reading: only those that hold their text in `context` are moved with it."""
    yield from (("answers", answer) for answer in qa.get("answers", []))
    plausible = qa.get("plausible_answers")
    for answer in plausible if isinstance(plausible, list) else []:
        if not isinstance(answer, dict):
            continue
        start, text = answer.get("answer_start"), answer.get("text")
        if type(start) is int and start >= 0 and isinstance(text, str) and text and context[start : start + len(text)] == text:
            yield "plausible_answers", answer


def _span_of(answer: dict) -> tuple[int, int]:
    return answer["answer_start"], answer["answer_start"] + len(answer["text"])


def _new_answer(index: int, span: Span, context: str) -> dict:
    if not 0 <= span.start < span.end <= len(context):
        raise Invalid(
            f"answers[{index}]: [{span.start}, {span.end}) is not a non-empty span of the context "
            f"(0 to {len(context)} characters, counted in code points)"
        )
    text = context[span.start : span.end]
    if not text.strip():
        raise Invalid(f"answers[{index}]: the span [{span.start}, {span.end}) holds only whitespace")
    return {"text": text, "answer_start": span.start}


def check_field_text(name: str, value: str) -> None:
    """An Invalid (422) unless `value` is text a question or context can be: not blank, UTF-8."""
    from qatune.errors import SettingsError
    from qatune.inference import check_text

    try:
        check_text(name, value)
    except SettingsError as error:
        raise Invalid(str(error)) from None


def _free_name(path: Path) -> Path:
    """`path`, or `path` with -2, -3, ... before its suffix: a name no file has yet."""
    candidate, number = path, 1
    while candidate.exists():
        number += 1
        candidate = path.with_name(f"{path.stem}-{number}{path.suffix}")
    return candidate


def _sync_folder(folder: Path) -> None:
    """The rename itself is on disk once the folder is synced."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _version_of(data: bytes) -> int:
    """A number that names these bytes (48 bits of their sha256: exact in JavaScript)."""
    return int(hashlib.sha256(data).hexdigest()[:12], 16)


def _umask() -> int:
    from qatune.files import current_umask

    return current_umask()
