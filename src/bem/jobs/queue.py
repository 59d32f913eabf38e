"""Queue adapters: arq on Redis (production) and an in-process runner (embedded default).

Both only carry job ids; the job's state lives in the ``jobs`` table, and both run jobs with
``service.execute``. The choice is configuration (``BEM_JOB_QUEUE``), never domain code.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from datetime import timedelta

import structlog
from arq.connections import ArqRedis
from redis.asyncio import ConnectionPool
from sqlalchemy.exc import SQLAlchemyError

from bem.config import Settings
from bem.jobs import repository
from bem.jobs.service import STALE_AFTER, Handler, JobContext, RetryLater, execute
from bem.kit.db import utcnow
from bem.kit.dberrors import classify

log = structlog.get_logger("bem.jobs")
ARQ_FUNCTION = "run_job"


def queue_name(settings: Settings) -> str:
    return f"{settings.redis_key_prefix}:jobs"


async def put(redis: ArqRedis, job_id: uuid.UUID) -> bool:
    """One queue entry for the job; False when it has one already (arq's ``_job_id`` makes
    enqueueing idempotent)."""
    return await redis.enqueue_job(ARQ_FUNCTION, str(job_id), _job_id=str(job_id)) is not None


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
        await put(self.redis, job_id)

    async def depth(self) -> int:
        return int(await self.redis.zcard(self.name))

    async def close(self) -> None:
        await self.redis.aclose()


class LocalQueue:
    """Runs jobs as tasks of this process, ``concurrency`` at a time. Every ``sweep_s`` it
    picks up what nobody works on (queued, or running with no sign of life: a previous run
    of this process crashed, or another process did), skipping its own; on stop it cancels
    running jobs, which puts them back to queued for the next start."""

    def __init__(
        self,
        ctx: JobContext,
        handlers: Mapping[str, Handler],
        concurrency: int = 1,
        sweep_s: float = 30.0,
    ) -> None:
        self.ctx = ctx
        ctx.enqueue = self.enqueue  # a job's follow-ups run here too
        self.handlers = handlers
        self.slots = asyncio.Semaphore(concurrency)
        self.sweep_s = sweep_s
        self.tasks: set[asyncio.Task[None]] = set()
        self.mine: set[uuid.UUID] = set()  # spawned here and not ended
        self.waiting = 0
        self.sweeper: asyncio.Task[None] | None = None

    def _spawn(self, job_id: uuid.UUID, takeover: bool, delay_s: float = 0.0) -> None:
        self.mine.add(job_id)
        task = asyncio.create_task(self._run(job_id, takeover, delay_s), name=f"job-{job_id}")
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run(self, job_id: uuid.UUID, takeover: bool, delay_s: float) -> None:
        self.waiting += 1
        started = False
        again: float | None = None
        try:
            await asyncio.sleep(delay_s)
            async with self.slots:
                self.waiting -= 1
                started = True
                await execute(self.ctx, self.handlers, job_id, takeover=takeover)
        except RetryLater as retry:
            again = retry.delay_s
        except SQLAlchemyError:
            # The database failed under the job's own bookkeeping: try again later. The row
            # may still say running; it is taken over once stale.
            log.exception("job.database_error", job_id=str(job_id))
            again = STALE_AFTER.total_seconds()
        finally:
            if not started:
                self.waiting -= 1
            self.mine.discard(job_id)
        if again is not None:
            self._spawn(job_id, takeover=False, delay_s=again)

    async def enqueue(self, job_id: uuid.UUID) -> None:
        self._spawn(job_id, takeover=False)

    async def start(self) -> None:
        self.sweeper = asyncio.create_task(self._sweep_forever(), name="job-sweeper")

    async def _sweep_forever(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception as exc:  # the database is away: the next sweep finds them
                if classify(exc) is None:
                    raise
                log.warning("jobs.sweep_failed", error=type(exc).__name__)
            await asyncio.sleep(self.sweep_s)

    async def sweep(self) -> int:
        """Spawn the jobs nobody works on; how many."""
        now = utcnow()
        async with self.ctx.sessions() as session:
            found = await repository.lost(
                session, now - timedelta(seconds=self.sweep_s), now - STALE_AFTER
            )
        lost = [job_id for job_id in found if job_id not in self.mine]
        for job_id in lost:
            self._spawn(job_id, takeover=False)
        if lost:
            log.info("jobs.resumed", count=len(lost))
            if self.ctx.metrics is not None:
                self.ctx.metrics.jobs_resumed.inc(len(lost))
        return len(lost)

    async def depth(self) -> int:
        return self.waiting

    async def close(self) -> None:
        tasks = [*self.tasks, *filter(None, [self.sweeper])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
