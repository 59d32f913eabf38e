"""The load harness works end to end (``bench/sla.py --smoke``): it starts its own stack,
seeds it, runs a Locust scenario and writes a report. A test of the harness, not of speed:
it judges errors, never latency."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]
BENCH = Path(__file__).resolve().parents[2] / "bench"


def test_smoke_run_writes_a_report_with_no_errors(postgres_template: str, tmp_path: Path) -> None:
    """``postgres_template``: skipped (or failed, with BEM_REQUIRE_SERVICES) without
    PostgreSQL; the harness makes a database of its own."""
    done = subprocess.run(
        [sys.executable, str(BENCH / "sla.py"), "--smoke", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "smoke.json").read_text())
    assert report["scenario"] == "mixed" and report["errors"] == 0
    assert report["requests"] >= 0.8 * report["rate"] * report["duration_s"]
    kinds = set(report["by_kind"])
    assert {"browse", "element", "page", "selector", "adhoc", "takeoff", "diff"} <= kinds, kinds
    assert report["p95_ms"] is not None and report["server_cpu_per_request_ms"] > 0
