"""Jobs nothing works on are picked up again, and an attempt that lost its job cannot make
its result twice."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from bem.handlers import HANDLERS
from bem.ingest.service import import_path
from bem.jobs import queue, service
from bem.jobs.service import Progress, execute, job_context
from bem.kit.db import create_engine, session_factory
from bem.kit.errors import Unprocessable
from bem.testing import ifcgen
from tests.conftest import make_api, settings_for
from tests.helpers import free_port
from tests.integration.test_imports import ifc_bytes, model_of, wait_for


async def queued_import(api: Any, mid: str, tmp_path: Path) -> uuid.UUID:
    """A job committed but never enqueued (as if the process died right after)."""
    path = tmp_path / "m.ifc"
    path.write_bytes(ifc_bytes(ifcgen.generate(10)))
    async with api.app.state.sessions() as session:
        job = await import_path(
            session, api.settings, model_id=uuid.UUID(mid), path=path, message=None
        )
        await session.commit()
    return job.id


@pytest.mark.postgres
async def test_an_attempt_taken_over_cannot_make_a_second_version(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Attempt 1 stalls (as a worker that looks dead would); attempt 2 takes the job over and
    finishes. When attempt 1 resumes, its version is rolled back: one version, attempt 2's."""
    async with make_api(settings_for(postgres_url)) as api:
        headers, mid = await model_of(api)
        job_id = await queued_import(api, mid, tmp_path)
        ctx = job_context(api.settings, api.app.state.sessions)
        stalled, resume = asyncio.Event(), asyncio.Event()
        original = Progress.__call__

        async def progress(self: Progress, phase: str, done: int, total: int | None) -> None:
            if not stalled.is_set():  # the first attempt's first report: stall there
                stalled.set()
                await resume.wait()
            await original(self, phase, done, total)

        monkeypatch.setattr(Progress, "__call__", progress)
        first = asyncio.create_task(execute(ctx, HANDLERS, job_id, takeover=False))
        await asyncio.wait_for(stalled.wait(), 30)
        await execute(ctx, HANDLERS, job_id, takeover=True)
        resume.set()
        await first
        job = await wait_for(api, headers, str(job_id))
        assert job["status"] == "succeeded" and job["attempts"] == 2
        versions = await api.scalar(f"SELECT count(*) FROM versions WHERE model_id = '{mid}'")  # noqa: S608
        assert versions == 1
        (events,) = [await api.scalar("SELECT count(*) FROM events WHERE kind = 'job.succeeded'")]
        assert events == 1


async def test_the_embedded_runner_resumes_a_job_a_crash_left_running(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A quick restart after a crash: the job still says running and looks alive. A single
    scan at start skipped it forever; the periodic sweep picks it up once it is stale."""
    monkeypatch.setattr(queue, "STALE_AFTER", timedelta(seconds=1))
    monkeypatch.setattr(service, "STALE_AFTER", timedelta(seconds=1))
    settings = settings_for(sqlite_url, job_sweep_s=0.5)
    async with make_api(settings) as api:
        headers, mid = await model_of(api)
        job_id = await queued_import(api, mid, tmp_path)
        async with api.app.state.sessions() as session:  # the run that crashed mid-job
            await session.execute(
                text(
                    "UPDATE jobs SET status = 'running', attempts = 1, "
                    "updated_at = CURRENT_TIMESTAMP WHERE id = :id"
                ),
                {"id": job_id.hex},
            )
            await session.commit()
    async with make_api(settings) as api:  # restarted at once; the session token still works
        job = await wait_for(api, headers, str(job_id))
        assert job["status"] == "succeeded" and job["attempts"] == 2, job


@pytest.mark.postgres
async def test_a_database_outage_around_an_attempt_is_retried_by_the_queue(
    postgres_url: str, tmp_path: Path
) -> None:
    """The database is away when a retry claims its job, or when an attempt records its
    failure: the queue is told to run it again (RetryLater), not that the job ended. Raised
    out of arq's function, the error ended the job in the queue while its row said running
    (the fault test's import waited for the stale sweep)."""
    away = create_engine(settings_for(f"postgresql://bem@127.0.0.1:{free_port()}/bem"))
    async with make_api(settings_for(postgres_url)) as api:
        headers, mid = await model_of(api)
        job_id = await queued_import(api, mid, tmp_path)
        ctx = job_context(api.settings, session_factory(away))
        with pytest.raises(service.RetryLater):  # the claim cannot reach the database
            await execute(ctx, HANDLERS, job_id, takeover=True)

        ctx = job_context(api.settings, api.app.state.sessions)

        sessions = api.app.state.sessions

        async def rejects(ctx: service.JobContext, job: Any, progress: Progress) -> Any:
            if job.attempts == 1:  # the database goes before the failure is recorded
                ctx.sessions = session_factory(away)
            raise Unprocessable("Not a model.")

        with pytest.raises(service.RetryLater):
            await execute(ctx, {"import": rejects}, job_id, takeover=True)
        ctx.sessions = sessions  # back: the queue's retry runs the job again
        await execute(ctx, {"import": rejects}, job_id, takeover=True)
        job = await wait_for(api, headers, str(job_id))
        assert job["status"] == "failed" and job["attempts"] == 2, job
        assert job["error"]["type"] == "unprocessable", job
    await away.dispose()


@pytest.mark.postgres
async def test_bem_import_gives_up_when_the_database_stays_away(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``run_here`` (``bem import``) retries a claim the database refused as the queue
    would, then ends with the database's error instead of retrying forever."""
    monkeypatch.setattr(service, "RETRY_DELAY_S", 0.01)
    away = create_engine(settings_for(f"postgresql://bem@127.0.0.1:{free_port()}/bem"))
    async with make_api(settings_for(postgres_url)) as api:
        _, mid = await model_of(api)
        job_id = await queued_import(api, mid, tmp_path)
        ctx = job_context(api.settings, session_factory(away))
        with pytest.raises(ConnectionRefusedError):  # after the outage tries, not a timeout
            await asyncio.wait_for(service.run_here(ctx, HANDLERS, job_id), 30)
    await away.dispose()
