"""A bound on expensive work per process, so a burst of it cannot take every database
connection.

Uncached takeoffs and diff pages each hold a connection, and PostgreSQL's CPU, for tens to
hundreds of milliseconds (a 100k-element diff page: 860 ms under load, issue #17). Without a
bound, enough of them at once take the whole pool and light requests (an element, a page)
fail with 503 ``database-busy`` too. Here they wait for one of ``BEM_HEAVY_QUERIES`` slots,
in arrival order; one that waits longer than ``BEM_HEAVY_QUERY_WAIT_S`` is 503 ``busy``
with Retry-After, and nothing else waits behind it. Cached answers take no slot.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from bem.kit.errors import Problem

RETRY_AFTER_S = 2


class Busy(Problem):
    status, slug = 503, "busy"

    def __init__(self, wait_s: float) -> None:
        super().__init__(
            f"Too many takeoffs and diffs are being computed; none was free within {wait_s:g} s.",
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )


class Bulkhead:
    def __init__(self, slots: int, wait_s: float) -> None:
        self._slots = asyncio.Semaphore(slots)
        self.wait_s = wait_s

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        try:
            await asyncio.wait_for(self._slots.acquire(), self.wait_s)
        except TimeoutError:
            raise Busy(self.wait_s) from None
        try:
            yield
        finally:
            self._slots.release()
