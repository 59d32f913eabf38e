"""Operator endpoints: the detailed health report for admins, and Prometheus metrics."""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import structlog
from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from bem.auth.dependencies import Access, allow
from bem.auth.permissions import ADMIN, PUBLIC
from bem.config import Settings
from bem.events import service as events
from bem.jobs import repository as jobs
from bem.kit.db import utcnow
from bem.kit.errors import Forbidden, Unauthorized, problem_responses
from bem.kit.health import pool_stats, run_checks
from bem.ops import repository as backups

router = APIRouter(tags=["health"], responses=problem_responses(401, 403))
log = structlog.get_logger("bem.ops")
QUERY_TIMEOUT_S = 1.0
T = TypeVar("T")


async def _stats(
    request: Request, read: Callable[[AsyncSession], Awaitable[T]], what: str
) -> tuple[T] | None:
    """One bounded read for the health detail and the scrape gauges, as a 1-tuple (its value
    may be None); None, logged, when the database does not answer, so the gauges keep their
    last values."""
    try:
        async with request.app.state.sessions() as session:
            return (await asyncio.wait_for(read(session), QUERY_TIMEOUT_S),)
    except (SQLAlchemyError, TimeoutError) as exc:
        log.warning(f"{what}.stats_unavailable", error=type(exc).__name__)
        return None


async def _jobs_waiting(request: Request) -> dict[str, Any]:
    """Jobs waiting in the jobs table (the truth, whichever queue carries them), also set on
    the queue gauges."""
    metrics, settings = request.app.state.metrics, request.app.state.settings
    out: dict[str, Any] = {"queue": settings.job_queue.value}
    read = await _stats(request, jobs.waiting, "jobs")
    if read is None:
        return {**out, "error": "the jobs table did not answer"}
    ((count, oldest),) = read
    age = max((utcnow() - oldest).total_seconds(), 0.0) if oldest is not None else 0.0
    metrics.jobs_waiting.set(count)
    metrics.oldest_job_age.set(age)
    return {**out, "queued": count, "oldest_queued_age_s": round(age, 1)}


async def _last_backup(request: Request) -> dict[str, Any]:
    """The newest completed backup (from the backups table), also set on its gauge."""
    read = await _stats(request, backups.last_success, "backups")
    if read is None:
        return {"error": "the backups table did not answer"}
    (finished,) = read
    request.app.state.metrics.last_backup.set(finished.timestamp() if finished else 0)
    if finished is None:
        return {"last_success_at": None}
    age = max((utcnow() - finished).total_seconds(), 0.0)
    return {"last_success_at": finished.isoformat(), "age_s": round(age, 1)}


async def _live(request: Request) -> dict[str, Any]:
    """This process's feed connections, and the webhook deliveries waiting (set on their
    gauge)."""
    hub = request.app.state.hub
    out: dict[str, Any] = {
        "connections": dict(hub.counts),
        "last_event_id": hub.last_id,
    }
    read = await _stats(request, events.pending_deliveries, "webhooks")
    if read is None:
        return {**out, "webhooks": {"error": "the webhook deliveries table did not answer"}}
    ((count, oldest),) = read
    request.app.state.metrics.webhooks_pending.set(count)
    age = max((utcnow() - oldest).total_seconds(), 0.0) if oldest is not None else 0.0
    return {**out, "webhooks": {"pending": count, "oldest_pending_age_s": round(age, 1)}}


async def _refresh(request: Request) -> dict[str, Any]:
    """Readiness checks and the tables behind the scrape-time gauges, read concurrently and
    each bounded (slow reads cost the longest timeout, not their sum); sets those gauges."""
    checks, jobs_waiting, last_backup, live = await asyncio.gather(
        run_checks(request.app), _jobs_waiting(request), _last_backup(request), _live(request)
    )
    return {"checks": checks, "jobs": jobs_waiting, "backup": last_backup, "live": live}


@router.get("/health", summary="Every dependency's status and latency, pools, build (admins)")
async def health_detail(request: Request, _: Annotated[Access, allow(ADMIN)]) -> dict[str, Any]:
    app = request.app
    state = await _refresh(request)
    limiter = app.state.limiter
    return {
        **state,
        "status": "ok" if all(c["status"] == "ok" for c in state["checks"].values()) else "failing",
        "database_pool": pool_stats(app),
        "rate_limit_store": limiter.status if limiter is not None else "disabled",
        "cache": app.state.cache.describe() if app.state.cache is not None else "disabled",
        "migration_heads": list(app.state.migration_heads),
        "version": app.state.build.version,
        "commit": app.state.build.commit,
        "uptime_s": round(time.time() - app.state.started_at, 1),
        "draining": app.state.draining,
    }


@router.get(
    "/metrics",
    summary="Prometheus metrics (restricted by BEM_METRICS_TOKEN / BEM_METRICS_NETWORKS)",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Metrics text"}},
)
async def metrics(request: Request, _: Annotated[Access, allow(PUBLIC)]) -> Response:
    settings: Settings = request.app.state.settings
    if settings.metrics_networks:
        try:
            client = ipaddress.ip_address(request.client.host if request.client else "")
        except ValueError:
            client = None
        if client is None or not any(client in net for net in settings.metrics_networks):
            raise Forbidden("Metrics are not served to this address.")
    if settings.metrics_token is not None:
        expected = f"Bearer {settings.metrics_token.get_secret_value()}"
        if not hmac.compare_digest(request.headers.get("authorization", ""), expected):
            raise Unauthorized("The metrics token is missing or wrong.")
    await _refresh(request)
    return Response(request.app.state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
