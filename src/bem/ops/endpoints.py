"""Operator endpoints: the detailed health report for admins, and Prometheus metrics."""

from __future__ import annotations

import hmac
import ipaddress
from typing import Annotated, Any

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

from bem.auth.dependencies import allow
from bem.auth.models import Principal
from bem.auth.permissions import ADMIN, PUBLIC
from bem.kit.errors import Forbidden, Unauthorized, problem_responses
from bem.kit.state import SettingsDep, state_of
from bem.ops import service

router = APIRouter(tags=["health"], responses=problem_responses(401, 403))


@router.get("/health", summary="Every dependency's status and latency, pools, build (admins)")
async def health_detail(request: Request, _: Annotated[Principal, allow(ADMIN)]) -> dict[str, Any]:
    return await service.health_report(request.app)


@router.get(
    "/metrics",
    summary="Prometheus metrics (restricted by BEM_METRICS_TOKEN / BEM_METRICS_NETWORKS)",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Metrics text"}},
)
async def metrics(
    request: Request, settings: SettingsDep, _: Annotated[None, allow(PUBLIC)]
) -> Response:
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
    await service.refresh(request.app)
    return Response(state_of(request).metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
