"""Backup rows and their transitions (single UPDATEs, so two workers never run one request)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bem.kit.db import utcnow
from bem.ops.models import Backup


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
        .where(Backup.status.in_(("requested", "running")))
        .values(
            status="failed",
            finished_at=now,
            error="interrupted: the database was restored from a snapshot taken while it ran",
        )
    )
    return int(interrupted.rowcount)  # type: ignore[attr-defined]
