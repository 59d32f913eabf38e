"""Geometry: the GLB a version's geometry job makes, beside IfcOpenShell's iterator alone.

For generated models with bodies (``ifcgen.Quirks(geometry=True)``, 1k and 10k elements) and
the real exports in ``../shared/models`` (``shared``), each step in a fresh process:

- ``ifcopenshell``: open the file and run the geometry iterator over every shape;
- ``glb``: what the job does with the file (``geometry.service.make_glb``): the same
  iterator, meshes shared by representation, written to a GLB.

Targets (issue #20): the 10k model's GLB in < 60 s and < 20 MB. Prints JSON and writes
``bench/results/geometry.json``; the median of ``--repeat`` interleaved rounds per case.
Usage: ``python bench/geometry.py [1000 10000 shared] [--repeat N]``.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from report import peak_rss_mib, take_repeat, write_report

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "models"


def iterate(path: Path) -> dict[str, Any]:
    import ifcopenshell
    import ifcopenshell.geom

    started = time.perf_counter()
    model = ifcopenshell.open(str(path))
    iterator = ifcopenshell.geom.iterator(ifcopenshell.geom.settings(), model, 1)
    shapes = 0
    if iterator.initialize():
        while True:
            iterator.get()
            shapes += 1
            if not iterator.next():
                break
    return {"seconds": time.perf_counter() - started, "shapes": shapes, "rss_mib": peak_rss_mib()}


def glb(path: Path) -> dict[str, Any]:
    from bem.geometry.service import make_glb

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as workdir:
        written, counts = make_glb(path, Path(workdir), 1)
    return {
        "seconds": time.perf_counter() - started,
        "bytes": written.size,
        "elements": counts.elements,
        "meshes": counts.meshes,
        "rss_mib": peak_rss_mib(),
    }


def child(step: str, path: Path) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, f"--{step}", str(path)],
        check=True,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def files(cases: list[str], workdir: Path) -> list[tuple[str, Path]]:
    from bem.testing import ifcgen

    found = []
    for case in cases:
        if case == "shared":
            found += [(p.stem, p) for p in sorted(SHARED.glob("*.ifc"))]
            continue
        path = workdir / f"{case}.ifc"
        ifcgen.generate(int(case), quirks=ifcgen.Quirks(geometry=True)).write(str(path))
        found.append((f"generated {case}", path))
    return found


def main(cases: list[str], repeat: int) -> None:
    rows = []
    with tempfile.TemporaryDirectory() as name:
        for case, path in files(cases, Path(name)):
            runs: dict[str, list[dict[str, Any]]] = {"ifcopenshell": [], "glb": []}
            try:
                for _ in range(repeat):  # interleaved: both steps see the same machine
                    for step in runs:
                        runs[step].append(child(step, path))
            except subprocess.CalledProcessError as exc:  # IFC4X3_RC2: no schema for it
                rows.append({"case": case, "skipped": exc.stderr.strip().splitlines()[-1]})
                continue
            alone = statistics.median(r["seconds"] for r in runs["ifcopenshell"])
            made = statistics.median(r["seconds"] for r in runs["glb"])
            last = runs["glb"][-1]
            rows.append(
                {
                    "case": case,
                    "file_mib": round(path.stat().st_size / 2**20, 2),
                    "ifcopenshell_s": round(alone, 3),
                    "glb_s": round(made, 3),
                    "time_ratio": round(made / alone, 2),
                    "glb_mib": round(last["bytes"] / 2**20, 2),
                    "elements": last["elements"],
                    "meshes": last["meshes"],
                    "ifcopenshell_rss_mib": round(runs["ifcopenshell"][-1]["rss_mib"]),
                    "glb_rss_mib": round(last["rss_mib"]),
                }
            )
    write_report(
        "geometry",
        {"targets": {"glb_s_10k": 60, "glb_mib_10k": 20}, "repeat": repeat, "results": rows},
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--ifcopenshell"]:
        print(json.dumps(iterate(Path(sys.argv[2]))))
    elif sys.argv[1:2] == ["--glb"]:
        print(json.dumps(glb(Path(sys.argv[2]))))
    else:
        args = sys.argv[1:]
        repeat = take_repeat(args, 3)
        main(args or ["1000", "10000", "shared"], repeat)
