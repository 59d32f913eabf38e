"""Health: liveness (no dependencies), readiness (each dependency checked concurrently with its
own timeout, so the answer comes within 2 s even when one hangs) and the details behind them.

Readiness fails when the database does not answer, the database schema is not at the
migration head, or the process is draining after SIGTERM. Redis and the job queue only
degrade it: every process shares them and rides out their loss (per-process rate limits,
the in-memory cache; uploads answer 503 ``queue-unavailable``), so failing readiness on them
would take every process out of the load balancer at once for nothing.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from bem.kit.state import state_of

router = APIRouter(prefix="/health", tags=["health"])

CHECK_TIMEOUT_S = 1.5
DEGRADING = frozenset({"redis", "job_queue"})


class NotReady(Exception):
    pass


async def _database(app: FastAPI) -> None:
    async with state_of(app).engine.connect() as conn:
        await conn.execute(text("SELECT 1"))


async def _migrations(app: FastAPI) -> None:
    heads = state_of(app).migration_heads
    try:
        async with state_of(app).engine.connect() as conn:
            current = set(
                (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalars()
            )
    except SQLAlchemyError as exc:
        raise NotReady("no migration table") from exc
    if current != set(heads):
        raise NotReady(f"schema at {sorted(current)}, code needs {sorted(heads)}")


async def _redis(app: FastAPI) -> None:
    client = state_of(app).redis
    assert client is not None
    await client.ping()


async def _job_queue(app: FastAPI) -> None:
    queue = state_of(app).job_queue
    assert queue is not None
    await queue.depth()  # arq: a Redis round trip; in-process: always answers


async def _draining(app: FastAPI) -> None:
    if state_of(app).draining:
        raise NotReady("shutting down")


def checks_for(app: FastAPI) -> dict[str, Callable[[FastAPI], Awaitable[None]]]:
    checks: dict[str, Callable[[FastAPI], Awaitable[None]]] = {
        "database": _database,
        "migrations": _migrations,
        "draining": _draining,
    }
    if state_of(app).redis is not None:
        checks["redis"] = _redis
    if state_of(app).job_queue is not None:
        checks["job_queue"] = _job_queue
    return checks


async def _timed(app: FastAPI, check: Callable[[FastAPI], Awaitable[None]]) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        await asyncio.wait_for(check(app), CHECK_TIMEOUT_S)
        result: dict[str, Any] = {"status": "ok"}
    except TimeoutError:
        result = {"status": "failing", "error": f"no answer within {CHECK_TIMEOUT_S} s"}
    except NotReady as exc:
        result = {"status": "failing", "error": str(exc)}
    except Exception as exc:  # noqa: BLE001 - any other failure is "not ready", named below
        result = {"status": "failing", "error": type(exc).__name__}
    result["latency_ms"] = round((time.perf_counter() - started) * 1000, 1)
    return result


async def run_checks(app: FastAPI) -> dict[str, dict[str, Any]]:
    """Every check, concurrently, each bounded; the outcome is also set on
    ``bem_health_check_ok``, so readiness alerts work whoever asks (a probe, a scrape)."""
    checks = checks_for(app)
    results = dict(
        zip(checks, await asyncio.gather(*(_timed(app, c) for c in checks.values())), strict=True)
    )
    for name, result in results.items():
        state_of(app).metrics.health.labels(name).set(1 if result["status"] == "ok" else 0)
    return results


@router.get("/live", summary="The process is up (touches no dependency)")
async def live() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/ready",
    summary="Ready to serve: database, schema at head, not draining (Redis only degrades)",
    responses={503: {"description": "A required check is failing; the failing checks are named"}},
)
async def ready(request: Request, response: Response) -> dict[str, object]:
    results = await run_checks(request.app)
    down = sorted(name for name, r in results.items() if r["status"] != "ok")
    failing = [name for name in down if name not in DEGRADING]
    degraded = [name for name in down if name in DEGRADING]
    limiter = state_of(request).limiter
    if limiter is not None and limiter.status == "degraded":
        degraded.append("rate_limit")  # still limited, by per-process memory
    response.status_code = 503 if failing else 200
    body: dict[str, object] = {
        "status": "failing" if failing else "degraded" if degraded else "ok",
        "checks": {name: r["status"] for name, r in results.items()},
    }
    if failing:
        body["failing"] = failing
    if degraded:
        body["degraded"] = degraded
    return body


def pool_stats(app: FastAPI) -> dict[str, Any]:
    pool = state_of(app).engine.sync_engine.pool
    stats: dict[str, Any] = {"class": type(pool).__name__}
    for name in ("size", "checkedout", "overflow", "checkedin"):
        if hasattr(pool, name):
            stats[name] = getattr(pool, name)()
    return stats


def mark_draining_on_sigterm(app: FastAPI) -> None:
    """Flip readiness to 503 as soon as SIGTERM arrives, then let the server's own handler
    (uvicorn's graceful shutdown) run. Called while the server's handlers are installed."""
    if threading.current_thread() is not threading.main_thread():
        return
    previous = signal.getsignal(signal.SIGTERM)
    if not callable(previous):
        return

    def handler(signum: int, frame: Any) -> None:
        state_of(app).draining = True
        previous(signum, frame)

    signal.signal(signal.SIGTERM, handler)
