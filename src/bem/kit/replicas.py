"""Read replicas (``BEM_DATABASE_READ_URL``): PostgreSQL streaming replicas that take the
reads which cannot go stale.

A replica replays the primary's WAL with some lag, so only data that never changes once
written is read there, and only after the caller has seen it on the replica (a ready
version: ``versions/reading.py``); what is missing there is read on the primary, so a
replica may make an answer slower, never wrong. Requests take the replicas in turn; one that
fails is skipped for ``RETRY_S`` (its readers use the primary meanwhile) instead of making
every request wait for its connect timeout.
"""

from __future__ import annotations

import asyncio
import itertools
import time

import structlog
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from bem.config import Settings
from bem.kit.db import create_engine, session_factory

log = structlog.get_logger("bem.db")

RETRY_S = 10.0
LAG_TIMEOUT_S = 1.0
# Seconds behind the primary: 0 when everything received is replayed (an idle primary
# sends nothing, so the last replayed commit's age would grow without any lag).
LAG = text(
    "SELECT CASE WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0"
    " ELSE coalesce(extract(epoch FROM now() - pg_last_xact_replay_timestamp()), 0) END"
)


class Replica:
    def __init__(self, name: str, engine: AsyncEngine) -> None:
        self.name = name  # its position in BEM_DATABASE_READ_URL, for metrics and logs
        self.engine = engine
        self.sessions = session_factory(engine)
        self._retry_at = 0.0

    def usable(self) -> bool:
        return time.monotonic() >= self._retry_at

    def trip(self, exc: BaseException) -> None:
        self._retry_at = time.monotonic() + RETRY_S
        log.warning("replica_degraded", replica=self.name, error=type(exc).__name__)

    async def lag_s(self) -> float | None:
        """Replay lag in seconds; None when the replica does not answer in time."""

        async def read() -> float:
            async with self.engine.connect() as conn:
                return float(await conn.scalar(LAG) or 0)

        try:
            return await asyncio.wait_for(read(), LAG_TIMEOUT_S)
        except (SQLAlchemyError, OSError, TimeoutError) as exc:
            self.trip(exc)
            return None


class Replicas:
    def __init__(self, settings: Settings) -> None:
        self.all = [
            Replica(str(i), create_engine(settings.model_copy(update={"database_url": url})))
            for i, url in enumerate(map(SecretStr, settings.read_urls))
        ]
        self._turns = itertools.cycle(self.all)

    def pick(self) -> Replica | None:
        """The next usable replica, in turn; None when none is."""
        for _ in self.all:
            replica = next(self._turns)
            if replica.usable():
                return replica
        return None

    async def lags(self) -> dict[str, float | None]:
        found = await asyncio.gather(*(replica.lag_s() for replica in self.all))
        return {replica.name: lag for replica, lag in zip(self.all, found, strict=True)}

    async def dispose(self) -> None:
        for replica in self.all:
            await replica.engine.dispose()
