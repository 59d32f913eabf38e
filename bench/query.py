"""Query latency on PostgreSQL: selector pages, a takeoff and a diff at 10k / 100k / 1M elements.

10k and 100k are generated IFC models (``bem.testing.ifcgen``); IfcOpenShell's time for the
same selector answer is measured beside BEM's, on the opened file and from scratch (open +
filter). 1M is the 100k model's documents replicated with fresh GlobalIds (the issue allows
element JSON; generating a 1M-element IFC takes hours). Version 2 of each model changes 5 % of
the walls' fire ratings, removes 1 %, adds 1 % and re-identifies 0.5 % of the elements.

Latency is server-side (in-process ASGI, no network), p50/p95 of repeated requests, measured
in the state a server settles into after an upload: tables vacuumed and analyzed (what
autovacuum does within a minute or so), and the benchmark's own copies of the documents
frozen out of Python's garbage collector (``gc.freeze``). An API process holds no
documents; without the freeze, collections over millions of live benchmark objects
inflated every latency by up to 2x. Writes ``bench/results/query.json``.
Usage: ``python bench/query.py [sizes...]``.
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import ifcopenshell
import ifcopenshell.util.selector
import orjson

from bem.app import create_app
from bem.config import Settings
from bem.ingest.ifc import element_documents
from bem.kit import migrate
from bem.kit.cache import Cache
from bem.testing import ifcgen
from report import write_report
from upload import SERVER, _gid, admin_headers

SELECTORS = [
    "",  # no selector: the plain element list, for reference
    "IfcWall",
    "IfcWall, Pset_WallCommon.FireRating=REI90",
    "IfcDoor, Pset_DoorCommon.FireRating=EI60",
    'Name="Wall 3-36"',
    "material=Brick",
    'location="Level 05"',
    "type=WT-EXT-300",
    "Qto_WallBaseQuantities.NetVolume>1.5",
]
QTO = "Qto_WallBaseQuantities"
TAKEOFFS = {  # the first reads only takeoff facts; the others also read documents
    "storey,class": {"group_by": "storey,class", "measures": f"{QTO}.NetVolume"},
    "IfcWall by type,material": {
        "q": "IfcWall",
        "group_by": "type,material",
        "measures": f"{QTO}.NetVolume,{QTO}.Length:max",
    },
    "by Pset_WallCommon.FireRating": {
        "group_by": "Pset_WallCommon.FireRating",
        "measures": f"{QTO}.NetVolume",
    },
}
RUNS = 20


def replicate(docs: list[dict[str, Any]], size: int) -> list[dict[str, Any]]:
    out = list(docs)
    i = 0
    while len(out) < size:
        doc = dict(docs[i % len(docs)])
        if doc["ifc_class"] not in ("IfcSite", "IfcBuilding", "IfcBuildingStorey"):
            doc["global_id"] = _gid(f"r{i}")
            doc["name"] = f"{doc['name']} #{i}"
            doc["relations"] = []
            out.append(doc)
        i += 1
    return out


def version_two(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    walls = 0
    for i, doc in enumerate(docs):
        doc = dict(doc)
        if doc["ifc_class"] == "IfcWall":
            walls += 1
            if walls % 100 == 0:
                continue  # removed
            if walls % 20 == 0:
                props = {**doc["properties"]}
                props["Pset_WallCommon"] = {**props["Pset_WallCommon"], "FireRating": "REI240"}
                doc["properties"] = props
        if doc["ifc_class"] == "IfcSpace" and i % 25 == 0:
            doc["global_id"] = _gid(f"reid{i}")  # same element, new GlobalId
        out.append(doc)
    for i in range(len(docs) // 100):
        out.append({**docs[0], "global_id": _gid(f"new{i}"), "name": f"New wall {i}"})
    return out


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"p50_ms": round(statistics.median(ordered), 2), "p95_ms": round(p95, 2)}


async def timed(client: httpx.AsyncClient, url: str, params: Any, headers: Any, runs: int) -> Any:
    for _ in range(2):
        r = await client.get(url, params=params, headers=headers)
        assert r.status_code == 200, r.text
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        r = await client.get(url, params=params, headers=headers)
        samples.append((time.perf_counter() - start) * 1000)
    return percentiles(samples), r.json()


async def measure(size: int, docs: list[dict[str, Any]]) -> dict[str, Any]:
    name = f"bem_bench_q_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(SERVER.replace("postgresql+asyncpg", "postgresql"))
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = SERVER.rsplit("/", 1)[0] + f"/{name}"
    # The engine's own latency: the cache would answer every repeat (cached reads are timed
    # separately, see ``_cached``).
    settings = Settings(
        profile="test", database_url=url, rate_limit_enabled=False, cache_enabled=False
    )
    try:
        await asyncio.to_thread(migrate.upgrade, settings)  # Alembic runs its own loop
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://bench", timeout=600
            ) as client:
                return await _measure(app, client, docs)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def _measure(app: Any, client: httpx.AsyncClient, docs: list[dict[str, Any]]) -> Any:
    headers = await admin_headers(app)
    pid = (await client.post("/v1/projects", json={"name": "B"}, headers=headers)).json()["id"]
    mid = (
        await client.post(f"/v1/projects/{pid}/models", json={"name": "M"}, headers=headers)
    ).json()["id"]
    versions = []
    for body in (docs, version_two(docs)):
        with tempfile.TemporaryFile() as spool:
            for doc in body:
                spool.write(orjson.dumps(doc) + b"\n")
            spool.seek(0)
            r = await client.post(
                f"/v1/models/{mid}/versions",
                content=spool.read(),
                headers={**headers, "content-type": "application/x-ndjson"},
            )
        assert r.status_code == 201, r.text
        versions.append(r.json()["id"])
    v1, v2 = versions
    async with app.state.engine.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.exec_driver_sql("VACUUM ANALYZE")
    gc.collect()
    gc.freeze()
    out: dict[str, Any] = {"selectors": {}}
    for q in SELECTORS:
        stats, _ = await timed(
            client, f"/v1/versions/{v1}/elements", {"q": q, "limit": 100}, headers, RUNS
        )
        out["selectors"][q] = stats
    out["takeoffs"] = {}
    for label, params in TAKEOFFS.items():
        url = f"/v1/versions/{v1}/takeoff"
        out["takeoffs"][label], _ = await timed(client, url, params, headers, 10)
    out["diff"], body = await timed(
        client, f"/v1/versions/{v1}/diff/{v2}", {"limit": 100}, headers, 5
    )
    out["diff_summary"] = body["summary"]
    out["cached"] = await _cached(app, client, headers, v1, v2)
    gc.unfreeze()
    return out


async def _cached(app: Any, client: httpx.AsyncClient, headers: Any, v1: str, v2: str) -> Any:
    """Repeated reads answered by the in-process cache (Redis adds a round trip)."""
    settings = app.state.settings
    app.state.cache = Cache(None, "bench", settings.cache_ttl_s, settings.cache_memory_bytes)
    takeoff = TAKEOFFS["storey,class"]
    out = {
        "takeoff storey,class": (
            await timed(client, f"/v1/versions/{v1}/takeoff", takeoff, headers, RUNS)
        )[0],
        "diff": (await timed(client, f"/v1/versions/{v1}/diff/{v2}", {}, headers, RUNS))[0],
    }
    app.state.cache = None
    return out


def ifcopenshell_times(path: Path) -> dict[str, Any]:
    start = time.perf_counter()
    model = ifcopenshell.open(str(path))
    opened = time.perf_counter() - start
    out: dict[str, Any] = {"open_ms": round(opened * 1000, 1), "selectors": {}}
    for q in SELECTORS:
        start = time.perf_counter()
        ifcopenshell.util.selector.filter_elements(model, q)
        took = (time.perf_counter() - start) * 1000
        out["selectors"][q] = {
            "opened_ms": round(took, 1),
            "from_scratch_ms": round(took + opened * 1000, 1),
        }
    return out


def main(sizes: list[int]) -> None:
    results: dict[str, Any] = {"database": "postgresql", "runs_per_selector": RUNS, "sizes": {}}
    base: list[dict[str, Any]] = []
    for size in sizes:
        entry: dict[str, Any] = {}
        if size <= 100_000:
            model = ifcgen.generate(size)
            docs = list(element_documents(model))
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "model.ifc"
                model.write(str(path))
                del model
                entry["ifcopenshell"] = ifcopenshell_times(path)
            base = docs
        else:
            docs = replicate(base, size)
        entry["elements"] = len(docs)
        entry["bem"] = asyncio.run(measure(size, docs))
        results["sizes"][str(size)] = entry
        print(f"{size}: done", file=sys.stderr)
    write_report("query", results)


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [10_000, 100_000, 1_000_000])
