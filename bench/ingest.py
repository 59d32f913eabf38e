"""IFC import: wall time, elements per second and peak RSS, beside IfcOpenShell alone.

For generated models (``bem.testing.ifcgen``) of 1k / 10k / 100k elements, each in a fresh
process:

- ``ifcopenshell``: open the file and read, for every IfcProduct, what the importer reads
  (attributes, property and quantity sets, type, container, aggregate, materials,
  classification references) with ``ifcopenshell.util``;
- ``import``: the import job as ``bem import`` runs it (store the file, parse, extract,
  validate, write the version) into a fresh PostgreSQL database.

Targets (issue #3): import time <= 2x and peak RSS <= 2x IfcOpenShell's.
Prints JSON and writes ``bench/results/ingest.json``. Usage: ``python bench/ingest.py [sizes]``.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from report import peak_rss_mib  # bench/ is on sys.path when run as a script

# BEM is imported lazily: the IfcOpenShell-alone process must not pay for BEM's imports.


INVERSES = (
    "HasOpenings",
    "VoidsElements",
    "HasFillings",
    "FillsVoids",
    "ConnectedTo",
    "ConnectedFrom",
    "HasAssignments",
)


def read_with_ifcopenshell(path: Path) -> dict[str, Any]:
    import ifcopenshell
    import ifcopenshell.util.classification as classification
    import ifcopenshell.util.element as util

    started = time.perf_counter()
    model = ifcopenshell.open(str(path))
    opened = time.perf_counter() - started
    count = 0
    for e in model.by_type("IfcProduct"):
        _ = (e.GlobalId, e.Name, e.Description, getattr(e, "ObjectType", None))
        util.get_predefined_type(e)
        util.get_psets(e)  # property and quantity sets, type values inherited
        util.get_type(e)
        util.get_container(e)
        util.get_aggregate(e)
        util.get_material(e, should_skip_usage=True)
        for ref in classification.get_references(e):
            classification.get_classification(ref)
        for inverse in INVERSES:  # openings, fillings, connections, groups
            getattr(e, inverse, None)
        count += 1
    seconds = time.perf_counter() - started
    return {
        "elements": count,
        "open_seconds": round(opened, 2),
        "seconds": round(seconds, 2),
        "peak_rss_mib": round(peak_rss_mib(), 1),
    }


async def run_import(database_url: str, path: Path, storage: Path) -> dict[str, Any]:
    import bem.models  # noqa: F401 - every table, so foreign keys resolve
    from bem.config import Settings
    from bem.handlers import HANDLERS
    from bem.ingest.service import import_path
    from bem.jobs.service import job_context, run_here
    from bem.kit.db import create_engine, session_factory
    from bem.projects.models import Model, Project

    settings = Settings(
        profile="test", database_url=database_url, storage_dir=storage, log_level="WARNING"
    )
    engine = create_engine(settings)
    sessions = session_factory(engine)
    try:
        async with sessions() as session:
            project = Project(name="bench")
            session.add(project)
            await session.flush()
            model = Model(project_id=project.id, name="m")
            session.add(model)
            await session.commit()
            started = time.perf_counter()
            job = await import_path(session, settings, model_id=model.id, path=path, message=None)
            await session.commit()
        done = await run_here(job_context(settings, sessions), HANDLERS, job.id)
        seconds = time.perf_counter() - started
        assert done.status == "succeeded", done.error
    finally:
        await engine.dispose()
    return {
        "elements": done.total,
        "seconds": round(seconds, 2),
        "elements_per_s": round((done.total or 0) / seconds),
        "peak_rss_mib": round(peak_rss_mib(), 1),
    }


def child(*args: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True, check=True, timeout=3600
    )
    row: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return row


async def main(sizes: list[int]) -> None:
    from bem.config import Settings
    from bem.kit import migrate
    from bem.testing import ifcgen
    from report import write_report
    from upload import SERVER, drop, pg_database

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            path = Path(tmp) / f"model-{size}.ifc"
            ifcgen.generate(size).write(str(path))
            baseline = child("--ifcopenshell", str(path))
            name = await pg_database()
            if name is None:
                raise SystemExit(f"PostgreSQL is not reachable at {SERVER}")
            try:
                url = SERVER.rsplit("/", 1)[0] + f"/{name}"
                # Migrated here: the measured process carries no Alembic.
                await asyncio.to_thread(migrate.upgrade, Settings(profile="test", database_url=url))
                storage = Path(tmp) / f"sources-{uuid.uuid4().hex[:6]}"
                imported = child("--import", url, str(path), str(storage))
            finally:
                await drop(name)
            row = {
                "generated_elements": size,
                "file_mib": round(path.stat().st_size / 2**20, 1),
                "ifcopenshell": baseline,
                "import_postgresql": imported,
                "time_ratio": round(imported["seconds"] / baseline["seconds"], 2),
                "rss_ratio": round(imported["peak_rss_mib"] / baseline["peak_rss_mib"], 2),
            }
            results.append(row)
            print(json.dumps(row), file=sys.stderr)
            path.unlink()
    write_report("ingest", {"targets": {"time_ratio": 2.0, "rss_ratio": 2.0}, "results": results})


if __name__ == "__main__":
    if sys.argv[1:2] == ["--ifcopenshell"]:
        print(json.dumps(read_with_ifcopenshell(Path(sys.argv[2]))))
    elif sys.argv[1:2] == ["--import"]:
        url, path, storage = sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])
        print(json.dumps(asyncio.run(run_import(url, path, storage))))
    else:
        os.environ.setdefault("BEM_LOG_LEVEL", "WARNING")
        asyncio.run(main([int(a) for a in sys.argv[1:]] or [1000, 10_000, 100_000]))
