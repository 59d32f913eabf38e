"""Outermost ASGI middleware: request id, one access-log line per request, last-resort 500.

A pure ASGI middleware (not ``BaseHTTPMiddleware``) so streamed request and response bodies
pass through untouched.
"""

from __future__ import annotations

import re
import time
import uuid

import structlog
from opentelemetry import trace
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bem.kit.errors import problem_response
from bem.kit.errortracking import report_exception
from bem.kit.logging import get_logger

REQUEST_ID_HEADER = "x-request-id"
# Accept a client's id only if it is harmless to log and echo.
_VALID_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

access_log = get_logger("bem.access")
error_log = get_logger("bem.error")


def incoming_request_id(scope: Scope) -> str:
    candidate = Headers(scope=scope).get(REQUEST_ID_HEADER)
    if candidate is not None and _VALID_ID.match(candidate):
        return candidate
    return uuid.uuid4().hex


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        request_id = incoming_request_id(scope)
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        trace.get_current_span().set_attribute("bem.request_id", request_id)
        started = time.perf_counter()
        status = 0
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            error_log.exception("unhandled_error", path=scope.get("path"))
            report_exception(exc, {"request_id": request_id}, request={"path": scope.get("path")})
            if scope["type"] != "http" or response_started:
                raise
            response = problem_response(
                500,
                "internal-error",
                f"An unexpected error occurred; quote reference {request_id}.",
            )
            await response(scope, receive, send_with_id)
        finally:
            if scope["type"] == "http":
                route = scope.get("route")
                access_log.info(
                    "request",
                    method=scope.get("method"),
                    path=scope.get("path"),
                    route=getattr(route, "path", None),
                    status=status,
                    duration_ms=round((time.perf_counter() - started) * 1000, 2),
                    client=(scope.get("client") or ("", 0))[0],
                )
            structlog.contextvars.clear_contextvars()
