from __future__ import annotations

import functools
import time
import uuid
from datetime import datetime
from typing import Any, cast

import structlog
from sqlalchemy import Executable, Table, TextClause, and_, func, insert, or_, select, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from bem.kit.db import insert_ignore, json_dumps
from bem.projects.models import Model
from bem.versions.models import ElementFacts, ElementPayload, Relation, Version, VersionElement

log = structlog.get_logger()


async def lock_model(session: AsyncSession, model_id: uuid.UUID) -> None:
    """Serialize version numbering per model (row lock on PostgreSQL; SQLite has one writer).

    ``FOR NO KEY UPDATE``: a plain ``FOR UPDATE`` also waits for the key-share locks that
    concurrent uploads' version rows take on the model, and two such uploads deadlock."""
    await session.execute(
        select(Model.id).where(Model.id == model_id).with_for_update(key_share=True)
    )


async def numbering(session: AsyncSession, model_id: uuid.UUID) -> tuple[uuid.UUID | None, int]:
    """A new version's parent (the latest ready version) and sequence number, in one
    statement; under :func:`lock_model`."""
    latest = (
        select(Version.id)
        .where(Version.model_id == model_id, Version.status == "ready")
        .order_by(Version.seq.desc())
        .limit(1)
        .scalar_subquery()
    )
    highest = select(func.coalesce(func.max(Version.seq), 0)).where(Version.model_id == model_id)
    parent, seq = (await session.execute(select(latest, highest.scalar_subquery()))).one()
    return parent, int(seq) + 1


async def list_versions(
    session: AsyncSession,
    model_id: uuid.UUID,
    before: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[Version]:
    stmt = select(Version).where(Version.model_id == model_id)
    if before is not None:
        created, vid = before
        stmt = stmt.where(
            or_(Version.created_at < created, and_(Version.created_at == created, Version.id < vid))
        )
    stmt = stmt.order_by(Version.created_at.desc(), Version.id.desc()).limit(limit)
    return list(await session.scalars(stmt))


async def write_payloads(
    db: AsyncSession | AsyncConnection, payloads: list[dict[str, Any]], facts: list[dict[str, Any]]
) -> None:
    """Payloads (and their facts) are shared between versions: insert only those not stored
    yet, and facts only for the payloads that were new (a repeated upload of 50k elements
    spent 2-4 s on facts that existed). Both in hash order, so two writers of overlapping
    content take their row locks in one order."""
    if not payloads:
        return
    ordered = sorted(payloads, key=lambda row: str(row["hash"]))
    new = set(await _insert(db, ElementPayload.__table__, ordered, returning="hash"))
    if fresh := sorted((row for row in facts if row["hash"] in new), key=lambda r: r["hash"]):
        await _insert(db, ElementFacts.__table__, fresh)


async def write_members(
    session: AsyncSession, elements: list[dict[str, Any]], relations: list[dict[str, Any]]
) -> None:
    """A version's own rows: which payload each GlobalId has, and its relations."""
    if elements:
        await _insert(session, VersionElement.__table__, elements)
    if relations:
        await _insert(session, Relation.__table__, relations)


async def _insert(
    db: AsyncSession | AsyncConnection,
    table: Any,
    rows: list[dict[str, Any]],
    returning: str | None = None,
) -> list[Any]:
    """Insert ``rows`` in their order; with ``returning``, skip those already there and
    return that column of the rows inserted. On PostgreSQL one statement whatever the number
    of rows (:func:`_unnest`); elsewhere Core inserts of the table, without the ORM's per-row
    bookkeeping."""
    dialect = (db.get_bind() if isinstance(db, AsyncSession) else db).dialect.name
    stmt: Executable
    if dialect == "postgresql":
        names = tuple(c.name for c in table.columns if c.name in rows[0])
        stmt, json_columns = _unnest(table, names, returning)
        params: Any = {
            name: [json_dumps(r[name]) if name in json_columns else r[name] for r in rows]
            for name in names
        }
    elif returning:
        stmt, params = insert_ignore(dialect, table).returning(table.c[returning]), rows
    else:
        stmt, params = insert(cast(Table, table)), rows
    result = await db.execute(stmt, params)
    return list(result.scalars()) if returning else []


@functools.cache
def _unnest(
    table: Table, names: tuple[str, ...], returning: str | None
) -> tuple[TextClause, frozenset[str]]:
    """``INSERT ... SELECT`` from one array per column, and which columns take JSON text: the
    same statement for any number of rows, so PostgreSQL prepares it once. A VALUES list per
    batch (SQLAlchemy's executemany) was a new statement, parsed and planned, for every
    batch size, and its per-value parameter handling cost about a fifth of an IFC import's
    CPU."""
    postgres = postgresql.dialect()  # type: ignore[no-untyped-call]
    kinds = {name: table.c[name].type.compile(dialect=postgres) for name in names}
    json_columns = frozenset(n for n, kind in kinds.items() if kind in ("JSON", "JSONB"))
    arrays = ", ".join(
        f"CAST(CAST(:{n} AS TEXT[]) AS {kinds[n]}[])"
        if n in json_columns
        else f"CAST(:{n} AS {kinds[n]}[])"
        for n in names
    )
    columns = ", ".join(names)
    sql = f"INSERT INTO {table.name} ({columns}) SELECT {columns} FROM unnest({arrays})"  # noqa: S608
    sql += f" WITH ORDINALITY AS row({columns}, n) ORDER BY n"
    if returning:
        sql += f" ON CONFLICT DO NOTHING RETURNING {returning}"
    return text(sql), json_columns


async def element(
    session: AsyncSession, version_id: uuid.UUID, global_id: str
) -> tuple[str, dict[str, Any]] | None:
    row = (
        await session.execute(
            select(ElementPayload.hash, ElementPayload.doc)
            .join(VersionElement, ElementPayload.hash == VersionElement.payload_hash)
            .where(VersionElement.version_id == version_id, VersionElement.global_id == global_id)
        )
    ).first()
    return (row[0], row[1]) if row else None


async def refresh_statistics(session: AsyncSession) -> None:
    """Update PostgreSQL's planner statistics for the element tables (SQLite: nothing)."""
    if session.get_bind().dialect.name != "postgresql":
        return
    started = time.perf_counter()
    try:
        await session.execute(
            text("ANALYZE version_elements, element_payloads, element_facts, relations")
        )
    except DBAPIError as exc:  # e.g. not the tables' owner: autovacuum will get there later
        await session.rollback()
        log.warning("statistics_refresh_failed", error=str(exc.orig))
        return
    log.info("statistics_refreshed", duration_ms=round((time.perf_counter() - started) * 1000, 1))
