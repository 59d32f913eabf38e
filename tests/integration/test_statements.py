"""What a read costs in SQL. Authorize by loading: the version a path names comes with the
caller's role in one statement; a credential, and a ready version with the caller's role,
verified moments ago are remembered (kit/memo.py). So a page answered from the cache costs
that one statement the first time and none while the memo holds it (five before the wiring:
the token, the project of the version, the membership, the version again)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event

from tests.conftest import Api

STOREY = {"global_id": "0000000000000000000S01", "ifc_class": "IfcBuildingStorey", "name": "L1"}


# The app's own background tasks share the engine; what they read is not the request's cost.
BACKGROUND = ("feed-hub", "webhook-deliverer", "backup-runner", "job-")


@contextmanager
def statements(api: Api) -> Iterator[list[str]]:
    seen: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        task = asyncio.current_task()
        if task is None or not task.get_name().startswith(BACKGROUND):
            seen.append(" ".join(statement.split()))

    engine = api.state.engine.sync_engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", count)


async def test_a_cached_page_or_takeoff_costs_one_statement_or_none(api: Api) -> None:
    for headers in (
        await api.user("alice"),
        await api.api_token("alice", ["projects:write", "models:write"]),
    ):
        _, mid = await api.model(headers)
        vid = await api.upload(headers, mid, [STOREY])
        for path, params in (
            (f"/v1/versions/{vid}/elements", {"q": "IfcBuildingStorey"}),
            (f"/v1/versions/{vid}/takeoff", {"group_by": "class"}),
        ):
            warm = await api.client.get(path, params=params, headers=headers)  # fills the cache
            assert warm.status_code == 200, warm.text
            with statements(api) as seen:
                r = await api.client.get(path, params=params, headers=headers)
            assert r.status_code == 200
            assert seen == [], seen  # the memo knows the caller and the version
            api.state.memo.clear()
            with statements(api) as seen:
                r = await api.client.get(path, params=params, headers=headers)
            assert r.status_code == 200
            assert len(seen) == 2, seen  # the credential, then the version with the role
            assert "FROM versions JOIN models" in seen[1] and "memberships" in seen[1], seen
