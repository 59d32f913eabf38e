"""A short-lived memo of verified credentials, so a bearer seen moments ago is known again
without SQL (the token-and-user lookup was half the statements of a cached page).

What it keeps is the principal and a copy of its user's columns, for at most
``BEM_AUTH_MEMO_S`` seconds and never past the credential's own expiry. Whatever ends or
changes a credential (a revoked token, a logout, a TOTP change) names the user with
``forget_after_commit``; once the transaction commits, this process forgets every entry of
that user and tells the others over Redis (pub/sub). A process that cannot hear the others
(its subscription is down) answers from the database only, until it hears them again; without
Redis (one process, or a cluster without Redis) the memo's lifetime bounds how long another
process honours a revoked credential.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import redis.asyncio
from redis.exceptions import RedisError
from sqlalchemy import event as sa_event
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session, make_transient_to_detached

from bem.auth.models import Principal, User
from bem.kit.db import utcnow
from bem.kit.logging import get_logger
from bem.kit.state import AppState

log = get_logger("bem.auth.memo")

FORGET = "bem.auth.forget"  # session.info key: users whose credentials changed
PING_S = 1.0  # the subscription pings Redis this often when idle ...
SILENT_S = 3.0  # ... and counts as lost when Redis says nothing for this long
RETRY_S = 1.0
COLUMNS = tuple(c.key for c in User.__table__.columns)


@dataclass(frozen=True)
class Remembered:
    principal: Principal  # its user is detached; requests get a copy of their own
    user_id: uuid.UUID
    until: float  # monotonic


def memo_of(state: AppState) -> CredentialMemo | None:
    return state.resource(CredentialMemo) if state.has(CredentialMemo) else None


def forget_after_commit(session: AsyncSession, user_id: uuid.UUID) -> None:
    """What the user's credentials are has changed in this transaction: every memo forgets
    them once it commits (not before, or a request in between would remember the old)."""
    session.info.setdefault(FORGET, set()).add(user_id)


class CredentialMemo:
    def __init__(
        self,
        ttl_s: float,
        redis_client: redis.asyncio.Redis | None = None,
        channel: str = "bem:credentials",
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_s = ttl_s
        self.redis = redis_client
        self.channel = channel
        self.max_entries = max_entries
        self.clock = clock
        self.listening = redis_client is None  # with Redis: only once subscribed
        self._entries: OrderedDict[str, Remembered] = OrderedDict()
        self._epoch = 0  # moves on every forget: a lookup that began before it is not kept
        self._task: asyncio.Task[None] | None = None
        self._sends: set[asyncio.Task[None]] = set()

    @property
    def usable(self) -> bool:
        return self.ttl_s > 0 and self.listening

    def epoch(self) -> int:
        return self._epoch

    def get(self, key: str, session: AsyncSession) -> Principal | None:
        """The principal of ``key`` with its user attached to ``session`` (no SQL), or None."""
        if not self.usable or (found := self._entries.get(key)) is None:
            return None
        if found.until <= self.clock():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        copy = User(**{c: getattr(found.principal.user, c) for c in COLUMNS})
        make_transient_to_detached(copy)  # as if just loaded: what a route writes is flushed
        return replace(found.principal, user=session.sync_session.merge(copy, load=False))

    def put(self, key: str, principal: Principal, epoch: int) -> None:
        """Remember a principal verified against the database by a lookup that began at
        ``epoch`` (nothing is kept if a forget came in between)."""
        if not self.usable or epoch != self._epoch:
            return
        ttl = self.ttl_s
        if principal.expires_at is not None:
            ttl = min(ttl, (principal.expires_at - utcnow()).total_seconds())
        if ttl <= 0:
            return
        user = principal.user
        kept = User(**{c: getattr(user, c) for c in COLUMNS})
        self._entries[key] = Remembered(replace(principal, user=kept), user.id, self.clock() + ttl)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def forget(self, user_ids: set[uuid.UUID]) -> None:
        self._epoch += 1
        for key in [k for k, r in self._entries.items() if r.user_id in user_ids]:
            del self._entries[key]

    def clear(self) -> None:
        self._epoch += 1
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    # ---- across processes ----------------------------------------------------------------

    def watch(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        """Forget (here and, through Redis, everywhere) the users a committed transaction of
        ``sessions`` named."""

        def committed(session: Session) -> None:
            if users := session.info.pop(FORGET, None):
                self.forget(users)
                if self.redis is not None:
                    task = asyncio.get_running_loop().create_task(self._tell(users))
                    self._sends.add(task)
                    task.add_done_callback(self._sends.discard)

        def rolled_back(session: Session, _previous: Any) -> None:
            session.info.pop(FORGET, None)

        session_class = sessions.kw["sync_session_class"]  # see kit.db.session_factory
        sa_event.listen(session_class, "after_commit", committed)
        sa_event.listen(session_class, "after_soft_rollback", rolled_back)

    async def _tell(self, users: set[uuid.UUID]) -> None:
        assert self.redis is not None
        try:
            for user_id in users:
                await self.redis.publish(self.channel, str(user_id))
        except (RedisError, OSError) as exc:
            # The others' subscriptions are most likely down too (then they use no memo);
            # if not, their entries end within ttl_s.
            log.warning("credential_memo.tell_failed", error=type(exc).__name__)

    def start(self) -> None:
        if self.redis is not None and self.ttl_s > 0:
            self._task = asyncio.create_task(self._listen(), name="credential-memo")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await asyncio.gather(*self._sends, return_exceptions=True)

    async def _listen(self) -> None:
        assert self.redis is not None
        while True:
            try:
                await self._follow(self.redis)
            except (RedisError, OSError, TimeoutError) as exc:
                if self.listening:
                    log.warning("credential_memo.deaf", error=type(exc).__name__)
            self.listening = False
            self.clear()
            await asyncio.sleep(RETRY_S)

    async def _follow(self, client: redis.asyncio.Redis) -> None:
        async with client.pubsub() as pubsub:
            await pubsub.subscribe(self.channel)
            heard = self.clock()
            while True:
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
                    log.info("credential_memo.listening")
                elif message["type"] == "message":
                    self.forget({uuid.UUID(message["data"].decode())})
