"""IFC import: wall time, elements per second and peak RSS, beside IfcOpenShell alone.

For generated models (``bem.testing.ifcgen``) of 1k / 10k / 100k elements in metres, of
10k / 100k in millimetres with nested local placements as exports write them (``mm10000``:
every quantity and length property converted, every placement chain walked), and for the
real exports in ``../shared/models`` (``shared``), each in a fresh process:

- ``ifcopenshell``: open the file and read, for every IfcProduct, what the importer reads
  (attributes, property and quantity sets, type, container, aggregate, materials,
  classification references) with ``ifcopenshell.util``;
- ``import``: the import job as ``bem import`` runs it (store the file, parse, extract,
  validate, write the version) into a fresh PostgreSQL database.

Targets (issues #3, #16): import time <= 2x and peak RSS <= 2x IfcOpenShell's. Prints JSON and
writes ``bench/results/ingest.json``. Usage: ``python bench/ingest.py [1000 mm10000 shared ...]``
(default: every case). A row per case with the median of ``--repeat`` interleaved rounds.
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

from report import peak_rss_mib, take_repeat  # bench/ is on sys.path when run as a script

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
        "open_seconds": round(opened, 3),
        "seconds": round(seconds, 3),
        "peak_rss_mib": round(peak_rss_mib(), 1),
    }


async def run_import(database_url: str, path: Path, storage: Path, warm_up: Path) -> dict[str, Any]:
    """One measured import, after an unmeasured one of ``warm_up`` (10 elements): a worker runs
    for days, so its first job's warm-up (statement compilation, the first connection,
    IfcOpenShell's schema load) is not part of an import's cost. Without it a file of 8
    products measured 0.26 s instead of 0.11 s."""
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
        for source in (warm_up, path):
            async with sessions() as session:
                project = Project(name="bench")
                session.add(project)
                await session.flush()
                model = Model(project_id=project.id, name="m")
                session.add(model)
                await session.commit()
                started = time.perf_counter()
                job = await import_path(
                    session, settings, model_id=model.id, path=source, message=None
                )
                await session.commit()
            done = await run_here(job_context(settings, sessions), HANDLERS, job.id)
            seconds = time.perf_counter() - started
            assert done.status == "succeeded", done.error
    finally:
        await engine.dispose()
    return {
        "elements": done.total,
        "seconds": round(seconds, 3),
        "elements_per_s": round((done.total or 0) / seconds),
        "peak_rss_mib": round(peak_rss_mib(), 1),
    }


def child(*args: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True, check=True, timeout=3600
    )
    row: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return row


SHARED = Path(__file__).resolve().parents[2] / "shared" / "models"
DEFAULT_CASES = ["1000", "10000", "100000", "mm10000", "mm100000", "shared"]


def case_files(case: str, tmp: Path) -> list[tuple[dict[str, Any], Path]]:
    """(what the row says about the file, the file) for one command-line case."""
    from bem.testing import ifcgen

    if case == "shared":
        paths = sorted(p for p in SHARED.glob("*.ifc") if "RC2" not in p.name)  # refused
        return [({"model": p.name}, p) for p in paths]
    millimetres = case.startswith("mm")
    size = int(case.removeprefix("mm"))
    path = tmp / f"model-{case}.ifc"
    quirks = ifcgen.Quirks(millimetres=millimetres, placements=millimetres)
    ifcgen.generate(size, quirks=quirks).write(str(path))
    return [({"generated_elements": size, "units": "mm" if millimetres else "m"}, path)]


async def import_once(path: Path, tmp: Path) -> dict[str, Any]:
    from bem.config import Settings
    from bem.kit import migrate
    from bem.testing import ifcgen
    from upload import SERVER, drop, pg_database

    name = await pg_database()
    if name is None:
        raise SystemExit(f"PostgreSQL is not reachable at {SERVER}")
    try:
        url = SERVER.rsplit("/", 1)[0] + f"/{name}"
        # Migrated here: the measured process carries no Alembic.
        await asyncio.to_thread(migrate.upgrade, Settings(profile="test", database_url=url))
        storage = tmp / f"sources-{uuid.uuid4().hex[:6]}"
        warm_up = tmp / "warm-up.ifc"
        if not warm_up.exists():
            ifcgen.generate(10).write(str(warm_up))
        return child("--import", url, str(path), str(storage), str(warm_up))
    finally:
        await drop(name)


def median_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    ordered = sorted(rows, key=lambda r: float(r["seconds"]))
    return ordered[len(ordered) // 2]


async def main(cases: list[str], repeat: int) -> None:
    from report import write_report

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases:
            for about, path in case_files(case, Path(tmp)):
                baselines, imports = [], []
                for _ in range(repeat):  # interleaved: the machine's noise hits both alike
                    baselines.append(child("--ifcopenshell", str(path)))
                    imports.append(await import_once(path, Path(tmp)))
                baseline, imported = median_row(baselines), median_row(imports)
                row = {
                    **about,
                    "file_mib": round(path.stat().st_size / 2**20, 2),
                    "rounds": repeat,
                    "ifcopenshell": baseline,
                    "import_postgresql": imported,
                    "time_ratio": round(imported["seconds"] / baseline["seconds"], 2),
                    "rss_ratio": round(imported["peak_rss_mib"] / baseline["peak_rss_mib"], 2),
                }
                results.append(row)
                print(json.dumps(row), file=sys.stderr)
    write_report("ingest", {"targets": {"time_ratio": 2.0, "rss_ratio": 2.0}, "results": results})


if __name__ == "__main__":
    if sys.argv[1:2] == ["--ifcopenshell"]:
        print(json.dumps(read_with_ifcopenshell(Path(sys.argv[2]))))
    elif sys.argv[1:2] == ["--import"]:
        url, path, storage, warm_up = sys.argv[2], *map(Path, sys.argv[3:6])
        print(json.dumps(asyncio.run(run_import(url, path, storage, warm_up))))
    else:
        os.environ.setdefault("BEM_LOG_LEVEL", "WARNING")
        args = sys.argv[1:]
        repeat = take_repeat(args, 3)
        asyncio.run(main(args or DEFAULT_CASES, repeat))
