"""Disaster-recovery drill with the real commands: `bem backup` while data exists, `bem
restore` into a new, empty database and storage directory, every table's checksum equal,
the restored server answering as the original did. Also: refusals, tampering, retention,
the backup age in /health and /metrics, and `bem drill`, which does all of it in one
command and fails when an answer differs."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
from sqlalchemy import text

from bem.testing import ifcgen
from tests.conftest import _dsn, make_api, postgres_clone, settings_for
from tests.helpers import bem
from tests.integration.test_imports import ifc_bytes, imported, model_of

pytestmark = pytest.mark.e2e


def environment(database_url: str, storage: Path, backups: Path) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BEM_")}
    return {
        **clean,
        "BEM_DATABASE_URL": database_url,
        "BEM_STORAGE_DIR": str(storage),
        "BEM_BACKUP_DIR": str(backups),
    }


@pytest.fixture
def fresh_postgres() -> Iterator[str]:
    """An empty database (not a clone of the migrated template): where a restore goes."""
    with postgres_clone(None) as url:
        yield url


async def populate(url: str, storage: Path) -> dict[str, Any]:
    """An imported IFC (so there is a stored source file) and a version uploaded as NDJSON;
    returns what the restored server must answer the same way."""
    settings = settings_for(url, storage_dir=storage, webhook_allow_private=True)
    async with make_api(settings) as api:
        headers, model_id = await model_of(api)
        pid = (await api.client.get(f"/v1/models/{model_id}", headers=headers)).json()["project_id"]
        hook = await api.client.post(
            f"/v1/projects/{pid}/webhooks", json={"url": "http://127.0.0.1:9/x"}, headers=headers
        )
        secret = hook.json()["secret"]
        assert await api.scalar("SELECT secret FROM webhooks") != secret  # sealed at rest
        job = await imported(api, headers, model_id, "tower.ifc", ifc_bytes(ifcgen.generate(60)))
        assert job["status"] == "succeeded", job
        vid = job["version_id"]
        takeoff = await api.client.get(
            f"/v1/versions/{vid}/takeoff", params={"group_by": "storey,class"}, headers=headers
        )
        source = await api.client.get(f"/v1/versions/{vid}/source", headers=headers)
        return {
            "vid": vid,
            "token": api.tokens["alice"],
            "takeoff": takeoff.json(),
            "source": source.content,
            "secret": secret,
        }


async def answers(url: str, storage: Path, before: dict[str, Any]) -> None:
    async with make_api(settings_for(url, storage_dir=storage)) as api:
        headers = {"Authorization": f"Bearer {before['token']}"}  # sessions survive a restore
        vid = before["vid"]
        takeoff = await api.client.get(
            f"/v1/versions/{vid}/takeoff", params={"group_by": "storey,class"}, headers=headers
        )
        assert takeoff.json() == before["takeoff"]
        source = await api.client.get(f"/v1/versions/{vid}/source", headers=headers)
        assert source.status_code == 200 and source.content == before["source"]


async def reported(url: str, storage: Path) -> None:
    """The source database knows its newest backup: /health and the alert's metric."""
    async with make_api(settings_for(url, storage_dir=storage)) as api:
        admin = await api.user("ops", admin=True)
        health = (await api.client.get("/health", headers=admin)).json()
        assert health["backup"]["last_success_at"] is not None
        assert health["backup"]["age_s"] < 600
        metrics = (await api.client.get("/metrics")).text
        line = next(
            row
            for row in metrics.splitlines()
            if row.startswith("bem_backup_last_success_timestamp_seconds ")
        )
        assert float(line.split()[1]) > 0


def drill(source_url: str, target_url: str, tmp_path: Path) -> None:
    storage, backups = tmp_path / "sources", tmp_path / "backups"
    before = asyncio.run(populate(source_url, storage))

    made = bem(["backup"], environment(source_url, storage, backups), tmp_path, check=False)
    assert made.returncode == 0, made.stderr
    backup = Path(made.stdout.strip())
    manifest = orjson.loads((backup / "manifest.json").read_bytes())
    assert manifest["tables"]["version_elements"]["rows"] > 60
    assert any(name.startswith("sources/") for name in manifest["files"])
    for path in [backup, *backup.rglob("*")]:  # the owner's alone, whatever the umask
        assert path.stat().st_mode & 0o777 == (0o700 if path.is_dir() else 0o600), path
        if path.is_file():
            assert before["secret"].encode() not in path.read_bytes(), path
    asyncio.run(reported(source_url, storage))

    restored_storage = tmp_path / "restored-sources"
    env = environment(target_url, restored_storage, backups)
    done = bem(["restore", str(backup)], env, tmp_path, check=False)
    assert done.returncode == 0, done.stderr
    report = orjson.loads(done.stdout)
    assert report["verified"] is True and report["sources"] == 2  # the IFC file and its GLB
    assert report["rows"] == sum(t["rows"] for t in manifest["tables"].values())
    print(f"\nrestore drill: {report}", file=sys.__stderr__)  # the recovery time, for CI logs
    asyncio.run(answers(target_url, restored_storage, before))

    again = bem(["restore", str(backup)], env, tmp_path, check=False)
    assert again.returncode == 1 and "restore into a new" in again.stderr


@pytest.mark.postgres
def test_postgres_backup_restores_into_a_new_database(
    postgres_url: str, fresh_postgres: str, tmp_path: Path
) -> None:
    drill(postgres_url, fresh_postgres, tmp_path)


def test_sqlite_backup_restores_into_a_new_file(sqlite_url: str, tmp_path: Path) -> None:
    drill(sqlite_url, f"sqlite+aiosqlite:///{tmp_path / 'restored.db'}", tmp_path)


def test_a_tampered_backup_is_refused_and_old_backups_are_pruned(
    sqlite_url: str, tmp_path: Path
) -> None:
    storage, backups = tmp_path / "sources", tmp_path / "backups"
    env = environment(sqlite_url, storage, backups)
    made = [bem(["backup", "--keep", "2"], env, tmp_path, check=False) for _ in range(3)]
    assert [r.returncode for r in made] == [0, 0, 0]
    kept = sorted(p.name for p in backups.iterdir())
    assert kept == sorted(Path(r.stdout.strip()).name for r in made[1:])

    newest = Path(made[-1].stdout.strip())
    with (newest / "database.sqlite").open("r+b") as file:
        file.seek(200)
        file.write(b"\x00garbage\x00")
    target = environment(f"sqlite+aiosqlite:///{tmp_path / 'restored.db'}", storage, backups)
    refused = bem(["restore", str(newest)], target, tmp_path, check=False)
    assert refused.returncode == 1
    assert "does not match its checksum" in refused.stderr
    assert not (tmp_path / "restored.db").exists()

    shutil.rmtree(newest / "sources", ignore_errors=True)
    (newest / "manifest.json").write_text("{")
    broken = bem(["restore", str(newest)], target, tmp_path, check=False)
    assert broken.returncode == 1 and "manifest" in broken.stderr


async def two_versions(url: str, storage: Path) -> Path:
    """An imported IFC and a second import of the model (so the drill has a diff to ask);
    where the newest version's source file is stored."""
    async with make_api(settings_for(url, storage_dir=storage)) as api:
        headers, model_id = await model_of(api)
        for seed in (0, 1):
            model = ifc_bytes(ifcgen.generate(40, seed=seed))
            job = await imported(api, headers, model_id, f"v{seed}.ifc", model)
            assert job["status"] == "succeeded", job
        key = await api.scalar("SELECT source_key FROM versions ORDER BY created_at DESC")
    return storage / str(key)[:2] / str(key)


async def newest_backup(url: str) -> tuple[str, str]:
    async with make_api(settings_for(url)) as api, api.state.sessions() as session:
        query = "SELECT origin, verification FROM backups ORDER BY started_at DESC"
        origin, verification = (await session.execute(text(query))).first() or ("", "")
    return origin, verification


def scratch_databases(url: str) -> set[str]:
    with psycopg.connect(_dsn(url)) as c:
        rows = c.execute("SELECT datname FROM pg_database WHERE datname LIKE 'bem\\_drill\\_%'")
        return {row[0] for row in rows}


def bem_drill(database_url: str, tmp_path: Path) -> None:
    storage, backups, record = tmp_path / "sources", tmp_path / "backups", tmp_path / "results"
    newest_source = asyncio.run(two_versions(database_url, storage))
    env = environment(database_url, storage, backups)
    done = bem(["drill", "--record", str(record)], env, tmp_path, check=False)
    assert done.returncode == 0, done.stderr
    report = orjson.loads(done.stdout)
    summary = {k: v for k, v in report.items() if k != "checks"}
    print(f"\nbem drill: {summary}", file=sys.__stderr__)  # the recovery time, for CI logs
    assert report["ok"] is True and report["differences"] == []
    asked = {check["check"] for check in report["checks"]}
    assert {"element page", "selector", "takeoff", "diff", "source file"} <= asked
    assert all(c["live"]["status"] == 200 and c["identical"] for c in report["checks"])
    # Two IFC files and one GLB: models without shapes make the same (empty) GLB, kept once.
    assert report["sources"] == 3 and 0 < report["restore_s"] <= report["rto_s"]
    (kept,) = record.iterdir()
    assert orjson.loads(kept.read_bytes()) == report
    assert asyncio.run(newest_backup(database_url)) == ("drill", "restore")

    newest_source.unlink()  # the live store lost a file: the drill cannot vouch for it
    failed = bem(["drill"], env, tmp_path, check=False)
    assert failed.returncode == 1, failed.stderr
    assert orjson.loads(failed.stdout)["differences"] == ["source file"]
    assert "answered differently" in failed.stderr
    assert asyncio.run(newest_backup(database_url)) == ("drill", "unverified")


@pytest.mark.postgres
def test_bem_drill_on_postgres(postgres_url: str, tmp_path: Path) -> None:
    before = scratch_databases(postgres_url)
    bem_drill(postgres_url, tmp_path)
    assert scratch_databases(postgres_url) == before  # made and dropped


def test_bem_drill_on_sqlite(sqlite_url: str, tmp_path: Path) -> None:
    bem_drill(sqlite_url, tmp_path)
