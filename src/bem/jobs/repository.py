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


async def claim(session: AsyncSession, job_id: uuid.UUID, running_before: datetime) -> Job | None:
    """queued -> running (attempts + 1), returning the claimed row. A job still marked
    running is taken over only if its last sign of life is older than ``running_before``
    (its worker died)."""
    now = utcnow()
    claimed: Job | None = await session.scalar(
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
        .returning(Job)
    )
    return claimed


def _this_attempt(job_id: uuid.UUID, attempt: int) -> ColumnElement[bool]:
    """The job as this attempt left it: nobody took it over (a takeover raises ``attempts``)
    and it has not ended."""
    return (Job.id == job_id) & (Job.attempts == attempt) & Job.status.in_(("queued", "running"))


async def set_progress(
    session: AsyncSession,
    job_id: uuid.UUID,
    attempt: int,
    phase: str | None,
    done: int,
    total: int | None,
) -> None:
    """Progress (or, with ``phase=None``, only a sign of life) of a running attempt."""
    values: dict[str, Any] = {"updated_at": utcnow()}
    if phase is not None:
        values.update(phase=phase, done=done, total=total)
    await session.execute(
        update(Job).where(_this_attempt(job_id, attempt), Job.status == "running").values(**values)
    )


async def finish(
    session: AsyncSession, job_id: uuid.UUID, attempt: int, **values: Any
) -> tuple[bool, uuid.UUID | None]:
    """End the job as ``attempt`` (in the caller's transaction): whether it did (not when
    another attempt has taken it over or it has ended already), and its model's project
    (None when the model is gone)."""
    now = utcnow()
    project = select(Model.project_id).where(Model.id == Job.model_id).scalar_subquery()
    row = (
        await session.execute(
            update(Job)
            .where(_this_attempt(job_id, attempt))
            .values(updated_at=now, finished_at=now, **values)
            .returning(project)
        )
    ).first()
    return (False, None) if row is None else (True, row[0])


async def requeue(
    session: AsyncSession, job_id: uuid.UUID, attempt: int, error: dict[str, str] | None
) -> None:
    await session.execute(
        update(Job)
        .where(_this_attempt(job_id, attempt), Job.status == "running")
        .values(status="queued", error=error, updated_at=utcnow())
    )


async def lost(
    session: AsyncSession, queued_before: datetime, running_before: datetime
) -> list[uuid.UUID]:
    """Jobs nothing seems to be working on: queued but untouched since ``queued_before``
    (their queue entry may be gone: a crash before the enqueue, a Redis that lost its
    data, a restored database), or running with no sign of life since ``running_before``."""
    rows = await session.scalars(
        select(Job.id)
        .where(
            or_(
                (Job.status == "queued") & (Job.updated_at < queued_before),
                (Job.status == "running") & (Job.updated_at < running_before),
            )
        )
        .order_by(Job.created_at)
        .limit(1000)
    )
    return list(rows)


async def requeue_unfinished(session: AsyncSession) -> int:
    """Every job queued or running, queued again with its last sign of life long past, so
    the next sweep puts it on the queue; how many."""
    result = await session.execute(
        update(Job)
        .where(Job.status.in_(("queued", "running")))
        .values(status="queued", updated_at=datetime(2000, 1, 1, tzinfo=UTC))
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


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
