"""RFC 9457 problem details: one exception type for domain code, handlers for the app.

Domain code raises :class:`Problem` (or a subclass); HTTP and validation errors from FastAPI
are shaped the same way. Database and Redis failures are answered by
``kit/dberrors.py``; other unknown exceptions by the request-context middleware
(``kit/context.py``), so their traceback goes to the log only.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import orjson
import structlog
from fastapi import FastAPI, Request, WebSocket, status
from fastapi.exceptions import RequestValidationError, WebSocketRequestValidationError
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import IntegrityError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

PROBLEM_JSON = "application/problem+json"
TYPE_BASE = "https://bem.dev/problems/"


class FieldError(BaseModel):
    loc: list[str | int]
    msg: str
    type: str
    global_id: str | None = Field(
        default=None, description="The element the field belongs to, in an upload's errors."
    )


class ProblemDetail(BaseModel):
    """The body of every error response."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str | None = None
    request_id: str | None = None
    errors: list[FieldError] | None = None


class Problem(Exception):
    """An error the client can act on; rendered as problem+json with ``status``."""

    status: int = 400
    slug: str = "bad-request"

    def __init__(
        self,
        detail: str,
        *,
        status: int | None = None,
        slug: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        if status is not None:
            self.status = status
        if slug is not None:
            self.slug = slug
        self.headers = headers or {}
        self.extra = extra


class NotFound(Problem):
    status, slug = 404, "not-found"


class Conflict(Problem):
    status, slug = 409, "conflict"


class Unprocessable(Problem):
    status, slug = 422, "unprocessable"


class PayloadTooLarge(Problem):
    status, slug = 413, "payload-too-large"


class UnsupportedMediaType(Problem):
    status, slug = 415, "unsupported-media-type"


class StorageUnavailable(Problem):
    """The object store did not answer (or answered 5xx); nothing was changed."""

    status, slug = 503, "storage-unavailable"

    def __init__(self, detail: str = "File storage is unavailable; retry shortly.") -> None:
        super().__init__(detail, headers={"Retry-After": "5"})


class Unauthorized(Problem):
    status, slug = 401, "unauthorized"

    def __init__(self, detail: str = "A valid bearer token is required.") -> None:
        super().__init__(detail, headers={"WWW-Authenticate": 'Bearer realm="bem"'})


class Forbidden(Problem):
    status, slug = 403, "forbidden"


class TooManyRequests(Problem):
    status, slug = 429, "too-many-requests"

    def __init__(self, detail: str, retry_after_s: int) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after_s)})


def problem_response(
    status: int,
    slug: str,
    detail: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Response:
    request_id = structlog.contextvars.get_contextvars().get("request_id")
    structlog.contextvars.bind_contextvars(problem=slug)  # for the access log and metrics
    body: dict[str, Any] = {
        "type": TYPE_BASE + slug,
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "request_id": request_id,
        **extra,
    }
    return Response(
        orjson.dumps(body), status_code=status, media_type=PROBLEM_JSON, headers=headers
    )


def _slug_for(status: int) -> str:
    return HTTPStatus(status).phrase.lower().replace(" ", "-").replace("'", "")


async def _on_problem(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, Problem)
    return problem_response(exc.status, exc.slug, exc.detail, exc.headers, **exc.extra)


async def _on_http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else None
    headers = dict(exc.headers) if exc.headers else {}
    if exc.status_code == 405:
        # Starlette names only the first matching route's methods; list every route's.
        from bem.kit.routes import methods_for

        headers["Allow"] = ", ".join(sorted(methods_for(request.app, request.url.path)))
    return problem_response(exc.status_code, _slug_for(exc.status_code), detail, headers or None)


def _validation_problem(exc: RequestValidationError | WebSocketRequestValidationError) -> Problem:
    errors = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in exc.errors()
    ]
    return Unprocessable(
        "The request did not validate; see errors.", slug="validation-error", errors=errors
    )


async def _on_validation(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    problem = _validation_problem(exc)
    return problem_response(problem.status, problem.slug, problem.detail, **problem.extra)


async def deny(websocket: WebSocket, problem: Problem) -> None:
    """Refuse a WebSocket handshake with the problem as an HTTP answer where the server can
    send one (uvicorn can), else by closing with 1008."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        answer = problem_response(problem.status, problem.slug, problem.detail, **problem.extra)
        await websocket.send_denial_response(answer)
    else:
        await websocket.close(code=status.WS_1008_POLICY_VIOLATION, reason=problem.slug)


async def _on_websocket_validation(websocket: WebSocket, exc: Exception) -> None:
    assert isinstance(exc, WebSocketRequestValidationError)
    await deny(websocket, _validation_problem(exc))


def refuse_unknown_websockets(app: FastAPI) -> None:
    """A handshake to no WebSocket route is a 404 problem (Starlette closes it bare)."""
    fallback = app.router.default

    async def default(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            await fallback(scope, receive, send)
            return
        await deny(WebSocket(scope, receive, send), NotFound("No WebSocket is served here."))

    app.router.default = default


async def _on_integrity(_: Request, exc: Exception) -> Response:
    # Validation should have caught it; a constraint is the last line, not a 500.
    structlog.get_logger("bem.db").warning("integrity_error", error=str(exc.__cause__)[:200])
    return problem_response(409, "conflict", "The request conflicts with existing data.")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(Problem, _on_problem)
    app.add_exception_handler(StarletteHTTPException, _on_http)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(WebSocketRequestValidationError, _on_websocket_validation)
    refuse_unknown_websockets(app)
    app.add_exception_handler(IntegrityError, _on_integrity)


# OpenAPI response declarations shared by the routers; the app registers ProblemDetail.
PROBLEM_SCHEMA_REF = {"$ref": "#/components/schemas/ProblemDetail"}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {
        s: {
            "description": f"{HTTPStatus(s).phrase} (problem details)",
            "content": {PROBLEM_JSON: {"schema": PROBLEM_SCHEMA_REF}},
        }
        for s in statuses
    }
