"""Stop asking a failing Redis for a while.

After a Redis error or timeout, callers use their own fallback (per-process rate limits,
answers computed without the cache) for ``retry_after_s`` instead of waiting on Redis in
every request, then try it again.
"""

from __future__ import annotations

import time

import structlog

log = structlog.get_logger("bem.redis")


class RedisBreaker:
    def __init__(self, configured: bool, retry_after_s: float, event: str) -> None:
        self.configured = configured
        self.retry_after_s = retry_after_s
        self.event = event  # the warning logged when Redis fails, e.g. "cache_degraded"
        self._retry_at = 0.0

    @property
    def status(self) -> str:
        """``memory`` (no Redis configured), ``degraded`` (failing: bypassed) or ``redis``."""
        if not self.configured:
            return "memory"
        return "redis" if self.usable() else "degraded"

    def usable(self) -> bool:
        return self.configured and time.monotonic() >= self._retry_at

    def trip(self, exc: BaseException) -> None:
        self._retry_at = time.monotonic() + self.retry_after_s
        log.warning(self.event, error=type(exc).__name__)
