"""OpenTelemetry tracing for the API, its database and Redis calls, and outgoing HTTP.

Off by default. ``BEM_TRACING_ENABLED=true`` with ``BEM_OTLP_ENDPOINT`` exports spans over
OTLP/HTTP; tests pass an in-memory exporter. Incoming ``traceparent`` headers continue the
caller's trace. Log lines carry the current ``trace_id`` (see ``kit/logging.py``).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.instrumentation.redis import RedisInstrumentor
from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from sqlalchemy.ext.asyncio import AsyncEngine

EXPORT_TIMEOUT_S = 5


def tracer_provider(
    *,
    service: str,
    version: str,
    environment: str,
    endpoint: str | None,
    sample_ratio: float,
    exporter: SpanExporter | None = None,
) -> TracerProvider:
    """A provider exporting to ``exporter`` or OTLP, with Redis and outgoing HTTP traced (the
    API and ``bem worker`` both start from this)."""
    resource = Resource.create(
        {
            "service.name": service,
            "service.version": version,
            "deployment.environment": environment,
        }
    )
    provider = TracerProvider(
        resource=resource, sampler=ParentBased(TraceIdRatioBased(sample_ratio))
    )
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    elif endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        otlp = OTLPSpanExporter(endpoint=endpoint, timeout=EXPORT_TIMEOUT_S)
        provider.add_span_processor(BatchSpanProcessor(otlp))
    # Client instrumentation patches redis-py and httpx process-wide, and a second
    # instrument() call is ignored: the newest provider takes it over (a process runs one
    # app; the tests build many).
    for instrumentor in (RedisInstrumentor(), HTTPXClientInstrumentor()):
        if instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.uninstrument()
        instrumentor.instrument(tracer_provider=provider)
    return provider


def setup_tracing(app: FastAPI, **options: Any) -> TracerProvider:
    """:func:`tracer_provider` plus a server span per request."""
    provider = tracer_provider(**options)
    FastAPIInstrumentor.instrument_app(
        app, tracer_provider=provider, excluded_urls="/health/live,/health/ready,/metrics"
    )
    return provider


def trace_engine(engine: AsyncEngine, provider: Any) -> None:
    # The instrumentation declares sqlalchemy<2.1; its engine-event hooks work on 2.1 (tested).
    SQLAlchemyInstrumentor().instrument(
        engine=engine.sync_engine, tracer_provider=provider, skip_dep_check=True
    )


# Background polling (the feed's outbox reads, heartbeat credential checks, the webhook
# sender's claims) runs under this: a trace per poll would bury the traces that matter.
untraced = suppress_instrumentation
