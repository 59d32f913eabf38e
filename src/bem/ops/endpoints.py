"""Operator endpoints: the detailed health report for admins."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Request

from bem import __version__
from bem.auth.dependencies import Access, allow
from bem.auth.permissions import ADMIN
from bem.kit.errors import problem_responses
from bem.kit.health import pool_stats, run_checks

router = APIRouter(tags=["health"], responses=problem_responses(401, 403))


@router.get("/health", summary="Every dependency's status and latency, pools, build (admins)")
async def health_detail(request: Request, _: Annotated[Access, allow(ADMIN)]) -> dict[str, Any]:
    app = request.app
    checks = await run_checks(app)
    limiter = app.state.limiter
    return {
        "status": "ok" if all(c["status"] == "ok" for c in checks.values()) else "failing",
        "checks": checks,
        "database_pool": pool_stats(app),
        "rate_limit_store": limiter.status if limiter is not None else "disabled",
        "migration_heads": list(app.state.migration_heads),
        "version": __version__,
        "uptime_s": round(time.time() - app.state.started_at, 1),
        "draining": app.state.draining,
    }
