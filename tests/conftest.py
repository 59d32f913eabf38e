"""Shared fixtures: freshly migrated databases (SQLite always, PostgreSQL when reachable) and
an in-process client of the real app.

Service tests skip with a printed reason when PostgreSQL is absent, except under
``BEM_REQUIRE_SERVICES=1`` (set by ``.ci/run``), where absence fails the run.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import psycopg
import pytest
import redis
from opentelemetry.sdk.trace.export import SpanExporter
from sqlalchemy.engine import make_url

from bem.app import create_app
from bem.auth.models import User
from bem.auth.service import issue_token
from bem.auth.sessions import issue_access_token
from bem.config import Settings
from bem.kit import migrate
from bem.kit.db import utcnow
from bem.kit.state import AppState, state_of
from bem.live.hub import Hub
from tests.helpers import (
    PG_BIN,
    REQUIRE_SERVICES,
    OwnPgBouncer,
    OwnPostgres,
    OwnRedis,
    free_port,
    tool,
)

PG_URL = os.environ.get("BEM_TEST_DATABASE_URL", "postgresql://127.0.0.1:5432/test")
REDIS_URL = os.environ.get("BEM_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
# Imported files, by content; shared by the whole run and removed at its end.
SOURCES = Path(tempfile.mkdtemp(prefix="bem-test-sources-"))
# Database URLs that lead through the run's PgBouncer (their settings say so).
PGBOUNCED: set[str] = set()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The PgBouncer variant of ``database_url`` runs only in modules marked ``hot_path``."""
    keep: list[pytest.Item] = []
    drop: list[pytest.Item] = []
    for item in items:
        callspec = getattr(item, "callspec", None)
        bounced = callspec is not None and callspec.params.get("database_url") == "pgbouncer"
        (drop if bounced and item.get_closest_marker("hot_path") is None else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture(scope="session", autouse=True)
def _remove_sources() -> Iterator[None]:
    yield
    shutil.rmtree(SOURCES, ignore_errors=True)


def _dsn(url: str, database: str | None = None) -> str:
    u = make_url(url).set(drivername="postgresql")
    if database is not None:
        u = u.set(database=database)
    return u.render_as_string(hide_password=False)


async def _pg_execute(sql: str) -> None:
    conn = await asyncpg.connect(_dsn(PG_URL), timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _pg_available() -> str | None:
    try:
        asyncio.run(_pg_execute("SELECT 1"))
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        return f"PostgreSQL not reachable at {PG_URL}: {exc!r}"
    return None


def settings_for(database_url: str, **overrides: Any) -> Settings:
    """Test settings; rate limiting is off unless a test turns it on (its own tests do)."""
    values: dict[str, Any] = {
        "rate_limit_enabled": False,
        "storage_dir": SOURCES,
        "db_pgbouncer": database_url in PGBOUNCED,
        **overrides,
    }
    return Settings(profile="test", database_url=database_url, log_json=True, **values)


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[str]:
    """A migrated template database; each test clones it (fast) and drops its clone."""
    reason = _pg_available()
    if reason is not None:
        if REQUIRE_SERVICES:
            pytest.fail(f"BEM_REQUIRE_SERVICES=1 but {reason}")
        pytest.skip(reason)
    name = f"bem_tpl_{uuid.uuid4().hex[:10]}"
    asyncio.run(_pg_execute(f'CREATE DATABASE "{name}"'))
    migrate.upgrade(settings_for(_dsn(PG_URL, name)))
    try:
        yield name
    finally:
        asyncio.run(_pg_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def shared_redis() -> str:
    """The shared Redis; tests keep to their own key prefix."""
    try:
        redis.Redis.from_url(REDIS_URL, socket_timeout=1).ping()
    except redis.RedisError as exc:
        reason = f"Redis not reachable at {REDIS_URL}: {exc!r}"
        if REQUIRE_SERVICES:
            pytest.fail(f"BEM_REQUIRE_SERVICES=1 but {reason}")
        pytest.skip(reason)
    return REDIS_URL


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite") / "template.db"
    migrate.upgrade(settings_for(f"sqlite+aiosqlite:///{path}"))
    return path


@contextmanager
def postgres_clone(template: str | None) -> Iterator[str]:
    """A new database, cloned from ``template`` (or empty without one), dropped afterwards."""
    name = f"bem_t_{uuid.uuid4().hex[:12]}"
    clone = f' TEMPLATE "{template}"' if template else ""
    asyncio.run(_pg_execute(f'CREATE DATABASE "{name}"{clone}'))
    try:
        yield _dsn(PG_URL, name)
    finally:
        asyncio.run(_pg_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def postgres_url(postgres_template: str) -> Iterator[str]:
    with postgres_clone(postgres_template) as url:
        yield url


@pytest.fixture(scope="session")
def pgbouncer(postgres_template: str) -> Iterator[OwnPgBouncer]:
    """One PgBouncer (transaction pooling) in front of the test PostgreSQL for the run."""
    url = make_url(PG_URL)
    bouncer = OwnPgBouncer(
        tool("pgbouncer", "pgbouncer"), url.host or "127.0.0.1", url.port or 5432
    )
    try:
        yield bouncer
    finally:
        bouncer.remove()


@pytest.fixture
def pgbouncer_url(postgres_url: str, pgbouncer: OwnPgBouncer) -> str:
    """A fresh database (created directly), reached through PgBouncer."""
    url = make_url(postgres_url).set(host="127.0.0.1", port=pgbouncer.port)
    rendered = url.render_as_string(hide_password=False)
    PGBOUNCED.add(rendered)
    return rendered


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """A real S3 API on 127.0.0.1 (moto in server mode) for the run; its endpoint URL."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}


def s3_bucket(monkeypatch: pytest.MonkeyPatch, endpoint: str) -> str:
    """A new bucket at ``endpoint``, with this process's AWS settings pointing there (child
    processes inherit them)."""
    import boto3

    settings = {**S3_CREDENTIALS, "AWS_ENDPOINT_URL": endpoint, "AWS_REGION": "us-east-1"}
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    bucket = f"bem-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", region_name="us-east-1").create_bucket(Bucket=bucket)
    return bucket


@pytest.fixture
def s3_url(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """``s3://<a new bucket>/sources``, with this process's AWS settings pointing at it."""
    return f"s3://{s3_bucket(monkeypatch, s3_server)}/sources"


@pytest.fixture
def sqlite_url(sqlite_template: Path, tmp_path: Path) -> str:
    path = tmp_path / "bem.db"
    shutil.copy(sqlite_template, path)
    return f"sqlite+aiosqlite:///{path}"


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("pgbouncer", marks=pytest.mark.postgres),
    ]
)
def database_url(request: pytest.FixtureRequest) -> str:
    """Each test using this runs on both databases (and, in ``hot_path`` modules, on
    PostgreSQL through PgBouncer in transaction mode)."""
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url


@dataclass
class Api:
    """The app under test with helpers to make users, their tokens, models and versions."""

    app: Any
    client: httpx.AsyncClient
    settings: Settings
    tokens: dict[str, str] = field(default_factory=dict)

    users: dict[str, User] = field(default_factory=dict)

    @property
    def state(self) -> AppState:
        return state_of(self.app)

    @property
    def hub(self) -> Hub:
        return self.state.resource(Hub)

    async def user(self, name: str, *, admin: bool = False) -> dict[str, str]:
        """Authorization headers of a signed-in user (a session access token), created on
        first use."""
        if name not in self.tokens:
            async with self.app.state.sessions() as session:
                user = User(email=f"{name}@example.com", name=name, is_admin=admin)
                session.add(user)
                await session.commit()
            self.users[name] = user
            self.tokens[name] = issue_access_token(self.settings, user.id, utcnow())
        return {"Authorization": f"Bearer {self.tokens[name]}"}

    async def api_token(
        self, name: str, scopes: list[str], project_id: uuid.UUID | None = None
    ) -> dict[str, str]:
        """Headers with a personal API token of user ``name`` (created if needed)."""
        await self.user(name)
        async with self.app.state.sessions() as session:
            _, secret = await issue_token(
                session, self.users[name], "test", scopes, project_id=project_id
            )
            await session.commit()
        return {"Authorization": f"Bearer {secret}"}

    async def model(
        self, headers: dict[str, str], project: str = "P", model: str = "M"
    ) -> tuple[str, str]:
        """A new project of the caller's with one model: (project id, model id)."""
        r = await self.client.post("/v1/projects", json={"name": project}, headers=headers)
        assert r.status_code == 201, r.text
        pid = str(r.json()["id"])
        r = await self.client.post(
            f"/v1/projects/{pid}/models", json={"name": model}, headers=headers
        )
        assert r.status_code == 201, r.text
        return pid, str(r.json()["id"])

    async def upload(
        self,
        headers: dict[str, str],
        model_id: str,
        body: list[dict[str, Any]] | bytes,
        **params: str,
    ) -> str:
        """The id of a new ready version of ``model_id`` from element documents (or an NDJSON
        body as is)."""
        content = body if isinstance(body, bytes) else b"\n".join(orjson.dumps(d) for d in body)
        r = await self.client.post(
            f"/v1/models/{model_id}/versions",
            content=content,
            params=params,
            headers={**headers, "content-type": "application/x-ndjson"},
        )
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    async def scalar(self, sql: str) -> Any:
        from sqlalchemy import text

        async with self.app.state.sessions() as session:
            return await session.scalar(text(sql))


@asynccontextmanager
async def make_api(
    settings: Settings, span_exporter: SpanExporter | None = None
) -> AsyncIterator[Api]:
    """The app with its lifespan running, and a client; spans go to ``span_exporter``."""
    app = create_app(settings, span_exporter=span_exporter)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bem.test") as client:
            yield Api(app=app, client=client, settings=settings)


@pytest.fixture
async def api(database_url: str) -> AsyncIterator[Api]:
    async with make_api(settings_for(database_url)) as value:
        yield value


@pytest.fixture
async def sqlite_api(sqlite_url: str) -> AsyncIterator[Api]:
    """For behaviour that does not depend on the database."""
    async with make_api(settings_for(sqlite_url)) as value:
        yield value


@pytest.fixture
def own_postgres() -> Iterator[OwnPostgres]:
    if not (PG_BIN / "initdb").exists() or shutil.which("runuser") is None:
        if REQUIRE_SERVICES:
            pytest.fail("BEM_REQUIRE_SERVICES=1 but PostgreSQL server binaries are missing")
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    cluster = OwnPostgres()
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        cluster.remove()


@pytest.fixture
def replicated_postgres(own_postgres: OwnPostgres) -> Iterator[tuple[OwnPostgres, OwnPostgres]]:
    """A private primary and its synchronous streaming replica ("replica1"): a commit is
    acknowledged once the replica has flushed it (replaying it may lag)."""
    primary, replica = own_postgres, OwnPostgres()
    primary.configure(synchronous_standby_names="replica1", synchronous_commit="on")
    primary.stop()
    primary.start()
    try:
        replica.follow(primary, "replica1")
        _synchronous(primary)
        yield primary, replica
    finally:
        replica.remove()


def _synchronous(primary: OwnPostgres) -> None:
    query = "SELECT sync_state FROM pg_stat_replication WHERE application_name = 'replica1'"
    for _ in range(100):
        with psycopg.connect(primary.url, connect_timeout=5) as conn:
            row = conn.execute(query).fetchone()
        if row is not None and row[0] == "sync":
            return
        time.sleep(0.1)
    raise AssertionError("the replica never became a synchronous standby")


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    binary = shutil.which("redis-server")
    if binary is None:
        if REQUIRE_SERVICES:
            pytest.fail("BEM_REQUIRE_SERVICES=1 but redis-server is not installed")
        pytest.skip("redis-server is not installed")
    server = OwnRedis(binary, tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()
