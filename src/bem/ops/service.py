"""The health report for admins and the tables behind the scrape-time gauges; backups
asked for through the API and by the schedule (ops/runner.py runs them)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

import structlog
from croniter import croniter
from fastapi import FastAPI
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from bem.auth import audit
from bem.auth.audit import Origin
from bem.auth.models import User
from bem.events import service as events
from bem.jobs import service as jobs
from bem.kit.db import utcnow
from bem.kit.errors import Conflict, NotFound
from bem.kit.health import pool_stats, run_checks
from bem.kit.state import state_of
from bem.live.hub import Hub
from bem.ops import repository
from bem.ops.models import Backup

log = structlog.get_logger("bem.ops")
# A schedule's fire time names its backup: uuid5 of this and the time (ops/runner.py).
SCHEDULE_NAMESPACE = uuid.UUID("6f4f8a52-3c1e-4d7e-9a53-0c2b1f5e8d41")
QUERY_TIMEOUT_S = 1.0
T = TypeVar("T")


async def _stats(
    app: FastAPI, read: Callable[[AsyncSession], Awaitable[T]], what: str
) -> tuple[T] | None:
    """One bounded read for the health detail and the scrape gauges, as a 1-tuple (its value
    may be None); None, logged, when the database does not answer, so the gauges keep their
    last values."""
    try:
        async with state_of(app).sessions() as session:
            return (await asyncio.wait_for(read(session), QUERY_TIMEOUT_S),)
    except (SQLAlchemyError, TimeoutError) as exc:
        log.warning(f"{what}.stats_unavailable", error=type(exc).__name__)
        return None


async def _jobs_waiting(app: FastAPI) -> dict[str, Any]:
    """Jobs waiting in the jobs table (the truth, whichever queue carries them), also set on
    the queue gauges."""
    metrics, settings = state_of(app).metrics, state_of(app).settings
    out: dict[str, Any] = {"queue": settings.job_queue.value}
    read = await _stats(app, jobs.waiting, "jobs")
    if read is None:
        return {**out, "error": "the jobs table did not answer"}
    ((count, oldest),) = read
    age = max((utcnow() - oldest).total_seconds(), 0.0) if oldest is not None else 0.0
    metrics.jobs_waiting.set(count)
    metrics.oldest_job_age.set(age)
    return {**out, "queued": count, "oldest_queued_age_s": round(age, 1)}


async def _last_backup(app: FastAPI) -> dict[str, Any]:
    """The newest completed backup (from the backups table), also set on its gauge."""
    read = await _stats(app, repository.last_success, "backups")
    if read is None:
        return {"error": "the backups table did not answer"}
    (finished,) = read
    state_of(app).metrics.last_backup.set(finished.timestamp() if finished else 0)
    if finished is None:
        return {"last_success_at": None}
    age = max((utcnow() - finished).total_seconds(), 0.0)
    return {"last_success_at": finished.isoformat(), "age_s": round(age, 1)}


async def _live(app: FastAPI) -> dict[str, Any]:
    """This process's feed connections, and the webhook deliveries waiting (set on their
    gauge)."""
    hub = state_of(app).resource(Hub)
    out: dict[str, Any] = {
        "connections": dict(hub.counts),
        "last_event_id": hub.last_id,
    }
    read = await _stats(app, events.pending_deliveries, "webhooks")
    if read is None:
        return {**out, "webhooks": {"error": "the webhook deliveries table did not answer"}}
    ((count, oldest),) = read
    state_of(app).metrics.webhooks_pending.set(count)
    age = max((utcnow() - oldest).total_seconds(), 0.0) if oldest is not None else 0.0
    return {**out, "webhooks": {"pending": count, "oldest_pending_age_s": round(age, 1)}}


async def _replicas(app: FastAPI) -> dict[str, Any]:
    """Each read replica's replay lag (None: it did not answer), also set on its gauge."""
    replicas = state_of(app).replicas
    if replicas is None:
        return {}
    lags = await replicas.lags()
    for name, lag in lags.items():
        if lag is not None:
            state_of(app).metrics.replica_lag.labels(name).set(lag)
    return {name: {"lag_s": lag} for name, lag in lags.items()}


async def refresh(app: FastAPI) -> dict[str, Any]:
    """Readiness checks and the tables behind the scrape-time gauges, read concurrently and
    each bounded (slow reads cost the longest timeout, not their sum); sets those gauges."""
    checks, jobs_waiting, last_backup, live, replicas = await asyncio.gather(
        run_checks(app), _jobs_waiting(app), _last_backup(app), _live(app), _replicas(app)
    )
    report = {"checks": checks, "jobs": jobs_waiting, "backup": last_backup, "live": live}
    return {**report, "replicas": replicas} if replicas else report


async def health_report(app: FastAPI) -> dict[str, Any]:
    """What admins see at ``/health``: every check and table read above, pools, build."""
    state, report = state_of(app), await refresh(app)
    checks_ok = all(c["status"] == "ok" for c in report["checks"].values())
    return {
        **report,
        "status": "ok" if checks_ok else "failing",
        "database_pool": pool_stats(app),
        "rate_limit_store": state.limiter.status if state.limiter is not None else "disabled",
        "cache": state.cache.describe() if state.cache is not None else "disabled",
        "migration_heads": list(state.migration_heads),
        "version": state.build.version,
        "commit": state.build.commit,
        "uptime_s": round(time.time() - state.started_at, 1),
        "draining": state.draining,
    }


async def request_backup(session: AsyncSession, origin: Origin, user: User) -> Backup:
    """Ask for a backup now (a runner starts it within ``BEM_BACKUP_POLL_S``); one at a time."""
    if (busy := await repository.active(session)) is not None:
        raise Conflict(
            f"Backup {busy.id} is {busy.status}; ask again when it has finished.",
            backup_id=str(busy.id),
        )
    backup = await repository.request(session, "api", user.id)
    audit.record(
        session,
        origin,
        "backup.requested",
        actor_id=user.id,
        target_type="backup",
        target_id=backup.id,
    )
    return backup


async def request_scheduled(session: AsyncSession, schedule: str, now: datetime) -> bool:
    """Ask for the backup of the schedule's last fire time, once however many runners ask.
    A runner that was down at a fire time asks when it comes back: one backup, not one per
    missed time."""
    fire: datetime = croniter(schedule, now).get_prev(datetime)
    backup_id = uuid.uuid5(SCHEDULE_NAMESPACE, fire.isoformat())
    if await repository.get(session, backup_id) is not None:  # asked already: only read
        return False
    return await repository.request_once(session, backup_id, "schedule", fire)


async def backups(
    session: AsyncSession, before: tuple[datetime, uuid.UUID] | None, limit: int
) -> Sequence[Backup]:
    return await repository.newest_first(session, before, limit)


async def backup(session: AsyncSession, backup_id: uuid.UUID) -> Backup:
    if (found := await repository.get(session, backup_id)) is None:
        raise NotFound(f"Backup {backup_id} does not exist.")
    return found
