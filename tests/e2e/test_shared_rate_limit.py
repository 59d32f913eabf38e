"""Two real API processes on PostgreSQL and Redis share one rate-limit budget."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import PG_URL, REDIS_URL, _dsn, _pg_execute
from tests.helpers import bem, bem_server

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]


@pytest.fixture
def two_servers(
    postgres_template: str, tmp_path: Path
) -> Iterator[tuple[list[str], dict[str, str]]]:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_timeout=1).ping()
    except redis.RedisError as exc:
        if os.environ.get("BEM_REQUIRE_SERVICES") == "1":
            pytest.fail(f"Redis required: {exc!r}")
        pytest.skip(f"Redis not reachable at {REDIS_URL}")
    name = f"bem_t_{uuid.uuid4().hex[:12]}"
    asyncio.run(_pg_execute(f'CREATE DATABASE "{name}" TEMPLATE "{postgres_template}"'))
    env = {k: v for k, v in os.environ.items() if not k.startswith("BEM_")}
    env.update(
        BEM_DATABASE_URL=_dsn(PG_URL, name),
        BEM_REDIS_URL=REDIS_URL,
        BEM_REDIS_KEY_PREFIX=f"bem2p{uuid.uuid4().hex[:8]}",
        BEM_RATE_LIMIT_DEFAULT="6/minute",
        BEM_LOG_LEVEL="WARNING",
    )
    token = bem(["users", "create-admin", "--email", "ops@example.com"], env, tmp_path)
    try:
        with bem_server(env, tmp_path) as (one, _), bem_server(env, tmp_path) as (two, _):
            yield [one, two], {"Authorization": f"Bearer {token.stdout.strip()}"}
    finally:
        asyncio.run(_pg_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def test_two_processes_share_one_budget(two_servers: tuple[list[str], dict[str, str]]) -> None:
    bases, headers = two_servers
    statuses = [
        httpx.get(f"{bases[i % 2]}/v1/me", headers=headers, timeout=5).status_code for i in range(8)
    ]
    assert statuses == [200] * 6 + [429, 429]
    remaining = httpx.get(f"{bases[0]}/v1/me", headers=headers, timeout=5).headers
    assert remaining["ratelimit-remaining"] == "0"
