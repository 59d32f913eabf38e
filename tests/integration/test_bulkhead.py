"""Uncached takeoffs and diffs wait for one of BEM_HEAVY_QUERIES slots per process; one that
waits past BEM_HEAVY_QUERY_WAIT_S is 503 busy with Retry-After, while light requests and
cached answers pass (kit/bulkhead.py)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from bem.query import service
from tests.conftest import make_api, settings_for
from tests.integration.test_query_api import loaded


def slow_takeoffs(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """Every takeoff computation holds its slot ``seconds`` longer."""
    real = service.takeoff

    async def slow(*args: Any) -> Any:
        await asyncio.sleep(seconds)
        return await real(*args)

    monkeypatch.setattr(service, "takeoff", slow)


async def test_heavy_queries_take_turns_and_light_ones_pass(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_for(sqlite_url, heavy_queries=1, heavy_query_wait_s=0.3)
    async with make_api(settings) as api:
        headers, vid = await loaded(api, 12)
        url = f"/v1/versions/{vid}/takeoff"
        cached = await api.client.get(url, params={"group_by": "class"}, headers=headers)
        assert cached.status_code == 200
        slow_takeoffs(monkeypatch, 1.0)
        first = asyncio.create_task(
            api.client.get(url, params={"group_by": "storey"}, headers=headers)
        )
        await asyncio.sleep(0.1)  # it holds the only slot now
        started = time.monotonic()
        refused = await api.client.get(url, params={"group_by": "type"}, headers=headers)
        assert refused.status_code == 503
        assert refused.json()["type"] == "https://bem.dev/problems/busy"
        assert refused.headers["retry-after"] == "2"
        assert time.monotonic() - started < 0.9  # refused after its wait, not the slow query
        light = await api.client.get(f"/v1/versions/{vid}", headers=headers)
        again = await api.client.get(url, params={"group_by": "class"}, headers=headers)
        assert light.status_code == 200 and again.status_code == 200  # no slot needed
        assert not first.done()
        assert (await first).status_code == 200
        # The slot is free again: the refused one computes now.
        r = await api.client.get(url, params={"group_by": "type"}, headers=headers)
        assert r.status_code == 200


async def test_a_diff_waits_for_a_slot_too(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_for(sqlite_url, heavy_queries=1, heavy_query_wait_s=0.2)
    async with make_api(settings) as api:
        headers, v1 = await loaded(api, 6)
        model = (await api.client.get(f"/v1/versions/{v1}", headers=headers)).json()["model_id"]
        docs = (await api.client.get(f"/v1/versions/{v1}/elements", headers=headers)).json()
        v2 = await api.upload(headers, model, docs["items"][:-1])
        slow_takeoffs(monkeypatch, 0.6)
        busy = asyncio.create_task(
            api.client.get(
                f"/v1/versions/{v1}/takeoff", params={"group_by": "storey"}, headers=headers
            )
        )
        await asyncio.sleep(0.1)
        r = await api.client.get(f"/v1/versions/{v1}/diff/{v2}", headers=headers)
        assert r.status_code == 503 and r.json()["type"] == "https://bem.dev/problems/busy"
        assert (await busy).status_code == 200
        assert (
            await api.client.get(f"/v1/versions/{v1}/diff/{v2}", headers=headers)
        ).status_code == 200
