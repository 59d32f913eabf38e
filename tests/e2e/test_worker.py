"""Imports through the production queue: arq on Redis, consumed by ``bem worker``, on
PostgreSQL. A worker killed mid-import loses nothing: its job is retried and succeeds once,
and no partial version is ever visible."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from bem.config import Settings
from bem.handlers import HANDLERS
from bem.jobs.worker import build_worker
from bem.testing import ifcgen
from tests.conftest import SOURCES, Api, make_api, settings_for
from tests.helpers import OwnRedis, PostCollector, free_port, stop
from tests.integration.test_imports import ifc_bytes, model_of, submit, wait_for
from tests.integration.test_metrics import sample


def queued_settings(postgres_url: str, redis_url: str, **overrides: Any) -> Settings:
    return settings_for(
        postgres_url,
        redis_url=redis_url,
        job_queue="redis",
        redis_key_prefix=f"bemtest{uuid.uuid4().hex[:8]}",
        **overrides,
    )


async def test_worker_runs_queued_imports(postgres_url: str, shared_redis: str) -> None:
    settings = queued_settings(postgres_url, shared_redis)
    model = ifcgen.generate(40)
    async with make_api(settings) as api:
        headers, mid = await model_of(api)
        r = await submit(api, headers, mid, "m.ifc", ifc_bytes(model))
        assert r.status_code == 202 and r.json()["status"] == "queued"
        assert await api.app.state.job_queue.depth() == 1
        worker = build_worker(settings, HANDLERS, burst=True, signals=False)
        try:
            await worker.async_run()
        finally:
            await worker.close()
        job = await wait_for(api, headers, r.json()["id"])
        assert job["status"] == "succeeded" and job["attempts"] == 1, job
        assert await api.app.state.job_queue.depth() == 0
        version = (
            await api.client.get(f"/v1/versions/{job['version_id']}", headers=headers)
        ).json()
        assert version["element_count"] == len(model.by_type("IfcProduct"))


@contextmanager
def worker_process(env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bem", "worker"], env=env, stdout=out, stderr=out
        )
    try:
        yield proc
    finally:
        stop(proc)


def worker_env(settings: Settings, tmp_path: Path) -> dict[str, str]:
    assert settings.redis_url is not None
    return {
        **os.environ,
        "BEM_DATABASE_URL": settings.database_url_value,
        "BEM_REDIS_URL": settings.redis_url.get_secret_value(),
        "BEM_REDIS_KEY_PREFIX": settings.redis_key_prefix,
        "BEM_JOB_QUEUE": "redis",
        "BEM_STORAGE_DIR": str(SOURCES),
        "BEM_JOB_TIMEOUT_S": str(settings.job_timeout_s),
        "BEM_LOG_JSON": "false",
    }


async def test_bem_worker_makes_the_backups_admins_ask_for(
    postgres_url: str, shared_redis: str, tmp_path: Path
) -> None:
    """With the Redis queue the API runs no jobs; ``bem worker`` makes requested backups."""
    settings = queued_settings(postgres_url, shared_redis)
    env = {
        **worker_env(settings, tmp_path),
        "BEM_BACKUP_DIR": str(tmp_path / "backups"),
        "BEM_BACKUP_POLL_S": "0.2",
    }
    async with make_api(settings) as api:
        admin = await api.user("ops", admin=True)
        asked = (await api.client.post("/v1/admin/backups", headers=admin)).json()
        await asyncio.sleep(0.5)
        status = "SELECT status FROM backups"
        assert await api.scalar(status) == "requested"  # nobody in this process makes it
        with worker_process(env, tmp_path / "worker.log"):
            for _ in range(400):
                if await api.scalar(status) in ("succeeded", "failed"):
                    break
                await asyncio.sleep(0.05)
        done = await api.client.get(f"/v1/admin/backups/{asked['id']}", headers=admin)
        assert done.json()["status"] == "succeeded", (
            done.json(),
            (tmp_path / "worker.log").read_text()[-2000:],
        )
        assert Path(done.json()["location"]).parent == tmp_path / "backups"


async def job_row(api: Api, job_id: str) -> tuple[str, int, int]:
    from sqlalchemy import select

    from bem.jobs.models import Job

    async with api.app.state.sessions() as session:
        row = (
            await session.execute(
                select(Job.status, Job.done, Job.attempts).where(Job.id == uuid.UUID(job_id))
            )
        ).one()
    return row.status, row.done, row.attempts


async def test_killed_worker_job_is_retried_and_succeeds_once(
    postgres_url: str, shared_redis: str, tmp_path: Path
) -> None:
    # A short job timeout: arq hands a dead worker's job to another once its in-progress
    # lock (timeout + 10 s) expires.
    settings = queued_settings(postgres_url, shared_redis, job_timeout_s=12)
    model = ifcgen.generate(3000)
    products = len(model.by_type("IfcProduct"))
    env = worker_env(settings, tmp_path)
    log = tmp_path / "worker.log"
    async with make_api(settings) as api:
        headers, mid = await model_of(api)
        r = await submit(api, headers, mid, "big.ifc", ifc_bytes(model))
        job_id = r.json()["id"]
        with worker_process(env, log) as first:
            for _ in range(600):  # until the import is under way
                status, done, _ = await job_row(api, job_id)
                if status == "running" and done > 0:
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError(f"the job never started: {log.read_text()[-3000:]}")
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=10)
        status, _, attempts = await job_row(api, job_id)
        assert (status, attempts) == ("running", 1)
        versions = f"SELECT count(*) FROM versions v JOIN models m ON m.id = v.model_id WHERE m.id = '{mid}'"  # noqa: S608, E501
        assert await api.scalar(versions) == 0  # the killed transaction left nothing

        metrics_port = free_port()
        with worker_process({**env, "BEM_WORKER_METRICS_PORT": str(metrics_port)}, log):
            for _ in range(1200):
                status, _, attempts = await job_row(api, job_id)
                if status in ("succeeded", "failed"):
                    break
                await asyncio.sleep(0.05)
            # The worker serves its own job metrics.
            async with httpx.AsyncClient(timeout=5) as client:
                metrics = (await client.get(f"http://127.0.0.1:{metrics_port}/metrics")).text
        assert sample(metrics, "bem_jobs_total", kind="import", outcome="succeeded") == 1
        assert sample(metrics, "bem_import_elements_total") == products
        job = (await api.client.get(f"/v1/jobs/{job_id}", headers=headers)).json()
        assert job["status"] == "succeeded", (job, log.read_text()[-3000:])
        assert job["attempts"] == 2
        assert await api.scalar(versions) == 1
        version = (
            await api.client.get(f"/v1/versions/{job['version_id']}", headers=headers)
        ).json()
        assert version["element_count"] == products
        orphans = (
            "SELECT count(*) FROM version_elements ve "
            "LEFT JOIN versions v ON v.id = ve.version_id WHERE v.id IS NULL"
        )
        assert await api.scalar(orphans) == 0


def exported_spans(collector: PostCollector) -> list[Any]:
    """The spans of every OTLP/HTTP export the collector received."""
    requests = map(ExportTraceServiceRequest.FromString, collector.bodies)
    return [
        span
        for request in requests
        for resource in request.resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    ]


async def test_a_worker_job_continues_the_request_trace_over_otlp(
    postgres_url: str, shared_redis: str, tmp_path: Path
) -> None:
    """The production path: the API (in-memory exporter) enqueues on Redis, ``bem worker``
    exports over OTLP; the job's spans share the request's trace id, and the worker's log
    lines of the job carry the request id and that trace id."""
    settings = queued_settings(postgres_url, shared_redis)
    exporter = InMemorySpanExporter()
    collector = PostCollector()
    log = tmp_path / "worker.log"
    try:
        async with make_api(settings, exporter) as api:
            headers, mid = await model_of(api)
            exporter.clear()
            r = await submit(
                api,
                {**headers, "X-Request-ID": "worker-trace-1"},
                mid,
                "m.ifc",
                ifc_bytes(ifcgen.generate(10)),
            )
            assert r.status_code == 202
            job_id = r.json()["id"]
            env = {
                **worker_env(settings, tmp_path),
                "BEM_TRACING_ENABLED": "true",
                "BEM_OTLP_ENDPOINT": f"http://127.0.0.1:{collector.port}/v1/traces",
                "BEM_LOG_JSON": "true",
            }
            with worker_process(env, log):  # stopped afterwards: its spans are flushed then
                assert (await wait_for(api, headers, job_id))["status"] == "succeeded"
        (request,) = [
            s
            for s in exporter.get_finished_spans()
            if s.kind.name == "SERVER" and s.attributes.get("bem.request_id") == "worker-trace-1"
        ]
        trace_id = request.context.trace_id
        redis_spans = [
            s for s in exporter.get_finished_spans() if s.attributes.get("db.system") == "redis"
        ]
        assert redis_spans and all(s.context.trace_id == trace_id for s in redis_spans)

        def trace_of(span: Any) -> int:
            return int.from_bytes(span.trace_id, "big")

        spans = exported_spans(collector)
        (job,) = [s for s in spans if s.name == "job import"]
        assert trace_of(job) == trace_id
        sql = [s for s in spans if s.parent_span_id and trace_of(s) == trace_id]
        assert len(sql) > 3  # the job's own database work, in the same trace
        lines = [
            orjson.loads(line) for line in log.read_text().splitlines() if line.startswith("{")
        ]
        mine = [line for line in lines if line.get("job_id") == job_id]
        assert {line["event"] for line in mine} >= {"job.start", "job.succeeded"}
        assert all(line["request_id"] == "worker-trace-1" for line in mine)
        assert all(line["trace_id"] == format(trace_id, "032x") for line in mine)
    finally:
        collector.close()


async def test_the_worker_rides_out_a_redis_restart_and_nothing_waits_on_a_human(
    postgres_url: str, own_redis: OwnRedis, tmp_path: Path
) -> None:
    """A private Redis is restarted (losing its data) under a running ``bem worker``: the
    worker stays up and takes new imports; an import whose queue entry died with Redis,
    and one whose row committed without ever being enqueued (a crash in between), are
    swept back onto the queue. Each import makes one version."""
    settings = queued_settings(postgres_url, own_redis.url, job_sweep_s=1)
    env = {**worker_env(settings, tmp_path), "BEM_JOB_SWEEP_S": "1"}
    log = tmp_path / "worker.log"
    content = ifc_bytes(ifcgen.generate(10))
    async with make_api(settings) as api:
        headers, mid = await model_of(api)

        async def imports(n: int) -> list[str]:
            return [
                (await submit(api, headers, mid, f"{i}.ifc", content)).json()["id"]
                for i in range(n)
            ]

        with worker_process(env, log) as worker:
            first = await imports(1)
            assert (await wait_for(api, headers, first[0]))["status"] == "succeeded"
            own_redis.stop()
            await asyncio.sleep(2)  # the worker's polls fail meanwhile
            own_redis.start()
            after = await imports(2)
            for job_id in after:
                job = await wait_for(api, headers, job_id)
                assert job["status"] == "succeeded", (job, log.read_text()[-3000:])
            assert worker.poll() is None, log.read_text()[-3000:]

        # The worker is away; one import is enqueued, then Redis loses it; another never
        # reached the queue at all.
        stranded = await imports(1)
        own_redis.stop()
        own_redis.start()
        async with api.app.state.sessions() as session:
            from bem.ingest.service import import_path

            path = tmp_path / "crashed.ifc"
            path.write_bytes(content)
            never_enqueued = await import_path(
                session, settings, model_id=uuid.UUID(mid), path=path, message=None
            )
            await session.commit()
        with worker_process(env, log):
            for job_id in [*stranded, str(never_enqueued.id)]:
                job = await wait_for(api, headers, job_id)
                assert job["status"] == "succeeded", (job, log.read_text()[-3000:])
        versions = f"SELECT count(*) FROM versions WHERE model_id = '{mid}'"  # noqa: S608
        assert await api.scalar(versions) == 5
        assert "worker.redis_unavailable" in log.read_text()
