"""Operator endpoints: the detailed health report and backups for admins, and Prometheus
metrics."""

from __future__ import annotations

import hmac
import ipaddress
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Request, Response, status
from prometheus_client import CONTENT_TYPE_LATEST

from bem.auth.audit import origin_of
from bem.auth.dependencies import allow
from bem.auth.models import Principal
from bem.auth.permissions import ADMIN, PUBLIC
from bem.kit.db import SessionDep
from bem.kit.errors import Forbidden, Unauthorized, problem_responses
from bem.kit.pagination import CursorParam, LimitParam, Page, decode_time_id_cursor, page_of
from bem.kit.state import SettingsDep, state_of
from bem.ops import service
from bem.ops.models import Backup
from bem.ops.schemas import BackupOut

router = APIRouter(tags=["health"], responses=problem_responses(401, 403))
Admin = Annotated[Principal, allow(ADMIN)]


@router.get("/health", summary="Every dependency's status and latency, pools, build (admins)")
async def health_detail(request: Request, _: Admin) -> dict[str, Any]:
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


@router.post(
    "/v1/admin/backups",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=BackupOut,
    tags=["admin"],
    responses=problem_responses(409),
    summary="Start a backup (bem worker or the embedded job runner makes it)",
)
async def request_backup(
    request: Request, response: Response, session: SessionDep, caller: Admin
) -> Backup:
    backup = await service.request_backup(session, origin_of(request), caller.user)
    response.headers["Location"] = f"/v1/admin/backups/{backup.id}"
    return backup


@router.get(
    "/v1/admin/backups",
    response_model=Page[BackupOut],
    tags=["admin"],
    responses=problem_responses(400, 422),
    summary="Backups, newest first, with their state and verification",
)
async def list_backups(
    session: SessionDep, _: Admin, cursor: CursorParam = None, limit: LimitParam = 100
) -> Page[BackupOut]:
    rows = await service.backups(session, decode_time_id_cursor(cursor), limit + 1)
    page, next_cursor = page_of(rows, limit, lambda b: [b.requested_at.isoformat(), str(b.id)])
    return Page(items=[BackupOut.model_validate(b) for b in page], next_cursor=next_cursor)


@router.get(
    "/v1/admin/backups/{backup_id}",
    response_model=BackupOut,
    tags=["admin"],
    responses=problem_responses(404, 422),
    summary="One backup",
)
async def get_backup(backup_id: uuid.UUID, session: SessionDep, _: Admin) -> Backup:
    return await service.backup(session, backup_id)
