"""The disaster-recovery drill (``bem drill``): back up the live system, restore the backup
into a scratch database and storage, and ask both the same questions through the API.

1. Plan: the newest ready version, its parent (for a diff), its commonest class (for a
   selector) and a user who may read it; the live system answers every question.
2. Back up as ``bem backup`` does (the backup is real: it counts in retention).
3. Restore into a scratch database (PostgreSQL: a new database on the same server, dropped
   afterwards; SQLite: a temporary file) and a temporary storage directory; the restore
   itself checks every table against the manifest.
4. The restored copy answers the same questions; each answer must be a 200 with the same
   bytes. ``rto_s`` runs from the start of the restore to the last identical answer.

The API is driven in-process (no port, no lifespan: nothing runs in the background, so a
restored copy neither runs jobs nor sends webhooks), with the read cache and rate limits
off so that every answer is computed from its own database.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr
from sqlalchemy import desc, or_, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from bem.app import create_app
from bem.auth.models import User
from bem.auth.sessions import issue_access_token
from bem.config import Settings
from bem.kit.db import create_engine, one_off_session
from bem.kit.state import state_of
from bem.ops.backups import create_backup, mark_restored, restore_backup, start_backup
from bem.ops.errors import BackupError
from bem.ops.retention import stamp
from bem.projects.models import Membership, Model
from bem.versions.models import Version

PAGE = 100


@dataclass(frozen=True)
class Question:
    name: str
    path: str
    params: dict[str, str] = field(default_factory=dict)


@dataclass
class Answer:
    status: int
    sha256: str
    bytes: int


@dataclass
class Plan:
    """What to ask, and as whom (None: there is no version to read)."""

    version_id: uuid.UUID | None = None
    user_id: uuid.UUID | None = None
    questions: list[Question] = field(default_factory=list)


async def _plan(settings: Settings) -> Plan:
    async with one_off_session(settings) as session:
        version = await session.scalar(
            select(Version)
            .where(Version.status == "ready", Version.element_count > 0)
            .order_by(desc(Version.created_at))
            .limit(1)
        )
        if version is None:
            return Plan()
        reader = await session.scalar(
            select(User.id)
            .outerjoin(Membership, Membership.user_id == User.id)
            .outerjoin(Model, Model.project_id == Membership.project_id)
            .where(or_(Model.id == version.model_id, User.is_admin))
            .order_by(desc(User.is_admin))
            .limit(1)
        )
    if reader is None:
        raise BackupError(f"no user may read version {version.id}: nothing to check as")
    return Plan(version.id, reader, _questions(version))


def _questions(version: Version) -> list[Question]:
    base = f"/v1/versions/{version.id}"
    by_class: dict[str, int] = version.stats.get("by_class", {})
    questions = [
        Question("version", base),
        Question("element page", f"{base}/elements", {"limit": str(PAGE)}),
        Question("spatial tree", f"{base}/tree"),
        Question("takeoff", f"{base}/takeoff", {"group_by": "class"}),
    ]
    if by_class:
        commonest = max(by_class, key=lambda name: (by_class[name], name))
        questions.append(Question("selector", f"{base}/elements", {"q": commonest, "limit": "20"}))
    if version.parent_id is not None:
        questions.append(Question("diff", f"/v1/versions/{version.parent_id}/diff/{version.id}"))
    if version.source_key is not None:
        questions.append(Question("source file", f"{base}/source"))
    return questions


@asynccontextmanager
async def _client(settings: Settings, user_id: uuid.UUID) -> AsyncIterator[httpx.AsyncClient]:
    """The API of ``settings`` in this process, signed in as ``user_id`` (a fresh access
    token: both systems share the signing keys, so it is valid in each)."""
    # No read replicas either: they replicate the live database, and the restored copy's
    # answers must come from the restored copy.
    off = ("cache_enabled", "rate_limit_enabled", "tracing_enabled")
    quiet = settings.model_copy(update={**dict.fromkeys(off, False), "database_read_url": None})
    logging.getLogger("httpx").setLevel(logging.WARNING)  # BEM's access log says it all
    app = create_app(quiet)
    state = state_of(app)
    token = issue_access_token(settings, user_id, datetime.now(UTC))
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(
            transport=transport,
            base_url="http://drill.invalid",
            headers={"Authorization": f"Bearer {token}"},
            timeout=600,  # in-process: only a very slow answer to a heavy question
        ) as client:
            yield client
    finally:
        await state.engine.dispose()
        if state.redis is not None:
            await state.redis.aclose()


async def _ask(settings: Settings, plan: Plan) -> list[Answer]:
    if plan.user_id is None:
        return []
    answers = []
    async with _client(settings, plan.user_id) as client:
        for question in plan.questions:
            r = await client.get(question.path, params=question.params)
            answers.append(
                Answer(r.status_code, hashlib.sha256(r.content).hexdigest(), len(r.content))
            )
    return answers


def compare(plan: Plan, live: list[Answer], restored: list[Answer]) -> list[dict[str, Any]]:
    """One line per question; ``identical`` only for a 200 with the same bytes on both."""
    return [
        {
            "check": question.name,
            "path": question.path,
            "params": question.params,
            "live": asdict(before),
            "restored": asdict(after),
            "identical": before.status == after.status == 200 and before.sha256 == after.sha256,
        }
        for question, before, after in zip(plan.questions, live, restored, strict=True)
    ]


@asynccontextmanager
async def _scratch(settings: Settings, into: str | None) -> AsyncIterator[Settings]:
    """Settings for an empty database and storage: ``into``, or made here and removed after."""
    with tempfile.TemporaryDirectory(prefix="bem-drill-") as work:
        scratch = {"storage_url": None, "storage_dir": Path(work) / "sources"}
        if into is not None:
            yield settings.model_copy(update={**scratch, "database_url": SecretStr(into)})
            return
        url = make_url(settings.database_url_value)
        if url.get_backend_name() == "sqlite":
            database = SecretStr(f"sqlite+aiosqlite:///{Path(work) / 'drill.sqlite'}")
            yield settings.model_copy(update={**scratch, "database_url": database})
            return
        name = f"bem_drill_{uuid.uuid4().hex[:12]}"
        await _admin(settings, f'CREATE DATABASE "{name}"', "create a scratch database")
        try:
            database = SecretStr(url.set(database=name).render_as_string(hide_password=False))
            yield settings.model_copy(update={**scratch, "database_url": database})
        finally:
            await _admin(settings, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', "drop it")


async def _admin(settings: Settings, statement: str, doing: str) -> None:
    engine = create_engine(settings.model_copy(update={"db_pool_size": 1}))
    try:
        async with engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text(statement))
    except SQLAlchemyError as exc:
        reason = getattr(exc, "orig", None) or exc
        raise BackupError(
            f"could not {doing} ({reason}); grant CREATEDB to BEM's database role, "
            "or pass --into the URL of an empty database"
        ) from exc
    finally:
        await engine.dispose()


async def run_drill(
    settings: Settings, *, to: str | None = None, into: str | None = None
) -> dict[str, Any]:
    """The drill's report; ``ok`` only when the restore verified and every answer matched."""
    plan = await _plan(settings)
    live = await _ask(settings, plan)
    backup_id = await start_backup(settings, "drill")
    started = time.monotonic()
    location = await create_backup(settings, to=to, backup_id=backup_id)
    backup_s = time.monotonic() - started
    async with _scratch(settings, into) as scratch:
        started = time.monotonic()
        restored = await restore_backup(scratch, location)
        again = await _ask(scratch, plan)
        rto_s = time.monotonic() - started
    checks = compare(plan, live, again)
    ok = all(check["identical"] for check in checks)
    if ok:
        await mark_restored(settings, backup_id)
    return {
        "ok": ok,
        "at": stamp(datetime.now(UTC)),
        "database": make_url(settings.database_url_value).get_backend_name(),
        "backup": location,
        "version_id": str(plan.version_id) if plan.version_id else None,
        "backup_s": round(backup_s, 2),
        "restore_s": round(restored.seconds, 2),
        "rto_s": round(rto_s, 2),
        "tables": restored.tables,
        "rows": restored.rows,
        "sources": restored.sources,
        "differences": [check["check"] for check in checks if not check["identical"]],
        "checks": checks,
    }
