"""What a failure of the database (or Redis) means for the client, decided in one place.

- **unavailable**: the connection failed, was lost, or the server is shutting down, starting
  or out of connections. asyncpg raises these raw at connect (``OSError``,
  ``CannotConnectNowError``, ``TimeoutError``) and SQLAlchemy wraps them later
  (``InterfaceError``, ``DBAPIError`` with SQLSTATE class 08 or 57P0x, or a connection
  SQLAlchemy invalidated). The client gets 503 with ``Retry-After``.
  A request whose very first statement found its pooled connection dead (the server
  restarted or failed over since the connection was last used) is replayed once: nothing of
  it reached the database, and SQLAlchemy has invalidated the pool, so the replay connects
  afresh. This is instead of pinging every connection on checkout (a round trip per
  request, about 6 % of a cached page's samples under load).
- **conflict**: a deadlock or serialization failure (SQLSTATE 40P01, 40001). The transaction
  was rolled back whole, so the request is replayed once; a second conflict is a 503.
- **timeout**: the statement ran past ``BEM_DB_STATEMENT_TIMEOUT_MS`` (57014): 503.
- **busy**: the pool had no connection within ``BEM_DB_POOL_TIMEOUT``: 503.

Anything else (a programming error, a constraint the code should have checked) is not
classified here and stays a 500 (constraints: 409 in ``kit/errors.py``).
"""

from __future__ import annotations

import socket
from contextvars import ContextVar
from typing import Any, Literal

import redis.exceptions
import structlog
from sqlalchemy import event
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bem.kit.errors import Problem, problem_response

log = structlog.get_logger("bem.db")

Kind = Literal["unavailable", "conflict", "timeout", "busy"]
CONFLICT_STATES = frozenset({"40P01", "40001"})  # deadlock detected, serialization failure
UNAVAILABLE_STATES = frozenset({"57P01", "57P02", "57P03"})  # admin/crash shutdown, starting
UNAVAILABLE_CLASSES = ("08", "53")  # connection exception, insufficient resources
RAW_UNAVAILABLE = (ConnectionError, socket.gaierror, TimeoutError, redis.exceptions.RedisError)
REPLAY_MAX_BYTES = 1024 * 1024  # bodies up to this are kept so a conflicted request can rerun

ANSWERS: dict[Kind, tuple[str, str]] = {
    "unavailable": ("database-unavailable", "The database is unavailable; retry shortly."),
    "conflict": ("database-conflict", "The request collided with another; retry it."),
    "timeout": ("database-timeout", "The database took too long to answer; retry shortly."),
    "busy": ("database-busy", "All database connections are busy; retry shortly."),
}


# Statements this attempt of a request has run (None outside a request).
_statements: ContextVar[list[int] | None] = ContextVar("bem_request_statements", default=None)


def count_statements(engine: AsyncEngine) -> None:
    """Count each statement a request runs on ``engine``, for the replay rule above."""

    def ran(*_: Any) -> None:
        if (counter := _statements.get()) is not None:
            counter[0] += 1

    event.listen(engine.sync_engine, "after_cursor_execute", ran)


def _found_dead_connection(exc: BaseException, statements: list[int]) -> bool:
    return isinstance(exc, DBAPIError) and exc.connection_invalidated and statements[0] == 0


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a database error (wrapped by SQLAlchemy, or raw from asyncpg)."""
    for candidate in (exc, getattr(exc, "orig", None), exc.__cause__):
        state = getattr(candidate, "sqlstate", None)
        if isinstance(state, str):
            return state
    return None


def classify(exc: BaseException) -> Kind | None:
    if isinstance(exc, PoolTimeoutError):
        return "busy"
    state = sqlstate(exc)
    if state in CONFLICT_STATES:
        return "conflict"
    if state == "57014":
        return "timeout"
    if state is not None and (state in UNAVAILABLE_STATES or state.startswith(UNAVAILABLE_CLASSES)):
        return "unavailable"
    if isinstance(exc, DBAPIError) and (
        exc.connection_invalidated or isinstance(exc, InterfaceError | OperationalError)
    ):
        return "unavailable"  # OperationalError: SQLite's lock held past busy_timeout, too
    if isinstance(exc, RAW_UNAVAILABLE):
        return "unavailable"
    if type(exc).__module__.startswith("asyncpg") and "Connection" in type(exc).__name__:
        return "unavailable"  # asyncpg's connection errors raised outside SQLAlchemy
    return None


def as_problem(exc: BaseException) -> Problem | None:
    """The 503 answer for a database or Redis failure, or None for any other error."""
    kind = classify(exc)
    if kind is None:
        return None
    slug, detail = ANSWERS[kind]
    return Problem(detail, status=503, slug=slug, headers={"Retry-After": "1"})


class DatabaseErrorMiddleware:
    """Turns unhandled database and Redis failures into 503 problem answers, replaying a
    request once after a deadlock or serialization failure, or when its first statement found
    a dead connection, if its body was small enough to keep (streamed uploads retry their own
    writes from their spool)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        kept: list[Message] = []
        size = 0
        replayable = True
        started = False

        async def keeping() -> Message:
            nonlocal size, replayable
            message = await receive()
            if message["type"] == "http.request" and replayable:
                size += len(message.get("body", b""))
                replayable = size <= REPLAY_MAX_BYTES
                if replayable:
                    kept.append(message)
                else:
                    kept.clear()
            return message

        async def tracking(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        for attempt in (1, 2):
            statements = [0]
            _statements.set(statements)
            try:
                await self.app(scope, keeping if attempt == 1 else _replay(kept, receive), tracking)
                return
            except Exception as exc:
                problem = as_problem(exc)
                if problem is None or started:
                    raise
                log.warning("database_error", kind=problem.slug, error=type(exc).__name__)
                again = problem.slug == "database-conflict" or _found_dead_connection(
                    exc, statements
                )
                if again and attempt == 1 and replayable:
                    continue
                answer = problem_response(
                    problem.status, problem.slug, problem.detail, problem.headers
                )
                await answer(scope, receive, send)
                return


def _replay(kept: list[Message], receive: Receive) -> Receive:
    """The kept body messages again, then the live channel (for the disconnect)."""
    queue = list(kept)

    async def replay() -> Message:
        return queue.pop(0) if queue else await receive()

    return replay
