"""Dependency outages: a stopped PostgreSQL answers 503 with Retry-After on every route (never
500), the change feed pauses without dropping its followers, and everything recovers without
a restart. Fault tests run their own PostgreSQL cluster on a spare port."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from bem.kit import migrate
from tests.conftest import Api, make_api, settings_for
from tests.helpers import OwnPostgres
from tests.integration.test_live import next_events, served, sse_frames

STOREY = {"global_id": "0000000000000000000S01", "ifc_class": "IfcBuildingStorey", "name": "L1"}


def requests_of(owner: dict[str, str], token: dict[str, str], ids: dict[str, str]) -> list[Any]:
    """(method, path, headers, keyword arguments): reads and writes through every layer."""
    ndjson = {**owner, "content-type": "application/x-ndjson"}
    vid, mid, pid = ids["version"], ids["model"], ids["project"]
    return [
        ("GET", "/v1/projects", owner, {}),
        ("GET", "/v1/me", token, {}),
        ("GET", f"/v1/projects/{pid}/models", token, {}),
        ("GET", f"/v1/versions/{vid}/elements?q=IfcBuildingStorey", owner, {}),
        ("GET", f"/v1/versions/{vid}/takeoff?group_by=class", owner, {}),
        ("GET", f"/v1/versions/{vid}/diff/{vid}", owner, {}),
        ("GET", f"/v1/projects/{pid}/events", owner, {}),
        ("POST", "/v1/projects", owner, {"json": {"name": "During"}}),
        ("POST", f"/v1/models/{mid}/versions", ndjson, {"content": orjson.dumps(STOREY)}),
    ]


async def world(api: Api, owner: dict[str, str]) -> dict[str, str]:
    pid, mid = await api.model(owner)
    return {"project": pid, "model": mid, "version": await api.upload(owner, mid, [STOREY])}


@pytest.fixture
async def outage_settings(own_postgres: OwnPostgres) -> Any:
    settings = settings_for(own_postgres.url, db_connect_timeout=1.0, db_pool_timeout=1.0)
    await asyncio.to_thread(migrate.upgrade, settings)
    return settings


async def test_a_stopped_database_answers_503_everywhere_and_recovers(
    own_postgres: OwnPostgres, outage_settings: Any
) -> None:
    async with make_api(outage_settings) as api:
        owner = await api.user("alice")
        token = await api.api_token("alice", ["projects:write", "models:write"])
        calls = requests_of(owner, token, await world(api, owner))

        await asyncio.to_thread(own_postgres.stop)
        for method, path, headers, kwargs in calls:
            r = await api.client.request(method, path, headers=headers, **kwargs)
            assert r.status_code == 503, f"{method} {path}: {r.status_code} {r.text}"
            assert r.headers["retry-after"] == "1"
            assert r.headers["content-type"] == "application/problem+json"
            assert r.json()["type"].endswith("/database-unavailable"), r.text

        await asyncio.to_thread(own_postgres.start)
        for method, path, headers, kwargs in calls:
            r = await api.client.request(method, path, headers=headers, **kwargs)
            assert r.status_code < 300, f"{method} {path} after recovery: {r.text}"


async def test_the_feed_pauses_through_an_outage_and_keeps_its_followers(
    own_postgres: OwnPostgres, outage_settings: Any
) -> None:
    async with served(outage_settings.database_url_value, db_connect_timeout=1.0) as api:
        owner = await api.user("alice")
        pid, mid = await api.model(owner)
        url = f"/v1/projects/{pid}/events/stream?after=0"
        async with api.client.stream("GET", url, headers=owner) as response:
            frames = sse_frames(response)
            assert [e["kind"] for e in await next_events(frames, 1)] == ["model.created"]
            await asyncio.to_thread(own_postgres.stop)
            await asyncio.sleep(2.5)  # several heartbeats (0.5 s) and polls without a database
            await asyncio.to_thread(own_postgres.start)
            for _ in range(40):  # the API's pool reconnects on its own
                r = await api.client.post(
                    f"/v1/models/{mid}/versions",
                    content=orjson.dumps(STOREY),
                    headers={**owner, "content-type": "application/x-ndjson"},
                )
                if r.status_code == 201:
                    break
                assert r.status_code == 503, r.text
                await asyncio.sleep(0.25)
            # The same stream, still open, carries what happened after the outage.
            assert [e["kind"] for e in await next_events(frames, 1)] == ["version.created"]


def probe_app(settings: Any, before: Any = None) -> tuple[Any, list[int]]:
    """DatabaseErrorMiddleware around one route on an engine nothing else uses: how many
    times the route ran, per request."""
    from sqlalchemy import text
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from bem.kit.db import create_engine
    from bem.kit.dberrors import DatabaseErrorMiddleware

    engine = create_engine(settings)
    runs: list[int] = []

    async def route(_: Any) -> PlainTextResponse:
        runs.append(1)
        async with engine.connect() as conn:
            if before is not None:
                await before(conn)
            await conn.execute(text("SELECT 1"))
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/", route, methods=["GET", "POST"])])
    app.add_middleware(DatabaseErrorMiddleware)
    app.state.engine = engine
    return app, runs


async def test_a_request_that_meets_a_connection_the_restart_killed_is_replayed(
    own_postgres: OwnPostgres, outage_settings: Any
) -> None:
    """No pre-ping: the pooled connection is dead after a restart; the request's first
    statement finds it so, and the request runs again on a new one (it never reached the
    database). Before the replay rule, a 503."""
    import httpx

    app, runs = probe_app(outage_settings)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://probe") as client:
        assert (await client.get("/")).status_code == 200  # the pool holds a connection now
        await asyncio.to_thread(own_postgres.stop)
        await asyncio.to_thread(own_postgres.start)
        runs.clear()
        r = await client.post("/", content=b"a small body is kept for the replay")
        assert r.status_code == 200, r.text
        assert len(runs) == 2
    await app.state.engine.dispose()


async def test_a_request_that_lost_its_connection_after_a_statement_is_not_replayed(
    own_postgres: OwnPostgres, outage_settings: Any
) -> None:
    """Something of it may have reached the database: 503, for the client to decide."""
    import asyncpg
    import httpx
    from sqlalchemy import text

    async def killed(conn: Any) -> None:
        pid = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        admin = await asyncpg.connect(own_postgres.url)
        try:
            await admin.execute("SELECT pg_terminate_backend($1)", pid)
        finally:
            await admin.close()

    app, runs = probe_app(outage_settings, before=killed)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://probe") as client:
        r = await client.get("/")
        assert r.status_code == 503 and r.headers["retry-after"] == "1", r.text
        assert len(runs) == 1
    await app.state.engine.dispose()
