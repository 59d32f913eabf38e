"""Backups and restores: the database and the stored source files, with a manifest.

A backup is a directory ``<backup_dir>/<UTC timestamp>/`` holding

- ``database.dump`` (PostgreSQL, ``pg_dump`` custom format) or ``database.sqlite`` (SQLite,
  copied with SQLite's online backup API): a consistent snapshot while BEM keeps running;
- ``sources/``: the original imported files, content-addressed as in ``BEM_STORAGE_DIR``;
- ``manifest.json``: every file's SHA-256 and size, and every table's row count and
  checksum, taken from the same snapshot as the dump.

It is written under a temporary name and renamed when complete, so a directory with a
manifest is a whole backup. A restore checks the files against the manifest, loads them
into an empty database and storage directory, then recomputes the table checksums: the
restore is only reported good when every table matches.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import orjson
import structlog
from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy import inspect, select, table, text
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from bem import __version__
from bem.config import Settings
from bem.events import service as events
from bem.jobs import service as jobs
from bem.kit.db import create_engine, session_factory, utcnow
from bem.kit.health import pool_stats, run_checks
from bem.kit.state import state_of
from bem.kit.storage import KEY, SourceStore, name_of, open_store
from bem.live.hub import Hub
from bem.ops import repository

FORMAT = 1
MANIFEST = "manifest.json"
# Rows are hashed in SQL on PostgreSQL: md5 of the row's text, summed as 60-bit integers
# (order-independent, no overflow in numeric). Dates and times print in UTC, ISO style.
PG_CHECKSUM = (
    "SELECT count(*), coalesce(sum(('x' || substr(md5(t::text), 1, 15))::bit(60)::bigint), 0)"
    "::text FROM {table} AS t"
)


class BackupError(Exception):
    """A backup or restore that cannot be done or did not verify; the message says why."""


@dataclass
class Restored:
    """What a verified restore loaded (only verified restores return one)."""

    backup: Path
    seconds: float
    tables: int
    rows: int
    sources: int

    def report(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "backup": str(self.backup),
            "seconds": round(self.seconds, 2),
            "verified": True,
        }


def _sha256(path: Path) -> str:
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


async def _run(command: list[str], env: dict[str, str]) -> None:
    process = await asyncio.create_subprocess_exec(
        *command, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    _, stderr = await process.communicate()
    if process.returncode != 0:
        raise BackupError(f"{command[0]} failed: {stderr.decode(errors='replace').strip()}")


async def _checksums(engine: AsyncEngine) -> dict[str, dict[str, Any]]:
    async with engine.connect() as conn:
        return await conn.run_sync(table_checksums)


def _libpq(url: URL) -> tuple[list[str], dict[str, str]]:
    """Connection options for pg_dump/pg_restore; the password travels in the environment,
    never on a command line other users can read."""
    args = ["--dbname", url.database or ""]
    if url.host:
        args += ["--host", url.host]
    if url.port:
        args += ["--port", str(url.port)]
    if url.username:
        args += ["--username", url.username]
    env = {**os.environ}
    if url.password:
        env["PGPASSWORD"] = str(url.password)
    return args, env


def table_checksums(conn: Connection) -> dict[str, dict[str, Any]]:
    """Row count and checksum of every table (migrations' own bookkeeping included)."""
    out: dict[str, dict[str, Any]] = {}
    names = sorted(inspect(conn).get_table_names())
    if conn.dialect.name == "postgresql":
        conn.execute(text("SET TimeZone = 'UTC'"))
        conn.execute(text("SET DateStyle = 'ISO'"))
        for name in names:
            quoted = conn.dialect.identifier_preparer.quote(name)
            count, total = conn.execute(text(PG_CHECKSUM.format(table=quoted))).one()
            out[name] = {"rows": int(count), "checksum": str(total)}
        return out
    for name in names:
        rows = conn.execute(select(text("*")).select_from(table(name)))
        count = total = 0
        for row in rows:
            count += 1
            digest = hashlib.md5(repr(tuple(row)).encode(), usedforsecurity=False).digest()
            total += int.from_bytes(digest[:8], "big") >> 4
        out[name] = {"rows": count, "checksum": str(total)}
    return out


async def _snapshot_postgres(engine: AsyncEngine, url: URL, target: Path) -> dict[str, Any]:
    """pg_dump and the checksums from one snapshot: the checksums run in a repeatable-read
    transaction whose snapshot pg_dump imports."""
    async with engine.connect() as conn:
        await conn.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"))
        snapshot = (await conn.execute(text("SELECT pg_export_snapshot()"))).scalar_one()
        args, env = _libpq(url)
        command = ["pg_dump", "--format=custom", "--no-owner", "--no-privileges"]
        command += [f"--snapshot={snapshot}", "--file", str(target / "database.dump"), *args]
        await _run(command, env)
        checksums = await conn.run_sync(table_checksums)
        await conn.rollback()
    return checksums


async def _snapshot_sqlite(settings: Settings, url: URL, target: Path) -> dict[str, Any]:
    """SQLite's online backup API copies a consistent database while BEM writes."""
    copy = target / "database.sqlite"

    def backup() -> None:
        source = sqlite3.connect(url.database or "")
        try:
            with sqlite3.connect(copy) as destination:
                source.backup(destination)
        finally:
            source.close()

    await asyncio.to_thread(backup)
    copied = SecretStr(f"sqlite+aiosqlite:///{copy}")
    engine = create_engine(settings.model_copy(update={"database_url": copied}))
    try:
        return await _checksums(engine)
    finally:
        await engine.dispose()


def _back_up_sources(store: SourceStore, target: Path) -> int:
    """Copy every stored file (``<sha256[:2]>/<sha256>``, kit/storage.py) into ``target``."""
    copied = 0
    for key in store.stored_keys():
        destination = target / name_of(key)
        destination.parent.mkdir(parents=True, exist_ok=True)
        store.download(key, destination)
        copied += 1
    return copied


def _restore_sources(source: Path, store: SourceStore) -> int:
    """Put the backup's files into the store (each is kept once, by its content)."""
    restored = 0
    for path in sorted(source.glob("??/*")):
        if KEY.fullmatch(path.name):
            with path.open("rb") as file:
                store.put(file)
            restored += 1
    return restored


async def create_backup(settings: Settings, keep: int) -> Path:
    """Write a complete backup under ``settings.backup_dir``, record it in the database,
    then keep the newest ``keep``."""
    url = make_url(settings.database_url_value)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    root = settings.backup_dir
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    partial = root / f".{stamp}.partial"
    partial.mkdir(mode=0o700)
    engine = create_engine(settings)
    try:
        if url.get_backend_name() == "sqlite":
            tables = await _snapshot_sqlite(settings, url, partial)
        else:
            tables = await _snapshot_postgres(engine, url, partial)
        await asyncio.to_thread(_back_up_sources, open_store(settings), partial / "sources")
        paths = [path for path in sorted(partial.rglob("*")) if path.is_file()]
        files = {
            str(path.relative_to(partial)): {"sha256": _sha256(path), "bytes": path.stat().st_size}
            for path in paths
        }
        manifest = {
            "format": FORMAT,
            "created_at": datetime.now(UTC).isoformat(),
            "bem_version": __version__,
            "database": url.get_backend_name(),
            "tables": tables,
            "files": files,
        }
        (partial / MANIFEST).write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
        _owner_only(partial)
        size = sum(path.stat().st_size for path in paths)
        final = root / stamp
        partial.rename(final)
        async with session_factory(engine)() as session:
            await repository.record(session, str(final), size, tables)
            await session.commit()
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    finally:
        await engine.dispose()
    prune(root, keep)
    return final


def _owner_only(tree: Path) -> None:
    """A backup holds every user's data and sealed secrets: readable by its owner only
    (directories 0700, files 0600), whatever the umask."""
    for path in [tree, *tree.rglob("*")]:
        path.chmod(0o700 if path.is_dir() else 0o600)


def complete_backups(root: Path) -> list[Path]:
    """Backups with a manifest, oldest first (names are UTC timestamps)."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and (p / MANIFEST).is_file())


def prune(root: Path, keep: int) -> list[Path]:
    doomed = complete_backups(root)[:-keep] if keep > 0 else []
    for path in doomed:
        shutil.rmtree(path)
    return doomed


def read_manifest(backup: Path) -> dict[str, Any]:
    try:
        manifest: dict[str, Any] = orjson.loads((backup / MANIFEST).read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise BackupError(f"{backup} has no readable {MANIFEST}: {exc}") from exc
    if manifest.get("format") != FORMAT:
        raise BackupError(f"unknown backup format {manifest.get('format')!r}")
    return manifest


def verify_files(backup: Path, manifest: dict[str, Any]) -> None:
    for name, expected in manifest["files"].items():
        path = backup / name
        if not path.is_file():
            raise BackupError(f"{name} is missing from the backup")
        if _sha256(path) != expected["sha256"]:
            raise BackupError(f"{name} does not match its checksum in the manifest")


async def _restore_postgres(engine: AsyncEngine, url: URL, backup: Path) -> None:
    async with engine.connect() as conn:
        if await conn.run_sync(lambda c: inspect(c).get_table_names()):
            raise BackupError(
                f"database {url.database!r} is not empty; restore into a new database"
            )
    args, env = _libpq(url)
    command = ["pg_restore", "--no-owner", "--no-privileges", "--single-transaction"]
    command += ["--exit-on-error", *args, str(backup / "database.dump")]
    await _run(command, env)


def _restore_sqlite(url: URL, backup: Path) -> None:
    target = Path(url.database or "")
    if target.exists() and target.stat().st_size > 0:
        raise BackupError(f"{target} exists; restore into a new database file")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(backup / "database.sqlite", target)


async def restore_backup(settings: Settings, backup: Path) -> Restored:
    """Restore ``backup`` into the (empty) database and storage directory of ``settings``
    and verify every table against the manifest."""
    started = time.monotonic()
    manifest = read_manifest(backup)
    url = make_url(settings.database_url_value)
    if manifest["database"] != url.get_backend_name():
        raise BackupError(
            f"this is a {manifest['database']} backup; BEM_DATABASE_URL is {url.get_backend_name()}"
        )
    await asyncio.to_thread(verify_files, backup, manifest)
    if url.get_backend_name() == "sqlite":
        _restore_sqlite(url, backup)
    engine = create_engine(settings)
    try:
        if url.get_backend_name() != "sqlite":
            await _restore_postgres(engine, url, backup)
        found = await _checksums(engine)
    finally:
        await engine.dispose()
    sources = await asyncio.to_thread(_restore_sources, backup / "sources", open_store(settings))
    if found != manifest["tables"]:
        wrong = sorted(
            name
            for name in set(found) | set(manifest["tables"])
            if found.get(name) != manifest["tables"].get(name)
        )
        raise BackupError(f"restored tables do not match the backup: {', '.join(wrong)}")
    rows = sum(t["rows"] for t in found.values())
    return Restored(backup, time.monotonic() - started, len(found), rows, sources)


# ---- the health report and the scrape-time gauges -----------------------------------------

log = structlog.get_logger("bem.ops")
QUERY_TIMEOUT_S = 1.0
T = TypeVar("T")


log = structlog.get_logger("bem.ops")
QUERY_TIMEOUT_S = 1.0


async def _stats(
    app: FastAPI, read: Callable[[AsyncSession], Awaitable[T]], what: str
) -> tuple[T] | None:
    """One bounded read for the health detail and the scrape gauges, as a 1-tuple (its value
    may be None); None, logged, when the database does not answer, so the gauges keep their
    last values."""
    try:
        async with state_of(app).sessions() as session:
            return (await asyncio.wait_for(read(session), QUERY_TIMEOUT_S),)
    except (SQLAlchemyError, TimeoutError) as exc:
        log.warning(f"{what}.stats_unavailable", error=type(exc).__name__)
        return None


async def _jobs_waiting(app: FastAPI) -> dict[str, Any]:
    """Jobs waiting in the jobs table (the truth, whichever queue carries them), also set on
    the queue gauges."""
    metrics, settings = state_of(app).metrics, state_of(app).settings
    out: dict[str, Any] = {"queue": settings.job_queue.value}
    read = await _stats(app, jobs.waiting, "jobs")
    if read is None:
        return {**out, "error": "the jobs table did not answer"}
    ((count, oldest),) = read
    age = max((utcnow() - oldest).total_seconds(), 0.0) if oldest is not None else 0.0
    metrics.jobs_waiting.set(count)
    metrics.oldest_job_age.set(age)
    return {**out, "queued": count, "oldest_queued_age_s": round(age, 1)}


async def _last_backup(app: FastAPI) -> dict[str, Any]:
    """The newest completed backup (from the backups table), also set on its gauge."""
    read = await _stats(app, repository.last_success, "backups")
    if read is None:
        return {"error": "the backups table did not answer"}
    (finished,) = read
    state_of(app).metrics.last_backup.set(finished.timestamp() if finished else 0)
    if finished is None:
        return {"last_success_at": None}
    age = max((utcnow() - finished).total_seconds(), 0.0)
    return {"last_success_at": finished.isoformat(), "age_s": round(age, 1)}


async def _live(app: FastAPI) -> dict[str, Any]:
    """This process's feed connections, and the webhook deliveries waiting (set on their
    gauge)."""
    hub = state_of(app).resource(Hub)
    out: dict[str, Any] = {
        "connections": dict(hub.counts),
        "last_event_id": hub.last_id,
    }
    read = await _stats(app, events.pending_deliveries, "webhooks")
    if read is None:
        return {**out, "webhooks": {"error": "the webhook deliveries table did not answer"}}
    ((count, oldest),) = read
    state_of(app).metrics.webhooks_pending.set(count)
    age = max((utcnow() - oldest).total_seconds(), 0.0) if oldest is not None else 0.0
    return {**out, "webhooks": {"pending": count, "oldest_pending_age_s": round(age, 1)}}


async def refresh(app: FastAPI) -> dict[str, Any]:
    """Readiness checks and the tables behind the scrape-time gauges, read concurrently and
    each bounded (slow reads cost the longest timeout, not their sum); sets those gauges."""
    checks, jobs_waiting, last_backup, live = await asyncio.gather(
        run_checks(app), _jobs_waiting(app), _last_backup(app), _live(app)
    )
    return {"checks": checks, "jobs": jobs_waiting, "backup": last_backup, "live": live}


async def health_report(app: FastAPI) -> dict[str, Any]:
    """What admins see at ``/health``: every check and table read above, pools, build."""
    state, report = state_of(app), await refresh(app)
    checks_ok = all(c["status"] == "ok" for c in report["checks"].values())
    return {
        **report,
        "status": "ok" if checks_ok else "failing",
        "database_pool": pool_stats(app),
        "rate_limit_store": state.limiter.status if state.limiter is not None else "disabled",
        "cache": state.cache.describe() if state.cache is not None else "disabled",
        "migration_heads": list(state.migration_heads),
        "version": state.build.version,
        "commit": state.build.commit,
        "uptime_s": round(time.time() - state.started_at, 1),
        "draining": state.draining,
    }
