"""Operator endpoints: the detailed health report for admins, and Prometheus metrics."""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import time
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy.exc import SQLAlchemyError

from bem import __version__
from bem.auth.dependencies import Access, allow
from bem.auth.permissions import ADMIN, PUBLIC
from bem.config import Settings
from bem.jobs import repository as jobs
from bem.kit.db import utcnow
from bem.kit.errors import Forbidden, Unauthorized, problem_responses
from bem.kit.health import pool_stats, run_checks
from bem.ops import repository as backups

router = APIRouter(tags=["health"], responses=problem_responses(401, 403))
log = structlog.get_logger("bem.ops")
QUERY_TIMEOUT_S = 1.0


async def _jobs_waiting(request: Request) -> dict[str, Any]:
    """Jobs waiting in the jobs table (the truth, whichever queue carries them), also set on
    the queue gauges. A database that does not answer leaves the gauges as they were."""
    app = request.app
    settings: Settings = app.state.settings
    out: dict[str, Any] = {"queue": settings.job_queue.value}
    try:
        async with app.state.sessions() as session:
            count, oldest = await asyncio.wait_for(jobs.waiting(session), QUERY_TIMEOUT_S)
    except (SQLAlchemyError, TimeoutError) as exc:
        log.warning("jobs.stats_unavailable", error=type(exc).__name__)
        return {**out, "error": "the jobs table did not answer"}
    age = max((utcnow() - oldest).total_seconds(), 0.0) if oldest is not None else 0.0
    app.state.metrics.jobs_waiting.set(count)
    app.state.metrics.oldest_job_age.set(age)
    return {**out, "queued": count, "oldest_queued_age_s": round(age, 1)}


async def _last_backup(request: Request) -> dict[str, Any]:
    """The newest completed backup (from the backups table), also set on its gauge."""
    app = request.app
    try:
        async with app.state.sessions() as session:
            finished = await asyncio.wait_for(backups.last_success(session), QUERY_TIMEOUT_S)
    except (SQLAlchemyError, TimeoutError) as exc:
        log.warning("backups.stats_unavailable", error=type(exc).__name__)
        return {"error": "the backups table did not answer"}
    app.state.metrics.last_backup.set(finished.timestamp() if finished is not None else 0)
    if finished is None:
        return {"last_success_at": None}
    age = max((utcnow() - finished).total_seconds(), 0.0)
    return {"last_success_at": finished.isoformat(), "age_s": round(age, 1)}


@router.get("/health", summary="Every dependency's status and latency, pools, build (admins)")
async def health_detail(request: Request, _: Annotated[Access, allow(ADMIN)]) -> dict[str, Any]:
    app = request.app
    checks = await run_checks(app)
    limiter = app.state.limiter
    return {
        "jobs": await _jobs_waiting(request),
        "backup": await _last_backup(request),
        "status": "ok" if all(c["status"] == "ok" for c in checks.values()) else "failing",
        "checks": checks,
        "database_pool": pool_stats(app),
        "rate_limit_store": limiter.status if limiter is not None else "disabled",
        "cache": app.state.cache.describe() if app.state.cache is not None else "disabled",
        "migration_heads": list(app.state.migration_heads),
        "version": __version__,
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
    await _jobs_waiting(request)  # refreshes the queue gauges
    await _last_backup(request)
    return Response(request.app.state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
