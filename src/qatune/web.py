"""What qatune's web apps (`qatune serve`, `qatune annotate`) share: JSON errors with a
`detail` sentence for every failure, a request body size limit, and the headers of their pages."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

logger = logging.getLogger("qatune.web")


def add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if request.method in ("POST", "PUT", "PATCH") and media_type != "application/json":
            detail = (
                f"the body must be JSON sent with the header 'Content-Type: application/json' "
                f"(found {media_type or 'no Content-Type'}); with curl: -H 'Content-Type: application/json'"
            )
            return JSONResponse({"detail": detail}, status_code=415)
        errors = list(error.errors())
        return JSONResponse({"detail": error_text(errors), "errors": plain_errors(errors)}, status_code=422)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        detail = error.detail
        if error.status_code == 400 and detail == "There was an error parsing the body":
            detail = "the body could not be read as JSON text in UTF-8; send a JSON object encoded as UTF-8"
        elif error.status_code == 404 and detail == "Not Found":  # no route, not a handler's own 404
            detail = f"no such endpoint: {request.url.path}; see /openapi.json for the endpoints"
            without_slash = request.url.path.rstrip("/")
            if without_slash != request.url.path and any(getattr(route, "path", None) == without_slash for route in request.app.routes):
                detail = f"no such endpoint: {request.url.path}; the endpoint is {without_slash}, without the slash at the end"
        elif error.status_code == 405 and detail == "Method Not Allowed":
            detail = f"{request.method} is not allowed on {request.url.path}; see /openapi.json"
        return JSONResponse({"detail": detail}, status_code=error.status_code, headers=error.headers)

    @app.exception_handler(Exception)
    async def crashed(request: Request, error: Exception) -> JSONResponse:
        logger.exception("request to %s failed", request.url.path)
        return JSONResponse({"detail": f"internal error ({type(error).__name__}); the server log has the details"}, status_code=500)


class BodyLimit:
    """413 for a body over `max_bytes`, by its Content-Length or, when sent in chunks, as it arrives."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._refuse(send)
        received = 0

        async def counted():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # an HTTPException passes through FastAPI's body reading as it is
                    raise HTTPException(413, self._detail())
            return message

        await self.app(scope, counted, send)

    def _detail(self) -> str:
        return f"the request body is larger than {self.max_bytes} bytes (max_body_bytes); send fewer items or shorter texts"

    async def _refuse(self, send) -> None:
        response = JSONResponse({"detail": self._detail()}, status_code=413)
        await response({"type": "http"}, None, send)


class HeadAsGet:
    """HEAD answered as GET, without the body: uptime checks and load balancers ask with HEAD.
    (Routes answer GET alone; a HEAD that reached them would be a 405.)"""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            return await self.app(scope, receive, send)

        async def without_body(message):
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}  # the headers (Content-Length too) are GET's
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, without_body)


class PageHeaders:
    """nosniff on every response; the page and its files revalidated on each load, so that a
    browser never pairs an old script with a new page after an upgrade."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        page = scope["path"] == "/" or scope["path"].startswith("/static/")

        async def with_headers(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"x-content-type-options", b"nosniff"))
                if page:
                    headers.append((b"cache-control", b"no-cache"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)


def error_text(errors: list[dict]) -> str:
    """Pydantic's errors as one line naming each field, e.g. 'items[2].context: Field required'."""
    return "; ".join(f"{_place(error.get('loc', ()))}: {_message(error)}" for error in errors)


def plain_errors(errors: list[dict]) -> list[dict]:
    """The errors without the values sent (they can be long, or a key pasted by mistake)."""
    return [{"field": _place(error.get("loc", ())), "message": _message(error)} for error in errors]


def _place(loc) -> str:
    if len(loc) == 2 and loc[0] == "body" and isinstance(loc[1], int):  # JSON that does not parse, at a position
        return "body"
    parts = [part for part in loc if part not in ("body", "one", "many")]
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "body"


def _message(error: dict) -> str:
    message = str(error.get("msg", "invalid"))
    if error.get("type") == "json_invalid":
        reason = (error.get("ctx") or {}).get("error")
        return "not valid JSON" + (f" ({reason})" if reason else "")
    return message.removeprefix("Value error, ")


class ThisMachineByName:
    """400, with a JSON detail, for a request whose Host header names another machine: on a
    loopback address, a web page elsewhere cannot reach the app through a domain it points at
    127.0.0.1 (DNS rebinding)."""

    NAMES = frozenset({"127.0.0.1", "localhost", "::1"})

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] in ("http", "websocket"):
            host = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
            if _host_name(host) not in self.NAMES:
                named = f"not {host!r}" if host else "and this request has no Host header (HTTP/1.1 clients send one)"
                detail = (
                    f"this server answers requests addressed to 127.0.0.1 or localhost only, {named} "
                    "(it listens on this machine only); to serve other machines, start it with --host 0.0.0.0"
                )
                return await JSONResponse({"detail": detail}, status_code=400)(scope, receive, send)
        await self.app(scope, receive, send)


def _host_name(host: str) -> str | None:
    """The name in a Host header, without its port: "[::1]:8000" -> "::1", "LocalHost" -> "localhost"."""
    if host.startswith("["):
        return host[1 : host.index("]")].lower() if "]" in host else None
    return host.rsplit(":", 1)[0].lower() if host.count(":") <= 1 else None

