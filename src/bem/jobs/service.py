"""Creating, reading and running jobs. The same ``execute`` runs under arq (``bem worker``),
the in-process runner (embedded default) and ``bem import``."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

import structlog
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bem.config import Settings
from bem.events import service as events
from bem.jobs import repository
from bem.jobs.models import Job
from bem.jobs.schemas import JobParams
from bem.kit.db import commit_early, utcnow
from bem.kit.dberrors import classify
from bem.kit.errors import NotFound, Problem
from bem.kit.errortracking import report_exception
from bem.kit.metrics import Metrics
from bem.kit.state import JobQueue
from bem.kit.storage import SourceStore, open_store

log = structlog.get_logger("bem.jobs")

# A running job whose row has not changed for this long has lost its worker; a running
# attempt shows a sign of life at least every ALIVE_EVERY_S (PostgreSQL).
STALE_AFTER = timedelta(seconds=120)
ALIVE_EVERY_S = 30.0
PROGRESS_INTERVAL_S = 0.5
RETRY_DELAY_S = 5.0
# Runs of a job that found the database away before claiming it cost no attempt; this many
# (a minute at RETRY_DELAY_S) ride out an outage before the queue, or ``bem import``, gives up.
OUTAGE_TRIES = 12

# Called with (phase, done, total) as a job advances; the CLI draws its progress bar with it.
Watch = Callable[[str, int, int | None], None]


@dataclass
class JobContext:
    """What job functions get: configuration, a session factory and the file store."""

    settings: Settings
    sessions: async_sessionmaker[AsyncSession]
    store: SourceStore
    tracer: trace.Tracer = field(default_factory=lambda: trace.get_tracer("bem.jobs"))
    metrics: Metrics | None = None
    watch: Watch | None = None
    # Where a job's follow-ups go as soon as it succeeds (the queue adapter sets it); without
    # one (``bem import``) they wait, queued, for a worker's sweep.
    enqueue: Callable[[uuid.UUID], Awaitable[object]] | None = None

    def count(self, kind: str, outcome: str, seconds: float | None = None) -> None:
        if self.metrics is None:
            return
        self.metrics.jobs.labels(kind, outcome).inc()
        if seconds is not None:
            self.metrics.job_duration.labels(kind).observe(seconds)


class Superseded(Exception):
    """This attempt no longer owns its job: another took it over (the job looked abandoned)
    or it has ended. Raised before the attempt's result commits, so it is rolled back."""


class RetryLater(Exception):
    """Raised to the queue adapter: run this job again after ``delay_s``."""

    def __init__(self, delay_s: float) -> None:
        super().__init__(f"retry in {delay_s}s")
        self.delay_s = delay_s


@dataclass
class Progress:
    """Records a job's progress on its row, at most every ``PROGRESS_INTERVAL_S`` and not in
    the attempt's first interval (a job done by then needs no progress row: a transaction
    saved on every small import; the claim already says it runs).

    SQLite has one writer: while the version is being written (phase ``store``) the job row
    cannot be updated, so on SQLite the stored progress stays at the end of extraction and
    only the in-process ``watch`` sees the store phase."""

    ctx: JobContext
    job_id: uuid.UUID
    attempt: int
    total: int | None = None
    _last: float = field(default_factory=time.monotonic)

    async def __call__(self, phase: str, done: int, total: int | None) -> None:
        if total is not None:
            self.total = total
        if self.ctx.watch is not None:
            self.ctx.watch(phase, done, self.total)
        now = time.monotonic()
        if now - self._last < PROGRESS_INTERVAL_S:
            return
        if phase == "store" and self.ctx.settings.is_sqlite:
            return
        self._last = now
        async with self.ctx.sessions() as session:
            await repository.set_progress(
                session, self.job_id, self.attempt, phase, done, self.total
            )
            await session.commit()


@dataclass(frozen=True)
class JobResult:
    version_id: uuid.UUID
    elements: int
    # Jobs the handler created in its result's transaction, to run next (an import's
    # geometry): enqueued once the result has committed.
    follow_ups: tuple[uuid.UUID, ...] = ()


Handler = Callable[[JobContext, Job, Progress], Awaitable[JobResult]]


class Loop(Protocol):
    """Work a job process does beside jobs (backups: ``ops/runner.py``)."""

    def start(self) -> None: ...

    async def close(self) -> None: ...


LoopFactory = Callable[[async_sessionmaker[AsyncSession], Settings], Loop]


def job_context(
    settings: Settings, sessions: Any, provider: Any = None, metrics: Metrics | None = None
) -> JobContext:
    """``provider``: the OpenTelemetry tracer provider job spans go to (none: tracing off);
    ``metrics``: where job counts and durations go (none: not counted)."""
    ctx = JobContext(
        settings=settings,
        sessions=sessions,
        store=open_store(settings),
        metrics=metrics,
    )
    if provider is not None:
        ctx.tracer = provider.get_tracer("bem.jobs")
    return ctx


async def create_job(
    session: AsyncSession,
    *,
    kind: str,
    model_id: uuid.UUID,
    created_by: uuid.UUID | None,
    params: JobParams,
    max_attempts: int,
) -> Job:
    carrier: dict[str, str] = {}
    propagate.inject(carrier)  # the worker continues this request's trace
    request_id = structlog.contextvars.get_contextvars().get("request_id")
    origin = params.model_copy(update={"trace": carrier, "request_id": request_id})
    job = Job(
        kind=kind,
        status="queued",
        model_id=model_id,
        created_by=created_by,
        params=origin.model_dump(mode="json"),
        max_attempts=max_attempts,
        done=0,
        attempts=0,
        updated_at=utcnow(),
    )
    session.add(job)
    await session.flush()
    return job


async def _finish(session: AsyncSession, job: Job, **values: Any) -> None:
    """Record the end of this attempt of ``job`` and announce it (``job.succeeded`` or
    ``job.failed``) in the caller's transaction; :class:`Superseded` if the attempt no
    longer owns the job."""
    finished, project_id = await repository.finish(session, job.id, job.attempts, **values)
    if not finished:
        raise Superseded()
    if project_id is not None:
        data: dict[str, Any] = {"job_id": str(job.id), "kind": job.kind}
        if values["status"] == "succeeded":
            data["version_id"] = str(values["version_id"])
        else:
            data["error"] = values["error"]
        kind = f"job.{values['status']}"
        await events.publish(session, project_id, kind, data, model_id=job.model_id)


async def succeed(session: AsyncSession, job: Job, result: JobResult) -> None:
    """A handler records its job's success with this, in the transaction that makes the
    result, before committing it: a job retried after its result committed then finds
    itself succeeded, and a superseded attempt's result is rolled back (never twice)."""
    await _finish(
        session,
        job,
        status="succeeded",
        version_id=result.version_id,
        error=None,
        phase="store",
        done=result.elements,
        total=result.elements,
    )


async def submit(session: AsyncSession, queue: JobQueue | None, job: Job) -> None:
    """Commit a new job and hand it to the queue; a queue that is away fails the job (kept:
    it commits) and the request answers 503, so nothing waits for a job no worker will see."""
    await commit_early(session)  # the job's row must exist before a worker looks for it
    assert queue is not None
    try:
        await queue.enqueue(job.id)
    except (RedisError, OSError) as exc:
        await refuse(session, job, "The job queue is unavailable.")
        raise Problem(
            "The job queue is unavailable; try again shortly.",
            status=503,
            slug="queue-unavailable",
            headers={"Retry-After": "30"},
        ) from exc


async def _follow_up(ctx: JobContext, result: JobResult) -> None:
    if ctx.enqueue is None:
        return
    for job_id in result.follow_ups:
        try:
            await ctx.enqueue(job_id)
        except (RedisError, OSError) as exc:  # queued in the table: the sweep finds it
            log.warning("job.follow_up_not_enqueued", follow_up=str(job_id), error=repr(exc))


async def refuse(session: AsyncSession, job: Job, detail: str) -> None:
    """A job that never reached the queue: failed at once (and kept, though the request
    fails), so nothing waits for it."""
    await _finish(
        session, job, status="failed", error={"type": "queue-unavailable", "detail": detail}
    )
    await commit_early(session)


async def waiting(session: AsyncSession) -> tuple[int, datetime | None]:
    """How many jobs wait to run, and when the oldest of them was created."""
    return await repository.waiting(session)


async def requeue_after_restore(session: AsyncSession) -> int:
    """After a restore, jobs the snapshot caught queued or running run again (their source
    files were restored with the database): a job is never left waiting on a queue entry
    that only the old Redis had. Attempts are kept, so the limit still holds."""
    return await repository.requeue_unfinished(session)


async def get_job(session: AsyncSession, job_id: uuid.UUID) -> Job:
    job = await session.get(Job, job_id)
    if job is None:
        raise NotFound(f"Job {job_id} does not exist.")
    return job


async def run_here(ctx: JobContext, handlers: Mapping[str, Handler], job_id: uuid.UUID) -> Job:
    """Run a job in this process until it succeeds or fails for good (``bem import``, the
    ingest benchmark); returns its final row. A database away for longer than the queue
    would wait (``OUTAGE_TRIES``) ends it with the database's error."""
    for _ in range(ctx.settings.job_max_attempts + OUTAGE_TRIES):
        try:
            await execute(ctx, handlers, job_id, takeover=False)
            break
        except RetryLater as retry:
            last = retry
            await asyncio.sleep(retry.delay_s)
    else:
        raise last.__cause__ or last
    async with ctx.sessions() as session:
        job = await session.get(Job, job_id)
    assert job is not None
    return job


async def _fail(
    ctx: JobContext, job: Job, slug: str, detail: str, errors: list[Any] | None = None
) -> None:
    error: dict[str, Any] = {"type": slug, "detail": detail}
    if errors:
        error["errors"] = errors  # which element and field: the slug alone does not say
    try:
        async with _bookkeeping("fail"), ctx.sessions() as session:
            await _finish(session, job, status="failed", error=error)
            await session.commit()
    except Superseded:  # another attempt owns the job now: its outcome stands
        log.warning("job.superseded", attempt=job.attempts)


@contextlib.asynccontextmanager
async def _bookkeeping(step: str) -> AsyncIterator[None]:
    """A write of the job's own row (claim, requeue, fail) that finds the database away is
    :class:`RetryLater`: the queue runs the job again, and that run claims it. Raised out of
    the queue's function, it would end the job in the queue while its row still says queued
    or running (the fault test's outage outlasted a 5 s retry delay: the retry's claim failed
    and the import waited for the 120 s stale sweep)."""
    try:
        yield
    except Exception as exc:
        if classify(exc) is None:
            raise
        log.warning("job.bookkeeping_failed", step=step, error=type(exc).__name__)
        raise RetryLater(RETRY_DELAY_S) from exc


async def _keep_alive(ctx: JobContext, job: Job) -> None:
    """Touch the running attempt's row now and then, so a long phase without progress
    (parsing a large file) does not look abandoned. Not on SQLite: its one writer is busy
    with the version, and the in-process queue knows its own jobs anyway."""
    if ctx.settings.is_sqlite:
        return
    while True:
        await asyncio.sleep(ALIVE_EVERY_S)
        try:
            async with ctx.sessions() as session:
                await repository.set_progress(session, job.id, job.attempts, None, 0, None)
                await session.commit()
        except Exception as exc:
            if classify(exc) is None:
                raise
            log.warning("job.keep_alive_failed", error=type(exc).__name__)  # next time, then


async def execute(
    ctx: JobContext, handlers: Mapping[str, Handler], job_id: uuid.UUID, *, takeover: bool
) -> None:
    """Claim the job and run it. Bad input fails it for good; anything else is retried
    (``RetryLater``) until ``max_attempts``. ``takeover`` claims a job still marked running
    (the queue knows its previous worker is gone); otherwise only a stale one."""
    running_before = utcnow() if takeover else utcnow() - STALE_AFTER
    async with _bookkeeping("claim"), ctx.sessions() as session:
        job = await repository.claim(session, job_id, running_before)
        await session.commit()
        if job is None:
            log.info("job.not_claimed", job_id=str(job_id))
            return
    origin = JobParams.model_validate(job.params)
    structlog.contextvars.bind_contextvars(
        job_id=str(job.id), job_kind=job.kind, request_id=origin.request_id
    )
    if job.attempts > job.max_attempts:
        last = (job.error or {}).get("detail", "the worker stopped during the job")
        await _fail(ctx, job, "gave-up", f"Gave up after {job.max_attempts} attempts: {last}")
        ctx.count(job.kind, "failed")
        log.error("job.gave_up", attempts=job.max_attempts)
        return
    token = otel_context.attach(propagate.extract(origin.trace))
    started = time.monotonic()
    alive = asyncio.create_task(_keep_alive(ctx, job))
    try:
        with ctx.tracer.start_as_current_span(
            f"job {job.kind}", attributes={"bem.job.id": str(job.id)}
        ):
            log.info("job.start", attempt=job.attempts)
            result = await handlers[job.kind](ctx, job, Progress(ctx, job.id, job.attempts))
    except Superseded:
        ctx.count(job.kind, "superseded")
        log.warning("job.superseded", attempt=job.attempts)
    except Problem as exc:
        await _fail(ctx, job, exc.slug, exc.detail, exc.extra.get("errors"))
        ctx.count(job.kind, "rejected", time.monotonic() - started)  # bad input, not ours
        log.warning("job.failed", problem=exc.slug, detail=exc.detail)
    except asyncio.CancelledError:
        with contextlib.suppress(RetryLater):  # the queue retries a cancelled job anyway
            async with _bookkeeping("requeue"), ctx.sessions() as session:
                await repository.requeue(
                    session,
                    job.id,
                    job.attempts,
                    {"type": "interrupted", "detail": "The worker stopped during the job."},
                )
                await session.commit()
        ctx.count(job.kind, "interrupted")
        log.warning("job.interrupted")
        raise
    except Exception as exc:  # the job boundary: record, then retry or give up
        log.exception("job.error", attempt=job.attempts)
        report_exception(
            exc,
            {
                "request_id": origin.request_id,
                "job_id": str(job.id),
                "job_kind": job.kind,
            },
            job={"attempt": job.attempts, "max_attempts": job.max_attempts},
        )
        detail = f"Attempt {job.attempts} failed unexpectedly ({type(exc).__name__})."
        if job.attempts < job.max_attempts:
            ctx.count(job.kind, "retried")
            # Retried even when the row cannot be marked: the retry claims a job still marked
            # running (takeover), instead of the stale sweep finding it minutes later.
            async with _bookkeeping("requeue"), ctx.sessions() as session:
                await repository.requeue(
                    session, job.id, job.attempts, {"type": "internal-error", "detail": detail}
                )
                await session.commit()
            raise RetryLater(RETRY_DELAY_S) from exc
        await _fail(ctx, job, "internal-error", detail)
        ctx.count(job.kind, "failed", time.monotonic() - started)
    else:  # the handler recorded the success with its result (``succeed``)
        ctx.count(job.kind, "succeeded", time.monotonic() - started)
        if ctx.metrics is not None and job.kind == "import":
            ctx.metrics.import_elements.inc(result.elements)
        await _follow_up(ctx, result)
        log.info(
            "job.succeeded",
            version_id=str(result.version_id),
            elements=result.elements,
            seconds=round(time.monotonic() - started, 3),
        )
    finally:
        alive.cancel()
        otel_context.detach(token)
        structlog.contextvars.unbind_contextvars("job_id", "job_kind")
