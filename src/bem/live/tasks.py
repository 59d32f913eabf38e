"""Webhook delivery: a loop in ``bem worker`` (or the embedded process) that sends due
deliveries from ``webhook_deliveries``.

Deliveries are rows written with their event, so none is lost when the sender or a
receiver is down; each is sent at least once, retried with backoff (``webhook_retry_base_s``
times 3 per attempt, at most six hours apart) until ``webhook_max_attempts``, and its last
answer is kept for the delivery log.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import httpx
import orjson
import structlog
from opentelemetry import trace
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bem import __version__
from bem.config import Settings
from bem.kit.db import utcnow
from bem.kit.errors import Problem
from bem.kit.errortracking import report_exception
from bem.kit.metrics import Metrics
from bem.kit.tracing import untraced
from bem.live import repository, service
from bem.live.models import Event, Webhook, WebhookDelivery
from bem.live.schemas import EventOut

log = structlog.get_logger("bem.webhooks")

BATCH = 20
IDLE_S = 1.0
MAX_DELAY_S = 6 * 3600.0
ERROR_CHARS = 500


class Deliverer:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        settings: Settings,
        metrics: Metrics | None = None,
        tracer: trace.Tracer | None = None,
    ) -> None:
        self.sessions = sessions
        self.settings = settings
        self.metrics = metrics
        # One trace per delivery: its outgoing POST and the recording of its answer.
        self.tracer = tracer or trace.get_tracer("bem.webhooks")
        self._client: httpx.AsyncClient | None = None  # made at the first delivery (~50 ms)
        # A claimed delivery is someone else's to retry only after its sender surely gave up.
        self.lease = timedelta(seconds=settings.webhook_timeout_s + 30)
        self.task: asyncio.Task[None] | None = None

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=self.settings.webhook_timeout_s,
                follow_redirects=False,  # a redirect could lead anywhere, past the address check
                headers={"User-Agent": f"BEM-Webhooks/{__version__}"},
            )
        return self._client

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name="webhook-deliverer")

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()

    async def _run(self) -> None:
        while True:
            try:
                sent = await self.deliver_due()
            except (SQLAlchemyError, OSError) as exc:  # the database is away: try again
                log.warning("webhooks.poll_failed", error=str(exc).splitlines()[0])
                sent = 0
            except Exception as exc:  # a bug must not stop every delivery for good
                log.exception("webhooks.error")
                report_exception(exc, {"component": "webhooks"})
                sent = 0
            if sent < BATCH:
                await asyncio.sleep(IDLE_S)

    async def deliver_due(self) -> int:
        """Send every due delivery (up to a batch, concurrently); how many were sent."""
        with untraced():  # a poll that finds nothing is not worth a trace
            async with self.sessions() as session:
                claimed = await repository.claim_due(session, BATCH, self.lease)
        await asyncio.gather(*(self._send(*row) for row in claimed))
        return len(claimed)

    async def _send(self, delivery: WebhookDelivery, hook: Webhook, event: Event) -> None:
        attributes: dict[str, str | int] = {
            "bem.webhook.id": str(hook.id),
            "bem.event.id": event.id,
            "bem.delivery.id": delivery.id,
        }
        with self.tracer.start_as_current_span("webhook delivery", attributes=attributes):
            await self._attempt(delivery, hook, event)

    async def _attempt(self, delivery: WebhookDelivery, hook: Webhook, event: Event) -> None:
        body = orjson.dumps(EventOut.model_validate(event).model_dump(mode="json"))
        headers = {
            "Content-Type": "application/json",
            "BEM-Event": event.kind,
            "BEM-Delivery": str(delivery.id),
            service.SIGNATURE_HEADER: service.sign(hook.secret, int(time.time()), body),
        }
        started = time.perf_counter()
        status: int | None = None
        error: str | None = None
        final = False
        try:
            await service.check_destination(self.settings, hook.url)
            response = await self.client.post(hook.url, content=body, headers=headers)
            status = response.status_code
            if not response.is_success:
                error = f"HTTP {status}"
        except Problem as exc:  # the address is refused: retrying will not help
            error, final = exc.detail, True
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:ERROR_CHARS] or type(exc).__name__
        if self.metrics is not None:
            self.metrics.webhook_duration.observe(time.perf_counter() - started)
        attempt = delivery.attempts
        if error is None:
            outcome, due = "succeeded", None
        elif final or attempt >= self.settings.webhook_max_attempts:
            outcome, due = "failed", None
        else:
            delay = min(self.settings.webhook_retry_base_s * 3 ** (attempt - 1), MAX_DELAY_S)
            outcome, due = "retried", utcnow() + timedelta(seconds=delay)
        async with self.sessions() as session:
            await repository.record_attempt(
                session,
                delivery.id,
                status="pending" if outcome == "retried" else outcome,
                response_status=status,
                error=error,
                due_at=due,
            )
        if self.metrics is not None:
            self.metrics.webhook_deliveries.labels(outcome).inc()
        log.info(
            "webhook.delivery",
            outcome=outcome,
            delivery_id=delivery.id,
            webhook_id=str(hook.id),
            event_id=event.id,
            attempt=attempt,
            status=status,
            error=error,
        )
