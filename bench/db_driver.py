"""asyncpg vs psycopg 3 under SQLAlchemy async, on the operations BEM does most.

Workloads (each on a fresh database on the local PostgreSQL):
- ``batch_insert``: element payload rows (JSONB) + version-element rows, batches of 2,000,
  the way an upload writes them;
- ``page_reads``: 500 keyset pages of 100 elements joined to their payloads;
- ``point_reads``: 2,000 single-element lookups by primary key.

Prints JSON and writes ``bench/results/db_driver.json``. Usage: ``python bench/db_driver.py``.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import create_async_engine

import bem.models  # noqa: F401
from bem.kit.db import Base
from bem.projects.models import Model, Project
from bem.versions.models import ElementPayload, Version, VersionElement
from report import write_report  # bench/ is on sys.path when run as a script

SERVER = os.environ.get("BEM_TEST_DATABASE_URL", "postgresql://127.0.0.1:5432/test")
ROWS = int(os.environ.get("BENCH_ROWS", "20000"))
BATCH = 2000


def _doc(i: int) -> dict[str, Any]:
    return {
        "ifc_class": "IfcWall",
        "name": f"Wall {i}",
        "properties": {"Pset_WallCommon": {"FireRating": "REI90", "IsExternal": i % 2 == 0}},
        "quantities": {"Qto_WallBaseQuantities": {"Length": 5.0 + i % 7, "NetVolume": 1.5}},
        "materials": [{"name": "Brick", "category": "masonry", "layer_thickness": 0.115}],
    }


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(SERVER)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def run(driver: str) -> dict[str, Any]:
    name = f"bem_bench_{uuid.uuid4().hex[:8]}"
    await _admin(f'CREATE DATABASE "{name}"')
    url = SERVER.rsplit("/", 1)[0].replace("postgresql://", f"postgresql+{driver}://") + f"/{name}"
    engine = create_async_engine(
        url, pool_size=5, json_serializer=lambda v: orjson.dumps(v).decode()
    )
    try:
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
        version_id, model_id = uuid.uuid4(), uuid.uuid4()
        now = datetime.now(UTC)
        async with engine.begin() as conn:
            pid = uuid.uuid4()
            await conn.execute(
                insert(Project), [{"id": pid, "name": "p", "created_at": now, "updated_at": now}]
            )
            await conn.execute(
                insert(Model), [{"id": model_id, "project_id": pid, "name": "m", "created_at": now}]
            )
            await conn.execute(
                insert(Version),
                [
                    {
                        "id": version_id,
                        "model_id": model_id,
                        "status": "ready",
                        "source_format": "ndjson",
                        "element_count": ROWS,
                        "stats": {},
                        "created_at": now,
                    }
                ],
            )
        rows = []
        for i in range(ROWS):
            doc = _doc(i)
            digest = hashlib.sha256(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)).hexdigest()
            rows.append((f"{i:022d}", digest, doc))

        started = time.perf_counter()
        for start in range(0, ROWS, BATCH):
            chunk = rows[start : start + BATCH]
            async with engine.begin() as conn:
                await conn.execute(
                    insert(ElementPayload),
                    [
                        {"hash": h, "ifc_class": "IfcWall", "name": d["name"], "doc": d}
                        for _, h, d in chunk
                    ],
                )
                await conn.execute(
                    insert(VersionElement),
                    [
                        {"version_id": version_id, "global_id": g, "payload_hash": h}
                        for g, h, _ in chunk
                    ],
                )
        insert_s = time.perf_counter() - started

        started = time.perf_counter()
        after = ""
        for _ in range(500):
            async with engine.connect() as conn:
                result = await conn.execute(
                    select(VersionElement.global_id, ElementPayload.doc)
                    .join(ElementPayload, ElementPayload.hash == VersionElement.payload_hash)
                    .where(
                        VersionElement.version_id == version_id, VersionElement.global_id > after
                    )
                    .order_by(VersionElement.global_id)
                    .limit(100)
                )
                page = result.all()
            after = page[-1][0] if len(page) == 100 else ""
        pages_s = time.perf_counter() - started

        started = time.perf_counter()
        for i in range(2000):
            async with engine.connect() as conn:
                await conn.execute(
                    select(ElementPayload.doc)
                    .join(VersionElement, ElementPayload.hash == VersionElement.payload_hash)
                    .where(
                        VersionElement.version_id == version_id,
                        VersionElement.global_id == rows[(i * 7919) % ROWS][0],
                    )
                )
        points_s = time.perf_counter() - started
        return {
            "driver": driver,
            "batch_insert_rows_per_s": round(ROWS / insert_s),
            "page_reads_per_s": round(500 / pages_s, 1),
            "point_reads_per_s": round(2000 / points_s, 1),
        }
    finally:
        await engine.dispose()
        await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def main() -> None:
    results = [await run("asyncpg"), await run("psycopg")]
    write_report("db_driver", {"rows": ROWS, "results": results})


if __name__ == "__main__":
    asyncio.run(main())
