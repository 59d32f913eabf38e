"""Alembic: one head; upgrade, downgrade, upgrade on both databases; models and migrations
agree (no drift); data migrations fill what they add."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import column, insert, inspect, select, table
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

import bem.models  # noqa: F401 - registers all tables
from bem.config import Settings
from bem.kit import migrate
from bem.kit.db import Base, JSONDoc, create_engine
from bem.versions.facts import STOREY
from bem.versions.models import ElementFacts
from tests.conftest import settings_for

T = TypeVar("T")


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


async def run(settings: Settings, query: Callable[[AsyncConnection], Awaitable[T]]) -> T:
    """``query`` in a transaction of its own on the database of ``settings``."""
    engine = create_engine(settings)
    try:
        async with engine.begin() as conn:
            return await query(conn)
    finally:
        await engine.dispose()


def test_element_facts_are_backfilled_from_stored_payloads(empty_database: str) -> None:
    """0005 gives every payload stored before it its takeoff facts."""
    settings = settings_for(empty_database)
    migrate.upgrade(settings, "0004")
    doc = {
        "ifc_class": "IfcWall",
        "name": "W",
        "type": {"global_id": "2O2Fr$t4X7Zf8NOew3FLOH", "name": "WT-1", "ifc_class": "IfcWallType"},
        "container": {"global_id": "1kTvXnbbzCWw8lcMd1dR4o", "name": "L1", "ifc_class": STOREY},
        "parent": None,
        "materials": [{"name": "Brick"}, {"name": "Brick"}],
        "properties": {"Pset_WallCommon": {"FireRating": "REI60", "U": 0.3}},
        "quantities": {"Qto_WallBaseQuantities": {"NetVolume": 1.5}},
    }
    rows = [{"hash": f"{i:064x}", "doc": {**doc, "name": f"W{i}"}} for i in range(2500)]

    async def store(conn: AsyncConnection) -> None:
        payloads = table(
            "element_payloads", column("hash"), column("ifc_class"), column("doc", JSONDoc)
        )
        await conn.execute(insert(payloads), [{**r, "ifc_class": "IfcWall"} for r in rows])

    asyncio.run(run(settings, store))
    migrate.upgrade(settings)

    async def read(conn: AsyncConnection) -> list[Any]:
        result = await conn.execute(select(ElementFacts).order_by(ElementFacts.hash))
        return list(result.all())

    facts = asyncio.run(run(settings, read))
    assert len(facts) == len(rows)  # more than one backfill batch
    first = facts[0]
    assert (first.ifc_class, first.type_name, first.storey, first.container_gid) == (
        "IfcWall",
        "WT-1",
        "L1",
        "1kTvXnbbzCWw8lcMd1dR4o",
    )
    assert first.materials == {"Brick": 1.0}
    assert first.measures == {
        "Pset_WallCommon": {"U": 0.3},
        "Qto_WallBaseQuantities": {"NetVolume": 1.5},
    }


def test_material_shares_are_recomputed_and_undone(empty_database: str) -> None:
    """0009 turns facts' material names into shares (layer thickness here), and back."""
    settings = settings_for(empty_database)
    migrate.upgrade(settings, "0008")
    layers = [
        {"name": "Brick", "layer_thickness": 0.3},
        {"name": "Plaster", "layer_thickness": 0.1},
    ]
    doc = {"ifc_class": "IfcWall", "name": "W", "materials": layers}
    payloads = table(
        "element_payloads", column("hash"), column("ifc_class"), column("doc", JSONDoc)
    )
    facts = table(
        "element_facts",
        column("hash"),
        column("ifc_class"),
        column("materials", JSONDoc),
        column("measures", JSONDoc),
    )

    async def store(conn: AsyncConnection) -> None:
        await conn.execute(
            insert(payloads), [{"hash": "a" * 64, "ifc_class": "IfcWall", "doc": doc}]
        )
        row = {"hash": "a" * 64, "ifc_class": "IfcWall", "materials": ["Brick", "Plaster"]}
        await conn.execute(insert(facts).values(measures={}, **row))

    async def materials(conn: AsyncConnection) -> Any:
        return (await conn.execute(select(facts.c.materials))).scalar_one()

    asyncio.run(run(settings, store))
    migrate.upgrade(settings)
    assert asyncio.run(run(settings, materials)) == pytest.approx({"Brick": 0.75, "Plaster": 0.25})
    migrate.downgrade(settings, "0008")
    assert asyncio.run(run(settings, materials)) == ["Brick", "Plaster"]
