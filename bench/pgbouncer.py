"""What PgBouncer in transaction mode costs BEM's queries, side by side in one run.

Three engines made by ``bem.kit.db.create_engine`` on one migrated database, queried in
interleaved rounds, one transaction per query (as a request does):

- ``direct``: PostgreSQL, asyncpg's statement cache on (BEM's default);
- ``direct_no_cache``: PostgreSQL with ``BEM_DB_PGBOUNCER=true`` (no prepared-statement
  cache, no startup parameters): the price of the setting alone;
- ``pgbouncer``: the same through a local PgBouncer (transaction pooling): plus the hop.

Queries: a primary-key lookup (``versions``) and an element page (``version_elements``
joined to ``element_payloads``, 100 rows, keyset order), on a version of 2,000 elements.
Prints JSON and writes ``bench/results/pgbouncer.json``. Needs pgbouncer (Debian package) and
root (PgBouncer runs as the postgres user). Usage: ``python bench/pgbouncer.py``.
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from bem.config import Settings
from bem.kit import migrate
from bem.kit.db import create_engine
from report import write_report  # bench/ is on sys.path when run as a script

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/helpers.py: PgBouncer
from tests.helpers import OwnPgBouncer

SERVER = "postgresql://127.0.0.1:5432/test"
ROUNDS, QUERIES = 5, 500
POINT = text("SELECT id, model_id, seq, element_count FROM versions WHERE id = :id")
PAGE = text(
    "SELECT ve.global_id, p.doc FROM version_elements ve "
    "JOIN element_payloads p ON p.hash = ve.payload_hash "
    "WHERE ve.version_id = :id AND ve.global_id > :after ORDER BY ve.global_id LIMIT 100"
)


async def admin(statement: str) -> None:
    conn = await asyncpg.connect(SERVER)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


async def seed(url: str) -> str:
    """A version of 2,000 elements through BEM's own upload path; its id."""
    from tests.conftest import SOURCES, make_api, settings_for

    from bem.ingest.ifc import element_documents
    from bem.testing import ifcgen

    try:
        async with make_api(settings_for(url)) as api:
            headers = await api.user("bench")
            _, model_id = await api.model(headers)
            docs = list(element_documents(ifcgen.generate(2000)))
            return await api.upload(headers, model_id, docs)
    finally:
        shutil.rmtree(SOURCES, ignore_errors=True)


async def timed(engine: AsyncEngine, statement: Any, params: dict[str, Any]) -> float:
    """Median microseconds of one query in its own transaction."""
    samples = []
    for _ in range(QUERIES):
        started = time.perf_counter()
        async with engine.connect() as conn:
            (await conn.execute(statement, params)).all()
            await conn.commit()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1e6


async def main() -> None:
    name = f"bem_bench_pgb_{uuid.uuid4().hex[:8]}"
    await admin(f'CREATE DATABASE "{name}"')
    url = make_url(SERVER).set(database=name).render_as_string(hide_password=False)
    bouncer = OwnPgBouncer(shutil.which("pgbouncer") or "pgbouncer", "127.0.0.1", 5432)
    try:
        await asyncio.to_thread(migrate.upgrade, Settings(profile="test", database_url=url))
        version = await seed(url)
        pooled = make_url(url).set(port=bouncer.port).render_as_string(hide_password=False)
        engines = {
            "direct": create_engine(Settings(profile="test", database_url=url)),
            "direct_no_cache": create_engine(
                Settings(profile="test", database_url=url, db_pgbouncer=True)
            ),
            "pgbouncer": create_engine(
                Settings(profile="test", database_url=pooled, db_pgbouncer=True)
            ),
        }
        queries = {
            "point_lookup": (POINT, {"id": version}),
            "element_page": (PAGE, {"id": version, "after": ""}),
        }
        samples: dict[str, dict[str, list[float]]] = {q: {e: [] for e in engines} for q in queries}
        for _ in range(ROUNDS):
            for query, (statement, params) in queries.items():
                for label, engine in engines.items():
                    samples[query][label].append(await timed(engine, statement, params))
        for engine in engines.values():
            await engine.dispose()
    finally:
        bouncer.remove()
        await admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    results = {
        query: {
            label: {"median_us": round(statistics.median(v)), "rounds_us": [round(x) for x in v]}
            for label, v in by_engine.items()
        }
        for query, by_engine in samples.items()
    }
    for by_engine in results.values():
        base = by_engine["direct"]["median_us"]
        for entry in by_engine.values():
            entry["vs_direct"] = round(entry["median_us"] / base, 2)
    write_report(
        "pgbouncer",
        {"rounds": ROUNDS, "queries_per_round": QUERIES, "pgbouncer": "1.18", **results},
    )


if __name__ == "__main__":
    asyncio.run(main())
