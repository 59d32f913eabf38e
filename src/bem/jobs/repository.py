"""Job state transitions as single UPDATEs, so two workers can never both claim a job."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bem.jobs.models import Job
from bem.kit.db import utcnow
from bem.projects.models import Model


def _claimable(running_before: datetime) -> ColumnElement[bool]:
    """Queued, or marked running but untouched since ``running_before`` (its worker died)."""
    return or_(
        Job.status == "queued",
        (Job.status == "running") & (Job.updated_at < running_before),
    )


async def claim(session: AsyncSession, job_id: uuid.UUID, running_before: datetime) -> bool:
    """queued -> running (attempts + 1). A job still marked running is taken over only if its
    last sign of life is older than ``running_before`` (its worker died)."""
    now = utcnow()
    result = await session.execute(
        update(Job)
        .where(Job.id == job_id, _claimable(running_before))
        .values(
            status="running",
            attempts=Job.attempts + 1,
            started_at=now,
            updated_at=now,
            phase=None,
            done=0,
        )
    )
    await session.commit()
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def set_progress(
    session: AsyncSession, job_id: uuid.UUID, phase: str, done: int, total: int | None
) -> None:
    await session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == "running")
        .values(phase=phase, done=done, total=total, updated_at=utcnow())
    )
    await session.commit()


async def finish(session: AsyncSession, job_id: uuid.UUID, **values: Any) -> None:
    now = utcnow()
    await session.execute(
        update(Job).where(Job.id == job_id).values(updated_at=now, finished_at=now, **values)
    )
    await session.commit()


async def requeue(session: AsyncSession, job_id: uuid.UUID, error: dict[str, str] | None) -> None:
    await session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == "running")
        .values(status="queued", error=error, updated_at=utcnow())
    )
    await session.commit()


async def unfinished(session: AsyncSession, running_before: datetime) -> list[uuid.UUID]:
    """Jobs to pick up after a restart: queued ones, and running ones nobody touches."""
    rows = await session.scalars(
        select(Job.id).where(_claimable(running_before)).order_by(Job.created_at).limit(1000)
    )
    return list(rows)


async def project_of_job(session: AsyncSession, job_id: uuid.UUID) -> uuid.UUID | None:
    result: uuid.UUID | None = await session.scalar(
        select(Model.project_id).join(Job, Job.model_id == Model.id).where(Job.id == job_id)
    )
    return result


async def waiting(session: AsyncSession) -> tuple[int, datetime | None]:
    """How many jobs wait to run, and when the oldest of them was created."""
    count, oldest = (
        await session.execute(
            select(func.count(), func.min(Job.created_at)).where(Job.status == "queued")
        )
    ).one()
    if oldest is not None and oldest.tzinfo is None:  # SQLite returns aggregates naive
        oldest = oldest.replace(tzinfo=UTC)
    return int(count), oldest
