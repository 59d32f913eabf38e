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
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Literal, TypeVar

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bem.events import service as events
from bem.kit.dberrors import classify
from bem.kit.errors import Problem
from bem.kit.errortracking import report_exception
from bem.kit.metrics import Metrics
from bem.kit.tracing import untraced
from bem.live.schemas import EventOut

log = structlog.get_logger("bem.live")

BATCH = 500
QUEUE_SIZE = 256
ERROR_BACKOFF_S = 2.0
Transport = Literal["websocket", "sse"]
T = TypeVar("T")


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
                self.last_id = await events.last_id(session)
        except Exception as exc:
            if classify(exc) is None:
                raise
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
            except Exception as exc:  # a bug must not stop the feed of every follower for good
                if classify(exc) is not None:  # the database is away: try again
                    log.warning("feed.poll_failed", error=str(exc).splitlines()[0])
                    await asyncio.sleep(ERROR_BACKOFF_S)
                    continue
                log.exception("feed.poll_error")
                report_exception(exc, {"component": "feed-hub"})
                await asyncio.sleep(ERROR_BACKOFF_S)

    async def _poll(self) -> None:
        async with self.sessions() as session:
            if self.last_id is None:  # no follower yet: admit() waits for this
                self.last_id = await events.last_id(session)
                return
            while rows := await events.events_after(session, self.last_id, BATCH):
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
        ones as they come, with a heartbeat when quiet; ends with :class:`Ended`.

        The credential is checked again whenever ``heartbeat_s`` has passed since the last
        check, before the next event or heartbeat, however busy the project (a revoked
        follower learns nothing more after that). While the database is away, replay and
        re-checks wait and heartbeats go on: the follower stays connected."""
        sub = Subscription(project_id)
        self.subscribers[project_id].add(sub)
        self.counts[transport] += 1
        self.metrics.feed_connections.labels(transport).inc()
        opened, sent = time.monotonic(), after
        check = Recheck(still_allowed, self.heartbeat_s)
        log.info("feed.opened", transport=transport, project_id=str(project_id), after=after)
        try:
            while sent is None:  # "from now on": where this project's events end
                sent = await self._read(partial(events.last_id, project_id=project_id))
                if sent is None:
                    yield Heartbeat()
            replaying = True
            while True:
                if sub.ended.is_set():
                    yield Ended(Ended.SHUTDOWN)
                    return
                if replaying:
                    if sub.behind:  # the queue overflowed: the outbox has it all
                        sub.behind = False
                        while not sub.queue.empty():
                            sub.queue.get_nowait()
                    batch = await self._read(
                        partial(events.events_after, after=sent, limit=BATCH, project_id=project_id)
                    )
                    if batch is None:  # the database is away: keep the connection alive
                        yield Heartbeat()
                        continue
                    for row in batch:
                        if not await check.allowed():
                            yield Ended(Ended.REVOKED)
                            return
                        event = EventOut.model_validate(row)
                        sent = event.id
                        yield event
                    replaying = len(batch) == BATCH or sub.behind
                    continue
                item = await self._next(sub)
                if sub.behind:
                    replaying = True
                    continue
                if not await check.allowed():
                    yield Ended(Ended.REVOKED)
                    return
                if item is None:
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

    async def _read(self, query: Callable[[AsyncSession], Awaitable[T]]) -> T | None:
        """``query`` in a session of its own; None (after a pause) when the database is
        away."""
        try:
            async with self.sessions() as session:
                return await query(session)
        except Exception as exc:
            if classify(exc) is None:
                raise
            log.warning("feed.read_failed", error=type(exc).__name__)
            await asyncio.sleep(min(ERROR_BACKOFF_S, self.heartbeat_s))
            return None

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


class Recheck:
    """Whether a follower's credential still allows reading, asked again once
    ``interval_s`` has passed since the last answer. An answer the database could not give
    (it is away) keeps the last one and is asked for again next time."""

    def __init__(self, ask: Callable[[], Awaitable[bool]], interval_s: float) -> None:
        self.ask = ask
        self.interval_s = interval_s
        self.checked_at = time.monotonic()

    async def allowed(self) -> bool:
        if time.monotonic() - self.checked_at < self.interval_s:
            return True
        try:
            with untraced():
                verdict = await self.ask()
        except Exception as exc:
            if classify(exc) is None:
                raise
            log.warning("feed.recheck_failed", error=type(exc).__name__)
            return True
        self.checked_at = time.monotonic()
        return verdict
