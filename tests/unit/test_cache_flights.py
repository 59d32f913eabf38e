"""Single flight in one process: waiters share a computation, see its error, and take over
when the request computing it is cancelled (its client went away)."""

from __future__ import annotations

import asyncio

import pytest

from bem.kit.cache import Cache


def memory_cache() -> Cache:
    return Cache(None, "test", ttl_s=60, memory_bytes=1024 * 1024)


async def test_waiters_share_one_computation() -> None:
    cache, runs = memory_cache(), []

    async def compute() -> dict[str, int]:
        runs.append(1)
        await asyncio.sleep(0.05)
        return {"n": 1}

    answers = await asyncio.gather(*(cache.get_or_compute("k:1", compute) for _ in range(5)))
    assert answers == [b'{"n":1}'] * 5 and len(runs) == 1  # the JSON, encoded once
    assert (cache.hits, cache.misses) == (4, 1)


async def test_waiters_see_the_error_and_it_is_not_cached() -> None:
    cache = memory_cache()

    async def failing() -> None:
        await asyncio.sleep(0.05)
        raise ValueError("bad selector")

    results = await asyncio.gather(
        *(cache.get_or_compute("k:2", failing) for _ in range(3)), return_exceptions=True
    )
    assert all(isinstance(r, ValueError) for r in results)

    async def fine() -> int:
        return 7

    assert await cache.get_or_compute("k:2", fine) == b"7"


async def test_a_cancelled_computation_is_taken_over_by_a_waiter() -> None:
    cache, started = memory_cache(), asyncio.Event()

    async def slow() -> int:
        started.set()
        await asyncio.sleep(10)
        return 1

    async def quick() -> int:
        return 2

    first = asyncio.create_task(cache.get_or_compute("k:3", slow))
    await started.wait()
    second = asyncio.create_task(cache.get_or_compute("k:3", quick))
    await asyncio.sleep(0.01)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert await asyncio.wait_for(second, 2) == b"2"
