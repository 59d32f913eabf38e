"""Prometheus metrics move as requests succeed and fail; /metrics can be restricted."""

from __future__ import annotations

import re
import subprocess
import uuid

from bem import __version__
from tests.conftest import Api, make_api, settings_for


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text format (0 when absent)."""
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        match = re.match(rf"{re.escape(name)}(\{{(.*)\}})? (\S+)$", line)
        if match is None:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(match.group(3))
    return 0.0


async def scrape(api: Api) -> str:
    r = await api.client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return r.text


async def test_red_metrics_move_with_requests(sqlite_api: Api) -> None:
    alice = await sqlite_api.user("alice")
    before = await scrape(sqlite_api)
    for _ in range(3):
        assert (await sqlite_api.client.get("/v1/projects", headers=alice)).status_code == 200
    missing = "/v1/projects/00000000-0000-0000-0000-000000000000"
    assert (await sqlite_api.client.get(missing, headers=alice)).status_code == 404
    assert (await sqlite_api.client.get("/v1/nothing")).status_code == 404
    after = await scrape(sqlite_api)

    def delta(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    ok = {"method": "GET", "route": "/v1/projects", "status_class": "2xx"}
    assert delta("bem_http_requests_total", **ok) == 3
    failed = {"method": "GET", "route": "/v1/projects/{project_id}", "status_class": "4xx"}
    assert delta("bem_http_requests_total", **failed) == 1
    assert delta("bem_http_requests_total", route="unmatched", status_class="4xx") == 1
    assert delta("bem_http_request_duration_seconds_count", route="/v1/projects") == 3
    assert (
        sample(after, "bem_http_request_duration_seconds_bucket", route="/v1/projects", le="0.005")
        >= 0
    )
    assert delta("bem_http_problems_total", type="not-found") == 2
    assert sample(after, "bem_build_info") == 1
    assert sample(after, "bem_db_pool_size") >= 1


async def test_uploads_and_rate_limits_are_counted(sqlite_url: str) -> None:
    settings = settings_for(
        sqlite_url,
        rate_limit_enabled=True,
        rate_limit_default="100/minute",
        rate_limit_rules={"auth": "1/minute"},
    )
    async with make_api(settings) as api:
        alice = await api.user("alice")
        _, mid = await api.model(alice)
        body = b'{"global_id": "0000000000000000000S01", "ifc_class": "IfcBuildingStorey"}\n'
        headers = {**alice, "content-type": "application/x-ndjson"}
        url = f"/v1/models/{mid}/versions"
        assert (await api.client.post(url, content=body, headers=headers)).status_code == 201
        assert (await api.client.post(url, content=b"{}\n", headers=headers)).status_code == 422
        for _ in range(2):
            await api.client.post("/v1/auth/otp/request", json={"email": "a@example.com"})
        text = await scrape(api)
        assert sample(text, "bem_version_uploads_total", outcome="ready") == 1
        assert sample(text, "bem_version_uploads_total", outcome="failed") == 1
        assert sample(text, "bem_upload_elements_total") == 1
        assert sample(text, "bem_rate_limit_rejections_total", rule="auth") == 1


def checkout_head() -> str:
    """Tests run from a checkout: its HEAD is the commit when none is configured."""
    done = subprocess.run(
        ["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, check=False
    )
    return done.stdout.strip() or "unknown"


async def test_build_info_names_the_version_and_commit(sqlite_url: str) -> None:
    expected_commits = {None: checkout_head(), "0123abcd4567": "0123abcd4567"}
    for n, (configured, expected) in enumerate(expected_commits.items()):
        async with make_api(settings_for(sqlite_url, build_commit=configured)) as api:
            text = await scrape(api)
            assert sample(text, "bem_build_info", version=__version__, commit=expected) == 1
            admin = await api.user(f"root{n}", admin=True)
            detail = (await api.client.get("/health", headers=admin)).json()
            assert (detail["version"], detail["commit"]) == (__version__, expected)


async def test_a_scrape_refreshes_readiness_without_a_probe(sqlite_api: Api) -> None:
    text = await scrape(sqlite_api)  # nobody has called /health/ready
    assert sample(text, "bem_health_check_ok", check="database") == 1
    assert sample(text, "bem_health_check_ok", check="draining") == 1
    sqlite_api.app.state.draining = True
    text = await scrape(sqlite_api)
    assert sample(text, "bem_health_check_ok", check="draining") == 0
    assert sample(text, "bem_health_check_ok", check="database") == 1


async def test_metrics_can_be_restricted(sqlite_url: str) -> None:
    async with make_api(settings_for(sqlite_url, metrics_token="s" * 32)) as api:
        assert (await api.client.get("/metrics")).status_code == 401
        r = await api.client.get("/metrics", headers={"Authorization": "Bearer " + "s" * 32})
        assert r.status_code == 200
    async with make_api(settings_for(sqlite_url, metrics_networks=["10.0.0.0/8"])) as api:
        assert (await api.client.get("/metrics")).status_code == 403  # the client is 127.0.0.1
    async with make_api(settings_for(sqlite_url, metrics_networks=["127.0.0.0/8"])) as api:
        assert (await api.client.get("/metrics")).status_code == 200


async def test_jobs_are_counted_and_the_queue_is_measured(sqlite_api: Api) -> None:
    from bem.testing import ifcgen
    from tests.integration.test_imports import ifc_bytes, imported, model_of

    api = sqlite_api
    headers, mid = await model_of(api)
    model = ifcgen.generate(12)
    assert (await imported(api, headers, mid, "m.ifc", ifc_bytes(model)))["status"] == "succeeded"
    assert (await imported(api, headers, mid, "bad.ifc", b"ISO-10303-21;\n"))["status"] == "failed"
    text = (await api.client.get("/metrics")).text
    assert sample(text, "bem_jobs_total", kind="import", outcome="succeeded") == 1
    assert sample(text, "bem_jobs_total", kind="import", outcome="rejected") == 1
    assert sample(text, "bem_job_duration_seconds_count", kind="import") == 2
    assert sample(text, "bem_import_elements_total") == len(model.by_type("IfcProduct"))
    assert sample(text, "bem_jobs_queued") == 0
    assert "bem_job_oldest_queued_age_seconds 0.0" in text

    # A job nobody runs: waiting, and getting older.
    from datetime import timedelta

    from bem.jobs.models import Job
    from bem.kit.db import utcnow

    async with api.app.state.sessions() as session:
        session.add(
            Job(
                kind="import",
                status="queued",
                model_id=uuid.UUID(mid),
                params={},
                created_at=utcnow() - timedelta(minutes=5),
                updated_at=utcnow(),
            )
        )
        await session.commit()
    text = (await api.client.get("/metrics")).text
    assert sample(text, "bem_jobs_queued") == 1
    assert 299 < sample(text, "bem_job_oldest_queued_age_seconds") < 400
