"""The load harness works end to end (``bench/sla.py --smoke``), on both edges: it starts its
own stack (``bem serve`` alone, or behind nginx and PgBouncer), seeds it, runs a Locust
scenario and writes a report; or it loads a deployment that is already running
(``--target``), here with the live scenario's feed followers. A test of the harness, not of
speed: it judges errors, never latency."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.helpers import bem, bem_server, tool

pytestmark = pytest.mark.e2e
BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.mark.postgres
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


@pytest.mark.postgres
def test_a_running_deployment_is_loaded_with_feed_followers(
    postgres_url: str, tmp_path: Path
) -> None:
    """``--target``: seeded through the API with the tokens given (the second user made an
    editor of the project), followers of the project's feed get the uploads' events, and the
    project is deleted afterwards. Rate limits raised as an operator would for a load test."""
    sys.path.insert(0, str(BENCH))
    from sla import LIMITS

    clean = {k: v for k, v in os.environ.items() if not k.startswith("BEM_")}
    env = {**clean, "BEM_DATABASE_URL": postgres_url, "BEM_STORAGE_DIR": str(tmp_path), **LIMITS}
    tokens = [
        bem(["users", "create-admin", "--email", f"load{i}@example.com"], env, tmp_path)
        for i in range(2)
    ]
    given = [f"--token={t.stdout.strip()}" for t in tokens]
    with bem_server(env, tmp_path) as (base, _):
        command = [sys.executable, str(BENCH / "sla.py"), "--smoke", "--scenario", "live"]
        done = subprocess.run(
            [*command, "--target", base, *given, "--out", str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        headers = {"Authorization": f"Bearer {tokens[0].stdout.strip()}"}
        projects = httpx.get(f"{base}/v1/projects", headers=headers).json()["items"]
    report = json.loads((tmp_path / "smoke-live.json").read_text())
    assert report["stack"]["target"] == base and report["errors"] == 0, report["failures"]
    assert {"upload", "browse", "page", "follow"} <= set(report["by_kind"]), report["by_kind"]
    feed = report["feed"]
    assert feed["followers"] == 4 and feed["events_received"] == feed["events_expected"] > 0
    assert feed["p95_ms"] is not None
    assert report["server_cpu_per_request_ms"] is None  # not known for a deployment
    assert not [p for p in projects if p["name"] == "load"]
