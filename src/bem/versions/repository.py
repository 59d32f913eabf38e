from __future__ import annotations

import time
import uuid
from datetime import datetime
from typing import Any, cast

import structlog
from sqlalchemy import Table, and_, func, insert, or_, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from bem.kit.db import insert_ignore
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
    content take their row locks in one order. Core inserts on the tables (not the ORM
    classes) skip per-row ORM bookkeeping."""
    if not payloads:
        return
    dialect = (db.get_bind() if isinstance(db, AsyncSession) else db).dialect.name
    stmt = insert_ignore(dialect, ElementPayload.__table__).returning(ElementPayload.hash)
    ordered = sorted(payloads, key=lambda row: str(row["hash"]))
    new = set((await db.scalars(stmt, ordered)).all())
    if fresh := sorted((row for row in facts if row["hash"] in new), key=lambda r: r["hash"]):
        await db.execute(insert(cast(Table, ElementFacts.__table__)), fresh)


async def write_members(
    session: AsyncSession, elements: list[dict[str, Any]], relations: list[dict[str, Any]]
) -> None:
    """A version's own rows: which payload each GlobalId has, and its relations."""
    if elements:
        await session.execute(insert(cast(Table, VersionElement.__table__)), elements)
    if relations:
        await session.execute(insert(cast(Table, Relation.__table__)), relations)


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
