"""Rate limits: headers and 429s, per identity and per route, shared through a real Redis,
and the documented behaviour when Redis goes away (per-process limits, never unlimited)."""

from __future__ import annotations

import asyncio
import sys
import time
import uuid

import pytest
import redis.asyncio

from bem.kit import ratelimit
from bem.kit.errors import Problem
from tests.conftest import make_api, settings_for
from tests.helpers import OwnRedis


def limited(database_url: str, **overrides: object) -> object:
    values: dict[str, object] = {
        "rate_limit_enabled": True,
        "rate_limit_default": "5/minute",
        "rate_limit_ip_ceiling": "100/minute",
        "rate_limit_rules": {"auth": "3/minute", "upload": "2/minute"},
        "redis_key_prefix": f"bemtest{uuid.uuid4().hex[:8]}",
        **overrides,
    }
    return settings_for(database_url, **values)


async def test_the_n_plus_first_request_gets_429_with_headers(sqlite_url: str) -> None:
    async with make_api(limited(sqlite_url)) as api:  # type: ignore[arg-type]
        alice, bob = await api.user("alice"), await api.user("bob")
        for i in range(5):
            r = await api.client.get("/v1/me", headers=alice)
            assert r.status_code == 200
            assert r.headers["ratelimit-limit"] == "5"
            assert r.headers["ratelimit-remaining"] == str(4 - i)
            assert 0 <= int(r.headers["ratelimit-reset"]) <= 60
        r = await api.client.get("/v1/me", headers=alice)
        assert r.status_code == 429
        assert r.headers["content-type"] == "application/problem+json"
        assert int(r.headers["retry-after"]) >= 1 and r.headers["ratelimit-remaining"] == "0"
        assert r.json()["type"].endswith("/rate-limited") and r.json()["request_id"]
        # Budgets are per identity: bob is unaffected; probes are never limited.
        assert (await api.client.get("/v1/me", headers=bob)).status_code == 200
        for _ in range(10):
            assert (await api.client.get("/health/live")).status_code == 200


async def test_auth_routes_have_a_stricter_rule(sqlite_url: str) -> None:
    async with make_api(limited(sqlite_url)) as api:  # type: ignore[arg-type]
        statuses = [
            (await api.client.post("/v1/auth/otp/request", json={"email": f"u{i}@x.com"}))
            for i in range(4)
        ]
        assert [r.status_code for r in statuses] == [202, 202, 202, 429]
        assert statuses[0].headers["ratelimit-limit"] == "3"  # the tightest limit is reported
        assert await api.scalar("SELECT count(*) FROM otp_challenges") == 3


async def test_made_up_tokens_are_capped_per_ip(sqlite_url: str) -> None:
    settings = limited(sqlite_url, rate_limit_ip_ceiling="4/minute")
    async with make_api(settings) as api:  # type: ignore[arg-type]
        codes = [
            (
                await api.client.get("/v1/me", headers={"Authorization": f"Bearer bem_pat_{i}"})
            ).status_code
            for i in range(6)
        ]
        assert codes == [401, 401, 401, 401, 429, 429]


async def test_forwarded_for_counts_only_behind_trusted_proxies(sqlite_url: str) -> None:
    # httpx's ASGI transport connects from 127.0.0.1.
    for trusted, distinct in (([], False), (["127.0.0.0/8"], True)):
        settings = limited(sqlite_url, trusted_proxies=trusted, rate_limit_ip_ceiling="2/minute")
        async with make_api(settings) as api:  # type: ignore[arg-type]
            codes = [
                (
                    await api.client.get(
                        "/v1/me", headers={"X-Forwarded-For": f"203.0.113.{i}, 127.0.0.1"}
                    )
                ).status_code
                for i in range(3)
            ]
            assert (codes == [401, 401, 401]) is distinct, (trusted, codes)


async def test_two_apps_share_one_budget_through_redis(sqlite_url: str, shared_redis: str) -> None:
    settings = limited(sqlite_url, redis_url=shared_redis)
    async with make_api(settings) as one, make_api(settings) as two:  # type: ignore[arg-type]
        headers = await one.user("alice")
        two.tokens, two.users = one.tokens, one.users
        codes = []
        for i in range(6):
            app = one if i % 2 == 0 else two
            codes.append((await app.client.get("/v1/me", headers=headers)).status_code)
        assert codes == [200, 200, 200, 200, 200, 429]
        assert one.app.state.limiter.status == "redis"


async def test_a_request_meets_all_its_limits_in_one_redis_round_trip(
    sqlite_url: str, shared_redis: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default limit and the per-IP ceiling: one script, one round trip (the library's
    storage took two per limit). The window slides: a spent budget comes back with time."""
    settings = limited(sqlite_url, redis_url=shared_redis, rate_limit_default="3/second")
    async with make_api(settings) as api:  # type: ignore[arg-type]
        alice = await api.user("alice")
        limiter = api.app.state.limiter
        commands: list[str] = []
        send = limiter.redis.execute_command

        async def counted(*args: object, **kwargs: object) -> object:
            commands.append(str(args[0]))
            return await send(*args, **kwargs)

        monkeypatch.setattr(limiter.redis, "execute_command", counted)
        codes = [(await api.client.get("/v1/me", headers=alice)).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        # The first call may load the script (EVALSHA answered NOSCRIPT, then EVAL).
        assert commands[-3:] == ["EVALSHA"] * 3 and len(commands) <= 5, commands
        r = await api.client.get("/v1/me", headers=alice)
        assert r.status_code == 429 and 1 <= int(r.headers["retry-after"]) <= 2
        await asyncio.sleep(2.1)  # two windows: the previous one has no weight left
        codes = [(await api.client.get("/v1/me", headers=alice)).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]


async def test_concurrent_uploads_are_throttled_per_user(sqlite_url: str) -> None:
    settings = limited(
        sqlite_url,
        max_concurrent_uploads=1,
        rate_limit_default="100/minute",
        rate_limit_rules={"upload": "100/minute"},
    )
    async with make_api(settings) as api:  # type: ignore[arg-type]
        alice = await api.user("alice")
        concurrency = api.app.state.concurrency
        user_id = api.users["alice"].id
        async with concurrency.slot(f"upload:user:{user_id}", 1):  # an upload in flight
            r = await api.client.post(
                "/v1/models/00000000-0000-0000-0000-000000000000/versions",
                content=b"{}",
                headers={**alice, "content-type": "application/x-ndjson"},
            )
        # Authorization runs first: the model does not exist, so a 404, not a slot.
        assert r.status_code == 404
        _, mid = await api.model(alice)
        body = b'{"global_id": "0000000000000000000S01", "ifc_class": "IfcBuildingStorey"}\n'
        headers = {**alice, "content-type": "application/x-ndjson"}
        url = f"/v1/models/{mid}/versions"
        async with concurrency.slot(f"upload:user:{user_id}", 1):
            r = await api.client.post(url, content=body, headers=headers)
            assert r.status_code == 429 and r.json()["type"].endswith("/too-many-concurrent")
        assert (await api.client.post(url, content=body, headers=headers)).status_code == 201


async def test_redis_outage_falls_back_to_per_process_limits_and_recovers(
    sqlite_url: str, own_redis: OwnRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ratelimit, "RETRY_REDIS_AFTER_S", 0.5)
    settings = limited(sqlite_url, redis_url=own_redis.url)
    async with make_api(settings) as api:  # type: ignore[arg-type]
        alice = await api.user("alice")
        assert (await api.client.get("/v1/me", headers=alice)).status_code == 200
        assert api.app.state.limiter.status == "redis"

        own_redis.stop()
        started = time.monotonic()
        codes = [(await api.client.get("/v1/me", headers=alice)).status_code for _ in range(6)]
        # Fail-safe: the in-memory fallback enforces the same limit, never unlimited.
        assert codes[:5] == [200] * 5 and codes[5] == 429
        assert time.monotonic() - started < 5  # Redis trouble does not stall requests
        assert api.app.state.limiter.status == "degraded"
        r = await api.client.get("/health/ready")
        ready = r.json()
        assert (
            r.status_code == 200
            and "failing" not in ready
            and ready["degraded"] == ["redis", "rate_limit"]
        )

        own_redis.start()
        await asyncio.sleep(0.6)
        r = await api.client.get("/v1/me", headers=alice)
        assert r.status_code == 200  # back on Redis (a fresh one: a fresh budget)
        assert api.app.state.limiter.status == "redis"


HOLDER = """
import asyncio, sys
import redis.asyncio
from bem.kit.ratelimit import Concurrency, Limiter

async def main() -> None:
    url, prefix = sys.argv[1], sys.argv[2]
    limiter = Limiter(url, {}, "100/second", "100/second", prefix)
    client = redis.asyncio.Redis.from_url(url)
    slots = Concurrency(limiter, client, prefix, 1)  # a lease of 1 s
    async with slots.slot("upload:alice", 1):
        print("held", flush=True)
        await asyncio.sleep(120)

asyncio.run(main())
"""


async def test_a_slot_held_by_a_killed_process_lapses_by_itself(shared_redis: str) -> None:
    """kill -9 during an upload: the holder's lease is not renewed and lapses within a
    lease, even while the user keeps retrying (each refused try re-armed the old counter)."""
    prefix = f"bemtest{uuid.uuid4().hex[:8]}"
    holder = await asyncio.create_subprocess_exec(
        sys.executable, "-c", HOLDER, shared_redis, prefix, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert holder.stdout is not None
        assert await asyncio.wait_for(holder.stdout.readline(), 30) == b"held\n"
        holder.kill()
        await holder.wait()
        limiter = ratelimit.Limiter(shared_redis, {}, "100/second", "100/second", prefix)
        client = redis.asyncio.Redis.from_url(shared_redis)
        slots = ratelimit.Concurrency(limiter, client, prefix, 1)
        refused, started = 0, time.monotonic()
        while time.monotonic() - started < 5:
            try:
                async with slots.slot("upload:alice", 1):
                    break
            except Problem:
                refused += 1
                await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"still locked out after {refused} tries")
        assert refused > 0 and time.monotonic() - started < 2.5
        await client.aclose()
    finally:
        if holder.returncode is None:
            holder.kill()
            await holder.wait()


async def test_a_new_token_buys_no_new_upload_budget(sqlite_url: str) -> None:
    """Upload limits were per token: minting another reset them. They are per user."""
    settings = limited(
        sqlite_url, rate_limit_default="100/minute", rate_limit_rules={"upload": "2/minute"}
    )
    async with make_api(settings) as api:  # type: ignore[arg-type]
        alice = await api.user("alice")
        _, mid = await api.model(alice)
        body = b'{"global_id": "0000000000000000000S01", "ifc_class": "IfcBuildingStorey"}\n'

        async def upload(headers: dict[str, str]) -> int:
            r = await api.client.post(
                f"/v1/models/{mid}/versions",
                content=body,
                headers={**headers, "content-type": "application/x-ndjson"},
            )
            return r.status_code

        first = await api.api_token("alice", ["models:write"])
        assert [await upload(first) for _ in range(3)] == [201, 201, 429]
        second = await api.api_token("alice", ["models:write"])
        assert await upload(second) == 429
        assert await upload(alice) == 429  # the session too: one user, one budget
