"""The load harness works end to end (``bench/sla.py --smoke``), on both edges: it starts its
own stack (``bem serve`` alone, or behind nginx and PgBouncer), seeds it, runs a Locust
scenario and writes a report. A test of the harness, not of speed:
it judges errors, never latency."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import tool

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]
BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.mark.parametrize("edge", ["direct", "nginx"])
def test_smoke_run_writes_a_report_with_no_errors(
    postgres_template: str, tmp_path: Path, edge: str
) -> None:
    """``postgres_template``: skipped (or failed, with BEM_REQUIRE_SERVICES) without
    PostgreSQL; the harness makes a database of its own."""
    if edge == "nginx":
        tool("nginx", "nginx")
        tool("pgbouncer", "pgbouncer")
    done = subprocess.run(
        [sys.executable, str(BENCH / "sla.py"), "--smoke", "--edge", edge, "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "smoke.json").read_text())
    assert report["scenario"] == "mixed" and report["errors"] == 0, report["failures"]
    assert report["stack"]["edge"] == edge
    assert report["requests"] >= 0.8 * report["rate"] * report["duration_s"]
    kinds = set(report["by_kind"])
    assert {"browse", "element", "page", "selector", "adhoc", "takeoff", "diff"} <= kinds, kinds
    assert report["p95_ms"] is not None and report["server_cpu_per_request_ms"] > 0
