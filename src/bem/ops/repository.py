"""Backup rows and their transitions (single UPDATEs, so two workers never run one request)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bem.kit.db import insert_ignore, utcnow
from bem.ops.models import Backup

ACTIVE = ("requested", "running")


async def request(
    session: AsyncSession,
    origin: str,
    requested_by: uuid.UUID | None = None,
) -> Backup:
    """A backup asked for (``requested``, until someone claims it)."""
    backup = Backup(
        status="requested",
        origin=origin,
        requested_by=requested_by,
        requested_at=utcnow(),
    )
    session.add(backup)
    await session.flush()
    return backup


async def request_once(
    session: AsyncSession, backup_id: uuid.UUID, origin: str, at: datetime
) -> bool:
    """Request the backup ``backup_id`` unless it exists (every runner that sees a schedule's
    fire time asks for the same id; one row results). Whether this call made it."""
    insert = insert_ignore(session.get_bind().dialect.name, Backup.__table__).values(
        id=backup_id, status="requested", origin=origin, requested_at=at, verification="unverified"
    )
    return bool((await session.execute(insert)).rowcount)  # type: ignore[attr-defined]


async def active(session: AsyncSession) -> Backup | None:
    """A backup requested or running, if any."""
    query = select(Backup).where(Backup.status.in_(ACTIVE)).order_by(Backup.requested_at)
    return await session.scalar(query.limit(1))


async def get(session: AsyncSession, backup_id: uuid.UUID) -> Backup | None:
    return await session.get(Backup, backup_id)


async def newest_first(
    session: AsyncSession, before: tuple[datetime, uuid.UUID] | None, limit: int
) -> Sequence[Backup]:
    query = select(Backup).order_by(Backup.requested_at.desc(), Backup.id.desc()).limit(limit)
    if before is not None:
        at, backup_id = before
        query = query.where(
            or_(
                Backup.requested_at < at,
                (Backup.requested_at == at) & (Backup.id < backup_id),
            )
        )
    return (await session.scalars(query)).all()


async def abandon(session: AsyncSession, started_before: datetime) -> int:
    """Running backups nobody finished in time (their runner died): failed, with the reason."""
    result = await session.execute(
        update(Backup)
        .where(Backup.status == "running", Backup.started_at < started_before)
        .values(
            status="failed",
            finished_at=utcnow(),
            error="abandoned: not finished within BEM_BACKUP_TIMEOUT_S (its runner stopped)",
        )
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


async def claim(session: AsyncSession, backup_id: uuid.UUID | None = None) -> uuid.UUID | None:
    """requested -> running: the oldest request, or ``backup_id``; None when there is none
    or another worker took it."""
    if backup_id is None:
        backup_id = await session.scalar(
            select(Backup.id)
            .where(Backup.status == "requested")
            .order_by(Backup.requested_at)
            .limit(1)
        )
        if backup_id is None:
            return None
    result = await session.execute(
        update(Backup)
        .where(Backup.id == backup_id, Backup.status == "requested")
        .values(status="running", started_at=utcnow())
    )
    return backup_id if result.rowcount else None  # type: ignore[attr-defined]


async def succeed(
    session: AsyncSession,
    backup_id: uuid.UUID,
    *,
    location: str,
    size: int,
    tables: dict[str, dict[str, Any]],
    verification: str,
) -> None:
    now = utcnow()
    await session.execute(
        update(Backup)
        .where(Backup.id == backup_id)
        .values(
            status="succeeded",
            finished_at=now,
            location=location,
            bytes=size,
            tables=len(tables),
            rows=sum(t["rows"] for t in tables.values()),
            verification=verification,
            verified_at=now if verification != "unverified" else None,
        )
    )


async def fail(session: AsyncSession, backup_id: uuid.UUID, error: str) -> None:
    await session.execute(
        update(Backup)
        .where(Backup.id == backup_id)
        .values(status="failed", finished_at=utcnow(), error=error[:2000])
    )


async def verified_by_restore(session: AsyncSession, backup_id: uuid.UUID) -> None:
    """A drill restored the backup and every table and answer matched."""
    now = utcnow()
    await session.execute(
        update(Backup).where(Backup.id == backup_id).values(verification="restore", verified_at=now)
    )


async def last_success(session: AsyncSession) -> datetime | None:
    result: datetime | None = await session.scalar(
        select(func.max(Backup.finished_at)).where(Backup.status == "succeeded")
    )
    return result


async def settle_after_restore(
    session: AsyncSession, backup_id: uuid.UUID | None, location: str
) -> int:
    """Backups a snapshot caught in flight, settled in the restored database: the one that
    took it succeeded (it is what was restored), others then asked for or running failed;
    how many failed."""
    now = utcnow()
    if backup_id is not None:
        await session.execute(
            update(Backup)
            .where(Backup.id == backup_id)
            .values(
                status="succeeded",
                finished_at=now,
                location=location,
                verification="restore",
                verified_at=now,
            )
        )
    interrupted = await session.execute(
        update(Backup)
        .where(Backup.status.in_(ACTIVE))
        .values(
            status="failed",
            finished_at=now,
            error="interrupted: the database was restored from a snapshot taken while it ran",
        )
    )
    return int(interrupted.rowcount)  # type: ignore[attr-defined]
