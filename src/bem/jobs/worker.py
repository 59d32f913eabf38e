"""``bem worker``: arq consuming the Redis queue, running the same job functions as the
in-process runner, and sending webhook deliveries (``live/tasks.py``).

On SIGTERM running jobs get ``BEM_SHUTDOWN_TIMEOUT`` to finish; any still running are then
cancelled and put back (arq retries cancelled jobs at once). A worker that
dies without notice holds its job until arq's in-progress lock expires, ``job_timeout_s`` +
10 s after it started; then another worker takes it over (``takeover=True``) and retries it.
"""

from __future__ import annotations

import uuid
from typing import Any

from arq import Retry
from arq.connections import RedisSettings
from arq.worker import Worker, func
from prometheus_client import start_http_server

from bem import __version__
from bem.config import Settings
from bem.jobs.handlers import HANDLERS, job_context
from bem.jobs.queue import ARQ_FUNCTION, queue_name
from bem.jobs.service import RetryLater, execute
from bem.kit.build import build_of
from bem.kit.db import create_engine, session_factory
from bem.kit.errortracking import init_error_tracking
from bem.kit.metrics import Metrics
from bem.kit.tracing import start_client_tracing, stop_tracing, tracer_provider
from bem.live.service import count_published
from bem.live.tasks import Deliverer


async def run_job(ctx: dict[str, Any], job_id: str) -> None:
    try:
        await execute(ctx["bem"], HANDLERS, uuid.UUID(job_id), takeover=True)
    except RetryLater as retry:
        raise Retry(defer=retry.delay_s) from retry


def build_worker(settings: Settings, *, burst: bool = False, signals: bool = True) -> Worker:
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
        sessions = session_factory(engine)
        count_published(sessions, metrics)
        ctx["bem"] = job_context(settings, sessions, provider, metrics)
        ctx["deliverer"] = Deliverer(  # webhooks go out from here
            sessions, settings, metrics, provider.get_tracer("bem.webhooks") if provider else None
        )
        ctx["deliverer"].start()

    async def shutdown(ctx: dict[str, Any]) -> None:
        if "deliverer" in ctx:
            await ctx["deliverer"].close()
        if "engine" in ctx:
            await ctx["engine"].dispose()
        if ctx.get("tracer_provider") is not None:
            stop_tracing(ctx["tracer_provider"])
        if ctx.get("metrics_server") is not None:
            ctx["metrics_server"].shutdown()

    return Worker(
        functions=[
            # One arq try more than ours, so our own bookkeeping records the final failure.
            func(run_job, name=ARQ_FUNCTION, max_tries=settings.job_max_attempts + 1)
        ],
        redis_settings=RedisSettings.from_dsn(settings.redis_url.get_secret_value()),
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
