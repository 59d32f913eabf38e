"""Where a request reads a version's data: a read replica that has replayed the version,
else the primary.

Versions are immutable once ready, so a replica that has the version ready holds exactly
what the primary does; one that has not replayed it yet (or is away) is passed over for this
request. The replica is consulted on first use only, so an answer from the cache costs it
nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import HTTPConnection

from bem.kit.db import SessionDep
from bem.kit.metrics import Metrics
from bem.kit.replicas import Replica, Replicas
from bem.kit.state import state_of
from bem.versions.models import Version


class VersionData:
    def __init__(self, primary: AsyncSession, replicas: Replicas | None, metrics: Metrics) -> None:
        self.primary = primary
        self.replicas = replicas
        self.metrics = metrics
        self._replica: tuple[Replica, AsyncSession] | None = None
        self._seen: set[uuid.UUID] = set()  # ready on the replica

    async def session(self, *versions: Version) -> AsyncSession:
        """A session that holds ``versions``: the replica's when it has them all ready."""
        if self.replicas is None:
            return self.primary
        wanted = {v.id for v in versions} - self._seen
        if not wanted:
            return self._replica[1] if self._replica else self.primary
        if self._replica is None and (replica := self.replicas.pick()) is not None:
            self._replica = (replica, replica.sessions())
        if self._replica is None:
            return self._read_at("none", "unavailable")
        replica, session = self._replica
        try:
            ready = await session.scalar(
                select(func.count())
                .select_from(Version)
                .where(Version.id.in_(wanted), Version.status == "ready")
            )
        except (SQLAlchemyError, OSError) as exc:
            replica.trip(exc)
            await self.close()
            return self._read_at(replica.name, "unavailable")
        if ready != len(wanted):
            return self._read_at(replica.name, "behind")
        self._seen |= wanted
        self._read_at(replica.name, "replica")
        return session

    def _read_at(self, replica: str, outcome: str) -> AsyncSession:
        """Count where this read goes; the primary's session (used unless on the replica)."""
        self.metrics.replica_reads.labels(replica, outcome).inc()
        return self.primary

    async def close(self) -> None:
        if self._replica is not None:
            await self._replica[1].close()
            self._replica = None


async def version_data(conn: HTTPConnection, session: SessionDep) -> AsyncIterator[VersionData]:
    state = state_of(conn)
    data = VersionData(session, state.replicas, state.metrics)
    try:
        yield data
    finally:
        await data.close()


# scope="function", as the session it builds on: closed before the answer is sent.
VersionDataDep = Annotated[VersionData, Depends(version_data, scope="function")]
