"""Async SQLAlchemy engine, sessions and the few dialect differences BEM needs.

PostgreSQL runs on asyncpg (chosen by ``bench/db_driver.py``; see the README); SQLite on
aiosqlite. The engine lives in the app's state (``kit/state.py``; no module globals);
every pool is bounded and every connection has a timeout.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from fastapi import Depends
from sqlalchemy import JSON, DateTime, MetaData, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, Session
from sqlalchemy.sql.dml import Insert
from sqlalchemy.types import TypeDecorator
from starlette.requests import HTTPConnection

from bem.config import Settings
from bem.kit.dberrors import count_statements
from bem.kit.state import state_of

# Stable constraint names keep Alembic autogenerate and downgrades deterministic.
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# JSON documents: JSONB on PostgreSQL (indexable), JSON text on SQLite.
JSONDoc = JSON().with_variant(JSONB(), "postgresql")


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC timestamps on both databases (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def json_dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def create_engine(settings: Settings) -> AsyncEngine:
    url = make_url(settings.database_url_value)
    if url.get_backend_name() == "sqlite":
        return _sqlite_engine(settings)
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+asyncpg")
    connect_args: dict[str, Any] = {
        "timeout": settings.db_connect_timeout,
        "command_timeout": max(settings.db_statement_timeout_ms / 1000 + 5, 10),
        "server_settings": {
            "application_name": "bem",
            "statement_timeout": str(settings.db_statement_timeout_ms),
            # JIT compiles any plan the planner thinks costly: on a 1M-element version that
            # was 300 ms of compiling for a 120 ms location= page, and takeoffs gained
            # nothing from it (bench/query.py).
            "jit": "off",
        },
    }
    if settings.db_pgbouncer:
        # PgBouncer in transaction mode cannot keep server-side prepared statements, and
        # refuses startup parameters: set these on the role instead (docs/operations.md).
        connect_args["statement_cache_size"] = 0
        connect_args["prepared_statement_cache_size"] = 0
        for name in ("statement_timeout", "jit"):
            connect_args["server_settings"].pop(name)
    # No pre-ping: a request whose first statement finds a dead connection is replayed
    # (kit/dberrors.py); pool_recycle retires connections before servers or proxies drop them.
    engine = create_async_engine(
        url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout,
        pool_recycle=settings.db_pool_recycle,
        connect_args=connect_args,
        json_serializer=json_dumps,
        json_deserializer=orjson.loads,
    )
    count_statements(engine)
    return engine


def _sqlite_engine(settings: Settings) -> AsyncEngine:
    url = make_url(settings.database_url_value)
    if url.database and url.database != ":memory:":
        from pathlib import Path

        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(
        url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout,
        connect_args={"timeout": settings.db_connect_timeout},  # a file never disconnects
        json_serializer=json_dumps,
        json_deserializer=orjson.loads,
    )

    @event.listens_for(engine.sync_engine, "connect")
    def _pragmas(dbapi_conn: Any, _: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute(f"PRAGMA busy_timeout={int(settings.db_connect_timeout * 1000)}")
        cur.close()

    return engine


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    # A Session class per factory: session event listeners (live's event counter) then see
    # this factory's sessions only.
    own = type("BemSession", (Session,), {})
    return async_sessionmaker(
        engine, expire_on_commit=False, autoflush=False, sync_session_class=own
    )


@asynccontextmanager
async def one_off_session(settings: Settings) -> AsyncIterator[AsyncSession]:
    """A session on an engine of its own, for work done once outside a server (a CLI
    command, a backup's bookkeeping); the engine goes with it. The caller commits."""
    engine = create_engine(settings)
    try:
        async with session_factory(engine)() as session:
            yield session
    finally:
        await engine.dispose()


async def get_session(conn: HTTPConnection) -> AsyncIterator[AsyncSession]:
    """FastAPI dependency: one session per request, committed once the route has returned
    and before its answer is sent (so a failed commit is the answer, a 409 or a 503), and
    rolled back when the route raised."""
    async with state_of(conn).sessions() as session:
        yield session
        await session.commit()


async def commit_early(session: AsyncSession) -> None:
    """Commit before the end of the unit of work, deliberately; each call says which reason:

    - what is written so far must hold even if the rest fails (a failed sign-in's attempt
      count before its 401, a refused job before its 503);
    - the connection must go back to the pool before a slow wait (a client streaming a
      large body);
    - what follows must see it committed, or run outside it (a worker reading the new job
      row, a version before its retry or its statistics refresh).

    Otherwise a request commits once, when its route has returned (``get_session``), and a
    job step or background loop when its own unit ends; services and repositories never
    commit."""
    await session.commit()


def insert_ignore(dialect: str, table: Any) -> Insert:
    """``INSERT ... ON CONFLICT DO NOTHING`` for ``dialect`` (``postgresql`` or ``sqlite``)."""
    if dialect == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    return sqlite.insert(table).on_conflict_do_nothing()


# scope="function": the teardown (the commit) runs before the response is sent.
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
