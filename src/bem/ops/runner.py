"""The backup runner: a loop in ``bem worker`` (or the embedded job process) that makes the
backups asked for (``POST /v1/admin/backups``) and the schedule's (``BEM_BACKUP_SCHEDULE``).

The backups table is its own queue, not a job kind (jobs belong to a model and report to
its project's feed): a request is a row, a runner claims the oldest with one UPDATE, so
two runners never make the same backup, and a fire time of the schedule becomes a row whose
id is derived from it, so however many runners see that time, one backup is made. A backup
running past ``BEM_BACKUP_TIMEOUT_S`` lost its runner and is marked failed.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bem.config import Settings
from bem.kit.db import utcnow
from bem.kit.dberrors import classify
from bem.kit.errortracking import report_exception
from bem.kit.tracing import untraced
from bem.ops import repository, service
from bem.ops.errors import BackupError

log = structlog.get_logger("bem.ops")


class BackupRunner:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], settings: Settings) -> None:
        self.sessions = sessions
        self.settings = settings
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name="backup-runner")

    async def close(self) -> None:
        """Stop; a backup in progress is cancelled (its row is then abandoned, see above)."""
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)

    async def run_once(self) -> bool:
        """Request what the schedule says is due, settle abandoned backups, then make the
        oldest requested one; whether there was one."""
        now = utcnow()
        with untraced():  # a poll that finds nothing is not worth a trace
            backup_id = await self._claim(now)
        if backup_id is None:
            return False
        from bem.ops.backups import create_backup  # boto3 and pyrage: at the first backup

        log.info("backup.started", backup_id=str(backup_id))
        location = await create_backup(self.settings, backup_id=backup_id)
        log.info("backup.succeeded", backup_id=str(backup_id), location=location)
        return True

    async def _claim(self, now: datetime) -> uuid.UUID | None:
        """An idle poll only reads: on SQLite a write, even of no row, takes the database's
        write lock, and every 10 s that would hold up a writer."""
        async with self.sessions() as session:
            if self.settings.backup_schedule is not None:
                await service.request_scheduled(session, self.settings.backup_schedule, now)
            if await repository.active(session) is None:
                await session.commit()
                return None
            stale = now - timedelta(seconds=self.settings.backup_timeout_s)
            if abandoned := await repository.abandon(session, stale):
                log.warning("backup.abandoned", count=abandoned)
            backup_id = await repository.claim(session)
            await session.commit()
        return backup_id

    async def _run(self) -> None:
        while True:
            try:
                if await self.run_once():
                    continue  # another may be waiting: no pause between backups
            except BackupError as exc:  # recorded on its row; the next request may succeed
                log.error("backup.failed", error=str(exc))
            except Exception as exc:
                if classify(exc) is None:  # a bug, not an outage: report it, keep running
                    report_exception(exc, {"component": "backup-runner"})
                    log.exception("backup.runner_error")
                else:
                    log.warning("backup.runner_waiting", error=type(exc).__name__)
            await asyncio.sleep(self.settings.backup_poll_s)
