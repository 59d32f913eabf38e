"""Outbox and webhook queries (no HTTP)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from bem.events.models import Event, Webhook, WebhookDelivery
from bem.kit.db import utcnow

# Held by every transaction that appends an event, until it commits: ids are then handed out
# in commit order, so a reader that has seen id N never later finds a committed id below N.
# (A sequence alone gives ids in insert order; a slower transaction could commit id 10 after
# a reader moved past 11.) SQLite has one writer at a time anyway.
OUTBOX_LOCK = 0x42454D5F4C495645  # "BEM_LIVE"


async def lock_outbox(session: AsyncSession) -> None:
    """Take the outbox lock until this transaction ends (PostgreSQL; see ``OUTBOX_LOCK``)."""
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": OUTBOX_LOCK})


async def active_webhooks(session: AsyncSession, project_id: uuid.UUID) -> Sequence[Webhook]:
    query = select(Webhook).where(Webhook.project_id == project_id, Webhook.active.is_(True))
    return (await session.scalars(query)).all()


async def last_id(session: AsyncSession, project_id: uuid.UUID | None = None) -> int:
    query = select(func.max(Event.id))
    if project_id is not None:
        query = query.where(Event.project_id == project_id)
    return int(await session.scalar(query) or 0)


async def events_after(
    session: AsyncSession, after: int, limit: int, project_id: uuid.UUID | None = None
) -> Sequence[Event]:
    query = select(Event).where(Event.id > after).order_by(Event.id).limit(limit)
    if project_id is not None:
        query = query.where(Event.project_id == project_id)
    return (await session.scalars(query)).all()


async def webhooks_of(session: AsyncSession, project_id: uuid.UUID) -> Sequence[Webhook]:
    query = select(Webhook).where(Webhook.project_id == project_id).order_by(Webhook.created_at)
    return (await session.scalars(query)).all()


async def all_webhooks(session: AsyncSession) -> Sequence[Webhook]:
    return (await session.scalars(select(Webhook))).all()


async def webhook_count(session: AsyncSession, project_id: uuid.UUID) -> int:
    query = select(func.count()).where(Webhook.project_id == project_id)
    return int(await session.scalar(query) or 0)


async def deliveries_of(
    session: AsyncSession, webhook_id: uuid.UUID, before: int | None, limit: int
) -> Sequence[WebhookDelivery]:
    query = select(WebhookDelivery).where(WebhookDelivery.webhook_id == webhook_id)
    if before is not None:
        query = query.where(WebhookDelivery.id < before)
    return (await session.scalars(query.order_by(WebhookDelivery.id.desc()).limit(limit))).all()


async def due_deliveries(session: AsyncSession, limit: int) -> list[tuple[int, str]]:
    """Pending deliveries that are due, oldest first, with their webhook's URL (the sender
    picks among them by destination before claiming)."""
    rows = await session.execute(
        select(WebhookDelivery.id, Webhook.url)
        .join(Webhook, Webhook.id == WebhookDelivery.webhook_id)
        .where(WebhookDelivery.status == "pending", WebhookDelivery.due_at <= utcnow())
        .order_by(WebhookDelivery.due_at)
        .limit(limit)
    )
    return [(delivery_id, url) for delivery_id, url in rows]


async def claim(
    session: AsyncSession, delivery_ids: list[int], lease: timedelta
) -> list[tuple[WebhookDelivery, Webhook, Event]]:
    """Claim deliveries by pushing their ``due_at`` past the lease with a conditional
    UPDATE each: two senders never both send one (unless a sender outlives its lease, when
    at-least-once delivery sends it again). The caller commits the claims before sending."""
    now = utcnow()
    claimed: list[int] = []
    for delivery_id in delivery_ids:
        result = await session.execute(
            update(WebhookDelivery)
            .where(
                WebhookDelivery.id == delivery_id,
                WebhookDelivery.status == "pending",
                WebhookDelivery.due_at <= now,
            )
            .values(due_at=now + lease, attempts=WebhookDelivery.attempts + 1)
        )
        if result.rowcount:  # type: ignore[attr-defined]
            claimed.append(delivery_id)
    if not claimed:
        return []
    rows = await session.execute(
        select(WebhookDelivery, Webhook, Event)
        .join(Webhook, Webhook.id == WebhookDelivery.webhook_id)
        .join(Event, Event.id == WebhookDelivery.event_id)
        .where(WebhookDelivery.id.in_(claimed))
        .order_by(WebhookDelivery.id)
    )
    return [(d, w, e) for d, w, e in rows]


async def update_delivery(session: AsyncSession, delivery_id: int, values: dict[str, Any]) -> None:
    await session.execute(
        update(WebhookDelivery).where(WebhookDelivery.id == delivery_id).values(**values)
    )


async def pending_deliveries(session: AsyncSession) -> tuple[int, datetime | None]:
    """How many deliveries wait, and since when the oldest one does."""
    count, oldest = (
        await session.execute(
            select(func.count(), func.min(WebhookDelivery.created_at)).where(
                WebhookDelivery.status == "pending"
            )
        )
    ).one()
    if oldest is not None and oldest.tzinfo is None:  # SQLite returns aggregates naive
        oldest = oldest.replace(tzinfo=UTC)
    return int(count), oldest
