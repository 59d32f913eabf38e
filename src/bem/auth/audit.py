"""The audit log: who did what security-relevant thing, from where, with what outcome.

Rows are only ever inserted (database triggers refuse UPDATE and DELETE). Never put secrets
in ``details``: no tokens, codes, passwords; emails are reduced to a masked form.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import structlog
from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncSession

from bem.auth.models import AuditEvent
from bem.kit.ratelimit import client_ip
from bem.kit.state import state_of

security_log = structlog.get_logger("bem.security")


@dataclass(frozen=True)
class Origin:
    """Where a request came from, for the audit trail."""

    ip: str | None = None
    user_agent: str | None = None
    request_id: str | None = None


def origin_of(request: Request) -> Origin:
    """Who sent the request: behind a trusted proxy, the client it forwarded for."""
    trusted = list(state_of(request).settings.trusted_proxies)
    return Origin(
        ip=client_ip(request.scope, trusted) if request.client else None,
        user_agent=(request.headers.get("user-agent") or "")[:255] or None,
        request_id=structlog.contextvars.get_contextvars().get("request_id"),
    )


def mask_email(email: str) -> str:
    """``alice@example.com`` -> ``a***@example.com``: enough to correlate, not to harvest."""
    local, _, domain = email.partition("@")
    return f"{local[:1]}***@{domain}" if domain else "***"


def record(
    session: AsyncSession,
    origin: Origin,
    action: str,
    *,
    outcome: str = "success",
    actor_id: uuid.UUID | None = None,
    target_type: str | None = None,
    target_id: Any = None,
    **details: Any,
) -> None:
    """Add an audit row to the session (committed with the caller's transaction) and emit a
    security log line."""
    session.add(
        AuditEvent(
            action=action,
            outcome=outcome,
            actor_id=actor_id,
            ip=origin.ip,
            user_agent=origin.user_agent,
            request_id=origin.request_id,
            target_type=target_type,
            target_id=str(target_id) if target_id is not None else None,
            details=details,
        )
    )
    security_log.info(
        "audit",
        action=action,
        outcome=outcome,
        actor_id=str(actor_id) if actor_id else None,
        target_type=target_type,
        target_id=str(target_id) if target_id is not None else None,
    )
