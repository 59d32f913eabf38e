"""``bem worker``: arq consuming the Redis queue, running the same job functions as the
in-process runner, and sending webhook deliveries (``live/tasks.py``).

A Redis outage does not end it: a poll that fails waits (0.5 s, doubling to 10 s), logs,
counts ``bem_queue_errors_total`` and polls again; running jobs carry on (they need only the
database). Every ``BEM_JOB_SWEEP_S`` it queues again the jobs nobody works on (queued long
ago, or running with no sign of life), so a Redis that lost its data, a crash between a job's
commit and its enqueue, or a restored database leave nothing waiting on a human.

On SIGTERM running jobs get ``BEM_SHUTDOWN_TIMEOUT`` to finish; any still running are then
cancelled and put back (arq retries cancelled jobs at once). A worker that
dies without notice holds its job until arq's in-progress lock expires, ``job_timeout_s`` +
10 s after it started; then another worker takes it over (``takeover=True``) and retries it.
"""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

import structlog
from arq import Retry
from arq.connections import ArqRedis, RedisSettings
from arq.worker import Worker, func
from prometheus_client import start_http_server
from redis.exceptions import RedisError

from bem import __version__
from bem.config import Settings
from bem.events.service import count_published
from bem.jobs import repository
from bem.jobs.queue import ARQ_FUNCTION, put, queue_name
from bem.jobs.service import (
    OUTAGE_TRIES,
    STALE_AFTER,
    Handler,
    LoopFactory,
    RetryLater,
    execute,
    job_context,
)
from bem.kit.build import build_of
from bem.kit.db import create_engine, session_factory, utcnow
from bem.kit.dberrors import classify
from bem.kit.errortracking import init_error_tracking
from bem.kit.metrics import Metrics
from bem.kit.tracing import start_client_tracing, stop_tracing, tracer_provider
from bem.live.tasks import Deliverer

FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 10.0
STARTUP_REDIS_TRIES = 300  # about five minutes of arq's one-second connection retries
log = structlog.get_logger("bem.worker")


class ResilientWorker(Worker):
    """arq's worker, riding out Redis outages instead of exiting on the first error."""

    backoff_s = FIRST_BACKOFF_S

    async def _poll_iteration(self) -> None:
        try:
            await super()._poll_iteration()
        except (RedisError, OSError) as exc:
            log.warning(
                "worker.redis_unavailable", error=type(exc).__name__, retry_s=self.backoff_s
            )
            if (metrics := self.ctx.get("metrics")) is not None:
                metrics.queue_errors.inc()
            await asyncio.sleep(self.backoff_s)
            self.backoff_s = min(self.backoff_s * 2, MAX_BACKOFF_S)
            return
        if self.backoff_s != FIRST_BACKOFF_S:
            log.info("worker.redis_recovered")
            self.backoff_s = FIRST_BACKOFF_S

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        """One at a time, so a Redis error while starting one gives back the slot arq took
        for it (arq would keep it, and after ``max_jobs`` such errors start nothing more)."""
        for job_id in job_ids:
            counted = self.job_counter
            try:
                await super().start_jobs([job_id])
            except (RedisError, OSError):
                if self.job_counter > counted:
                    self.job_counter -= 1
                    self.sem.release()
                raise


async def sweep(settings: Settings, sessions: Any, redis: ArqRedis) -> int:
    """Queue again every job nobody works on; how many went back on the queue (arq's job id
    keeps one queue entry per job, so a job still queued or running is left alone)."""
    now = utcnow()
    async with sessions() as session:
        lost = await repository.lost(
            session, now - timedelta(seconds=settings.job_sweep_s), now - STALE_AFTER
        )
    queued = 0
    for job_id in lost:
        if await put(redis, job_id):
            queued += 1
    return queued


async def _sweep_forever(ctx: dict[str, Any], settings: Settings) -> None:
    while True:
        try:
            if queued := await sweep(settings, ctx["sessions"], ctx["redis"]):
                log.info("jobs.resumed", count=queued)
                ctx["metrics"].jobs_resumed.inc(queued)
        except Exception as exc:  # Redis or the database is away: the next sweep will do
            if classify(exc) is None:
                raise
            log.warning("jobs.sweep_failed", error=type(exc).__name__)
        await asyncio.sleep(settings.job_sweep_s)


async def run_job(ctx: dict[str, Any], job_id: str) -> None:
    try:
        await execute(ctx["bem"], ctx["handlers"], uuid.UUID(job_id), takeover=True)
    except RetryLater as retry:
        raise Retry(defer=retry.delay_s) from retry


def build_worker(
    settings: Settings,
    handlers: Mapping[str, Handler],
    *,
    loops: Sequence[LoopFactory] = (),
    burst: bool = False,
    signals: bool = True,
) -> Worker:
    """arq's worker running ``handlers`` (the registry of job kinds: ``bem.handlers``) and
    ``loops`` beside them."""
    assert settings.redis_url is not None, "bem worker needs BEM_REDIS_URL"

    async def startup(ctx: dict[str, Any]) -> None:
        build = build_of(settings.build_commit)
        init_error_tracking(settings, build)
        engine = create_engine(settings)
        ctx["engine"] = engine
        provider = None
        if settings.tracing_enabled:
            provider = tracer_provider(
                service="bem-worker",
                version=__version__,
                environment=settings.profile.value,
                endpoint=settings.otlp_endpoint,
                sample_ratio=settings.tracing_sample_ratio,
            )
            start_client_tracing(provider, engine)
        ctx["tracer_provider"] = provider
        metrics = Metrics(build)
        if settings.worker_metrics_port is not None:
            ctx["metrics_server"], _ = start_http_server(
                settings.worker_metrics_port, addr=settings.host, registry=metrics.registry
            )
        sessions = ctx["sessions"] = session_factory(engine)
        ctx["metrics"] = metrics
        count_published(sessions, metrics)
        ctx["bem"] = job_context(settings, sessions, provider, metrics)
        ctx["bem"].enqueue = functools.partial(put, ctx["redis"])
        ctx["handlers"] = handlers
        ctx["deliverer"] = Deliverer(  # webhooks go out from here
            sessions, settings, metrics, provider.get_tracer("bem.webhooks") if provider else None
        )
        ctx["deliverer"].start()
        ctx["loops"] = [make(sessions, settings) for make in loops]
        for loop in ctx["loops"]:
            loop.start()
        ctx["sweeper"] = asyncio.create_task(_sweep_forever(ctx, settings), name="job-sweeper")

    async def shutdown(ctx: dict[str, Any]) -> None:
        if "sweeper" in ctx:
            ctx["sweeper"].cancel()
            await asyncio.gather(ctx["sweeper"], return_exceptions=True)
        if "deliverer" in ctx:
            await ctx["deliverer"].close()
        for loop in ctx.get("loops", ()):
            await loop.close()
        if "engine" in ctx:
            await ctx["engine"].dispose()
        if ctx.get("tracer_provider") is not None:
            stop_tracing(ctx["tracer_provider"])
        if ctx.get("metrics_server") is not None:
            ctx["metrics_server"].shutdown()

    redis_settings = RedisSettings.from_dsn(settings.redis_url.get_secret_value())
    redis_settings.conn_retries = STARTUP_REDIS_TRIES  # a worker may start before Redis
    return ResilientWorker(
        functions=[
            # Our attempts (claims) bound the job; arq's tries also cover runs that found the
            # database away before claiming, and one more records the final failure.
            func(run_job, name=ARQ_FUNCTION, max_tries=settings.job_max_attempts + OUTAGE_TRIES + 1)
        ],
        redis_settings=redis_settings,
        queue_name=queue_name(settings),
        on_startup=startup,
        on_shutdown=shutdown,
        job_timeout=settings.job_timeout_s,
        max_jobs=settings.worker_concurrency,
        keep_result=0,
        burst=burst,
        poll_delay=0.2,
        handle_signals=signals,
        # SIGTERM: take no new jobs, let running ones finish within the shutdown bound, then
        # cancel them (they go back to the queue and the next worker retries them at once).
        job_completion_wait=int(settings.shutdown_timeout),
    )
