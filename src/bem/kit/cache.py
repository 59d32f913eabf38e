"""A read cache for answers computed from immutable versions.

A version never changes once it is ready, so an answer computed from it (a takeoff, a diff
page, the spatial tree, a selector page) stays right for as long as the version exists.
Entries are keyed by the route, the version(s) and a digest of the parameters, and expire
after ``BEM_CACHE_TTL_S`` only to bound memory. Callers check access and existence before
they ask the cache, so a deleted version or a removed member never reads a cached answer.

- Backend: Redis when ``BEM_REDIS_URL`` is set (shared by every process), else an LRU in
  this process bounded by ``BEM_CACHE_MEMORY_BYTES``.
- Stampedes: concurrent misses of one key in a process share one computation; across
  processes a Redis lock lets the first compute while the others wait for its value.
- Redis failing or hanging: each call is bounded by ``REDIS_TIMEOUT_S``; a slow call misses
  the cache for that lookup only; Redis gone (or slow several times in a row, kit/breaker.py)
  bypasses the cache for ``RETRY_REDIS_AFTER_S`` and answers are computed directly (correct,
  only slower).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import orjson
import redis.asyncio
import structlog
from fastapi import Request, Response

from bem import __version__
from bem.kit.breaker import RedisBreaker
from bem.kit.metrics import Metrics

log = structlog.get_logger(__name__)

# Part of every key: a release (or a change of what is cached) starts from an empty cache.
FORMAT = 1
REDIS_TIMEOUT_S = 0.25
RETRY_REDIS_AFTER_S = 10.0
LOCK_S = 40.0  # a key's lock expires after this (longer than the statement timeout)
WAIT_POLL_S = 0.05
MAX_ENTRY_BYTES = 16 * 1024 * 1024
T = TypeVar("T")
# Clients may keep answers but must revalidate (access can change; the answer cannot).
CACHE_CONTROL = "private, no-cache"


def key_of(kind: str, *parts: object) -> str:
    """A cache key: the kind of answer and a digest of everything it depends on."""
    digest = hashlib.sha256(orjson.dumps([None if p is None else str(p) for p in parts]))
    return f"{kind}:{digest.hexdigest()}"


def etag_of(key: str, variant: str = "") -> str:
    """A strong validator derived from the key alone: the answer under a key never changes
    (``variant`` tells representations apart, e.g. CSV from JSON)."""
    text = f"{__version__}:{FORMAT}:{key}:{variant}"
    return '"' + hashlib.sha256(text.encode()).hexdigest()[:32] + '"'


def not_modified(request: Request, etag: str) -> Response | None:
    """304 when the client already holds this representation. If-None-Match compares weakly
    (RFC 9110): ``W/"x"`` matches ``"x"``, as a client sends back after a proxy gzipped it."""
    match = request.headers.get("if-none-match")
    held = {t.strip().removeprefix("W/") for t in match.split(",")} if match else set()
    if match and (match.strip() == "*" or etag in held):
        return Response(status_code=304, headers={"ETag": etag, "Cache-Control": CACHE_CONTROL})
    return None


def validators(
    request: Request, key: str, variant: str = ""
) -> tuple[dict[str, str], Response | None]:
    """The answer's ``ETag`` and ``Cache-Control`` headers, and a 304 response when the
    client already holds it (else None)."""
    etag = etag_of(key, variant)
    return {"ETag": etag, "Cache-Control": CACHE_CONTROL}, not_modified(request, etag)


async def lookup(cache: Cache | None, key: str, compute: Callable[[], Awaitable[Any]]) -> bytes:
    """The answer's JSON: the app's cache (when enabled: ``state.cache``) in front of
    ``compute``. Bytes, so a hit is served as stored, never decoded and encoded again."""
    if cache is None:
        return orjson.dumps(await compute())
    return await cache.get_or_compute(key, compute)


class Memory:
    """An LRU of encoded values bounded by their total size, with expiry."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    def get(self, key: str) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, raw = entry
        if expires < time.monotonic():
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return raw

    def set(self, key: str, raw: bytes, ttl_s: float) -> None:
        if len(raw) > self.max_bytes:
            return
        if key in self._entries:
            self._drop(key)
        self._entries[key] = (time.monotonic() + ttl_s, raw)
        self.size += len(raw)
        while self.size > self.max_bytes:
            self._drop(next(iter(self._entries)))

    def _drop(self, key: str) -> None:
        _, raw = self._entries.pop(key)
        self.size -= len(raw)


class Cache:
    def __init__(
        self,
        redis_client: redis.asyncio.Redis | None,
        prefix: str,
        ttl_s: int,
        memory_bytes: int,
        metrics: Metrics | None = None,
    ) -> None:
        self.redis = redis_client
        self.prefix = f"{prefix}:cache:{__version__}:{FORMAT}"
        self.ttl_s = ttl_s
        self.memory = Memory(memory_bytes)
        self.metrics = metrics
        self.hits = self.misses = 0  # this process, for /health
        self._flights: dict[str, asyncio.Future[bytes]] = {}
        self.breaker = RedisBreaker(redis_client is not None, RETRY_REDIS_AFTER_S, "cache_degraded")

    @property
    def status(self) -> str:
        return self.breaker.status

    def describe(self) -> dict[str, Any]:
        looked_up = self.hits + self.misses
        return {
            "backend": self.status,
            "hits": self.hits,
            "misses": self.misses,
            "hit_ratio": round(self.hits / looked_up, 4) if looked_up else None,
        }

    async def get_or_compute(self, key: str, compute: Callable[[], Awaitable[Any]]) -> bytes:
        """The cached answer's JSON, or ``compute()``'s (which is then cached; errors are
        not)."""
        kind = key.partition(":")[0]
        raw = await self._get(key)
        flight = self._flights.get(key)
        if raw is None and flight is not None:  # a request of this process is computing it
            try:
                raw = await asyncio.shield(flight)
            except asyncio.CancelledError:
                if not flight.cancelled():
                    raise  # this request was cancelled
                # that request was cancelled (its client left): compute here instead
        if raw is not None:
            self._count(kind, hit=True)
            return raw
        self._count(kind, hit=False)
        flight = asyncio.get_running_loop().create_future()
        self._flights[key] = flight
        try:
            raw = await self._compute_once(key, compute)
            flight.set_result(raw)
            return raw
        except asyncio.CancelledError:
            flight.cancel()
            raise
        except BaseException as exc:
            flight.set_exception(exc)
            flight.exception()  # retrieved: waiters re-raise it, nobody else must
            raise
        finally:
            if self._flights.get(key) is flight:
                del self._flights[key]

    async def _compute_once(self, key: str, compute: Callable[[], Awaitable[Any]]) -> bytes:
        lock = None
        if self.redis is not None:
            mine = self.redis.lock(f"{self.prefix}:lock:{key}", timeout=LOCK_S, blocking=False)
            acquired = await self._ask(lambda _: mine.acquire())
            if acquired is False:  # another process is computing it
                waited = await self._wait_for_other(key)
                if waited is not None:
                    return waited
            # Without the lock (the other one failed or was slow, or Redis is out): compute.
            lock = mine if acquired else None
        try:
            raw = orjson.dumps(await compute())
            await self._set(key, raw)
            return raw
        finally:
            if lock is not None:
                await self._release(lock)

    async def _wait_for_other(self, key: str) -> bytes | None:
        """Poll for the value another process is computing, while its lock is held."""
        lock_key = f"{self.prefix}:lock:{key}"
        deadline = time.monotonic() + LOCK_S
        while time.monotonic() < deadline:
            await asyncio.sleep(WAIT_POLL_S)
            raw = await self._get(key)
            if raw is not None:
                return raw
            held = await self._ask(lambda redis: redis.exists(lock_key))
            if held is None:  # Redis is out
                return None
            if not held:
                return await self._get(key)
        return None

    async def _release(self, lock: Any) -> None:
        try:
            await asyncio.wait_for(lock.release(), REDIS_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - it expires by itself after LOCK_S
            log.warning("cache_unlock_failed", error=type(exc).__name__)

    async def _ask(self, command: Callable[[redis.asyncio.Redis], Awaitable[T]]) -> T | None:
        """One Redis command bounded by ``REDIS_TIMEOUT_S``; None when Redis is bypassed or
        fails (which bypasses it for a while)."""
        if self.redis is None or not self.breaker.usable():
            return None
        try:
            answer = await asyncio.wait_for(command(self.redis), REDIS_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - any Redis failure means "bypass"
            self.breaker.failed(exc)
            if self.metrics is not None:
                self.metrics.cache_errors.inc()
            return None
        self.breaker.answered()
        return answer

    async def _get(self, key: str) -> bytes | None:
        if self.redis is None:
            return self.memory.get(key)
        raw: bytes | None = await self._ask(lambda redis: redis.get(f"{self.prefix}:{key}"))
        return raw

    async def _set(self, key: str, raw: bytes) -> None:
        if len(raw) > MAX_ENTRY_BYTES:
            return
        if self.redis is None:
            self.memory.set(key, raw, self.ttl_s)
            return
        await self._ask(lambda redis: redis.set(f"{self.prefix}:{key}", raw, ex=self.ttl_s))

    def _count(self, kind: str, *, hit: bool) -> None:
        """A hit is an answer served without computing it (from the cache, or from another
        request's computation in flight)."""
        if hit:
            self.hits += 1
        else:
            self.misses += 1
        if self.metrics is not None:
            self.metrics.cache_requests.labels(kind, "hit" if hit else "miss").inc()
