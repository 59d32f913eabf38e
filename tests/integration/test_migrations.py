"""Alembic: one head; upgrade, downgrade, upgrade on both databases; models and migrations
agree (no drift)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

import bem.models  # noqa: F401 - registers all tables
from bem.kit import migrate
from bem.kit.db import Base, create_engine
from tests.conftest import settings_for


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
    url: str = request.getfixturevalue("postgres_url")
    settings = settings_for(url)
    migrate.downgrade(settings, "base")  # the clone comes migrated; start from nothing
    return url


def _inspect(url: str) -> tuple[set[str], list[tuple[object, ...]]]:
    def run(conn: Connection) -> tuple[set[str], list[tuple[object, ...]]]:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        tables = set(inspect(conn).get_table_names()) - {"alembic_version"}
        return tables, compare_metadata(context, Base.metadata)

    async def go() -> tuple[set[str], list[tuple[object, ...]]]:
        engine = create_engine(settings_for(url))
        try:
            async with engine.connect() as conn:
                return await conn.run_sync(run)
        finally:
            await engine.dispose()

    return asyncio.run(go())


def test_single_head() -> None:
    assert len(migrate.heads(settings_for("sqlite+aiosqlite://"))) == 1


def test_upgrade_downgrade_upgrade_without_drift(empty_database: str) -> None:
    settings = settings_for(empty_database)
    migrate.upgrade(settings)
    tables, diff = _inspect(empty_database)
    assert tables == set(Base.metadata.tables)
    assert diff == [], f"models and migrations drifted: {diff}"

    migrate.downgrade(settings, "base")
    tables, _ = _inspect(empty_database)
    assert tables == set()

    migrate.upgrade(settings)
    tables, diff = _inspect(empty_database)
    assert tables == set(Base.metadata.tables) and diff == []
