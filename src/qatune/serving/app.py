"""The HTTP app: `POST /v1/answer`, health, model card, metrics, and a page for people at `/`.

    >>> from qatune.serving import create_app
    >>> app = create_app("./qatune-model", api_key="s3cret")     # doctest: +SKIP
    >>> # uvicorn.run(app, host="127.0.0.1", port=8000), or mount it in your own ASGI app

Answers are those of `QAModel.ask` for the same input; concurrent callers are batched
(`qatune.serving.batcher`). Every error body is JSON with a `detail` sentence. No request names
a file: the server reads only the model folder it was started with and its own page.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import logging
import time
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from qatune.data import Example
from qatune.engines import check_answering_options
from qatune.errors import ArgumentTypeError, SettingsError
from qatune.files import check_path_argument
from qatune.modeling import locate_model
from qatune.inference import QAModel
from qatune.serving.batcher import LargerThanQueue, MicroBatcher, QueueFull
from qatune.serving.metrics import ServerMetrics
from qatune.web import BodyLimit, HeadAsGet, PageHeaders, add_error_handlers
from qatune.serving.schemas import (
    MAX_TOP_K,
    AnsweredMany,
    Answered,
    AnswerRequest,
    Questions,
)

logger = logging.getLogger("qatune.serving")

STATIC = Path(str(resources.files("qatune.serving") / "static"))  # installed as plain files (package data)
RETRY_AFTER_SECONDS = 1
DISCONNECT_CHECK_SECONDS = 0.1  # how often a waiting request looks whether its caller is still there
CLIENT_CLOSED_REQUEST = 499  # the status logs and /metrics give a request whose caller went away
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})


@dataclass(frozen=True)
class ServerLimits:
    """What one request may ask, and how requests are batched."""

    max_batch_windows: int = 32  # windows gathered from callers per micro-batch; 1 turns batching off
    batch_size: int = 8  # windows per forward pass within a micro-batch, as for `qatune predict`
    max_wait_ms: float = 5.0  # how long the first request of a batch waits for others
    max_queue_questions: int = 1024  # beyond this many waiting questions: 503 with Retry-After
    max_items: int = 64  # questions in one {"items": [...]} request
    max_body_bytes: int = 1_000_000
    max_context_characters: int = 100_000

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            kinds = (int, float) if name == "max_wait_ms" else (int,)
            if isinstance(value, bool) or not isinstance(value, kinds) or not value > 0:
                kind = "number" if name == "max_wait_ms" else "whole number"
                raise SettingsError(f"ServerLimits.{name} must be a positive {kind}, got {value!r}")


def create_app(
    model: QAModel | str | Path,
    *,
    limits: ServerLimits | None = None,
    api_key: str | None = None,
    engine: str = "auto",
    device: str | None = None,
    bf16: bool | None = None,
    name: str | None = None,
    model_card: dict | None = None,
) -> FastAPI:
    """An ASGI app answering with `model` (a QAModel, or a model folder loaded when the app
    starts; /v1/health says "loading" until it has answered a warm-up question). With
    `api_key`, `/v1/answer` needs `Authorization: Bearer <api_key>`."""
    _check_app_arguments(model, limits, model_card)
    check_answering_options(engine, device, bf16)
    limits = limits or ServerLimits()
    check_api_key(api_key)
    metrics = ServerMetrics()
    state = _ServerState(model, limits, metrics, name, model_card, dict(engine=engine, device=device, bf16=bf16))

    async def loading_started() -> None:
        # Mounted in another app, whose lifespan does not run this app's: any request loads it
        # (the page's too, which polls /v1/model until the model is ready).
        state.start_loading()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        state.start_loading()
        yield
        await state.stop()

    app = FastAPI(
        title="qatune",
        summary="Extractive question answering: the span of a context that answers a question.",
        version=_version(),
        lifespan=lifespan,
        docs_url=None,  # FastAPI's docs page loads its script from a CDN; the schema is at /openapi.json
        redoc_url=None,
        dependencies=[Depends(loading_started)],
        redirect_slashes=False,  # /v1/answer/ is a 404 that names /v1/answer, not a redirect without a body
    )
    app.state.qatune = state
    add_error_handlers(app)
    app.add_middleware(HeadAsGet)
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)
    app.add_middleware(_Metrics, metrics=metrics)

    require_key = _key_check(api_key)

    @app.post(
        "/v1/answer",
        response_model=Answered | AnsweredMany,
        summary="Answer a question about a context, or several ({'items': [...]})",
        responses={
            401: {"description": "missing or wrong API key"},
            413: {"description": "body or context too long"},
            422: {"description": "a field is missing or invalid"},
            503: {"description": "loading, or the queue is full: retry after Retry-After seconds"},
        },
        dependencies=[Depends(require_key)],
    )
    async def answer(body: AnswerRequest, request: Request) -> dict:
        items = body.items if isinstance(body, Questions) else [body]
        if len(items) > limits.max_items:
            raise HTTPException(413, f"{len(items)} items in one request; this server takes at most {limits.max_items} (`qatune serve --max-items`, ServerLimits.max_items)")
        for index, item in enumerate(items):
            if len(item.context) > limits.max_context_characters:
                where = f"items[{index}].context" if isinstance(body, Questions) else "context"
                raise HTTPException(
                    413,
                    f"{where} has {len(item.context)} characters; this server takes at most "
                    f"{limits.max_context_characters} (`qatune serve --max-context-chars`, ServerLimits.max_context_characters): split the text",
                )
        batcher = state.ready_batcher()
        results = []
        examples = [Example(id=str(i), question=item.question, context=item.context) for i, item in enumerate(items)]
        try:
            decoded = await _unless_caller_leaves(request, batcher.answer(examples, max(item.top_k for item in items)))
        except LargerThanQueue as error:
            raise HTTPException(413, f"{error} (`qatune serve --max-queue`, ServerLimits.max_queue_questions): send fewer items per request")
        except QueueFull as error:
            raise HTTPException(503, f"busy: {error}; retry shortly", headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
        metrics.questions.inc(len(items))
        metrics.questions_cut.inc(sum(one.question_cut for one in decoded))
        for item, (one, question_cut) in zip(items, decoded):
            answers = state.model.answers_of(one, item.top_k)
            results.append(
                {"answers": [asdict(a) for a in answers], "no_answer_probability": one.null_prob, "question_cut": question_cut}
            )
        return {"results": results} if isinstance(body, Questions) else results[0]

    @app.get("/v1/health", summary="200 once the model has loaded and answered a warm-up question; 503 before")
    async def health() -> JSONResponse:
        if state.failure is not None:
            return JSONResponse({"status": "failed", "detail": state.failure}, status_code=503)
        if not state.ready:
            return JSONResponse(
                {"status": "loading", "detail": "the model is loading"},
                status_code=503,
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        return JSONResponse({"status": "ready"})

    @app.get("/v1/model", summary="The model: base model, settings, dev metrics, engine, and the server's limits")
    async def model_info() -> dict:
        return state.describe(api_key_required=api_key is not None)

    @app.get("/v1/examples", summary="Sample contexts and questions for the page")
    async def examples() -> dict:
        return {"examples": _sample_examples()}

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=metrics.content_type)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(PageHeaders)
    return app


class _ServerState:
    """The model, its batcher, and whether it is ready."""

    def __init__(
        self, model, limits: ServerLimits, metrics: ServerMetrics, name: str | None, card: dict | None, loading: dict
    ) -> None:
        self.loading, self.loader = loading, None
        self.source = model
        self.model: QAModel | None = model if isinstance(model, QAModel) else None
        self.limits, self.metrics = limits, metrics
        self.name = name or (Path(str(model)).name if not isinstance(model, QAModel) else "model")
        self.card = card
        self.batcher: MicroBatcher | None = None
        self.ready = False
        self.failure: str | None = None

    def start_loading(self) -> None:
        """Load (once) in the background: from the app's lifespan, or from its first request
        when it is mounted in another app (whose lifespan does not run this one's)."""
        if self.loader is None:
            self.loader = asyncio.get_running_loop().create_task(self.load(**self.loading))

    async def stop(self) -> None:
        if self.loader is not None:
            self.loader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.loader
        if self.batcher is not None:
            await self.batcher.stop()

    async def load(self, *, engine: str, device: str | None, bf16: bool | None) -> None:
        try:
            if self.model is None:
                self.model = await asyncio.to_thread(
                    QAModel.from_pretrained, self.source, engine=engine, device=device, bf16=bf16
                )
            if self.card is None:
                self.card = model_card_of(self.source)
            self.batcher = MicroBatcher(
                self.model,
                max_batch_windows=self.limits.max_batch_windows,
                batch_size=self.limits.batch_size,
                max_wait_ms=self.limits.max_wait_ms,
                max_queue_questions=self.limits.max_queue_questions,
                observer=self.metrics.observer(),
            )
            self.batcher.start()
            # the whole path once, so that the first caller does not pay for it
            await self.batcher.answer([Example(id="warm-up", question="Warm-up?", context="The server is ready.")], 1)
        except Exception as error:  # said by /v1/health and the log; the process stays up to say it
            self.failure = f"{type(error).__name__}: {error}"
            logger.error("the model could not be loaded: %s", self.failure)
            return
        self.ready = True
        self.metrics.ready.set(1)
        logger.info("ready: %s answered by %s", self.name, self.model.engine.describe())

    def ready_batcher(self) -> MicroBatcher:
        if self.failure is not None:
            raise HTTPException(503, f"the model failed to load ({self.failure}); the server log says more")
        if not self.ready or self.batcher is None:
            raise HTTPException(503, "the model is loading; retry shortly", headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
        return self.batcher

    def describe(self, api_key_required: bool) -> dict[str, Any]:
        card = self.card or {}
        model = self.model
        settings = model.settings.to_dict() if model is not None else card.get("settings")
        return {
            "name": self.name,
            "ready": self.ready,
            "base_model": card.get("base_model"),
            "settings": settings,
            "null_threshold": (settings or {}).get("null_threshold"),
            "best_epoch": card.get("best_epoch"),
            "dev_metrics": card.get("dev_metrics"),
            "data": card.get("data"),
            "qatune_version": card.get("qatune_version"),
            "engine": None if model is None else model.engine.to_dict() | {"description": model.engine.describe()},
            "batching": None if self.batcher is None else {
                "max_batch_windows": self.limits.max_batch_windows,
                "batch_size": self.limits.batch_size,
                "max_wait_ms": self.limits.max_wait_ms,
                "across_requests": self.batcher.across_requests,
            },
            "limits": {
                "max_items": self.limits.max_items,
                "max_body_bytes": self.limits.max_body_bytes,
                "max_context_characters": self.limits.max_context_characters,
                "max_top_k": MAX_TOP_K,
                "max_queue_questions": self.limits.max_queue_questions,
            },
            "api_key_required": api_key_required,
        }


def model_card_of(source) -> dict:
    """What /v1/model shows of a model folder's qatune.json ({} for a QAModel or a hub id)."""
    from qatune.settings import read_model_card

    if isinstance(source, QAModel) or not Path(str(source)).expanduser().is_dir():
        return {}
    card = read_model_card(Path(str(source)).expanduser())
    card.pop("training_arguments", None)  # paths and flags of the machine it was trained on
    base = card.get("base_model")
    if isinstance(base, str) and Path(base).is_absolute():  # a folder there: its last two names say what it is
        card["base_model"] = "/".join(Path(base).parts[-2:])
    return card


async def _unless_caller_leaves(request: Request, work):
    """The result of `work`; if the caller disconnects first, `work` is cancelled (a question
    still waiting in the queue gives its place back) and the request ends with 499."""
    task = asyncio.ensure_future(work)
    while True:
        done, _ = await asyncio.wait({task}, timeout=DISCONNECT_CHECK_SECONDS)
        if done:
            return task.result()
        if await request.is_disconnected():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            raise HTTPException(CLIENT_CLOSED_REQUEST, "the caller went away before the answer was ready")


def _check_app_arguments(model, limits, model_card) -> None:
    """What `create_app` is given, checked when the app is made: a mistake there would otherwise
    show only as a 503 or a 500 at the first request."""
    if not isinstance(model, QAModel):
        check_path_argument("model", model)
        locate_model(model)  # a missing folder is an error now, not a "failed" health later
    if limits is not None and not isinstance(limits, ServerLimits):
        raise ArgumentTypeError(f"limits must be a ServerLimits (qatune.serving.ServerLimits(max_items=...)), got {limits!r}")
    if model_card is not None and not isinstance(model_card, dict):
        raise ArgumentTypeError(f"model_card must be a dict (what /v1/model shows of qatune.json) or None, got {model_card!r}")


def check_api_key(api_key: str | None) -> None:
    """A key that an HTTP header can carry as it is: printable ASCII, nothing around it (HTTP
    strips spaces around header values, and decodes other bytes differently than clients send)."""
    if api_key is None:
        return
    if not isinstance(api_key, str):
        raise ArgumentTypeError(f"the API key must be a str (or None for no key), got {type(api_key).__name__}")
    if not api_key or not (api_key.isascii() and api_key.isprintable()) or api_key != api_key.strip():
        raise SettingsError(
            "the API key must be printable ASCII with no space at either end (what an HTTP header carries "
            "unchanged); make one with `openssl rand -hex 32`"
        )


def _key_check(api_key: str | None):
    """A dependency: with a key set, `Authorization: Bearer <key>` or 401 (compared in constant time)."""
    expected = None if api_key is None else api_key.encode("ascii")

    async def require_key(request: Request) -> None:
        if expected is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        # header values arrive decoded as latin-1: encoded back, they are the bytes the client sent
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode("latin-1"), expected):
            detail = "a valid API key is needed: send the header 'Authorization: Bearer <key>'"
            raise HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})

    return require_key


class _Metrics:
    """Counts every request by route and status and times it."""

    def __init__(self, app, metrics: ServerMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status = time.perf_counter(), 500

        async def watched(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watched)
        finally:
            route = _route_of(scope)
            method = scope["method"] if scope["method"] in HTTP_METHODS else "other"  # a bounded set of labels
            self.metrics.requests.labels(route, method, str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - started)


def _route_of(scope) -> str:
    """The route's template (a bounded set of label values), or 'other' for unknown paths."""
    path = getattr(scope.get("route"), "path", None)
    if isinstance(path, str):
        return path
    if scope.get("root_path", "").endswith("/static"):  # the page's files: their mount set it so
        return "/static"
    # refused before routing (a body over the limit by its Content-Length): the path, if a route's
    known = {getattr(route, "path", None) for route in getattr(scope.get("app"), "routes", ())}
    return scope["path"] if scope.get("path") in known else "other"


@functools.lru_cache(maxsize=1)
def _sample_examples() -> list[dict]:
    """The first question of each paragraph of the sample dev data shipped with qatune."""
    from qatune.data import load_examples
    from qatune.sample import DEV

    seen, picked = set(), []
    for example in load_examples(DEV):
        if example.context in seen:
            continue
        seen.add(example.context)
        picked.append({"title": example.title or "", "context": example.context, "question": example.question})
    return picked


def _version() -> str:
    from qatune import __version__

    return __version__
