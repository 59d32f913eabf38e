"""OpenTelemetry: one trace covers a request and its database calls, continues an incoming
traceparent, and its trace_id appears in every log line of the request."""

from __future__ import annotations

import asyncio
import io
import sys
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.instrumentation.redis import RedisInstrumentor
from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from bem.app import create_app
from bem.kit.logging import configure_logging
from bem.live import tasks
from bem.ops.runner import BackupRunner
from tests.conftest import Api, make_api, settings_for
from tests.integration.test_webhooks import Receiver


@pytest.fixture
async def traced(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[Api, InMemorySpanExporter, io.StringIO]]:
    logs = io.StringIO()
    monkeypatch.setattr(sys, "stdout", logs)
    configure_logging("INFO", json=True)
    exporter = InMemorySpanExporter()
    async with make_api(settings_for(sqlite_url), exporter) as api:
        yield api, exporter, logs
    monkeypatch.undo()
    configure_logging("INFO", json=True)


async def test_request_and_database_spans_share_one_trace(
    traced: tuple[Api, InMemorySpanExporter, io.StringIO],
) -> None:
    api, exporter, logs = traced
    alice = await api.user("alice")
    exporter.clear()
    r = await api.client.get("/v1/projects", headers={**alice, "X-Request-ID": "traced-1"})
    assert r.status_code == 200
    spans = exporter.get_finished_spans()
    server = [s for s in spans if s.kind.name == "SERVER"]
    assert len(server) == 1 and server[0].attributes["http.route"] == "/v1/projects"
    assert server[0].attributes["bem.request_id"] == "traced-1"
    trace_id = server[0].context.trace_id
    database = [s for s in spans if s.attributes.get("db.system") == "sqlite"]
    assert database and all(s.context.trace_id == trace_id for s in database)

    lines = [orjson.loads(line) for line in logs.getvalue().splitlines() if line.startswith("{")]
    mine = [line for line in lines if line.get("request_id") == "traced-1"]
    assert mine and all(line["trace_id"] == format(trace_id, "032x") for line in mine)


async def test_background_polling_makes_no_traces(
    traced: tuple[Api, InMemorySpanExporter, io.StringIO],
) -> None:
    """The feed's outbox poll (every 0.05 s here), the webhook sender's claims and the backup
    runner's would otherwise add a trace per poll."""
    api, exporter, _ = traced
    hub = api.hub
    hub.poll_s = 0.05
    exporter.clear()
    before = hub.last_id
    owner = await api.user("alice")
    r = await api.client.post("/v1/projects", json={"name": "P"}, headers=owner)
    pid = r.json()["id"]
    await api.client.post(f"/v1/projects/{pid}/models", json={"name": "M"}, headers=owner)
    exporter.clear()  # model.created is now in the outbox for the poller to read
    await asyncio.sleep(1.2)  # polls of the outbox, and at least one of the webhook sender
    assert not await BackupRunner(api.state.sessions, api.settings).run_once()  # nothing asked
    assert hub.last_id is not None and before is not None and hub.last_id > before
    assert exporter.get_finished_spans() == ()


async def test_a_webhook_delivery_is_traced_to_its_receiver(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tasks, "IDLE_S", 0.05)
    receiver = Receiver()
    server = await asyncio.start_server(receiver.handle, "127.0.0.1", 0)
    receiver.port = server.sockets[0].getsockname()[1]
    exporter = InMemorySpanExporter()
    settings = settings_for(sqlite_url, webhook_allow_private=True)
    app = create_app(settings, span_exporter=exporter)
    async with server, app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bem.test") as client:
            api = Api(app=app, client=client, settings=settings)
            owner = await api.user("alice")
            pid = (await client.post("/v1/projects", json={"name": "P"}, headers=owner)).json()
            hook = {"url": receiver.url}
            r = await client.post(f"/v1/projects/{pid['id']}/webhooks", json=hook, headers=owner)
            assert r.status_code == 201
            await client.post(f"/v1/projects/{pid['id']}/models", json={"name": "M"}, headers=owner)
            await receiver.until(1)
            for _ in range(100):  # the sender records the answer after the receiver has it
                spans = exporter.get_finished_spans()
                if any(s.name == "webhook delivery" for s in spans):
                    break
                await asyncio.sleep(0.05)
    (delivery,) = [s for s in spans if s.name == "webhook delivery"]
    assert delivery.attributes is not None and delivery.attributes["bem.event.id"] >= 1
    # The POST carries the delivery's trace to the receiver. (Its client span and the SQL
    # spans go to the first tracer provider of this test process: OpenTelemetry instruments
    # httpx and SQLAlchemy once per process, so they are not asserted here.)
    traceparent = receiver.received[0]["headers"]["traceparent"]
    assert traceparent.split("-")[1] == format(delivery.context.trace_id, "032x")


async def test_incoming_traceparent_is_continued(
    traced: tuple[Api, InMemorySpanExporter, io.StringIO],
) -> None:
    api, exporter, _ = traced
    caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    parent = f"00-{caller_trace}-00f067aa0ba902b7-01"
    exporter.clear()
    assert (await api.client.get("/v1/me", headers={"traceparent": parent})).status_code == 401
    server = [s for s in exporter.get_finished_spans() if s.kind.name == "SERVER"]
    assert format(server[0].context.trace_id, "032x") == caller_trace


async def test_tracing_is_off_by_default(sqlite_api: Api) -> None:
    assert sqlite_api.app.state.tracer_provider is None


async def test_each_app_traces_its_own_clients_and_releases_them_when_it_stops(
    sqlite_url: str,
) -> None:
    """The client instrumentations patch libraries process-wide: the second traced app must
    get its own SQL spans, and an app that stopped must leave no hooks behind."""
    for n in range(2):
        exporter = InMemorySpanExporter()
        async with make_api(settings_for(sqlite_url), exporter) as api:
            user = await api.user(f"user{n}")
            exporter.clear()
            assert (await api.client.get("/v1/projects", headers=user)).status_code == 200
            spans = exporter.get_finished_spans()
            assert any(s.attributes.get("db.system") == "sqlite" for s in spans)
    instrumentors = (SQLAlchemyInstrumentor(), RedisInstrumentor(), HTTPXClientInstrumentor())
    assert not any(i.is_instrumented_by_opentelemetry for i in instrumentors)


async def test_an_import_job_continues_the_request_trace(
    traced: tuple[Api, InMemorySpanExporter, io.StringIO],
) -> None:
    from bem.testing import ifcgen
    from tests.integration.test_imports import ifc_bytes, model_of, submit, wait_for

    api, exporter, logs = traced
    headers, mid = await model_of(api)
    exporter.clear()
    r = await submit(
        api, {**headers, "X-Request-ID": "import-1"}, mid, "m.ifc", ifc_bytes(ifcgen.generate(10))
    )
    assert r.status_code == 202
    assert (await wait_for(api, headers, r.json()["id"]))["status"] == "succeeded"
    spans = exporter.get_finished_spans()
    (request,) = [
        s
        for s in spans
        if s.kind.name == "SERVER" and s.attributes.get("bem.request_id") == "import-1"
    ]
    (job,) = [s for s in spans if s.name == "job import"]
    assert job.context.trace_id == request.context.trace_id
    assert job.attributes["bem.job.id"] == r.json()["id"]
    lines = [orjson.loads(line) for line in logs.getvalue().splitlines() if line.startswith("{")]
    job_lines = [line for line in lines if line.get("job_id") == r.json()["id"]]
    assert job_lines and all(line["request_id"] == "import-1" for line in job_lines)
    assert {line["event"] for line in job_lines} >= {"job.start", "job.succeeded"}
    assert all(line["trace_id"] == format(job.context.trace_id, "032x") for line in job_lines)
