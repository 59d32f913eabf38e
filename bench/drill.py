"""Recovery time of ``bem drill`` at 10k and 100k elements, on PostgreSQL and SQLite.

Each database holds one model with two versions (the generated model's documents, replicated
with fresh GlobalIds up to the size, and bench/query.py's version 2), uploaded as NDJSON and
vacuumed. The drill then runs in-process as ``bem drill`` does: back up, restore into a
scratch database, check every table and ask both systems the same questions. ``rto_s`` is
the restore plus the restored copy answering every question identically. Writes
``bench/results/drill.json``. Usage: ``python bench/drill.py [sizes...]``.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson

from bem.app import create_app
from bem.config import Settings
from bem.drill import run_drill
from bem.ingest.ifc import element_documents
from bem.kit import migrate
from bem.testing import ifcgen
from query import replicate, version_two
from report import write_report
from upload import SERVER, admin_headers


async def populate(settings: Settings, docs: list[dict[str, Any]]) -> None:
    await asyncio.to_thread(migrate.upgrade, settings)  # Alembic runs its own loop
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://b", timeout=900) as c:
            headers = await admin_headers(app)
            pid = (await c.post("/v1/projects", json={"name": "D"}, headers=headers)).json()["id"]
            model = await c.post(f"/v1/projects/{pid}/models", json={"name": "M"}, headers=headers)
            for body in (docs, version_two(docs)):
                r = await c.post(
                    f"/v1/models/{model.json()['id']}/versions",
                    content=b"".join(orjson.dumps(doc) + b"\n" for doc in body),
                    headers={**headers, "content-type": "application/x-ndjson"},
                )
                assert r.status_code == 201, r.text
        if settings.database_url_value.startswith("postgresql"):
            async with app.state.engine.connect() as conn:
                await conn.execution_options(isolation_level="AUTOCOMMIT")
                await conn.exec_driver_sql("VACUUM ANALYZE")


async def drill(database: str, docs: list[dict[str, Any]]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as work:
        common = {"profile": "test", "backup_dir": Path(work) / "b", "storage_dir": Path(work)}
        if database == "sqlite":
            settings = Settings(database_url=f"sqlite+aiosqlite:///{work}/bem.db", **common)
            await populate(settings, docs)
            return await run_drill(settings)
        name = f"bem_bench_drill_{uuid.uuid4().hex[:8]}"
        admin = await asyncpg.connect(SERVER.replace("postgresql+asyncpg", "postgresql"))
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            settings = Settings(database_url=SERVER.rsplit("/", 1)[0] + f"/{name}", **common)
            await populate(settings, docs)
            return await run_drill(settings)
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await admin.close()


def main(sizes: list[int]) -> None:
    base = list(element_documents(ifcgen.generate(10_000)))
    results: dict[str, Any] = {"sizes": {}}
    for size in sizes:
        docs = replicate(base, size)
        for database in ("postgresql", "sqlite"):
            report = asyncio.run(drill(database, docs))
            assert report["ok"], report["differences"]
            keys = ("backup_s", "restore_s", "rto_s", "tables", "rows")
            entry = {key: report[key] for key in keys}
            entry["checks"] = len(report["checks"])
            results["sizes"].setdefault(str(size), {})[database] = entry
            print(f"{size} {database}: {entry}", file=sys.stderr)
    write_report("drill", results)


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [10_000, 100_000])
