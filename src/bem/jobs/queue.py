"""Queue adapters: arq on Redis (production) and an in-process runner (embedded default).

Both only carry job ids; the job's state lives in the ``jobs`` table, and both run jobs with
``service.execute``. The choice is configuration (``BEM_JOB_QUEUE``), never domain code.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from typing import Protocol

import structlog
from arq.connections import ArqRedis
from redis.asyncio import ConnectionPool
from sqlalchemy.exc import SQLAlchemyError

from bem.config import Settings
from bem.jobs import repository
from bem.jobs.service import STALE_AFTER, Handler, JobContext, RetryLater, execute
from bem.kit.db import utcnow

log = structlog.get_logger("bem.jobs")
ARQ_FUNCTION = "run_job"


def queue_name(settings: Settings) -> str:
    return f"{settings.redis_key_prefix}:jobs"


class JobQueue(Protocol):
    async def enqueue(self, job_id: uuid.UUID) -> None: ...

    async def depth(self) -> int: ...

    async def close(self) -> None: ...


class ArqQueue:
    """Enqueues into the Redis list that ``bem worker`` (arq) consumes."""

    def __init__(self, settings: Settings) -> None:
        assert settings.redis_url is not None
        pool = ConnectionPool.from_url(
            settings.redis_url.get_secret_value(), socket_timeout=2, socket_connect_timeout=2
        )
        self.name = queue_name(settings)
        self.redis = ArqRedis(connection_pool=pool, default_queue_name=self.name)

    async def enqueue(self, job_id: uuid.UUID) -> None:
        # arq's _job_id makes enqueueing idempotent: one queue entry per job.
        await self.redis.enqueue_job(ARQ_FUNCTION, str(job_id), _job_id=str(job_id))

    async def depth(self) -> int:
        return int(await self.redis.zcard(self.name))

    async def close(self) -> None:
        await self.redis.aclose()


class LocalQueue:
    """Runs jobs as tasks of this process, ``concurrency`` at a time. On start it picks up
    what a previous run left (queued, or running with no sign of life); on stop it cancels
    running jobs, which puts them back to queued for the next start."""

    def __init__(
        self, ctx: JobContext, handlers: Mapping[str, Handler], concurrency: int = 1
    ) -> None:
        self.ctx = ctx
        self.handlers = handlers
        self.slots = asyncio.Semaphore(concurrency)
        self.tasks: set[asyncio.Task[None]] = set()
        self.waiting = 0

    def _spawn(self, job_id: uuid.UUID, takeover: bool, delay_s: float = 0.0) -> None:
        task = asyncio.create_task(self._run(job_id, takeover, delay_s), name=f"job-{job_id}")
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run(self, job_id: uuid.UUID, takeover: bool, delay_s: float) -> None:
        self.waiting += 1
        started = False
        try:
            await asyncio.sleep(delay_s)
            async with self.slots:
                self.waiting -= 1
                started = True
                await execute(self.ctx, self.handlers, job_id, takeover=takeover)
        except RetryLater as retry:
            self._spawn(job_id, takeover=False, delay_s=retry.delay_s)
        except SQLAlchemyError:
            # The database failed under the job's own bookkeeping: try again later. The row
            # may still say running; it is taken over once stale.
            log.exception("job.database_error", job_id=str(job_id))
            self._spawn(job_id, takeover=False, delay_s=STALE_AFTER.total_seconds())
        finally:
            if not started:
                self.waiting -= 1

    async def enqueue(self, job_id: uuid.UUID) -> None:
        self._spawn(job_id, takeover=False)

    async def start(self) -> None:
        try:
            async with self.ctx.sessions() as session:
                left = await repository.unfinished(session, utcnow() - STALE_AFTER)
        except SQLAlchemyError as exc:
            # Start anyway (readiness reports the database); they resume at the next start.
            log.warning("jobs.resume_failed", error=str(exc).splitlines()[0])
            return
        for job_id in left:
            self._spawn(job_id, takeover=False)
        if left:
            log.info("jobs.resumed", count=len(left))

    async def depth(self) -> int:
        return self.waiting

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
