"""Events and webhooks: the business rules (no HTTP). ``live/`` follows and sends them
through these functions.

Domain code reports a change with :func:`publish` inside the transaction that makes it;
the event is visible to the feed and queued for webhooks exactly when that commits.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import secrets
import socket
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy import event as sa_event
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from bem.auth import audit
from bem.auth.audit import Origin
from bem.config import Settings
from bem.events import repository
from bem.events.models import Event, Webhook, WebhookDelivery
from bem.kit.db import utcnow
from bem.kit.errors import Conflict, NotFound, Unprocessable
from bem.kit.metrics import Metrics
from bem.kit.security import SecretBox

SIGNATURE_HEADER = "BEM-Signature"
# Kinds of the events published in a session, counted once the session commits.
APPENDED = "bem.events.appended"
# The transaction that holds the outbox lock, with the webhooks it found per project.
OUTBOX = "bem.events.outbox"


async def publish(
    session: AsyncSession,
    project_id: uuid.UUID,
    kind: str,
    data: dict[str, Any],
    model_id: uuid.UUID | None = None,
) -> Event:
    """Add an event, and a pending delivery for each matching webhook, to the session's
    transaction: they exist once the caller commits, and not at all if it rolls back.

    The outbox lock and each project's webhooks are taken once per transaction (an import
    publishes ``version.created`` and ``job.succeeded`` in one)."""
    transaction = session.sync_session.get_transaction()
    outbox: tuple[Any, dict[uuid.UUID, Sequence[Webhook]]] | None = session.info.get(OUTBOX)
    if outbox is None or outbox[0] is not transaction:
        await repository.lock_outbox(session)
        outbox = session.info[OUTBOX] = (transaction, {})
    hooks = outbox[1].get(project_id)
    if hooks is None:
        hooks = outbox[1][project_id] = await repository.active_webhooks(session, project_id)
    event = Event(project_id=project_id, kind=kind, model_id=model_id, data=data)
    session.add(event)
    await session.flush()
    for hook in hooks:
        if not hook.kinds or kind in hook.kinds:
            session.add(WebhookDelivery(webhook_id=hook.id, event_id=event.id))
    session.info.setdefault(APPENDED, []).append(kind)
    return event


def count_published(sessions: async_sessionmaker[AsyncSession], metrics: Metrics) -> None:
    """Count events in ``bem_events_total`` when (and only if) their transaction commits."""

    def committed(session: Session) -> None:
        for kind in session.info.pop(APPENDED, ()):
            metrics.events.labels(kind).inc()

    def rolled_back(session: Session, _previous: Any) -> None:
        session.info.pop(APPENDED, None)

    session_class = sessions.kw["sync_session_class"]  # see kit.db.session_factory
    sa_event.listen(session_class, "after_commit", committed)
    sa_event.listen(session_class, "after_soft_rollback", rolled_back)


def webhook_box(settings: Settings) -> SecretBox:
    """Seals webhook signing secrets at rest (a dump or backup alone cannot forge deliveries)."""
    return SecretBox(settings.secret_keys, "webhooks")


async def reseal_webhook_secrets(session: AsyncSession, settings: Settings) -> tuple[int, int]:
    """Seal every webhook's signing secret again with the current secret key: how many, and
    how many no configured key opens (left as they are)."""
    box, done, unreadable = webhook_box(settings), 0, 0
    for hook in await repository.all_webhooks(session):
        if (again := box.reseal(hook.secret)) is None:
            unreadable += 1
        else:
            hook.secret, done = again, done + 1
    return done, unreadable


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """``t=<unix time>,v1=<hex HMAC-SHA256 of "<t>." + body>``: the receiver recomputes it
    and rejects old timestamps, so a captured delivery cannot be replayed later."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def _forbidden_address(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    return not ip.is_global or ip.is_multicast


@dataclass(frozen=True)
class Destination:
    """Where a delivery goes: the address that passed the check, pinned, so the connection
    cannot be steered elsewhere by a second DNS answer (rebinding)."""

    url: str  # the webhook URL with its host replaced by the checked address
    host: str  # the Host header the receiver sees
    server_name: str  # TLS server name: SNI and the certificate's name check


def destination_key(url: str) -> str:
    """``scheme://host:port``: deliveries to one receiver share a concurrency budget."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.scheme}://{parts.hostname}:{port}"


async def resolve_destination(settings: Settings, url: str) -> Destination:
    """Resolve the receiver once and refuse loopback, private or link-local addresses
    (unless ``BEM_WEBHOOK_ALLOW_PRIVATE``). Called when a webhook is created and before each
    send (DNS may change in between); the send connects to the address checked here."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise Unprocessable(f"The webhook host {host!r} does not resolve.") from exc
    addresses = [str(info[4][0]) for info in infos]
    if not addresses:
        raise Unprocessable(f"The webhook host {host!r} does not resolve.")
    if not settings.webhook_allow_private and any(_forbidden_address(a) for a in addresses):
        raise Unprocessable(
            f"The webhook host {host!r} resolves to a private or local address; "
            "the server's operator may allow that with BEM_WEBHOOK_ALLOW_PRIVATE."
        )
    address = addresses[0].split("%", 1)[0]
    literal = f"[{address}]" if ":" in address else address
    pinned = urlunsplit(parts._replace(netloc=f"{literal}:{port}"))
    return Destination(url=pinned, host=parts.netloc.rpartition("@")[2], server_name=host)


async def create_webhook(
    session: AsyncSession,
    settings: Settings,
    origin: Origin,
    actor_id: uuid.UUID,
    project_id: uuid.UUID,
    url: str,
    kinds: Sequence[str],
) -> tuple[Webhook, str]:
    """The new webhook and its signing secret (stored sealed; shown to the caller once)."""
    await resolve_destination(settings, url)
    if await repository.webhook_count(session, project_id) >= settings.webhooks_per_project:
        raise Conflict(f"A project may have at most {settings.webhooks_per_project} webhooks.")
    secret = secrets.token_hex(32)
    hook = Webhook(
        project_id=project_id,
        url=url,
        kinds=sorted(set(kinds)),
        secret=webhook_box(settings).seal(secret),
        created_by=actor_id,
    )
    session.add(hook)
    await session.flush()
    audit.record(
        session,
        origin,
        "webhook.create",
        actor_id=actor_id,
        target_type="webhook",
        target_id=hook.id,
        project_id=str(project_id),
        host=urlsplit(url).hostname,
    )
    return hook, secret


async def get_webhook(
    session: AsyncSession, project_id: uuid.UUID, webhook_id: uuid.UUID
) -> Webhook:
    hook = await session.get(Webhook, webhook_id)
    if hook is None or hook.project_id != project_id:
        raise NotFound(f"Webhook {webhook_id} does not exist in this project.")
    return hook


async def delete_webhook(
    session: AsyncSession,
    origin: Origin,
    actor_id: uuid.UUID,
    project_id: uuid.UUID,
    webhook_id: uuid.UUID,
) -> None:
    await session.delete(await get_webhook(session, project_id, webhook_id))
    audit.record(
        session,
        origin,
        "webhook.delete",
        actor_id=actor_id,
        target_type="webhook",
        target_id=webhook_id,
        project_id=str(project_id),
    )


async def list_deliveries(
    session: AsyncSession,
    project_id: uuid.UUID,
    webhook_id: uuid.UUID,
    before: int | None,
    limit: int,
) -> Sequence[WebhookDelivery]:
    """Newest first; ``before`` is the id of the last delivery of the previous page."""
    await get_webhook(session, project_id, webhook_id)
    return await repository.deliveries_of(session, webhook_id, before, limit)


# ---- what live/ reads and writes: the feed, the sender ---------------------------------


async def last_id(session: AsyncSession, project_id: uuid.UUID | None = None) -> int:
    """Where the outbox ends (for one project, or for all)."""
    return await repository.last_id(session, project_id)


async def events_after(
    session: AsyncSession, after: int, limit: int, project_id: uuid.UUID | None = None
) -> Sequence[Event]:
    return await repository.events_after(session, after, limit, project_id)


async def webhooks_of(session: AsyncSession, project_id: uuid.UUID) -> Sequence[Webhook]:
    return await repository.webhooks_of(session, project_id)


async def claim_due(
    session: AsyncSession,
    free: int,
    busy: Counter[str],
    per_destination: int,
    lease: timedelta,
    *,
    candidates_per_slot: int = 4,
) -> list[tuple[WebhookDelivery, Webhook, Event]]:
    """Claim up to ``free`` due deliveries, oldest first, skipping receivers that already
    have ``per_destination`` in flight (``busy``, by ``destination_key``). The caller
    commits the claims before sending, so no other sender takes them."""
    due = await repository.due_deliveries(session, free * candidates_per_slot)
    counts, chosen = Counter(busy), []
    for delivery_id, url in due:
        key = destination_key(url)
        if counts[key] < per_destination:
            counts[key] += 1
            chosen.append(delivery_id)
        if len(chosen) == free:
            break
    return await repository.claim(session, chosen, lease) if chosen else []


async def record_attempt(
    session: AsyncSession,
    delivery_id: int,
    *,
    status: str,
    response_status: int | None,
    error: str | None,
    due_at: datetime | None = None,
) -> None:
    """What one try of a delivery came to; ``due_at``: when a retried one may go again."""
    values: dict[str, Any] = {"status": status, "response_status": response_status, "error": error}
    if status == "succeeded":
        values["delivered_at"] = utcnow()
    if due_at is not None:
        values["due_at"] = due_at
    await repository.update_delivery(session, delivery_id, values)


async def pending_deliveries(session: AsyncSession) -> tuple[int, datetime | None]:
    return await repository.pending_deliveries(session)
