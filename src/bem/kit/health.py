"""Liveness and readiness probes. Readiness checks the database with a bounded timeout; the
observability issue extends it (Redis, migrations at head, draining, detail for admins)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request, Response
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

router = APIRouter(prefix="/health", tags=["health"])

CHECK_TIMEOUT_S = 1.5


@router.get("/live", summary="The process is up (touches no dependency)")
async def live() -> dict[str, str]:
    return {"status": "ok"}


async def _database(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))


@router.get(
    "/ready",
    summary="Ready to serve: the database answers within the check timeout",
    responses={503: {"description": "A dependency is failing; the failing checks are named"}},
)
async def ready(request: Request, response: Response) -> dict[str, object]:
    try:
        await asyncio.wait_for(_database(request.app.state.engine), CHECK_TIMEOUT_S)
        checks = {"database": "ok"}
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
        checks = {"database": f"failing: {type(exc).__name__}"}
    ok = all(v == "ok" for v in checks.values())
    response.status_code = 200 if ok else 503
    body: dict[str, object] = {"status": "ok" if ok else "failing", "checks": checks}
    limiter = getattr(request.app.state, "limiter", None)
    if limiter is not None and limiter.status == "degraded":
        # Still serving: limits fall back to per-process memory until Redis returns.
        body["degraded"] = ["rate_limit: Redis unreachable, per-process limits"]
    return body
