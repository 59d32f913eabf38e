from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bem.geometry.models import VersionGeometry
from bem.jobs.models import Job


async def get(
    session: AsyncSession, version_id: uuid.UUID
) -> tuple[VersionGeometry, Job | None] | None:
    """A version's geometry row and its job (gone when the job was deleted)."""
    query = (
        select(VersionGeometry, Job)
        .outerjoin(Job, Job.id == VersionGeometry.job_id)
        .where(VersionGeometry.version_id == version_id)
    )
    row = (await session.execute(query)).one_or_none()
    return None if row is None else (row[0], row[1])
