"""Read replicas on a real streaming replica: a ready version's data is read there, a version
the replica has not replayed yet is read on the primary (a replica makes an answer slower,
never wrong), a replica that is away is passed over, and its lag is a metric."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import asyncpg
import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from bem.kit import migrate
from tests.conftest import Api, make_api, settings_for
from tests.helpers import OwnPostgres
from tests.integration.test_metrics import sample

pytestmark = pytest.mark.postgres

STOREYS = [
    {"global_id": f"00000000000000000000S{i}", "ifc_class": "IfcBuildingStorey", "name": f"L{i}"}
    for i in range(3)
]
ELEMENTS = "FROM version_elements"  # what an element page reads besides the version row


@contextmanager
def statements(engine: AsyncEngine) -> Iterator[list[str]]:
    seen: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(" ".join(statement.split()))

    event.listen(engine.sync_engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", count)


async def replayed(replica: OwnPostgres, version_id: str) -> None:
    conn = await asyncpg.connect(replica.url)
    try:
        for _ in range(100):
            query = "SELECT status FROM versions WHERE id = $1::uuid"
            if await conn.fetchval(query, version_id) == "ready":
                return
            await asyncio.sleep(0.05)
    finally:
        await conn.close()
    raise AssertionError(f"the replica never replayed {version_id}")


async def replay(replica: OwnPostgres, paused: bool) -> None:
    conn = await asyncpg.connect(replica.url)
    try:
        await conn.execute(f"SELECT pg_wal_replay_{'pause' if paused else 'resume'}()")
    finally:
        await conn.close()


async def page(api: Api, headers: dict[str, str], vid: str) -> tuple[list[str], list[str]]:
    """An element page's statements on the primary and on the replica."""
    assert api.state.replicas is not None
    with (
        statements(api.state.engine) as primary,
        statements(api.state.replicas.all[0].engine) as replica,
    ):
        r = await api.client.get(f"/v1/versions/{vid}/elements", headers=headers)
    assert r.status_code == 200, r.text
    assert {e["name"] for e in r.json()["items"]} == {s["name"] for s in STOREYS}
    return primary, replica


def reads(api: Api, outcome: str, replica: str = "0") -> float:
    text = api.state.metrics.exposition().decode()
    return sample(text, "bem_db_replica_reads_total", replica=replica, outcome=outcome)


async def test_version_data_is_read_on_a_replica_that_has_it(
    replicated_postgres: tuple[OwnPostgres, OwnPostgres],
) -> None:
    primary, replica = replicated_postgres
    settings = settings_for(
        primary.url, database_read_url=replica.url, cache_enabled=False, db_connect_timeout=1.0
    )
    await asyncio.to_thread(migrate.upgrade, settings)
    async with make_api(settings) as api:
        headers = await api.user("alice")
        _, mid = await api.model(headers)
        first = await api.upload(headers, mid, STOREYS)
        await replayed(replica, first)

        on_primary, on_replica = await page(api, headers, first)
        assert any(ELEMENTS in s for s in on_replica), on_replica
        assert not any(ELEMENTS in s for s in on_primary), on_primary  # only auth there
        assert reads(api, "replica") == 1

        await replay(replica, paused=True)  # the replica falls behind
        second = await api.upload(headers, mid, STOREYS)
        on_primary, on_replica = await page(api, headers, second)
        assert any(ELEMENTS in s for s in on_primary) and not any(ELEMENTS in s for s in on_replica)
        assert reads(api, "behind") == 1
        metrics = (await api.client.get("/metrics")).text
        assert 'bem_db_replica_lag_seconds{replica="0"}' in metrics

        await replay(replica, paused=False)
        await replayed(replica, second)
        _, on_replica = await page(api, headers, second)
        assert any(ELEMENTS in s for s in on_replica)

        await asyncio.to_thread(replica.stop)  # away: the primary answers, at once
        on_primary, _ = await page(api, headers, first)
        assert any(ELEMENTS in s for s in on_primary)
        assert reads(api, "unavailable") == 1
        await page(api, headers, first)  # passed over without trying it again
        assert reads(api, "unavailable", replica="none") == 1


def test_read_replicas_need_postgresql() -> None:
    with pytest.raises(ValueError, match="PostgreSQL"):
        settings_for("sqlite+aiosqlite:///x.db", database_read_url="postgresql://h/db")
