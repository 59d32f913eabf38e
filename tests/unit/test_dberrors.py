"""The one classification of database and Redis failures, and the middleware that answers
them: 503 with Retry-After, a deadlocked request replayed once, anything else untouched."""

from __future__ import annotations

from typing import Any

import asyncpg
import httpx
import pytest
import redis.exceptions
from sqlalchemy.exc import DBAPIError, IntegrityError, ProgrammingError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.types import Receive, Scope, Send

from bem.kit.dberrors import DatabaseErrorMiddleware, classify


class Orig(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__(sqlstate)
        self.sqlstate = sqlstate


def wrapped(sqlstate: str, kind: type[DBAPIError] = DBAPIError) -> DBAPIError:
    return kind("SELECT 1", {}, Orig(sqlstate))


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (ConnectionRefusedError(111, "refused"), "unavailable"),  # asyncpg, at connect
        (TimeoutError(), "unavailable"),
        (asyncpg.CannotConnectNowError("the database system is starting up"), "unavailable"),
        (wrapped("08006"), "unavailable"),  # connection failure
        (wrapped("57P01"), "unavailable"),  # admin shutdown
        (wrapped("53300"), "unavailable"),  # too many connections
        (redis.exceptions.ConnectionError(), "unavailable"),
        (wrapped("40P01"), "conflict"),  # deadlock detected
        (wrapped("40001"), "conflict"),  # serialization failure
        (wrapped("57014"), "timeout"),  # statement timeout
        (PoolTimeoutError(), "busy"),
        (wrapped("42P01", ProgrammingError), None),  # undefined table: a bug, a 500
        (wrapped("23505", IntegrityError), None),  # a constraint: 409 elsewhere
        (ValueError("a bug"), None),
        (FileNotFoundError("not a dependency outage"), None),
    ],
)
def test_failures_are_classified(error: BaseException, kind: str | None) -> None:
    assert classify(error) == kind


def app_failing(times: int, error: BaseException) -> tuple[Any, list[bytes]]:
    """An app that reads its body, then raises ``error`` the first ``times`` calls."""
    bodies: list[bytes] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        bodies.append(body)
        if len(bodies) <= times:
            raise error
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    return DatabaseErrorMiddleware(app), bodies


async def call(app: Any) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        return await client.post("/", content=b"the same body")


async def test_a_deadlocked_request_is_replayed_once_with_its_body() -> None:
    app, bodies = app_failing(1, wrapped("40P01"))
    r = await call(app)
    assert r.status_code == 200 and bodies == [b"the same body"] * 2


async def test_a_second_deadlock_is_a_503() -> None:
    app, bodies = app_failing(2, wrapped("40P01"))
    r = await call(app)
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert r.json()["type"].endswith("/database-conflict") and len(bodies) == 2


async def test_an_outage_is_a_503_at_once_and_a_bug_is_not_hidden() -> None:
    app, bodies = app_failing(1, ConnectionRefusedError(111, "refused"))
    r = await call(app)
    assert r.status_code == 503 and r.json()["type"].endswith("/database-unavailable")
    assert len(bodies) == 1  # not replayed: it would only wait longer
    app, _ = app_failing(1, ValueError("a bug"))
    with pytest.raises(ValueError):  # left to the request-context middleware: a 500
        await call(app)
