"""Faults on the production path, under a bounded light load: ``bem serve --workers 2`` and
``bem worker`` on a private PostgreSQL cluster and a private Redis, then PostgreSQL stopped
for 10 s, Redis restarted (losing its data), the worker killed, an API process killed.

Each asserts: no answer is a 500 (a dependency outage is a 503 with ``Retry-After``), every
upload and import that was acknowledged (201, 202) is there afterwards exactly once, and the
stack recovers without anyone touching it (a killed process is restarted as an orchestrator
would: the API's own supervisor respawns its workers; the test restarts ``bem worker``)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson
import pytest

from bem.testing import ifcgen
from tests.helpers import OwnPostgres, OwnRedis, bem_server, migrated_admin, stop

pytestmark = pytest.mark.e2e

RATE_HZ = 6  # requests per second of the load, all kinds together
IFC = ifcgen.generate(8).to_string().encode()


@dataclass
class Stack:
    base: str
    env: dict[str, str]
    headers: dict[str, str]
    upload_model: str
    import_model: str
    version: str
    cluster: OwnPostgres
    redis: OwnRedis
    api: subprocess.Popen[bytes]
    log: Path
    worker: subprocess.Popen[bytes] | None = None

    def start_worker(self) -> None:
        with self.log.open("ab") as out:
            self.worker = subprocess.Popen(
                [sys.executable, "-m", "bem", "worker"], env=self.env, stdout=out, stderr=out
            )

    def stop_worker(self) -> None:
        if self.worker is not None:
            stop(self.worker)


@dataclass
class Load:
    """What the clients saw: every status, and what was acknowledged."""

    statuses: list[int | str] = field(default_factory=list)
    uploads: list[str] = field(default_factory=list)  # version ids answered 201
    imports: list[str] = field(default_factory=list)  # job ids answered 202
    missing_retry_after: list[str] = field(default_factory=list)


@contextmanager
def stack_of(tmp_path: Path, cluster: OwnPostgres, redis: OwnRedis) -> Iterator[Stack]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BEM_")}
    env = {
        **clean,
        "BEM_DATABASE_URL": cluster.url,
        "BEM_REDIS_URL": redis.url,
        "BEM_JOB_QUEUE": "redis",
        "BEM_WORKERS": "2",
        "BEM_STORAGE_DIR": str(tmp_path / "sources"),
        "BEM_DB_CONNECT_TIMEOUT": "1",
        "BEM_DB_POOL_TIMEOUT": "2",
        "BEM_JOB_SWEEP_S": "2",
        "BEM_JOB_TIMEOUT_S": "20",  # a dead worker's job is taken over 30 s after it started
        "BEM_RATE_LIMIT_DEFAULT": "6000/minute",
        "BEM_RATE_LIMIT_RULES": '{"upload": "6000/hour"}',
        "BEM_LOG_LEVEL": "WARNING",
    }
    headers = migrated_admin(env, tmp_path)
    log = tmp_path / "processes.log"
    with bem_server(env, tmp_path) as (base, api):
        pid = httpx.post(f"{base}/v1/projects", json={"name": "P"}, headers=headers).json()["id"]
        models = [
            httpx.post(
                f"{base}/v1/projects/{pid}/models", json={"name": name}, headers=headers
            ).json()["id"]
            for name in ("uploads", "imports")
        ]
        version = httpx.post(
            f"{base}/v1/models/{models[0]}/versions",
            content=storey(0),
            headers={**headers, "content-type": "application/x-ndjson"},
        ).json()["id"]
        found = Stack(base, env, headers, models[0], models[1], version, cluster, redis, api, log)
        found.start_worker()
        try:
            yield found
        finally:
            found.stop_worker()


def storey(n: int) -> bytes:
    doc = {"global_id": f"{n:022d}", "ifc_class": "IfcBuildingStorey", "name": f"L{n}"}
    return orjson.dumps(doc) + b"\n"


async def drive(stack: Stack, seconds: float, load: Load) -> None:
    """A fixed-rate mix (reads, uploads, imports) for ``seconds``; each request has its own
    connection, so a killed process shows as a transport error, never as a hang."""
    kinds = ["read", "page", "upload", "read", "import", "read"]
    interval = 1 / RATE_HZ
    tasks = []
    async with httpx.AsyncClient(base_url=stack.base, timeout=10) as client:
        deadline = time.monotonic() + seconds
        n = 0
        while time.monotonic() < deadline:
            tasks.append(asyncio.create_task(one(client, stack, kinds[n % len(kinds)], n, load)))
            n += 1
            await asyncio.sleep(interval)
        await asyncio.gather(*tasks)


async def one(client: httpx.AsyncClient, stack: Stack, kind: str, n: int, load: Load) -> None:
    h = stack.headers
    try:
        if kind == "read":
            r = await client.get(f"/v1/versions/{stack.version}/elements", headers=h)
        elif kind == "page":
            r = await client.get("/v1/projects", headers=h)
        elif kind == "upload":
            r = await client.post(
                f"/v1/models/{stack.upload_model}/versions",
                content=storey(n + 1),
                headers={**h, "content-type": "application/x-ndjson"},
            )
            if r.status_code == 201:
                load.uploads.append(r.json()["id"])
        else:
            r = await client.post(
                f"/v1/models/{stack.import_model}/imports",
                files={"file": (f"{n}.ifc", IFC)},
                headers=h,
            )
            if r.status_code == 202:
                load.imports.append(r.json()["id"])
    except httpx.TransportError as exc:  # the process died under it: no answer, no promise
        load.statuses.append(type(exc).__name__)
        return
    load.statuses.append(r.status_code)
    if r.status_code == 503 and "retry-after" not in r.headers:
        load.missing_retry_after.append(f"{kind}: {r.text[:200]}")


async def settled(stack: Stack, load: Load, within_s: float = 90) -> None:
    """Recovered: every acknowledged upload reads back, every acknowledged import has
    succeeded, each import made one version, and reads answer 200 again."""
    deadline = time.monotonic() + within_s
    async with httpx.AsyncClient(base_url=stack.base, timeout=10) as client:
        h = stack.headers
        for vid in load.uploads:
            r = await client.get(f"/v1/versions/{vid}", headers=h)
            assert r.status_code == 200 and r.json()["status"] == "ready", r.text
        versions: set[str] = set()
        for job_id in load.imports:
            while True:
                job = (await client.get(f"/v1/jobs/{job_id}", headers=h)).json()
                if job.get("status") in ("succeeded", "failed"):
                    break
                assert time.monotonic() < deadline, f"import {job_id} never finished: {job}"
                await asyncio.sleep(0.5)
            assert job["status"] == "succeeded", job
            versions.add(job["version_id"])
        assert len(versions) == len(load.imports)  # one version per acknowledged import
        made = await client.get(
            f"/v1/models/{stack.import_model}/versions", params={"limit": 1000}, headers=h
        )
        succeeded = {v["id"] for v in made.json()["items"]}
        assert versions <= succeeded
        while (
            await client.get(f"/v1/versions/{stack.version}/elements", headers=h)
        ).status_code != 200:
            assert time.monotonic() < deadline, "reads did not recover"
            await asyncio.sleep(0.5)


def no_500s(load: Load) -> None:
    errors = [s for s in load.statuses if isinstance(s, int) and s >= 500 and s != 503]
    assert errors == [], f"5xx other than 503: {errors}"
    assert load.missing_retry_after == []
    assert load.uploads and load.imports, f"the load acknowledged nothing: {load.statuses}"


async def under_load(stack: Stack, fault: Callable[[], Awaitable[None]], seconds: float) -> Load:
    load = Load()
    driving = asyncio.create_task(drive(stack, seconds, load))
    await asyncio.sleep(2)  # the load is running before the fault
    await fault()
    await driving
    return load


@pytest.fixture
def stack(tmp_path: Path, own_postgres: OwnPostgres, own_redis: OwnRedis) -> Iterator[Stack]:
    with stack_of(tmp_path, own_postgres, own_redis) as found:
        yield found


async def test_postgres_stopped_for_ten_seconds(stack: Stack) -> None:
    async def fault() -> None:
        await asyncio.to_thread(stack.cluster.stop)
        await asyncio.sleep(10)
        await asyncio.to_thread(stack.cluster.start)

    load = await under_load(stack, fault, seconds=18)
    no_500s(load)
    assert 503 in load.statuses  # the outage was seen, and answered as one
    await settled(stack, load)


async def test_redis_restarted(stack: Stack) -> None:
    async def fault() -> None:
        stack.redis.stop()
        await asyncio.sleep(3)
        stack.redis.start()  # empty: whatever was queued in it is gone

    load = await under_load(stack, fault, seconds=10)
    no_500s(load)
    await settled(stack, load)
    assert stack.worker is not None and stack.worker.poll() is None  # it rode it out


async def test_worker_killed(stack: Stack) -> None:
    async def fault() -> None:
        assert stack.worker is not None
        stack.worker.send_signal(signal.SIGKILL)
        stack.worker.wait(timeout=10)
        await asyncio.sleep(2)
        stack.start_worker()  # what an orchestrator does

    load = await under_load(stack, fault, seconds=8)
    no_500s(load)
    await settled(stack, load)


async def test_an_api_process_killed(stack: Stack) -> None:
    async def fault() -> None:
        workers = _server_processes(stack.api.pid)
        assert workers
        os.kill(workers[0], signal.SIGKILL)  # uvicorn's supervisor starts another

    load = await under_load(stack, fault, seconds=8)
    no_500s(load)
    await settled(stack, load)


def _server_processes(supervisor: int) -> list[int]:
    """The supervisor's uvicorn workers (not multiprocessing's resource tracker)."""
    children = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
    return [
        int(pid)
        for pid in children
        if b"resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]
