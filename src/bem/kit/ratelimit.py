"""Rate limiting on the ``limits`` library, shared across processes through Redis.

Algorithm: sliding window counter. It keeps two counters per key and window (constant memory,
unlike a moving window that stores every hit: 600 entries per user for 600/minute), and it has
no burst at window edges (unlike a fixed window). Its estimate can be off by a fraction of one
window's traffic, which is fine for throttling. In Redis every limit a request meets is
checked and counted by one script in one round trip (``SLIDING_WINDOWS``; the library's
storage takes two per limit); in memory by the ``limits`` library's own strategy.

Redis down or slow: every process falls back to its own in-memory limits (fail-safe: still
limited, never unlimited), reports ``degraded``, and tries Redis again after a short pause.

Three layers, all keyed by the caller's identity (user, API token, else client IP):
- the middleware applies a default limit to every request, plus a per-IP ceiling that also
  bounds floods of made-up credentials;
- routes declare stricter named rules next to them: ``dependencies=[rate_limit("auth")]``;
- expensive operations take a concurrency slot per identity (``Concurrency.slot``).
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import structlog
from fastapi import Depends, Request
from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, Storage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from redis.asyncio import Redis
from starlette.datastructures import Headers
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bem.kit.breaker import RedisBreaker
from bem.kit.errors import Problem, problem_response
from bem.kit.state import state_of

log = structlog.get_logger("bem.ratelimit")

REDIS_TIMEOUT_S = 0.25
RETRY_REDIS_AFTER_S = 5.0
EXEMPT_PREFIXES = ("/health", "/docs", "/redoc", "/openapi.json", "/docs-assets")


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    limit: int
    remaining: int
    reset_s: int  # seconds until the window frees capacity

    def headers(self) -> dict[str, str]:
        return {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_s),
        }


class RateLimitExceeded(Problem):
    status, slug = 429, "rate-limited"

    def __init__(self, rule: str, verdict: Verdict) -> None:
        headers = {**verdict.headers(), "Retry-After": str(max(verdict.reset_s, 1))}
        super().__init__(f"Rate limit {rule!r} exceeded; retry later.", headers=headers)


# For each limit i: KEYS[2i-1], KEYS[2i] its previous and current window counters, ARGV[2i-1],
# ARGV[2i] its amount and window (ms). A current counter lives two windows; once one window
# has passed it becomes the previous one, whose weight decays with its remaining TTL. Counts
# the hit when the weighted count leaves room. Returns, per limit: {allowed (1/0),
# previous count, previous TTL (ms), current count, current TTL (ms)}.
SLIDING_WINDOWS = """
local out = {}
for i = 1, #ARGV / 2 do
  local previous, current = KEYS[2 * i - 1], KEYS[2 * i]
  local limit, window = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  local current_ttl = redis.call('PTTL', current)
  if current_ttl > 0 and current_ttl < window then
    redis.call('RENAME', current, previous)
    redis.call('SET', current, 0, 'PX', current_ttl + window)
  end
  local previous_count = tonumber(redis.call('GET', previous)) or 0
  local previous_ttl = math.max(redis.call('PTTL', previous), 0)
  local current_count = tonumber(redis.call('GET', current)) or 0
  current_ttl = math.max(redis.call('PTTL', current), 0)
  local allowed = 0
  if math.floor(previous_count * previous_ttl / window) + current_count + 1 <= limit then
    allowed = 1
    current_count = current_count + 1
    if current_ttl > 0 then
      redis.call('INCR', current)
    else
      current_ttl = 2 * window
      redis.call('SET', current, 1, 'PX', current_ttl)
    end
  end
  out[i] = {allowed, previous_count, previous_ttl, current_count, current_ttl}
end
return out
"""


def window_verdict(item: RateLimitItem, counts: list[int]) -> Verdict:
    """A Verdict from one limit's answer of ``SLIDING_WINDOWS``."""
    allowed, previous, previous_ttl, current, current_ttl = counts
    window = item.get_expiry() * 1000
    used = previous * previous_ttl // window + current
    # Room comes back when the previous window's weight has decayed enough, or else when
    # the current window becomes the previous one.
    if previous and current < item.amount:
        wait_ms = previous_ttl - (item.amount - current) * window / previous
    else:
        wait_ms = current_ttl - window
    reset = max(0, math.ceil(wait_ms / 1000))
    return Verdict(bool(allowed), item.amount, max(item.amount - used, 0), reset)


class Limiter:
    """Hits counters in Redis, or in memory when Redis is absent or failing."""

    def __init__(
        self,
        redis_url: str | None,
        rules: dict[str, str],
        default: str,
        ceiling: str,
        key_prefix: str = "bem",
    ):
        self.redis: Redis | None = None
        if redis_url:
            self.redis = Redis.from_url(
                redis_url,
                socket_timeout=REDIS_TIMEOUT_S,
                socket_connect_timeout=REDIS_TIMEOUT_S,
            )
            self.windows = self.redis.register_script(SLIDING_WINDOWS)
        self.key_prefix = f"{key_prefix}:rl"
        self.memory = MemoryStorage()
        self.on_reject: Callable[[str], None] = lambda rule: None  # e.g. a metrics counter
        self.rules = {name: parse(value) for name, value in rules.items()}
        self.default = parse(default)
        self.ceiling = parse(ceiling)
        self.breaker = RedisBreaker(bool(redis_url), RETRY_REDIS_AFTER_S, "ratelimit_degraded")

    @property
    def status(self) -> str:
        return self.breaker.status

    def rule(self, name: str) -> RateLimitItem:
        return self.rules[name]

    async def _hit(self, storage: Storage, item: RateLimitItem, key: str) -> Verdict:
        strategy = SlidingWindowCounterRateLimiter(storage)
        allowed = await strategy.hit(item, key)
        stats = await strategy.get_window_stats(item, key)
        reset = max(0, math.ceil(stats.reset_time - time.time()))
        return Verdict(allowed, item.amount, max(stats.remaining, 0), reset)

    async def _hit_redis(self, hits: list[tuple[RateLimitItem, str]]) -> list[Verdict]:
        keys = [f"{self.key_prefix}:{key}:{w}" for _, key in hits for w in ("p", "c")]
        args = [n for item, _ in hits for n in (item.amount, item.get_expiry() * 1000)]
        answers = await self.windows(keys=keys, args=args)
        return [
            window_verdict(item, counts) for (item, _), counts in zip(hits, answers, strict=True)
        ]

    async def hit_all(self, hits: list[tuple[RateLimitItem, str]]) -> list[Verdict]:
        """Each (limit, key) checked and counted; in Redis, all in one round trip."""
        if self.redis is not None and self.breaker.usable():
            try:
                verdicts = await asyncio.wait_for(self._hit_redis(hits), REDIS_TIMEOUT_S * 4)
            except Exception as exc:  # noqa: BLE001 - any storage failure means "fall back"
                self.breaker.failed(exc)
            else:
                self.breaker.answered()
                return verdicts
        return [await self._hit(self.memory, item, key) for item, key in hits]

    async def hit(self, item: RateLimitItem, key: str) -> Verdict:
        (verdict,) = await self.hit_all([(item, key)])
        return verdict

    async def close(self) -> None:
        if self.redis is not None:
            await self.redis.aclose()


def client_ip(scope: Scope, trusted: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> str:
    """The peer address, or, behind a trusted proxy, the nearest untrusted X-Forwarded-For."""
    peer = str((scope.get("client") or ("unknown", 0))[0])

    def is_trusted(address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in trusted)

    if not trusted or not is_trusted(peer):
        return str(peer)
    forwarded = [
        part.strip()
        for value in Headers(scope=scope).getlist("x-forwarded-for")
        for part in value.split(",")
    ]
    for address in reversed(forwarded):
        if not is_trusted(address):
            return address
    return str(peer)


def _state(scope: Scope) -> dict[str, Any]:
    state: dict[str, Any] = scope.setdefault("state", {})
    return state


class RateLimitMiddleware:
    """Default and per-IP limits for every request; RateLimit-* headers on every answer."""

    def __init__(
        self,
        app: ASGIApp,
        limiter: Limiter,
        identify: Callable[[Scope], str],
        trusted_proxies: list[ipaddress.IPv4Network | ipaddress.IPv6Network],
    ) -> None:
        self.app = app
        self.limiter = limiter
        self.identify = identify
        self.trusted = trusted_proxies

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(EXEMPT_PREFIXES):
            await self.app(scope, receive, send)
            return
        ip = client_ip(scope, self.trusted)
        identity = self.identify(scope) or f"ip:{ip}"
        state = _state(scope)
        state["rate_identity"] = identity
        ceiling, default = await self.limiter.hit_all(
            [
                (self.limiter.ceiling, f"ceiling:ip:{ip}"),
                (self.limiter.default, f"default:{identity}"),
            ]
        )
        state["rate_verdicts"] = [default, ceiling]
        for rule, verdict in (("per-ip ceiling", ceiling), ("default", default)):
            if not verdict.allowed:
                log.warning("rate_limited", rule=rule, identity=identity)
                self.limiter.on_reject(rule)
                exc = RateLimitExceeded(rule, verdict)
                response = problem_response(exc.status, exc.slug, exc.detail, exc.headers)
                await response(scope, receive, send)
                return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                if b"ratelimit-limit" not in names:
                    tightest = min(state["rate_verdicts"], key=lambda v: v.remaining)
                    headers += [(k.encode(), v.encode()) for k, v in tightest.headers().items()]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def rate_limit(rule: str, by: Callable[..., Awaitable[str]] | None = None) -> Any:
    """A route's own named limit (configured in settings), per caller identity, or per what
    the dependency ``by`` names (the user, so minting another token buys no new budget)."""

    if by is None:

        async def per_caller(request: Request) -> None:
            await spend(request, rule, _state(request.scope).get("rate_identity", "anonymous"))

        return Depends(per_caller)

    # A default, not an annotation: annotations are strings here, and FastAPI resolves them
    # in the module, where ``by`` is not.
    async def per_key(request: Request, identity: str = Depends(by)) -> None:
        await spend(request, rule, identity)

    return Depends(per_key)


async def spend(request: Request, rule: str, identity: str) -> None:
    """Take one request of ``identity``'s budget under the named ``rule``; 429 when none is
    left. For a route whose parameters decide whether it spends (``rate_limit`` otherwise)."""
    limiter = state_of(request).limiter
    if limiter is None:
        return
    verdict = await limiter.hit(limiter.rule(rule), f"{rule}:{identity}")
    _state(request.scope).setdefault("rate_verdicts", []).append(verdict)
    if not verdict.allowed:
        log.warning("rate_limited", rule=rule, identity=identity)
        limiter.on_reject(rule)
        raise RateLimitExceeded(rule, verdict)


def concurrency_slot(
    kind: str, limit: Callable[[Any], int], by: Callable[..., Awaitable[str]]
) -> Any:
    """A route dependency holding one of ``limit(settings)`` concurrent slots of ``kind``
    per what ``by`` names (the user), for as long as the request runs; 429 when none is
    free."""

    async def slot(conn: HTTPConnection, identity: str = Depends(by)) -> AsyncIterator[None]:
        state = state_of(conn)
        if state.concurrency is None:
            yield
            return
        async with state.concurrency.slot(f"{kind}:{identity}", limit(state.settings)):
            yield

    return Depends(slot)


# Take a slot unless ``limit`` unexpired leases are held: drop expired leases, count, add.
ACQUIRE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
"""


class Concurrency:
    """At most ``limit`` concurrent expensive operations per identity, across processes when
    Redis is configured, else per process.

    In Redis each holder has a lease (a member of a sorted set, scored by its deadline) that
    it renews while it works; a holder that dies (kill -9) stops renewing and its lease
    lapses within ``lease_s``. Refused attempts change nothing, so retrying cannot keep a
    dead holder's slot alive (a single counter with a TTL, re-armed by every attempt, did)."""

    def __init__(
        self, limiter: Limiter, redis_client: Any, key_prefix: str = "bem", lease_s: float = 60.0
    ) -> None:
        self.limiter = limiter
        self.lease_s = lease_s
        self.prefix = f"{key_prefix}:busy"
        self._local: dict[str, int] = {}
        self.redis = redis_client
        self._acquire = redis_client.register_script(ACQUIRE) if redis_client else None

    def _deadline_ms(self) -> int:
        return int((time.time() + self.lease_s) * 1000)

    async def _lease(self, key: str, holder: str, limit: int) -> bool | None:
        """Take a lease in Redis: True, False when full, None when Redis is unusable."""
        if self._acquire is None or self.limiter.status != "redis":
            return None
        now_ms = int(time.time() * 1000)
        ttl_ms = int(self.lease_s * 2000)
        try:
            taken = await asyncio.wait_for(
                self._acquire(
                    keys=[key], args=[now_ms, self._deadline_ms(), holder, limit, ttl_ms]
                ),
                REDIS_TIMEOUT_S * 4,
            )
        except Exception as exc:  # noqa: BLE001 - Redis trouble: count in this process instead
            log.warning("concurrency_redis_failed", error=type(exc).__name__)
            return None
        return bool(taken)

    async def _renew(self, key: str, holder: str) -> None:
        while True:
            await asyncio.sleep(self.lease_s / 3)
            try:
                await asyncio.wait_for(
                    self.redis.zadd(key, {holder: self._deadline_ms()}, xx=True),
                    REDIS_TIMEOUT_S * 4,
                )
            except Exception as exc:  # noqa: BLE001 - the next renewal may get through
                log.warning("concurrency_renew_failed", error=type(exc).__name__)

    @asynccontextmanager
    async def slot(self, key: str, limit: int) -> AsyncIterator[None]:
        busy = Problem(
            f"At most {limit} of these may run at once; retry when one finishes.",
            status=429,
            slug="too-many-concurrent",
            headers={"Retry-After": "5"},
        )
        name, holder = f"{self.prefix}:{key}", uuid.uuid4().hex
        leased = await self._lease(name, holder, limit)
        if leased is False:
            raise busy
        if leased is None:  # no Redis: this process counts
            if self._local.get(key, 0) >= limit:
                raise busy
            self._local[key] = self._local.get(key, 0) + 1
            try:
                yield
            finally:
                self._local[key] -= 1
            return
        renewal = asyncio.create_task(self._renew(name, holder))
        try:
            yield
        finally:
            renewal.cancel()
            try:
                await asyncio.wait_for(self.redis.zrem(name, holder), REDIS_TIMEOUT_S * 4)
            except Exception as exc:  # noqa: BLE001 - the lease lapses by itself
                log.warning("concurrency_release_failed", error=type(exc).__name__)
