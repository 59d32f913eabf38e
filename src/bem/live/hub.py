"""The feed's fan-out in one process.

One task per process reads new events from the outbox every ``feed_poll_s`` (a single
indexed query however many clients listen) and hands them to the subscriptions of their
project. A connection subscribes first and then replays what it missed from the outbox, so
nothing falls between replay and live; ids already sent are skipped. A subscriber that
falls behind is not dropped: it is told to replay from the outbox again.

Polling rather than a message bus keeps one source of truth and survives Redis outages and
PgBouncer (no LISTEN/NOTIFY); the price is up to ``feed_poll_s`` of latency.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

import structlog
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bem.kit.errors import Problem
from bem.kit.errortracking import report_exception
from bem.kit.metrics import Metrics
from bem.kit.tracing import untraced
from bem.live import repository
from bem.live.schemas import EventOut

log = structlog.get_logger("bem.live")

BATCH = 500
QUEUE_SIZE = 256
ERROR_BACKOFF_S = 2.0
Transport = Literal["websocket", "sse"]


class Busy(Problem):
    status, slug = 503, "feed-busy"


@dataclass(eq=False)  # identity: kept in sets
class Subscription:
    project_id: uuid.UUID
    queue: asyncio.Queue[EventOut] = field(default_factory=lambda: asyncio.Queue(QUEUE_SIZE))
    behind: bool = False  # the queue overflowed: replay from the outbox
    ended: asyncio.Event = field(default_factory=asyncio.Event)  # the hub is stopping


@dataclass(frozen=True)
class Heartbeat:
    """Nothing happened for a while: time to send a keep-alive."""


@dataclass(frozen=True)
class Ended:
    SHUTDOWN = "server shutting down"
    REVOKED = "access revoked"

    reason: str


class Hub:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        poll_s: float,
        heartbeat_s: float,
        max_connections: int,
        metrics: Metrics,
        draining: Callable[[], bool],
    ) -> None:
        self.sessions = sessions
        self.poll_s = poll_s
        self.heartbeat_s = heartbeat_s
        self.max_connections = max_connections
        self.metrics = metrics
        self.draining = draining
        self.subscribers: dict[uuid.UUID, set[Subscription]] = defaultdict(set)
        self.counts: dict[Transport, int] = {"websocket": 0, "sse": 0}
        self.last_id: int | None = None
        self.task: asyncio.Task[None] | None = None

    @property
    def connections(self) -> int:
        return sum(self.counts.values())

    def admit(self) -> None:
        """Refuse a new connection (503) when full, shutting down, or before the hub knows
        where the outbox ends; call before answering."""
        if self.draining() or self.last_id is None:
            raise Busy("The change feed is not available on this server right now.")
        if self.connections >= self.max_connections:
            raise Busy("This server holds as many feed connections as it may; retry later.")

    async def start(self) -> None:
        """Note where the outbox ends (followers replay what came before themselves), then
        poll. If the database does not answer yet, the poller finds out later."""
        try:
            async with self.sessions() as session:
                self.last_id = await repository.last_id(session)
        except SQLAlchemyError as exc:
            log.warning("feed.start_failed", error=str(exc).splitlines()[0])
        self.task = asyncio.create_task(self._run(), name="feed-hub")

    async def close(self) -> None:
        self._end_all()
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            if self.draining():
                self._end_all()
            try:
                with untraced():
                    await self._poll()
                await asyncio.sleep(self.poll_s)
            except (SQLAlchemyError, OSError) as exc:  # the database is away: try again
                log.warning("feed.poll_failed", error=str(exc).splitlines()[0])
                await asyncio.sleep(ERROR_BACKOFF_S)
            except Exception as exc:  # a bug must not stop the feed of every follower for good
                log.exception("feed.poll_error")
                report_exception(exc, {"component": "feed-hub"})
                await asyncio.sleep(ERROR_BACKOFF_S)

    async def _poll(self) -> None:
        async with self.sessions() as session:
            if self.last_id is None:  # no follower yet: admit() waits for this
                self.last_id = await repository.last_id(session)
                return
            while rows := await repository.events_after(session, self.last_id, BATCH):
                for row in rows:
                    self._dispatch(EventOut.model_validate(row))
                self.last_id = rows[-1].id
                if len(rows) < BATCH:
                    break

    def _dispatch(self, event: EventOut) -> None:
        for sub in self.subscribers.get(event.project_id, ()):
            if sub.behind:
                continue
            try:
                sub.queue.put_nowait(event)
            except asyncio.QueueFull:
                sub.behind = True

    def _end_all(self) -> None:
        for subs in self.subscribers.values():
            for sub in subs:
                sub.ended.set()

    async def follow(
        self,
        project_id: uuid.UUID,
        after: int | None,
        transport: Transport,
        still_allowed: Callable[[], Awaitable[bool]],
    ) -> AsyncGenerator[EventOut | Heartbeat | Ended, None]:
        """The events of ``project_id`` after id ``after`` (None: from now on), then live
        ones as they come, with a heartbeat when quiet; ends with :class:`Ended`."""
        sub = Subscription(project_id)
        self.subscribers[project_id].add(sub)
        self.counts[transport] += 1
        self.metrics.feed_connections.labels(transport).inc()
        opened, sent = time.monotonic(), after
        log.info("feed.opened", transport=transport, project_id=str(project_id), after=after)
        try:
            if after is None:
                async with self.sessions() as session:
                    after = await repository.last_id(session, project_id)
            sent = after
            async for event in self._replay(project_id, sent):
                sent = event.id
                yield event
            while True:
                if sub.ended.is_set():
                    yield Ended(Ended.SHUTDOWN)
                    return
                if sub.behind:
                    sub.behind = False
                    while not sub.queue.empty():
                        sub.queue.get_nowait()
                    async for event in self._replay(project_id, sent):
                        sent = event.id
                        yield event
                    continue
                item = await self._next(sub)
                if item is None:
                    with untraced():
                        allowed = await still_allowed()
                    if not allowed:
                        yield Ended(Ended.REVOKED)
                        return
                    yield Heartbeat()
                elif item.id > sent:
                    sent = item.id
                    yield item
        finally:
            self.subscribers[project_id].discard(sub)
            if not self.subscribers[project_id]:
                del self.subscribers[project_id]
            self.counts[transport] -= 1
            self.metrics.feed_connections.labels(transport).dec()
            log.info(
                "feed.closed",
                transport=transport,
                project_id=str(project_id),
                last_sent=sent,
                seconds=round(time.monotonic() - opened, 1),
            )

    async def _next(self, sub: Subscription) -> EventOut | None:
        """The next queued event; None after ``heartbeat_s`` of quiet or when ended."""
        get = asyncio.ensure_future(sub.queue.get())
        ended = asyncio.ensure_future(sub.ended.wait())
        try:
            await asyncio.wait(
                {get, ended}, timeout=self.heartbeat_s, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for task in (get, ended):
                task.cancel()  # no-op for a finished one: an event taken is never lost
        return get.result() if get.done() and not get.cancelled() else None

    async def _replay(self, project_id: uuid.UUID, after: int) -> AsyncIterator[EventOut]:
        while True:
            async with self.sessions() as session:
                rows = await repository.events_after(session, after, BATCH, project_id)
                events = [EventOut.model_validate(row) for row in rows]
            for event in events:
                yield event
            if len(events) < BATCH:
                return
            after = events[-1].id
