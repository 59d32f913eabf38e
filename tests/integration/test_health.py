"""Health: liveness never depends on anything; readiness names the failing check within 2 s
when PostgreSQL stops, stays up but says "degraded" when Redis stops or freezes, and
recovers when they return. Fault
tests run their own PostgreSQL cluster and redis-server on spare ports."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest

from bem.kit import migrate
from tests.conftest import Api, make_api, settings_for
from tests.helpers import OwnPostgres, OwnRedis


async def ready_within(api: Api, seconds: float = 2.0) -> tuple[int, dict[str, object], float]:
    started = time.monotonic()
    r = await api.client.get("/health/ready")
    return r.status_code, r.json(), time.monotonic() - started


async def test_ready_names_every_check(sqlite_api: Api) -> None:
    status, body, _ = await ready_within(sqlite_api)
    assert status == 200
    assert body["checks"] == {
        "database": "ok",
        "migrations": "ok",
        "draining": "ok",
        "job_queue": "ok",
    }

    sqlite_api.app.state.draining = True
    status, body, _ = await ready_within(sqlite_api)
    assert status == 503 and body["failing"] == ["draining"]
    assert (await sqlite_api.client.get("/health/live")).status_code == 200


async def test_schema_behind_the_code_is_not_ready(sqlite_url: str) -> None:
    settings = settings_for(sqlite_url)
    await asyncio.to_thread(migrate.downgrade, settings, "0001")
    async with make_api(settings) as api:
        status, body, _ = await ready_within(api)
        assert status == 503 and body["failing"] == ["migrations"]


async def test_detail_is_for_admins(sqlite_api: Api) -> None:
    assert (await sqlite_api.client.get("/health")).status_code == 401
    user = await sqlite_api.user("alice")
    assert (await sqlite_api.client.get("/health", headers=user)).status_code == 403
    admin = await sqlite_api.user("root", admin=True)
    r = await sqlite_api.client.get("/health", headers=admin)
    detail = r.json()
    assert r.status_code == 200 and detail["status"] == "ok"
    assert detail["checks"]["database"]["latency_ms"] >= 0
    assert {"size", "checkedout", "overflow"} <= set(detail["database_pool"])
    assert detail["version"] and detail["uptime_s"] >= 0
    assert detail["jobs"] == {"queue": "local", "queued": 0, "oldest_queued_age_s": 0.0}
    assert detail["backup"] == {"last_success_at": None}


async def test_detail_answers_when_its_table_reads_time_out(
    sqlite_api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bem.ops import service

    admin = await sqlite_api.user("root", admin=True)
    monkeypatch.setattr(service, "QUERY_TIMEOUT_S", 0)
    r = await sqlite_api.client.get("/health", headers=admin)
    assert r.status_code == 200
    assert r.json()["jobs"]["error"] == "the jobs table did not answer"
    assert r.json()["backup"] == {"error": "the backups table did not answer"}


async def test_postgres_stop_flips_readiness_and_recovers(own_postgres: OwnPostgres) -> None:
    settings = settings_for(own_postgres.url, db_connect_timeout=1.0)
    await asyncio.to_thread(migrate.upgrade, settings)
    async with make_api(settings) as api:
        assert (await ready_within(api))[0] == 200

        await asyncio.to_thread(own_postgres.stop)
        status, body, elapsed = await ready_within(api)
        assert status == 503 and "database" in body["failing"] and elapsed < 2.0
        assert (await api.client.get("/health/live")).status_code == 200

        await asyncio.to_thread(own_postgres.start)
        for _ in range(20):
            if (await ready_within(api))[0] == 200:
                break
            await asyncio.sleep(0.25)
        status, body, _ = await ready_within(api)
        assert status == 200, body


async def test_redis_stop_and_freeze_degrade_readiness_and_recover(
    sqlite_url: str,
    own_redis: OwnRedis,
) -> None:
    """Every process shares Redis and rides out its loss: readiness stays 200 (a load
    balancer must not drop every process at once) and names what is degraded."""
    # The job queue lives in the same Redis: readiness names both.
    settings = settings_for(sqlite_url, redis_url=own_redis.url, job_queue="redis")
    async with make_api(settings) as api:
        status, body, _ = await ready_within(api)
        assert status == 200 and body["checks"]["redis"] == body["checks"]["job_queue"] == "ok"

        assert own_redis.proc is not None
        own_redis.proc.send_signal(signal.SIGSTOP)  # frozen: connections hang
        try:
            status, body, elapsed = await ready_within(api)
            assert status == 200 and body["status"] == "degraded" and elapsed < 2.0
            assert body["degraded"] == ["job_queue", "redis"] and "failing" not in body
            assert (await api.client.get("/health/live")).status_code == 200
        finally:
            own_redis.proc.send_signal(signal.SIGCONT)
        assert (await ready_within(api))[1]["status"] == "ok"

        own_redis.stop()
        status, body, elapsed = await ready_within(api)
        assert status == 200 and body["degraded"] == ["job_queue", "redis"] and elapsed < 2.0
        api.app.state.draining = True  # a required check still fails it, beside the degraded
        status, body, _ = await ready_within(api)
        assert status == 503 and body["failing"] == ["draining"]
        api.app.state.draining = False
        own_redis.start()
        await asyncio.sleep(0.2)
        assert (await ready_within(api))[1]["status"] == "ok"


async def test_sigterm_marks_the_process_draining_before_the_server_stops(
    sqlite_api: Api,
) -> None:
    from bem.kit.health import mark_draining_on_sigterm

    server_handler_calls: list[int] = []
    previous = signal.signal(
        signal.SIGTERM, lambda signum, frame: server_handler_calls.append(signum)
    )
    try:
        mark_draining_on_sigterm(sqlite_api.app)  # as at startup, over the server's handler
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.sleep(0)
        assert server_handler_calls == [signal.SIGTERM]  # the server still shuts down
        status, body, _ = await ready_within(sqlite_api)
        assert status == 503 and body["failing"] == ["draining"]
    finally:
        signal.signal(signal.SIGTERM, previous)
