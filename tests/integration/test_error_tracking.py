"""Error tracking: a route that raises sends exactly one scrubbed envelope to a local stub
collector (release, environment, request id; no secrets); a 404 sends none. A job that fails
unexpectedly is reported with the request id that enqueued it, from the API process or from
``bem worker``; a file refused as bad input is not."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sentry_sdk

from bem import __version__
from bem.handlers import HANDLERS
from bem.jobs.worker import build_worker
from bem.testing.ifcgen import generate
from tests.conftest import make_api, settings_for
from tests.helpers import PostCollector
from tests.integration.test_imports import ifc_bytes, imported, model_of, submit, wait_for


class Collector(PostCollector):
    """Sentry's end of the stub: envelopes are lines of JSON."""

    @property
    def dsn(self) -> str:
        return f"http://publickey@127.0.0.1:{self.port}/1"

    @property
    def envelopes(self) -> list[list[dict[str, Any]]]:
        return [[json.loads(line) for line in b.splitlines() if line.strip()] for b in self.bodies]

    @property
    def events(self) -> list[dict[str, Any]]:
        """The error events (items with an exception) of every envelope."""
        return [item for env in self.envelopes for item in env if item.get("exception")]


@pytest.fixture
def collector() -> Iterator[Collector]:
    c = Collector()
    try:
        yield c
    finally:
        c.close()
        sentry_sdk.init()  # back to a disabled client for the other tests


async def test_one_scrubbed_envelope_per_unhandled_error(
    sqlite_url: str, collector: Collector
) -> None:
    settings = settings_for(sqlite_url, sentry_dsn=collector.dsn)
    async with make_api(settings) as api:
        alice = await api.user("alice")

        async def boom() -> None:
            secret = "bem_pat_SUPERSECRETTOKEN123"
            raise RuntimeError(f"failed for alice@example.com with {secret} and code 123456")

        api.app.add_api_route("/boom", boom)
        r = await api.client.get(
            "/boom", headers={**alice, "X-Request-ID": "boom-1", "Cookie": "session=abc"}
        )
        assert r.status_code == 500
        r = await api.client.get("/v1/projects/00000000-0000-0000-0000-000000000000", headers=alice)
        assert r.status_code == 404
        sentry_sdk.flush(timeout=5)

    events = collector.events
    assert len(events) == 1
    event = events[0]
    assert event["release"] == __version__ and event["environment"] == "test"
    assert event["tags"]["request_id"] == "boom-1"
    assert event["tags"]["commit"] == api.app.state.build.commit
    text = json.dumps(collector.envelopes)
    for secret in (
        "SUPERSECRETTOKEN123",
        "alice@example.com",
        "123456",
        "session=abc",
        alice["Authorization"].split()[1],
    ):
        assert secret not in text
    assert "RuntimeError" in text


async def broken_import(*_: Any) -> None:
    raise RuntimeError("the disk refused alice@example.com")


async def job_event(collector: Collector, job_id: str) -> dict[str, Any]:
    """The one event reported for ``job_id`` (waited for: the SDK sends from a thread)."""
    for _ in range(100):
        sentry_sdk.flush(timeout=1)
        events = collector.events
        mine = [e for e in events if e["tags"].get("job_id") == job_id]
        if mine:
            break
        await asyncio.sleep(0.1)
    assert "alice@example.com" not in json.dumps(collector.envelopes)
    assert len(mine) == 1, [e["tags"] for e in events]
    return mine[0]


async def test_a_job_failing_unexpectedly_is_reported_with_its_request_id(
    sqlite_url: str, collector: Collector, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_for(sqlite_url, sentry_dsn=collector.dsn, job_max_attempts=1)
    async with make_api(settings) as api:
        headers, mid = await model_of(api)
        bad_file = await imported(api, headers, mid, "bad.ifc", b"ISO-10303-21;\n")
        assert bad_file["status"] == "failed"  # refused input: an answer, not an error
        monkeypatch.setitem(HANDLERS, "import", broken_import)
        r = await submit(
            api, {**headers, "X-Request-ID": "job-boom-1"}, mid, "m.ifc", ifc_bytes(generate(5))
        )
        job = await wait_for(api, headers, r.json()["id"])
        assert job["status"] == "failed"
    event = await job_event(collector, job["id"])
    reported = {e["tags"].get("job_id") for e in collector.events}
    assert bad_file["id"] not in reported  # sent before the other, by the same thread
    assert event["tags"]["request_id"] == "job-boom-1" and event["tags"]["job_kind"] == "import"
    assert event["contexts"]["job"] == {"attempt": 1, "max_attempts": 1}


@pytest.mark.postgres
async def test_bem_worker_reports_unexpected_job_errors(
    postgres_url: str, shared_redis: str, collector: Collector, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue: dict[str, Any] = {
        "redis_url": shared_redis,
        "job_queue": "redis",
        "redis_key_prefix": f"bemtest{uuid.uuid4().hex[:8]}",
        "job_max_attempts": 1,
    }
    settings = settings_for(postgres_url, **queue)
    monkeypatch.setitem(HANDLERS, "import", broken_import)
    async with make_api(settings) as api:  # the API reports nothing itself: no DSN
        headers, mid = await model_of(api)
        r = await submit(
            api, {**headers, "X-Request-ID": "worker-boom-1"}, mid, "m.ifc", ifc_bytes(generate(5))
        )
        worker = build_worker(
            settings_for(postgres_url, sentry_dsn=collector.dsn, **queue),
            HANDLERS,
            burst=True,
            signals=False,
        )
        try:
            await worker.async_run()
        finally:
            await worker.close()
        assert (await wait_for(api, headers, r.json()["id"]))["status"] == "failed"
    event = await job_event(collector, r.json()["id"])
    assert event["tags"]["request_id"] == "worker-boom-1"
    assert event["release"] == __version__ and event["environment"] == "test"
