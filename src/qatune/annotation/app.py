"""The annotation app: the page at `/` and the JSON API under `/api/` it uses (scripts can too).

Offsets are Python code-point indices into the unchanged context, answers half-open
[start, end). Every change names the version it was made on; a stale one gets 409. No request
names a file: the app edits the one file it was started with.
"""

from __future__ import annotations

import json
import threading
from urllib.parse import quote
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Query
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr
from starlette.exceptions import HTTPException

from qatune.annotation.store import AnnotationStore, Conflict, Invalid, NotFound, Span, check_field_text, paragraphs_of
from qatune.web import BodyLimit, HeadAsGet, PageHeaders, add_error_handlers

STATIC = Path(str(resources.files("qatune.annotation") / "static"))  # installed as plain files (package data)
MAX_BODY_BYTES = 5_000_000
MAX_TEXT_CHARACTERS = 200_000
QUESTION_ID = Query(..., alias="id", min_length=1, description="the question's id")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SpanIn(_Strict):
    start: StrictInt = Field(ge=0, description="first character (code points)")
    end: StrictInt = Field(ge=1, description="one past the last character")


class NewParagraph(_Strict):
    title: StrictStr = Field("", max_length=1000)
    context: StrictStr = Field(min_length=1, max_length=MAX_TEXT_CHARACTERS)
    version: StrictInt


class EditedParagraph(_Strict):
    context: StrictStr = Field(min_length=1, max_length=MAX_TEXT_CHARACTERS)
    version: StrictInt


class NewQuestion(_Strict):
    paragraph: StrictStr
    question: StrictStr = Field(min_length=1, max_length=10_000)
    answers: list[SpanIn] = Field(default_factory=list, max_length=100, description="none: unanswerable")
    version: StrictInt


class EditedQuestion(_Strict):
    question: StrictStr = Field(min_length=1, max_length=10_000)
    answers: list[SpanIn] = Field(max_length=100)
    version: StrictInt


class Versioned(_Strict):
    version: StrictInt


class SuggestRequest(_Strict):
    paragraph: StrictStr
    question: StrictStr = Field(min_length=1, max_length=10_000)
    top_k: StrictInt = Field(3, ge=1, le=20)


def create_app(
    path: str | Path, *, model=None, model_name: str | None = None, format: str = "auto", store: AnnotationStore | None = None
) -> FastAPI:
    """The annotation app for the data file `path` (created when missing). `model`: a QAModel
    whose answers are suggested, or None."""
    store = store or AnnotationStore(path, format=format)
    model_lock = threading.Lock()  # one question at a time through the engine (request handlers run in threads)
    model_info = None if model is None else {
        "name": model_name or "model",
        "engine": model.engine.describe(),
        "max_question_length": model.settings.max_question_length,  # longer questions are cut (the page says so)
    }
    # /api/undo/ is a 404 that names /api/undo, not a redirect without a body
    app = FastAPI(title="qatune annotate", docs_url=None, redoc_url=None, redirect_slashes=False)
    app.state.store = store
    add_error_handlers(app)
    app.add_middleware(HeadAsGet)
    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)

    def run(action, *arguments):
        try:
            return action(*arguments)
        except Conflict as error:
            raise HTTPException(409, str(error)) from None
        except NotFound as error:
            raise HTTPException(404, str(error)) from None
        except Invalid as error:
            raise HTTPException(422, str(error)) from None

    @app.get("/api/data", summary="The data (SQuAD v2.0 `data` list), its version, counts and the validation report")
    def data() -> dict:
        view = run(store.view)
        return view | {"model": model_info}

    @app.post("/api/paragraphs", summary="Add a paragraph (to the article of that title, or a new one)")
    def add_paragraph(body: NewParagraph) -> dict:
        paragraph, version = run(store.add_paragraph, body.version, body.title, body.context)
        return {"paragraph": paragraph, "version": version}

    @app.put("/api/paragraphs/{article}/{paragraph}", summary="Change a paragraph's text; its answers move with their text")
    def edit_paragraph(article: int, paragraph: int, body: EditedParagraph) -> dict:
        moved, version = run(store.edit_paragraph, body.version, f"{article}/{paragraph}", body.context)
        return {"version": version, "moved": moved}

    @app.post("/api/questions", summary="Add a question with its answers (none: unanswerable)")
    def add_question(body: NewQuestion) -> dict:
        spans = [Span(a.start, a.end) for a in body.answers]
        question_id, version = run(store.add_question, body.version, body.paragraph, body.question, spans)
        return {"id": question_id, "version": version}

    # The id travels as a query parameter, not a path segment: ids may hold "/" or be "." or
    # "..", which a path cannot carry (servers decode %2F before routing, browsers drop dot segments).
    @app.put("/api/questions", summary="Replace a question's text and answers")
    def update_question(body: EditedQuestion, question_id: str = QUESTION_ID) -> dict:
        spans = [Span(a.start, a.end) for a in body.answers]
        _, version = run(store.update_question, body.version, question_id, body.question, spans)
        return {"id": question_id, "version": version}

    @app.delete("/api/questions", summary="Delete a question")
    def delete_question(
        question_id: str = QUESTION_ID, version: int = Query(..., description="the version it was read at")
    ) -> dict:
        _, new_version = run(store.delete_question, version, question_id)
        return {"version": new_version}

    @app.post("/api/undo", summary="Undo the last change made here")
    def undo(body: Versioned) -> dict:
        undone, version = run(store.undo, body.version)
        return {"version": version, "undone": undone}

    @app.get("/api/export.jsonl", summary="The data as JSON Lines in the Hugging Face layout", response_class=Response)
    def export() -> Response:
        _, doc = run(store.current)
        name = Path(store.target.name).stem.removesuffix(".squad") + ".jsonl"
        plain = "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in name)
        return Response(
            jsonl_records(doc),
            media_type="application/x-ndjson; charset=utf-8",
            # an ASCII name for every browser, and the real one for those that read filename*
            headers={"Content-Disposition": f"attachment; filename=\"{plain}\"; filename*=UTF-8''{quote(name)}"},
        )

    @app.post("/api/suggest", summary="The model's top answers to a question about a paragraph")
    def suggest(body: SuggestRequest) -> dict:
        answering = _need_model(model)
        run(check_field_text, "question", body.question)  # a blank one, as `ask` and `serve` refuse it
        _, doc = run(store.current)
        context = run(_context_of, doc, body.paragraph)
        with model_lock:
            return suggestions(answering, body.question, context, body.top_k)

    @app.get("/api/review", summary="Questions where the model disagrees with the gold answer, or is least sure")
    def review(limit: int = Query(20, ge=1, le=1000)) -> dict:
        answering = _need_model(model)
        _, doc = run(store.current)
        with model_lock:
            return {"items": review_queue(answering, doc, limit)}

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(PageHeaders)
    return app


def jsonl_records(doc: dict) -> str:
    """One JSON line per question: id, title, context, question, answers {text, answer_start}."""
    lines = []
    for _, paragraph, title in paragraphs_of(doc):
        for qa in paragraph.get("qas", []):
            answers = qa.get("answers", [])
            record = {
                "id": str(qa.get("id")),
                "title": title,
                "context": paragraph["context"],
                "question": qa.get("question"),
                "answers": {"text": [a["text"] for a in answers], "answer_start": [a["answer_start"] for a in answers]},
            }
            lines.append(json.dumps(record, ensure_ascii=False) + "\n")
    return "".join(lines)


def suggestions(model, question: str, context: str, top_k: int) -> dict[str, Any]:
    """What `QAModel.ask` answers, with the no-answer probability and whether the question is
    longer than the model's max_question_length tokens (answered, and trained on, from its first)."""
    from dataclasses import asdict

    from qatune.data import Example
    from qatune.features import questions_cut

    decoded = model.predict([Example(id="suggestion", question=question, context=context)], top_k=top_k)[0]
    return {
        "answers": [asdict(a) for a in model.answers_of(decoded, top_k)],
        "no_answer_probability": decoded.null_prob,
        "question_cut": questions_cut([question], model.tokenizer, model.settings)[0],
    }


def review_queue(model, doc: dict, limit: int) -> list[dict]:
    """Questions whose model answer disagrees with every gold answer (worst F1 first), then
    the least sure of the rest: where label mistakes and hard questions are."""
    from qatune.data import Example
    from qatune.metrics import f1

    places, examples = [], []
    for paragraph_id, paragraph, _ in paragraphs_of(doc):
        for qa in paragraph.get("qas", []):
            places.append((paragraph_id, qa))
            examples.append(Example(id=str(qa.get("id")), question=qa["question"], context=paragraph["context"]))
    if not examples:
        return []
    items = []
    for (paragraph_id, qa), decoded in zip(places, model.predict(examples)):
        answers = model.answers_of(decoded, 1)
        best = answers[0] if answers else None
        gold = [{"text": a["text"], "start": a["answer_start"], "end": a["answer_start"] + len(a["text"])} for a in qa.get("answers", [])]
        predicted_text = best.text if best else ""
        score = max((f1(predicted_text, g["text"]) for g in gold), default=1.0 if best is None else 0.0)
        items.append({
            "id": str(qa.get("id")),
            "paragraph": paragraph_id,
            "question": qa["question"],
            "gold": gold,
            "predicted": None if best is None else {"text": best.text, "start": best.start, "end": best.end, "score": best.score},
            "f1": score,
            "reason": "disagrees" if score < 1.0 else "unsure",
            "_confidence": best.score if best else 1.0 - decoded.null_prob,
        })
    items.sort(key=lambda item: (item["reason"] != "disagrees", item["f1"], item["_confidence"]))
    for item in items:
        del item["_confidence"]
    return items[:limit]


def _context_of(doc: dict, paragraph_id: str) -> str:
    for candidate, paragraph, _ in paragraphs_of(doc):
        if candidate == paragraph_id:
            return paragraph["context"]
    raise NotFound(f"no paragraph {paragraph_id!r}; paragraphs are named 'article/paragraph', e.g. '0/2'")


def _need_model(model):
    if model is None:
        raise HTTPException(404, "no model to suggest answers: start `qatune annotate DATA --model MODEL`")
    return model
