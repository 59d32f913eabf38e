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
