"""Backups and restores: the database and the stored source files, with a manifest.

A backup is a directory ``<UTC timestamp>/`` holding

- ``database.dump`` (PostgreSQL, ``pg_dump`` custom format) or ``database.sqlite`` (SQLite,
  copied with SQLite's online backup API): a consistent snapshot while BEM keeps running;
- ``sources/``: the original imported files, content-addressed as in ``BEM_STORAGE_DIR``;
- ``manifest.json``: every file's SHA-256 and size, and every table's row count and
  checksum, taken from the same snapshot as the dump.

It is written under a temporary name and renamed when complete, so a directory with a
manifest is a whole backup. It stays in ``BEM_BACKUP_DIR``, or leaves the host: with
``--to s3://bucket/prefix`` (or ``BEM_BACKUP_URL``) it is sealed into one encrypted archive
(ops/archive.py), opened again and checked against its manifest, then uploaded
(ops/offsite.py). Retention (ops/retention.py) is applied where the backup went.

A restore checks the files against the manifest, loads them into an empty database and
storage, then recomputes the table checksums: the restore is only reported good when every
table matches. Then what the snapshot caught in flight is settled: jobs go back on the
queue, the backup that took the snapshot is marked restored, other running backups failed.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import sqlite3
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import structlog
from pydantic import SecretStr
from sqlalchemy import inspect, select, table, text
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bem import __version__
from bem.config import Settings
from bem.jobs import service as jobs
from bem.kit.db import create_engine, one_off_session, session_factory
from bem.kit.errors import StorageUnavailable
from bem.kit.storage import KEY, SourceStore, name_of, open_store
from bem.ops import repository
from bem.ops.archive import SealError, identities, seal, unseal
from bem.ops.errors import BackupError
from bem.ops.offsite import SUFFIX, Offsite, OffsiteError, is_offsite, split_location
from bem.ops.retention import stamp, to_keep

log = structlog.get_logger("bem.ops")

FORMAT = 1
MANIFEST = "manifest.json"
# Rows are hashed in SQL on PostgreSQL: md5 of the row's text, summed as 60-bit integers
# (order-independent, no overflow in numeric). Dates and times print in UTC, ISO style.
PG_CHECKSUM = (
    "SELECT count(*), coalesce(sum(('x' || substr(md5(t::text), 1, 15))::bit(60)::bigint), 0)"
    "::text FROM {table} AS t"
)


# What stops a backup without being a bug: reported as a BackupError with the reason.
STOPPED_BY = (SealError, OffsiteError, StorageUnavailable, SQLAlchemyError, OSError)


@dataclass
class Restored:
    """What a verified restore loaded (only verified restores return one)."""

    backup: str
    seconds: float
    tables: int
    rows: int
    sources: int
    jobs_requeued: int = 0
    backups_interrupted: int = 0

    def report(self) -> dict[str, Any]:
        return {**asdict(self), "seconds": round(self.seconds, 2), "verified": True}


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
    never on a command line other users can read. A multi-host URL (``?host=a:5432&host=
    b:5432&target_session_attrs=read-write``, for failover) becomes libpq's host and port
    lists and ``PGTARGETSESSIONATTRS``, so the dump reads the current primary too."""
    args = ["--dbname", url.database or ""]
    env = {**os.environ}
    hosts = url.query.get("host", ())
    if url.host or isinstance(hosts, str):
        args += ["--host", url.host or str(hosts)]
    elif hosts:
        names, ports = zip(*(host.partition(":")[::2] for host in hosts), strict=True)
        args += ["--host", ",".join(names), "--port", ",".join(p or "5432" for p in ports)]
    if url.port:
        args += ["--port", str(url.port)]
    if url.username:
        args += ["--username", url.username]
    if attrs := url.query.get("target_session_attrs"):
        env["PGTARGETSESSIONATTRS"] = str(attrs)
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


@dataclass(frozen=True)
class Retention:
    """How many backups to keep where they go (ops/retention.py)."""

    last: int
    daily: int = 0
    weekly: int = 0

    @classmethod
    def of(cls, settings: Settings) -> Retention:
        return cls(settings.backup_keep, settings.backup_keep_daily, settings.backup_keep_weekly)

    def doomed(self, names: list[str]) -> list[str]:
        kept = to_keep(names, last=self.last, daily=self.daily, weekly=self.weekly)
        return [name for name in names if name not in kept]


async def _fill(
    settings: Settings, engine: AsyncEngine, partial: Path, backup_id: uuid.UUID
) -> tuple[dict[str, Any], int]:
    """The database snapshot, the source files and the manifest into ``partial``; the
    manifest's tables and the backup's size."""
    url = make_url(settings.database_url_value)
    if url.get_backend_name() == "sqlite":
        tables = await _snapshot_sqlite(settings, url, partial)
    else:
        tables = await _snapshot_postgres(engine, url, partial)
    await asyncio.to_thread(_back_up_sources, open_store(settings), partial / "sources")
    size = await asyncio.to_thread(_write_manifest, partial, url, tables, backup_id)
    return tables, size


def _write_manifest(partial: Path, url: URL, tables: dict[str, Any], backup_id: uuid.UUID) -> int:
    """Every file's checksum and the tables' into the manifest; the backup's size."""
    paths = [path for path in sorted(partial.rglob("*")) if path.is_file()]
    files = {
        str(path.relative_to(partial)): {"sha256": _sha256(path), "bytes": path.stat().st_size}
        for path in paths
    }
    manifest = {
        "format": FORMAT,
        "backup_id": str(backup_id),
        "created_at": datetime.now(UTC).isoformat(),
        "bem_version": __version__,
        "database": url.get_backend_name(),
        "tables": tables,
        "files": files,
    }
    (partial / MANIFEST).write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
    _owner_only(partial)
    return sum(path.stat().st_size for path in paths)


@dataclass
class Written:
    location: str
    size: int
    tables: dict[str, Any]
    verification: str


async def _write_local(
    settings: Settings, engine: AsyncEngine, backup_id: uuid.UUID, keep: Retention
) -> Written:
    root = _backup_root(settings)
    name = stamp(datetime.now(UTC))
    partial = root / f".{name}.partial"
    partial.mkdir(mode=0o700)
    try:
        tables, size = await _fill(settings, engine, partial, backup_id)
        partial.rename(root / name)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    for doomed in keep.doomed([path.name for path in complete_backups(root)]):
        shutil.rmtree(root / doomed)
    return Written(str(root / name), size, tables, "unverified")


async def _write_offsite(
    settings: Settings, engine: AsyncEngine, backup_id: uuid.UUID, to: str, keep: Retention
) -> Written:
    """Staged in ``BEM_BACKUP_DIR`` (up to three times the backup's size while it is sealed
    and checked), sealed, opened again and checked, uploaded; nothing stays on the host."""
    identities(settings.backup_key)  # no key: refused before any work
    target, name = Offsite(to), stamp(datetime.now(UTC))
    with tempfile.TemporaryDirectory(dir=_backup_root(settings), prefix=".offsite-") as work:
        plain, archive, check = Path(work) / name, Path(work) / f"{name}{SUFFIX}", Path(work) / "c"
        plain.mkdir(mode=0o700)
        tables, _ = await _fill(settings, engine, plain, backup_id)
        await asyncio.to_thread(seal, plain, archive, settings.backup_key)
        shutil.rmtree(plain)
        await asyncio.to_thread(unseal, archive, check, settings.backup_key)
        await asyncio.to_thread(verify_files, check, read_manifest(check))
        shutil.rmtree(check)
        location = await asyncio.to_thread(target.upload, archive, name)
        archived = archive.stat().st_size
    names = await asyncio.to_thread(target.names)
    await asyncio.to_thread(target.delete, keep.doomed(names))
    return Written(location, archived, tables, "archive")


def _backup_root(settings: Settings) -> Path:
    root = settings.backup_dir
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    return root


async def _started(session: AsyncSession, origin: str) -> uuid.UUID:
    backup = await repository.request(session, origin)
    backup_id = await repository.claim(session, backup.id)
    assert backup_id is not None  # just requested: nobody else can have claimed it
    return backup_id


async def start_backup(settings: Settings, origin: str) -> uuid.UUID:
    """A backup row that is already running, for a caller that runs it (``bem drill``)."""
    async with one_off_session(settings) as session:
        backup_id = await _started(session, origin)
        await session.commit()
    return backup_id


async def mark_restored(settings: Settings, backup_id: uuid.UUID) -> None:
    """Record that a drill restored the backup and everything matched."""
    async with one_off_session(settings) as session:
        await repository.verified_by_restore(session, backup_id)
        await session.commit()


async def create_backup(
    settings: Settings,
    *,
    to: str | None = None,
    keep: Retention | None = None,
    backup_id: uuid.UUID | None = None,
) -> str:
    """Back up into ``BEM_BACKUP_DIR``, or to ``to`` (default ``BEM_BACKUP_URL``), then apply
    retention there; returns where it went. ``backup_id``: a row ``start_backup`` made;
    without one, a row of its own (origin ``cli``). The row is marked succeeded, or
    failed with the reason."""
    to = to or settings.backup_url
    keep = keep or Retention.of(settings)
    engine = create_engine(settings)
    sessions = session_factory(engine)
    try:
        if backup_id is None:
            async with sessions() as session:
                backup_id = await _started(session, "cli")
                await session.commit()
        try:
            if to is None:
                written = await _write_local(settings, engine, backup_id, keep)
            else:
                written = await _write_offsite(settings, engine, backup_id, to, keep)
        except Exception as exc:
            await _record_failure(sessions, backup_id, _reason(exc))
            if isinstance(exc, BackupError):
                raise
            if isinstance(exc, STOPPED_BY):
                raise BackupError(_reason(exc)) from exc
            raise
        async with sessions() as session:
            await repository.succeed(
                session,
                backup_id,
                location=written.location,
                size=written.size,
                tables=written.tables,
                verification=written.verification,
            )
            await session.commit()
    finally:
        await engine.dispose()
    return written.location


def _reason(exc: Exception) -> str:
    if isinstance(exc, BackupError | SealError | OffsiteError | StorageUnavailable):
        return str(exc)
    return f"{type(exc).__name__}: {exc}".removesuffix(": ")


async def _record_failure(
    sessions: async_sessionmaker[AsyncSession], backup_id: uuid.UUID, reason: str
) -> None:
    """Mark the row failed with the reason, whatever stopped the backup (a bug too). If the
    database is what went away, the row stays running until a restore settles it: logged."""
    try:
        async with sessions() as session:
            await repository.fail(session, backup_id, reason)
            await session.commit()
    except (SQLAlchemyError, OSError) as recording:
        log.error("backup.failure_not_recorded", backup_id=str(backup_id), error=str(recording))


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


async def restore_backup(settings: Settings, source: str | Path) -> Restored:
    """Restore ``source`` (a backup directory, or a sealed archive's ``s3://`` location)
    into the empty database and storage of ``settings``, verify every table against the
    manifest, then settle what the snapshot caught in flight."""
    started = time.monotonic()
    if isinstance(source, Path) or not is_offsite(source):
        return await _restore(settings, Path(source), str(source), started)
    try:
        target, name = split_location(source)
        with tempfile.TemporaryDirectory(dir=_backup_root(settings), prefix=".restore-") as work:
            archive, opened = Path(work) / f"{name}{SUFFIX}", Path(work) / name
            await asyncio.to_thread(target.download, name, archive)
            await asyncio.to_thread(unseal, archive, opened, settings.backup_key)
            archive.unlink()
            return await _restore(settings, opened, source, started)
    except (SealError, OffsiteError) as exc:
        raise BackupError(str(exc)) from exc


async def _restore(settings: Settings, backup: Path, location: str, started: float) -> Restored:
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
        if found != manifest["tables"]:
            wrong = sorted(
                name
                for name in set(found) | set(manifest["tables"])
                if found.get(name) != manifest["tables"].get(name)
            )
            raise BackupError(f"restored tables do not match the backup: {', '.join(wrong)}")
        sources = await asyncio.to_thread(
            _restore_sources, backup / "sources", open_store(settings)
        )
        async with session_factory(engine)() as session:
            taken_by = manifest.get("backup_id")
            interrupted = await repository.settle_after_restore(
                session, uuid.UUID(taken_by) if taken_by else None, location
            )
            requeued = await jobs.requeue_after_restore(session)
            await session.commit()
    finally:
        await engine.dispose()
    rows = sum(t["rows"] for t in found.values())
    return Restored(
        location,
        time.monotonic() - started,
        len(found),
        rows,
        sources,
        jobs_requeued=requeued,
        backups_interrupted=interrupted,
    )
