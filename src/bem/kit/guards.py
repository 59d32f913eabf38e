"""Request and response guards that need no domain knowledge: body Content-Type and size
checked before the app reads a byte, and security headers on every response."""

from __future__ import annotations

import re
from dataclasses import dataclass

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bem.kit.errors import problem_response

BODY_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
JSON = ("application/json",)

API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'"
# Swagger UI and ReDoc (served from /docs-assets) need inline boot scripts, styles and workers.
DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; worker-src 'self' blob:; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
DOCS_PATHS = ("/docs", "/redoc")
# The console: its own scripts and styles only (no inline code), the API on this origin,
# GLB geometry fetched as bytes, images drawn from canvases.
CONSOLE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; worker-src 'none'; object-src 'none'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
HSTS = "max-age=31536000; includeSubDomains"


@dataclass(frozen=True)
class BodyRule:
    """Bodies on paths matching ``pattern`` may use ``media_types``; ``max_bytes=None`` leaves
    the size to the endpoint (streamed uploads enforce their own limits)."""

    pattern: re.Pattern[str]
    media_types: tuple[str, ...]
    max_bytes: int | None


class BodyGuardMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int, rules: tuple[BodyRule, ...] = ()) -> None:
        self.app = app
        self.default = BodyRule(re.compile(""), JSON, max_bytes)
        self.rules = rules

    def _rule(self, path: str) -> BodyRule:
        return next((r for r in self.rules if r.pattern.fullmatch(path)), self.default)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        length = headers.get("content-length")
        has_body = "transfer-encoding" in headers or (
            length is not None and length.strip() not in ("", "0")
        )
        if not has_body:
            await self.app(scope, receive, send)
            return
        rule = self._rule(scope["path"])
        media = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media not in rule.media_types:
            response = problem_response(
                415,
                "unsupported-media-type",
                f"Send the body as {' or '.join(rule.media_types)}.",
                accepted=list(rule.media_types),
            )
            await response(scope, receive, send)
            return
        limit = rule.max_bytes
        if limit is not None and length is not None and length.isdigit() and int(length) > limit:
            response = problem_response(
                413, "payload-too-large", f"The body exceeds {limit} bytes.", limit=limit
            )
            await response(scope, receive, send)
            return
        if limit is None:
            await self.app(scope, receive, send)
            return
        received = 0
        refused = False

        async def counted() -> Message:
            # Past the limit: answer 413 ourselves and tell the app the client is gone.
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request" and not refused:
                received += len(message.get("body", b""))
                if received > limit:
                    refused = True
                    response = problem_response(
                        413, "payload-too-large", f"The body exceeds {limit} bytes.", limit=limit
                    )
                    await response(scope, receive, send)
                    return {"type": "http.disconnect"}
            return message

        async def unless_refused(message: Message) -> None:
            if not refused:
                await send(message)

        await self.app(scope, counted, unless_refused)


class SecurityHeadersMiddleware:
    def __init__(self, app: ASGIApp, hsts: bool) -> None:
        self.app = app
        self.hsts = hsts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        csp = API_CSP
        if path in DOCS_PATHS:
            csp = DOCS_CSP
        elif path == "/console" or path.startswith("/console/"):
            csp = CONSOLE_CSP
        tls = self.hsts and scope.get("scheme") == "https"

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [
                    (b"x-content-type-options", b"nosniff"),
                    (b"x-frame-options", b"DENY"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"content-security-policy", csp.encode()),
                    (b"cross-origin-opener-policy", b"same-origin"),
                ]
                if tls:
                    headers.append((b"strict-transport-security", HSTS.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)
