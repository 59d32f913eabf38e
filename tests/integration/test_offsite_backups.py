"""Backups that leave the host: sealed with age, sent to S3 (moto's server), opened again on
restore. A wrong key, a tampered or truncated archive is refused and leaves the target
untouched; retention applies to the bucket; a restore queues again the jobs the snapshot
caught waiting."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import pytest
from pydantic import SecretStr
from sqlalchemy import text

from bem.ops.archive import new_key
from bem.ops.backups import Retention, create_backup, restore_backup
from bem.ops.errors import BackupError
from bem.ops.offsite import SUFFIX, Offsite
from bem.ops.retention import stamp, to_keep
from bem.testing import ifcgen
from tests.conftest import make_api, settings_for
from tests.helpers import free_port
from tests.integration.test_imports import ifc_bytes, imported, model_of


def objects(url: str) -> dict[str, bytes]:
    target = Offsite(url)
    s3 = boto3.client("s3")
    return {
        name: s3.get_object(Bucket=target.bucket, Key=target.key(name))["Body"].read()
        for name in target.names()
    }


async def test_a_sealed_backup_restores_and_requeues_waiting_jobs(
    sqlite_url: str, s3_url: str, tmp_path: Path
) -> None:
    key = SecretStr(new_key())
    backups = s3_url.replace("/sources", "/backups")
    settings = settings_for(
        sqlite_url, storage_dir=tmp_path / "sources", backup_dir=tmp_path / "stage", backup_key=key
    )
    async with make_api(settings) as api:
        headers, mid = await model_of(api)
        done = await imported(api, headers, mid, "a.ifc", ifc_bytes(ifcgen.generate(20)))
        assert done["status"] == "succeeded"
        async with api.state.sessions() as session:  # a job the snapshot catches running
            await session.execute(text("UPDATE jobs SET status = 'running' WHERE kind = 'import'"))
            await session.commit()
        secret = await api.scalar("SELECT name FROM projects")
    location = await create_backup(settings, to=backups)
    assert location.startswith(backups) and location.endswith(SUFFIX)
    (sealed,) = objects(backups).values()
    assert b"ISO-10303-21" not in sealed and b"SQLite format" not in sealed  # IFC, database
    assert list((tmp_path / "stage").iterdir()) == []  # nothing stays on the host

    target = settings_for(
        f"sqlite+aiosqlite:///{tmp_path / 'restored.db'}",
        storage_dir=tmp_path / "restored",
        backup_dir=tmp_path / "stage",
        backup_key=SecretStr(f"{new_key()}, {key.get_secret_value()}"),  # rotated: old opens
    )
    restored = await restore_backup(target, location)
    assert restored.sources == 2 and restored.jobs_requeued == 1  # sources: the IFC, its GLB
    async with make_api(target) as api:
        assert await api.scalar("SELECT name FROM projects") == secret
        row = await api.scalar("SELECT status || ' ' || verification FROM backups")
        assert row == "succeeded restore"  # the backup that took the snapshot, restored
        # queued again with its sign of life long past, so the runner took it at once
        found = await api.scalar("SELECT status FROM jobs WHERE kind = 'import'")
        assert found in ("queued", "running")


@pytest.mark.parametrize("damage", ["wrong key", "flipped bit", "truncated", "no key"])
async def test_a_damaged_or_foreign_archive_is_refused_and_changes_nothing(
    sqlite_url: str, s3_url: str, tmp_path: Path, damage: str
) -> None:
    key = SecretStr(new_key())
    backups = s3_url.replace("/sources", "/backups")
    settings = settings_for(sqlite_url, backup_dir=tmp_path / "stage", backup_key=key)
    location = await create_backup(settings, to=backups)
    target_db = tmp_path / "restored.db"
    opener = {"wrong key": SecretStr(new_key()), "no key": None}.get(damage, key)
    if damage in ("flipped bit", "truncated"):
        offsite = Offsite(backups)
        (name,) = offsite.names()
        body = bytearray(objects(backups)[name])
        if damage == "flipped bit":
            body[len(body) // 2] ^= 0x01
        else:
            del body[len(body) - 100 :]
        boto3.client("s3").put_object(Bucket=offsite.bucket, Key=offsite.key(name), Body=body)
    target = settings_for(
        f"sqlite+aiosqlite:///{target_db}",
        storage_dir=tmp_path / "restored",
        backup_dir=tmp_path / "stage",
        backup_key=opener,
    )
    expected = {
        "wrong key": "no key in BEM_BACKUP_KEY opens it",
        "flipped bit": "truncated or was altered",
        "truncated": "truncated or was altered",
        "no key": "set BEM_BACKUP_KEY",
    }[damage]
    with pytest.raises(BackupError, match=expected):
        await restore_backup(target, location)
    assert not target_db.exists() and not (tmp_path / "restored").exists()
    assert [p.name for p in (tmp_path / "stage").iterdir()] == []


async def test_retention_applies_to_the_bucket(
    sqlite_url: str, s3_url: str, tmp_path: Path
) -> None:
    backups = s3_url.replace("/sources", "/backups")
    settings = settings_for(sqlite_url, backup_dir=tmp_path / "s", backup_key=SecretStr(new_key()))
    made = [await create_backup(settings, to=backups, keep=Retention(2)) for _ in range(3)]
    assert [Offsite(backups).url(n) for n in Offsite(backups).names()] == made[1:]


async def test_a_backup_stopped_by_an_outage_is_recorded_as_failed(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The source store goes away mid-backup (after the database snapshot): the row says
    failed with the reason instead of staying running, and nothing partial is left."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nobody there
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    settings = settings_for(
        sqlite_url, storage_url="s3://away/sources", backup_dir=tmp_path / "backups"
    )
    with pytest.raises(BackupError, match="storage is unavailable"):
        await create_backup(settings)
    async with make_api(settings_for(sqlite_url)) as api:
        assert await api.scalar("SELECT status FROM backups") == "failed"
        assert "storage is unavailable" in await api.scalar("SELECT error FROM backups")
        assert await api.scalar("SELECT finished_at FROM backups") is not None
    assert list((tmp_path / "backups").iterdir()) == []


def test_without_a_key_an_offsite_backup_is_refused(s3_url: str) -> None:
    with pytest.raises(ValueError, match="BEM_BACKUP_KEY"):
        settings_for("sqlite+aiosqlite:///x.db", backup_url=s3_url)


def test_retention_keeps_the_newest_and_one_per_day_and_week() -> None:
    now = datetime(2026, 12, 2, 3, 0, tzinfo=UTC)  # a Wednesday
    names = [stamp(now - timedelta(hours=12 * i)) for i in range(40)]  # 03:00 and 15:00 daily
    kept = to_keep(names, last=3, daily=4, weekly=3)
    expected = [
        "20261202T03",  # the newest three ...
        "20261201T15",
        "20261201T03",
        "20261130T15",  # ... the newest of the latest four days (two already kept) ...
        "20261129T15",  # ... and of the latest three ISO weeks (49 and 48 already kept)
        "20261122T15",
    ]
    assert sorted(n[:11] for n in kept) == sorted(expected)
    assert to_keep(names, last=1) == {names[0]}
