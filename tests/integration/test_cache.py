"""The read cache: a repeated read runs no element SQL, ETags answer 304, concurrent misses
compute once (in a process and across processes through Redis), and a Redis that is down or
frozen only makes answers slower, never wrong."""

from __future__ import annotations

import asyncio
import re
import signal
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import pytest
import redis
from sqlalchemy import event

from bem.config import Settings
from bem.kit import cache
from bem.kit.breaker import SLOW_IN_A_ROW
from tests.conftest import Api, make_api, settings_for
from tests.helpers import OwnRedis
from tests.integration.test_query_api import loaded

ELEMENT_TABLES = re.compile(r"\b(version_elements|element_payloads|element_facts|relations)\b")
TAKEOFF = {"group_by": "storey,class", "measures": "Qto_WallBaseQuantities.NetVolume"}


@contextmanager
def element_sql(api: Api) -> Iterator[list[str]]:
    """The statements that read element tables while the block runs."""
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if ELEMENT_TABLES.search(statement):
            seen.append(statement)

    engine = api.app.state.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def metric(api: Api, kind: str, result: str) -> float:
    value = api.app.state.metrics.registry.get_sample_value(
        "bem_cache_requests_total", {"kind": kind, "result": result}
    )
    return value or 0.0


@pytest.fixture
def redis_prefix(shared_redis: str) -> Iterator[str]:
    prefix = f"bemtest{uuid.uuid4().hex[:8]}"
    yield prefix
    client = redis.Redis.from_url(shared_redis)
    for key in client.scan_iter(f"{prefix}:*"):
        client.delete(key)
    client.close()


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("takeoff", TAKEOFF),
        ("elements", {"q": 'IfcWall, location="Level 01"', "limit": 5}),
        ("tree", {}),
        ("diff", {}),
    ],
)
async def test_second_read_runs_no_element_sql(api: Api, path: str, params: Any) -> None:
    headers, vid = await loaded(api, 24)
    url = f"/v1/versions/{vid}/{path}" + (f"/{vid}" if path == "diff" else "")
    with element_sql(api) as first_sql:
        first = await api.client.get(url, params=params, headers=headers)
    assert first.status_code == 200, first.text
    assert first_sql, "the first read computes"
    with element_sql(api) as second_sql:
        second = await api.client.get(url, params=params, headers=headers)
    assert second.json() == first.json()
    assert second_sql == []
    kind = "elements" if path == "elements" else path
    assert (metric(api, kind, "miss"), metric(api, kind, "hit")) == (1, 1)


@pytest.mark.parametrize("path", ["takeoff", "elements", "tree", "diff", "query"])
async def test_a_hit_is_served_as_stored(sqlite_api: Api, path: str) -> None:
    """The cache's bytes go out untouched: decoded and encoded again (through FastAPI's
    encoder or response model), a cached page cost as much CPU as computing it. The stored
    entry is marked here (leading spaces, which no encoder writes) to see that it is what
    is served."""
    headers, vid = await loaded(sqlite_api, 12)
    url = f"/v1/versions/{vid}/{path}" + (f"/{vid}" if path == "diff" else "")
    ask = (
        (lambda: sqlite_api.client.post(url, json={"q": "IfcWall"}, headers=headers))
        if path == "query"
        else (lambda: sqlite_api.client.get(url, headers=headers))
    )
    first = await ask()
    assert first.status_code == 200, first.text
    memory = sqlite_api.app.state.cache.memory
    (key,) = [k for k in memory._entries if not k.startswith("diff-summary:")]  # the page's
    marked = b"  " + first.content
    memory.set(key, marked, 60)
    second = await ask()
    assert second.content == marked and second.json() == first.json()
    assert second.headers["content-type"] == "application/json"


async def test_etag_answers_304_and_names_the_representation(api: Api) -> None:
    headers, vid = await loaded(api, 12)
    url = f"/v1/versions/{vid}/takeoff"
    r = await api.client.get(url, params=TAKEOFF, headers=headers)
    etag = r.headers["etag"]
    assert r.headers["cache-control"] == "private, no-cache"
    again = await api.client.get(url, params=TAKEOFF, headers={**headers, "If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    # A proxy that compressed the answer (nginx's gzip) made the tag weak: it still matches.
    weak = {**headers, "If-None-Match": f'"other", W/{etag}'}
    assert (await api.client.get(url, params=TAKEOFF, headers=weak)).status_code == 304
    csv = await api.client.get(url, params={**TAKEOFF, "format": "csv"}, headers=headers)
    other = await api.client.get(url, params={"group_by": "type"}, headers=headers)
    assert len({etag, csv.headers["etag"], other.headers["etag"]}) == 3
    # Access is checked before the ETag: a stranger holding it learns nothing.
    stranger = await api.user("mallory")
    r = await api.client.get(url, params=TAKEOFF, headers={**stranger, "If-None-Match": etag})
    assert r.status_code == 404


async def test_a_deleted_project_is_404_although_its_answers_are_cached(api: Api) -> None:
    headers, vid = await loaded(api, 12)
    url = f"/v1/versions/{vid}/takeoff"
    assert (await api.client.get(url, headers=headers)).status_code == 200
    project = (await api.client.get(f"/v1/versions/{vid}", headers=headers)).json()
    model = (await api.client.get(f"/v1/models/{project['model_id']}", headers=headers)).json()
    r = await api.client.delete(f"/v1/projects/{model['project_id']}", headers=headers)
    assert r.status_code == 204
    assert (await api.client.get(url, headers=headers)).status_code == 404


async def test_concurrent_misses_compute_once(sqlite_api: Api) -> None:
    headers, vid = await loaded(sqlite_api, 24)
    url = f"/v1/versions/{vid}/takeoff"
    with element_sql(sqlite_api) as statements:
        answers = await asyncio.gather(
            *(sqlite_api.client.get(url, params=TAKEOFF, headers=headers) for _ in range(8))
        )
    assert {r.status_code for r in answers} == {200}
    assert len({r.text for r in answers}) == 1
    assert len(statements) == 1  # the takeoff ran once for eight requests


@asynccontextmanager
async def two_processes(settings: Settings) -> AsyncIterator[tuple[Api, Api]]:
    """Two apps on one database and one Redis, as two API processes would be."""
    async with make_api(settings) as first, make_api(settings) as second:
        yield first, second


@pytest.mark.postgres
async def test_processes_share_answers_and_one_computes(
    postgres_url: str, shared_redis: str, redis_prefix: str
) -> None:
    settings = settings_for(postgres_url, redis_url=shared_redis, redis_key_prefix=redis_prefix)
    async with two_processes(settings) as (first, second):
        headers, vid = await loaded(first, 24)
        second.tokens["alice"], second.users["alice"] = first.tokens["alice"], first.users["alice"]
        url = f"/v1/versions/{vid}/takeoff"
        with element_sql(first) as a, element_sql(second) as b:
            answers = await asyncio.gather(
                *(api.client.get(url, params=TAKEOFF, headers=headers) for api in (first, second))
            )
        assert [r.status_code for r in answers] == [200, 200]
        assert answers[0].json() == answers[1].json()
        assert len(a) + len(b) == 1  # the other process waited for the first's answer
        with element_sql(second) as later:
            r = await second.client.get(url, params={"group_by": "type"}, headers=headers)
        assert r.status_code == 200 and later
        with element_sql(first) as shared:
            again = await first.client.get(url, params={"group_by": "type"}, headers=headers)
        assert again.json() == r.json() and shared == []


async def test_redis_down_still_answers_correctly(sqlite_url: str) -> None:
    unused = "redis://127.0.0.1:9/0"  # the discard port: nothing listens
    settings = settings_for(sqlite_url, redis_url=unused, rate_limit_enabled=False)
    async with make_api(settings) as api:
        headers, vid = await loaded(api, 12)
        url = f"/v1/versions/{vid}/takeoff"
        answers = [await api.client.get(url, params=TAKEOFF, headers=headers) for _ in range(2)]
        assert [r.status_code for r in answers] == [200, 200]
        assert answers[0].json() == answers[1].json()
        errors = api.app.state.metrics.registry.get_sample_value("bem_cache_errors_total")
        assert errors and errors >= 1
        admin = await api.user("root", admin=True)
        health = (await api.client.get("/health", headers=admin)).json()
        assert health["cache"]["backend"] == "degraded"


async def test_frozen_redis_costs_a_bounded_wait_then_is_bypassed_until_it_returns(
    sqlite_url: str,
    own_redis: OwnRedis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(cache, "RETRY_REDIS_AFTER_S", 1.0)
    settings = settings_for(sqlite_url, redis_url=own_redis.url, rate_limit_enabled=False)
    async with make_api(settings) as api:
        headers, vid = await loaded(api, 12)
        url = f"/v1/versions/{vid}/takeoff"
        want = (await api.client.get(url, params=TAKEOFF, headers=headers)).json()
        assert own_redis.proc is not None
        own_redis.proc.send_signal(signal.SIGSTOP)  # frozen: commands hang
        try:
            started = time.perf_counter()
            r = await api.client.get(url, params=TAKEOFF, headers=headers)
            frozen_s = time.perf_counter() - started
            assert r.json() == want
            assert frozen_s < 2.0  # one bounded cache call, then the database answers
            assert api.app.state.cache.status == "degraded"
            with element_sql(api) as bypassed:
                assert (await api.client.get(url, params=TAKEOFF, headers=headers)).json() == want
            assert bypassed  # computed directly while Redis is out
        finally:
            own_redis.proc.send_signal(signal.SIGCONT)
        await asyncio.sleep(1.1)
        with element_sql(api) as recovered:
            assert (await api.client.get(url, params=TAKEOFF, headers=headers)).json() == want
        assert recovered == [] and api.app.state.cache.status == "redis"


async def test_one_slow_redis_call_misses_that_lookup_only(
    sqlite_url: str, own_redis: OwnRedis
) -> None:
    """Redis frozen for less than three call timeouts (a fork, a long command): the request
    under it computes its answer, and the cache stays on for the next ones."""
    settings = settings_for(sqlite_url, redis_url=own_redis.url, rate_limit_enabled=False)
    async with make_api(settings) as api:
        headers, vid = await loaded(api, 12)
        url = f"/v1/versions/{vid}/takeoff"
        assert own_redis.proc is not None
        own_redis.proc.send_signal(signal.SIGSTOP)
        thaw = asyncio.get_running_loop().call_later(
            cache.REDIS_TIMEOUT_S * 1.5, own_redis.proc.send_signal, signal.SIGCONT
        )
        try:
            slow = await api.client.get(url, params=TAKEOFF, headers=headers)
        finally:
            thaw.cancel()
            own_redis.proc.send_signal(signal.SIGCONT)
        assert slow.status_code == 200
        errors = api.app.state.metrics.registry.get_sample_value("bem_cache_errors_total")
        assert errors is not None and 1 <= errors < SLOW_IN_A_ROW  # calls under the freeze ...
        assert api.app.state.cache.status == "redis"  # ... and the cache stayed on
        with element_sql(api) as cached:
            assert (
                await api.client.get(url, params=TAKEOFF, headers=headers)
            ).json() == slow.json()
        assert cached == []  # answered from Redis
