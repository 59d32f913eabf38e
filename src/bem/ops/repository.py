from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bem.ops.models import Backup


async def record(
    session: AsyncSession, location: str, size: int, tables: dict[str, dict[str, Any]]
) -> None:
    rows = sum(t["rows"] for t in tables.values())
    session.add(Backup(location=location, bytes=size, tables=len(tables), rows=rows))


async def last_success(session: AsyncSession) -> datetime | None:
    result: datetime | None = await session.scalar(select(func.max(Backup.finished_at)))
    return result
