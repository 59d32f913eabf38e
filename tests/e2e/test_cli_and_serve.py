"""The real command line and server process: migrate, demo, create-admin, serve, SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import orjson
import pytest

from tests.helpers import bem, bem_server

pytestmark = pytest.mark.e2e


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BEM_")}
    return {**clean, "BEM_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'bem.db'}"}


@pytest.fixture
def server(
    env: dict[str, str], tmp_path: Path
) -> Iterator[tuple[str, str, subprocess.Popen[bytes]]]:
    bem(["migrate"], env, tmp_path)
    bem(["demo", "--size", "40", "--if-empty"], env, tmp_path)
    token = bem(["users", "create-admin", "--email", "ops@example.com"], env, tmp_path)
    with bem_server(env, tmp_path, capture=True) as (base, proc):
        yield base, token.stdout.strip(), proc


def test_demo_is_served_and_sigterm_exits_cleanly(
    server: tuple[str, str, subprocess.Popen[bytes]],
) -> None:
    base, token, proc = server
    assert token.startswith("bem_pat_")
    headers = {"Authorization": f"Bearer {token}", "X-Request-ID": "e2e-1"}
    projects = httpx.get(f"{base}/v1/projects", headers=headers).json()["items"]
    demo = next(p for p in projects if p["name"] == "Demo")
    models = httpx.get(f"{base}/v1/projects/{demo['id']}/models", headers=headers).json()
    versions = httpx.get(f"{base}/v1/models/{models['items'][0]['id']}/versions", headers=headers)
    version = versions.json()["items"][0]
    assert version["status"] == "ready" and version["element_count"] >= 40
    elements = httpx.get(f"{base}/v1/versions/{version['id']}/elements", headers=headers)
    assert elements.status_code == 200 and elements.json()["items"]
    # The demo is an IFC import, its geometry made by the demo command itself.
    auth = {"Authorization": headers["Authorization"]}
    geometry = httpx.get(f"{base}/v1/versions/{version['id']}/geometry", headers=auth).json()
    assert geometry["status"] == "ready" and geometry["elements"] > 0, geometry
    assert httpx.get(f"{base}/docs").status_code == 200
    assert httpx.get(f"{base}/redoc").status_code == 200

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    out = proc.stdout.read().decode() if proc.stdout else ""
    lines = [orjson.loads(line) for line in out.splitlines() if line.startswith("{")]
    access = [e for e in lines if e.get("logger") == "bem.access" and e["request_id"] == "e2e-1"]
    assert len(access) == 4  # one JSON access-log line per request
    assert any(e["event"] == "shutdown" for e in lines)


def test_python_dash_m_and_console_script(env: dict[str, str], tmp_path: Path) -> None:
    assert "serve" in bem(["--help"], env, tmp_path).stdout
    script = Path(sys.executable).with_name("bem")
    r = subprocess.run([str(script), "--help"], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "migrate" in r.stdout


def test_tokens_create_uses_the_api_token_mechanism(env: dict[str, str], tmp_path: Path) -> None:
    bem(["migrate"], env, tmp_path)
    bem(["users", "create-admin", "--email", "ops@example.com"], env, tmp_path)
    out = bem(
        [
            "tokens",
            "create",
            "--email",
            "ops@example.com",
            "--name",
            "ci",
            "--scope",
            "projects:read",
            "--expires-days",
            "7",
        ],
        env,
        tmp_path,
    )
    secret = out.stdout.strip()
    assert secret.startswith("bem_pat_") and "\n" not in secret
    r = bem(
        [
            "tokens",
            "create",
            "--email",
            "nobody@example.com",
            "--name",
            "x",
            "--scope",
            "projects:read",
        ],
        env,
        tmp_path,
        check=False,
    )
    assert r.returncode == 1 and "No user" in r.stderr


def test_metrics_add_up_across_worker_processes(env: dict[str, str], tmp_path: Path) -> None:
    bem(["migrate"], env, tmp_path)
    shared = tmp_path / "metrics"
    shared.mkdir()
    workers_env = {
        **env,
        "BEM_WORKERS": "2",
        "BEM_RATE_LIMIT_ENABLED": "false",
        "PROMETHEUS_MULTIPROC_DIR": str(shared),
    }
    with bem_server(workers_env, tmp_path) as (base, _):
        for _ in range(20):
            with httpx.Client() as client:  # a new connection each time: spread over workers
                assert client.get(f"{base}/v1/me").status_code == 401
        for _ in range(3):  # whichever worker answers, it reports every worker's counts
            text = httpx.get(f"{base}/metrics").text
            line = next(
                line
                for line in text.splitlines()
                if line.startswith("bem_http_requests_total") and 'route="/v1/me"' in line
            )
            assert float(line.rsplit(" ", 1)[1]) == 20
        assert list(shared.glob("gauge_live*.db"))
    # Workers that stopped leave their counters and drop their live gauges.
    assert list(shared.glob("counter_*.db")) and not list(shared.glob("gauge_live*.db"))


def test_bem_import_makes_a_version_of_a_file(env: dict[str, str], tmp_path: Path) -> None:
    """`bem import` against the embedded SQLite: the model is created, the version id printed;
    a refused file exits 1 and says why."""
    import sqlite3
    import uuid

    from bem.testing import ifcgen

    bem(["migrate"], env, tmp_path)
    bem(["demo", "--size", "10"], env, tmp_path)
    model = ifcgen.generate(30)
    model.write(str(tmp_path / "tower.ifc"))
    run = bem(["import", "tower.ifc", "--project", "Demo", "--model", "Structure"], env, tmp_path)
    version_id = uuid.UUID(run.stdout.strip())
    with sqlite3.connect(tmp_path / "bem.db") as db:
        count, source = db.execute(
            "SELECT element_count, source_format FROM versions WHERE id = ?", (version_id.hex,)
        ).fetchone()
    assert (count, source) == (len(model.by_type("IfcProduct")), "ifc")

    (tmp_path / "notes.txt").write_text("not a model")
    refused = bem(
        ["import", "notes.txt", "--project", "Demo", "--model", "S"], env, tmp_path, check=False
    )
    assert refused.returncode == 1 and "Refused" in refused.stderr


def test_with_two_workers_connections_after_sigterm_are_refused_not_left_hanging(
    env: dict[str, str], tmp_path: Path
) -> None:
    """The supervisor kept the listening socket open while its workers drained, so a new
    connection was accepted by the kernel and then waited for the whole shutdown timeout.
    An upload trickling its body keeps one worker busy meanwhile; it still completes."""
    bem(["migrate"], env, tmp_path)
    token = bem(["users", "create-admin", "--email", "ops@example.com"], env, tmp_path).stdout
    headers = {"Authorization": f"Bearer {token.strip()}"}
    workers_env = {**env, "BEM_WORKERS": "2", "BEM_SHUTDOWN_TIMEOUT": "20"}
    with bem_server(workers_env, tmp_path) as (base, proc):
        pid = httpx.post(f"{base}/v1/projects", json={"name": "P"}, headers=headers).json()["id"]
        mid = httpx.post(
            f"{base}/v1/projects/{pid}/models", json={"name": "M"}, headers=headers
        ).json()["id"]

        def trickle() -> Iterator[bytes]:
            doc = b'{"global_id": "0000000000000000000S01", "ifc_class": "IfcBuildingStorey"}\n'
            for _ in range(8):
                time.sleep(0.5)
                yield b"\n"
            yield doc

        with ThreadPoolExecutor(1) as pool:
            upload = pool.submit(
                httpx.post,
                f"{base}/v1/models/{mid}/versions",
                content=trickle(),
                headers={**headers, "content-type": "application/x-ndjson"},
                timeout=30,
            )
            time.sleep(1)  # the upload is in flight
            proc.send_signal(signal.SIGTERM)
            time.sleep(1)
            started = time.monotonic()
            try:
                late = httpx.get(f"{base}/health/live", timeout=5).status_code
            except (httpx.ConnectError, httpx.ReadError) as exc:  # refused, or reset at once
                late = type(exc).__name__
            waited = time.monotonic() - started
            assert late in ("ConnectError", "ReadError", 503) and waited < 1, (late, waited)
            assert upload.result().status_code == 201  # in flight: finished
        assert proc.wait(timeout=30) == 0
