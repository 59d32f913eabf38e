"""Webhook delivery: a loop in ``bem worker`` (or the embedded process) that sends due
deliveries from ``webhook_deliveries``.

Deliveries are rows written with their event, so none is lost when the sender or a
receiver is down; each is sent at least once, retried with backoff (``webhook_retry_base_s``
times 3 per attempt, at most six hours apart) until ``webhook_max_attempts``, and its last
answer is kept for the delivery log.

A receiver cannot hold the sender up: each attempt has one deadline for everything
(connect, send, answer; ``webhook_timeout_s``), only the first ``RESPONSE_CAP_BYTES`` of an
answer are read, each delivery runs as a task of its own (a slow one delays nobody else's),
and at most ``webhook_per_destination`` run at once per receiver, ``webhook_concurrency``
in all.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import timedelta

import httpx
import orjson
import structlog
from opentelemetry import trace
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bem import __version__
from bem.config import Settings
from bem.events import service as events
from bem.events.models import Event, Webhook, WebhookDelivery
from bem.kit.db import utcnow
from bem.kit.dberrors import classify
from bem.kit.errors import Problem
from bem.kit.errortracking import report_exception
from bem.kit.metrics import Metrics
from bem.kit.tracing import untraced
from bem.live.schemas import EventOut

log = structlog.get_logger("bem.webhooks")

IDLE_S = 1.0
MAX_DELAY_S = 6 * 3600.0
ERROR_CHARS = 500
RESPONSE_CAP_BYTES = 64 * 1024  # of an answer, read and dropped; the rest is never read


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
        self.sending: dict[asyncio.Task[None], str] = {}  # task -> destination
        self.task: asyncio.Task[None] | None = None

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                follow_redirects=False,  # a redirect could lead anywhere, past the address check
                headers={"User-Agent": f"BEM-Webhooks/{__version__}"},
                limits=httpx.Limits(max_connections=self.settings.webhook_concurrency),
            )
        return self._client

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name="webhook-deliverer")

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        for task in list(self.sending):
            task.cancel()
        await asyncio.gather(*self.sending, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()

    async def _run(self) -> None:
        while True:
            try:
                await self.dispatch()
            except Exception as exc:  # a bug must not stop every delivery for good
                if classify(exc) is not None:  # the database is away: try again
                    log.warning("webhooks.poll_failed", error=str(exc).splitlines()[0])
                else:
                    log.exception("webhooks.error")
                    report_exception(exc, {"component": "webhooks"})
            await self._pause()

    async def _pause(self) -> None:
        """Until a delivery finishes (a slot is free) or ``IDLE_S`` has passed."""
        if self.sending:
            await asyncio.wait(self.sending, timeout=IDLE_S, return_when=asyncio.FIRST_COMPLETED)
        else:
            await asyncio.sleep(IDLE_S)

    async def dispatch(self) -> list[asyncio.Task[None]]:
        """Claim due deliveries that fit the free slots and start sending each; returns
        their tasks without waiting for them."""
        free = self.settings.webhook_concurrency - len(self.sending)
        if free <= 0:
            return []
        busy = Counter(self.sending.values())
        with untraced():  # a poll that finds nothing is not worth a trace
            async with self.sessions() as session:
                claimed = await events.claim_due(
                    session, free, busy, self.settings.webhook_per_destination, self.lease
                )
                await session.commit()  # claimed before sending: no other sender takes them
        started = []
        for delivery, hook, event in claimed:
            task = asyncio.create_task(self._send(delivery, hook, event))
            self.sending[task] = events.destination_key(hook.url)
            task.add_done_callback(self._done)
            started.append(task)
        return started

    async def deliver_due(self) -> int:
        """Send what is due now and wait for those sends (tests, one-off use)."""
        started = await self.dispatch()
        await asyncio.gather(*started)
        return len(started)

    def _done(self, task: asyncio.Task[None]) -> None:
        self.sending.pop(task, None)
        if task.cancelled() or (exc := task.exception()) is None:
            return
        # Its answer was not recorded: the delivery is sent again once its lease expires.
        if classify(exc) is not None:
            log.warning("webhooks.record_failed", error=type(exc).__name__)
        else:
            log.error("webhooks.send_failed", error=type(exc).__name__)
            report_exception(exc, {"component": "webhooks"})

    async def _send(self, delivery: WebhookDelivery, hook: Webhook, event: Event) -> None:
        attributes: dict[str, str | int] = {
            "bem.webhook.id": str(hook.id),
            "bem.event.id": event.id,
            "bem.delivery.id": delivery.id,
        }
        with self.tracer.start_as_current_span("webhook delivery", attributes=attributes):
            await self._attempt(delivery, hook, event)

    async def _post(self, url: str, body: bytes, headers: dict[str, str]) -> int:
        """One POST to the checked address, resolution included, under one deadline; reads
        at most ``RESPONSE_CAP_BYTES`` of the answer. Returns the status."""
        async with asyncio.timeout(self.settings.webhook_timeout_s):
            target = await events.resolve_destination(self.settings, url)
            async with self.client.stream(
                "POST",
                target.url,
                content=body,
                headers={**headers, "Host": target.host},
                extensions={"sni_hostname": target.server_name},
            ) as response:
                read = 0
                async for chunk in response.aiter_raw():
                    read += len(chunk)
                    if read >= RESPONSE_CAP_BYTES:
                        break  # closing the stream drops the connection, the rest unread
                return response.status_code

    async def _attempt(self, delivery: WebhookDelivery, hook: Webhook, event: Event) -> None:
        body = orjson.dumps(EventOut.model_validate(event).model_dump(mode="json"))
        started = time.perf_counter()
        status: int | None = None
        error: str | None = None
        final = False
        try:
            secret = events.webhook_box(self.settings).open(hook.secret)
            if secret is None:
                raise Problem("The webhook's secret does not open: was BEM_SECRET_KEY changed?")
            headers = {
                "Content-Type": "application/json",
                "BEM-Event": event.kind,
                "BEM-Delivery": str(delivery.id),
                events.SIGNATURE_HEADER: events.sign(secret, int(time.time()), body),
            }
            status = await self._post(hook.url, body, headers)
            if not 200 <= status < 300:
                error = f"HTTP {status}"
        except Problem as exc:  # the address is refused (or the secret lost): retrying won't help
            error, final = exc.detail, True
        except TimeoutError:
            error = f"Timeout: no complete answer within {self.settings.webhook_timeout_s} s"
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
            await events.record_attempt(
                session,
                delivery.id,
                status="pending" if outcome == "retried" else outcome,
                response_status=status,
                error=error,
                due_at=due,
            )
            await session.commit()
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
