"""A short-lived, in-process memo of what authorizing a request reads, so a caller seen
moments ago costs no SQL: verified credentials (``auth``) and a ready version with the
caller's role in its project (``projects.access``). A cached page then costs no statement.

Each entry lives at most ``BEM_AUTH_MEMO_S`` seconds (and never past a ``ttl_s`` its maker
gives, a token's expiry) and carries *topics* (``user:<id>``, ``project:<id>``). Whatever
changes what an entry stands for (a revoked token, a logout, a TOTP change; a member added,
changed or removed, a project deleted) names its topic with ``forget_after_commit``; once the
transaction commits, this process forgets the topic's entries and tells the others over
Redis (pub/sub). A process that cannot hear the others (its subscription is down or silent)
answers from the database only until it hears them again. Without Redis, a change is
immediate in the process that made it and reaches the others within the memo's lifetime.

Values are shared by concurrent requests: callers store copies and hand out copies
(``copy_row``), never the rows a session holds.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import redis.asyncio
from redis.exceptions import RedisError
from sqlalchemy import event as sa_event
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from bem.kit.logging import get_logger

log = get_logger("bem.kit.memo")

FORGET = "bem.memo.forget"  # session.info key: topics this transaction changed
PING_S = 1.0  # the subscription pings Redis this often when idle ...
SILENT_S = 3.0  # ... and counts as lost when Redis says nothing for this long
RETRY_S = 1.0
R = TypeVar("R")


@dataclass(frozen=True)
class _Entry:
    value: Any
    topics: frozenset[str]
    until: float  # monotonic


def forget_after_commit(session: AsyncSession, *topics: str) -> None:
    """What ``topics`` stand for changes in this transaction: every memo forgets them once it
    commits (not before, or a request in between would remember the old)."""
    session.info.setdefault(FORGET, set()).update(topics)


def copy_row(row: R) -> R:
    """A detached copy of an ORM row's columns (what a memo keeps and hands out)."""
    table: Any = getattr(row, "__table__")  # noqa: B009 (every mapped row has one)
    return type(row)(**{c.key: getattr(row, c.key) for c in table.columns})


class Memo:
    def __init__(
        self,
        ttl_s: float,
        redis_client: redis.asyncio.Redis | None = None,
        channel: str = "bem:memo",
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_s = ttl_s
        self.redis = redis_client
        self.channel = channel
        self.max_entries = max_entries
        self.clock = clock
        self.listening = redis_client is None  # with Redis: only once subscribed
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._epoch = 0  # moves on every forget: a lookup that began before it is not kept
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._sends: set[asyncio.Task[None]] = set()

    @property
    def usable(self) -> bool:
        return self.ttl_s > 0 and self.listening

    def epoch(self) -> int:
        """Take before reading what ``put`` will keep."""
        return self._epoch

    def get(self, key: str) -> Any | None:
        if not self.usable or (found := self._entries.get(key)) is None:
            return None
        if found.until <= self.clock():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return found.value

    def put(
        self, key: str, value: Any, topics: Iterable[str], epoch: int, ttl_s: float | None = None
    ) -> None:
        """Keep ``value``, read by a lookup that began at ``epoch`` (nothing is kept if a
        forget came in between)."""
        ttl = self.ttl_s if ttl_s is None else min(self.ttl_s, ttl_s)
        if not self.usable or epoch != self._epoch or ttl <= 0:
            return
        self._entries[key] = _Entry(value, frozenset(topics), self.clock() + ttl)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def forget(self, topics: set[str]) -> None:
        self._epoch += 1
        for key in [k for k, e in self._entries.items() if e.topics & topics]:
            del self._entries[key]

    def clear(self) -> None:
        self._epoch += 1
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    # ---- across processes ----------------------------------------------------------------

    def watch(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        """Forget (here and, through Redis, everywhere) the topics a committed transaction of
        ``sessions`` named."""

        def committed(session: Session) -> None:
            if topics := session.info.pop(FORGET, None):
                self.forget(topics)
                if self.redis is not None:
                    task = asyncio.get_running_loop().create_task(self._tell(topics))
                    self._sends.add(task)
                    task.add_done_callback(self._sends.discard)

        def rolled_back(session: Session, _previous: Any) -> None:
            session.info.pop(FORGET, None)

        session_class = sessions.kw["sync_session_class"]  # see kit.db.session_factory
        sa_event.listen(session_class, "after_commit", committed)
        sa_event.listen(session_class, "after_soft_rollback", rolled_back)

    async def _tell(self, topics: set[str]) -> None:
        assert self.redis is not None
        try:
            await self.redis.publish(self.channel, " ".join(sorted(topics)))
        except (RedisError, OSError) as exc:
            # The others' subscriptions are most likely down too (then they use no memo);
            # if not, their entries end within ttl_s.
            log.warning("memo.tell_failed", error=type(exc).__name__)

    def start(self) -> None:
        if self.redis is not None and self.ttl_s > 0:
            self._task = asyncio.create_task(self._listen(), name="memo-listener")

    async def close(self) -> None:
        """Let the subscription end by itself (within ``PING_S``): cancelled inside redis-py's
        pub/sub, its close could wait forever (seen in the e2e suite)."""
        self._stopping = True
        if self._task is not None:
            done, _ = await asyncio.wait({self._task}, timeout=PING_S + 2)
            if not done:
                self._task.cancel()
                await asyncio.wait({self._task}, timeout=1)
                log.warning("memo.listener_not_stopped")
        await asyncio.gather(*self._sends, return_exceptions=True)

    async def _listen(self) -> None:
        assert self.redis is not None
        while not self._stopping:
            try:
                await self._follow(self.redis)
            except (RedisError, OSError, TimeoutError) as exc:
                if self.listening:
                    log.warning("memo.deaf", error=type(exc).__name__)
            self.listening = False
            self.clear()
            if not self._stopping:
                await asyncio.sleep(RETRY_S)

    async def _follow(self, client: redis.asyncio.Redis) -> None:
        async with client.pubsub() as pubsub:
            await pubsub.subscribe(self.channel)
            heard = self.clock()
            while not self._stopping:
                message = await pubsub.get_message(timeout=PING_S)
                now = self.clock()
                if message is None:
                    if now - heard > SILENT_S:
                        raise TimeoutError("Redis said nothing")
                    await pubsub.ping()
                    continue
                heard = now
                if message["type"] == "subscribe" and not self.listening:
                    self.clear()  # what was said while deaf is lost: start afresh
                    self.listening = True
                    log.info("memo.listening")
                elif message["type"] == "message":
                    self.forget(set(message["data"].decode().split()))
