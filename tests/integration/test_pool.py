"""The connection pool against a real PostgreSQL: bounded, fails fast when exhausted, and
recovers connections the server killed (found dead by a request's first statement, which is
then replayed); connections carry BEM's session settings."""

from __future__ import annotations

import time

import asyncpg
import pytest

from tests.conftest import PG_URL, _dsn, make_api, settings_for

pytestmark = pytest.mark.postgres


async def test_exhausted_pool_answers_503_fast(postgres_url: str) -> None:
    settings = settings_for(postgres_url, db_pool_size=1, db_max_overflow=0, db_pool_timeout=0.3)
    async with make_api(settings) as api:
        headers = await api.user("alice")
        async with api.app.state.engine.connect():  # hold the only connection
            started = time.perf_counter()
            r = await api.client.get("/v1/projects", headers=headers)
            elapsed = time.perf_counter() - started
        assert r.status_code == 503
        assert r.headers["retry-after"] == "1"
        assert r.json()["type"].endswith("/database-busy")
        assert elapsed < 2.0  # bounded by pool_timeout, not a hang
        assert (await api.client.get("/v1/projects", headers=headers)).status_code == 200


async def test_server_side_connection_count_stays_within_the_cap(postgres_url: str) -> None:
    import asyncio

    settings = settings_for(postgres_url, db_pool_size=2, db_max_overflow=1)
    database = postgres_url.rsplit("/", 1)[1]
    async with make_api(settings) as api:
        headers = await api.user("alice")
        results = await asyncio.gather(
            *(api.client.get("/v1/projects", headers=headers) for _ in range(30))
        )
        assert {r.status_code for r in results} <= {200, 503}
        conn = await asyncpg.connect(_dsn(PG_URL))
        try:
            count = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1", database
            )
        finally:
            await conn.close()
        assert count <= 3


async def test_killed_backend_connection_is_recovered(postgres_url: str) -> None:
    settings = settings_for(postgres_url, db_pool_size=2, db_max_overflow=0)
    database = postgres_url.rsplit("/", 1)[1]
    async with make_api(settings) as api:
        headers = await api.user("alice")
        assert (await api.client.get("/v1/projects", headers=headers)).status_code == 200
        conn = await asyncpg.connect(_dsn(PG_URL))
        try:
            killed = await conn.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = $1 AND pid <> pg_backend_pid()",
                database,
            )
        finally:
            await conn.close()
        assert killed >= 1
        r = await api.client.get("/v1/projects", headers=headers)
        assert r.status_code == 200


async def test_connections_carry_the_session_settings(postgres_url: str) -> None:
    settings = settings_for(postgres_url, db_statement_timeout_ms=12_000)
    async with make_api(settings) as api, api.app.state.engine.connect() as conn:
        assert (await conn.exec_driver_sql("SHOW statement_timeout")).scalar() == "12s"
        assert (await conn.exec_driver_sql("SHOW jit")).scalar() == "off"
