"""Backups asked for through the API and by the schedule: the backups table is the queue,
the process that runs jobs makes them, two runners never make one twice, and a backup whose
runner died is marked failed instead of running forever."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bem.config import Settings
from bem.kit.db import create_engine, session_factory
from bem.ops import service
from bem.ops.models import Backup
from bem.ops.runner import BackupRunner
from tests.conftest import Api, make_api, settings_for


@asynccontextmanager
async def sessions_of(settings: Settings) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions without an app (whose own runner would claim the test's requests)."""
    engine = create_engine(settings)
    try:
        yield session_factory(engine)
    finally:
        await engine.dispose()


async def backup_of(api: Api, headers: dict[str, str], backup_id: str) -> dict[str, Any]:
    for _ in range(400):
        r = await api.client.get(f"/v1/admin/backups/{backup_id}", headers=headers)
        assert r.status_code == 200, r.text
        if r.json()["status"] in ("succeeded", "failed"):
            return dict(r.json())
        await asyncio.sleep(0.05)
    raise AssertionError(f"backup {backup_id} did not finish: {r.json()}")


async def test_an_admin_starts_a_backup_and_the_job_process_makes_it(
    sqlite_url: str, tmp_path: Path
) -> None:
    settings = settings_for(sqlite_url, backup_dir=tmp_path / "backups", backup_poll_s=0.1)
    async with make_api(settings) as api:
        admin, member = await api.user("ops", admin=True), await api.user("alice")
        assert (await api.client.post("/v1/admin/backups", headers=member)).status_code == 403
        assert (await api.client.get("/v1/admin/backups", headers=member)).status_code == 403

        asked = await api.client.post("/v1/admin/backups", headers=admin)
        assert asked.status_code == 202, asked.text
        body = asked.json()
        assert body["status"] in ("requested", "running") and body["origin"] == "api"
        assert asked.headers["location"] == f"/v1/admin/backups/{body['id']}"
        assert body["requested_by"] == str(api.users["ops"].id)
        again = await api.client.post("/v1/admin/backups", headers=admin)  # one at a time
        assert again.status_code == 409 and body["id"] in again.json()["detail"]

        done = await backup_of(api, admin, body["id"])  # the embedded runner made it
        assert done["status"] == "succeeded", done
        assert Path(done["location"]).parent == tmp_path / "backups"
        assert done["tables"] > 10 and done["rows"] > 0 and done["verification"] == "unverified"
        audit = await api.client.get("/v1/admin/audit?action=backup.requested", headers=admin)
        assert [e["target_id"] for e in audit.json()["items"]] == [body["id"]]

        second = (await api.client.post("/v1/admin/backups", headers=admin)).json()
        await backup_of(api, admin, second["id"])
        first_page = await api.client.get("/v1/admin/backups?limit=1", headers=admin)
        assert [b["id"] for b in first_page.json()["items"]] == [second["id"]]  # newest first
        cursor = first_page.json()["next_cursor"]
        rest = await api.client.get(f"/v1/admin/backups?limit=1&cursor={cursor}", headers=admin)
        assert [b["id"] for b in rest.json()["items"]] == [body["id"]]
        missing = "/v1/admin/backups/00000000-0000-0000-0000-000000000000"
        assert (await api.client.get(missing, headers=admin)).status_code == 404


async def test_a_schedule_fire_time_makes_one_backup_however_many_runners_see_it(
    database_url: str, tmp_path: Path
) -> None:
    settings = settings_for(
        database_url, backup_dir=tmp_path / "backups", backup_schedule="*/5 * * * *"
    )
    async with sessions_of(settings) as sessions:
        runners = [BackupRunner(sessions, settings) for _ in range(3)]
        made = await asyncio.gather(*(runner.run_once() for runner in runners))
        assert sorted(made) == [False, False, True]
        assert not await runners[0].run_once()  # the same fire time: nothing more
        async with sessions() as session:
            rows = (await session.execute(text("SELECT origin, status FROM backups"))).all()
            assert [tuple(row) for row in rows] == [("schedule", "succeeded")]
            fire = await session.scalar(select(Backup.requested_at))
            assert fire is not None and fire.minute % 5 == 0 and fire.second == 0

            later = datetime.now(UTC) + timedelta(minutes=5)  # the next fire time: one more
            assert await service.request_scheduled(session, "*/5 * * * *", later)
            assert not await service.request_scheduled(session, "*/5 * * * *", later)


async def test_a_backup_whose_runner_died_is_marked_failed(sqlite_url: str, tmp_path: Path) -> None:
    settings = settings_for(sqlite_url, backup_dir=tmp_path / "b", backup_timeout_s=60)
    async with sessions_of(settings) as sessions:
        async with sessions() as session:
            await session.execute(
                text(
                    "INSERT INTO backups (id, status, origin, requested_at, started_at,"
                    " verification) VALUES ('0123456789abcdef0123456789abcdef', 'running',"
                    " 'api', :at, :at, 'unverified')"
                ),
                {"at": datetime.now(UTC) - timedelta(minutes=5)},
            )
            await session.commit()
        assert not await BackupRunner(sessions, settings).run_once()
        async with sessions() as session:
            status, error = (await session.execute(text("SELECT status, error FROM backups"))).one()
        assert status == "failed" and "abandoned" in error


async def test_an_idle_poll_takes_no_write_lock(sqlite_url: str, tmp_path: Path) -> None:
    """On SQLite a write of no row still takes the database's write lock: a poll with nothing
    to do only reads, so it neither waits for a writer nor holds one up."""
    settings = settings_for(
        sqlite_url, backup_dir=tmp_path / "b", backup_schedule="0 0 1 1 *", db_connect_timeout=0.2
    )
    async with sessions_of(settings) as sessions:
        runner = BackupRunner(sessions, settings)
        assert await runner.run_once()  # the schedule's last fire time: one backup
        writer = sqlite3.connect(sqlite_url.split(":///", 1)[1])
        try:
            writer.execute("BEGIN IMMEDIATE")  # someone else is writing
            assert not await runner.run_once()
        finally:
            writer.rollback()
            writer.close()
