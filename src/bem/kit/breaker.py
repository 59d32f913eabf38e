"""Stop asking a failing Redis for a while.

After Redis refuses or drops a connection, callers use their own fallback (per-process rate
limits, answers computed without the cache) for ``retry_after_s`` instead of waiting on
Redis in every request, then try it again. A slow answer (a timeout) is different: Redis is
there but busy for a moment (a fork for a snapshot, a long command), so it costs only that
call, and the breaker opens only after ``SLOW_IN_A_ROW`` timeouts with no answer between
them. One slow call used to turn the cache off for 10 s, sending every takeoff and diff to
PostgreSQL at once under load.
"""

from __future__ import annotations

import time

import redis.exceptions
import structlog

log = structlog.get_logger("bem.redis")

SLOW_IN_A_ROW = 3


class RedisBreaker:
    def __init__(self, configured: bool, retry_after_s: float, event: str) -> None:
        self.configured = configured
        self.retry_after_s = retry_after_s
        self.event = event  # the warning logged when Redis fails, e.g. "cache_degraded"
        self._retry_at = 0.0
        self._slow = 0  # timeouts since the last answer

    @property
    def status(self) -> str:
        """``memory`` (no Redis configured), ``degraded`` (failing: bypassed) or ``redis``."""
        if not self.configured:
            return "memory"
        return "redis" if self.usable() else "degraded"

    def usable(self) -> bool:
        return self.configured and time.monotonic() >= self._retry_at

    def answered(self) -> None:
        self._slow = 0

    def failed(self, exc: BaseException) -> None:
        if isinstance(exc, TimeoutError | redis.exceptions.TimeoutError):
            self._slow += 1
            if self._slow < SLOW_IN_A_ROW:
                log.info(f"{self.event.removesuffix('_degraded')}_slow", slow_in_a_row=self._slow)
                return
        self._slow = 0
        self._retry_at = time.monotonic() + self.retry_after_s
        log.warning(self.event, error=type(exc).__name__)
