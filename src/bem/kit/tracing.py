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
    """A provider exporting to ``exporter`` or OTLP (the API and ``bem worker`` both start
    from this)."""
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
    return provider


def setup_tracing(app: FastAPI, **options: Any) -> TracerProvider:
    """:func:`tracer_provider` plus a server span per request."""
    provider = tracer_provider(**options)
    FastAPIInstrumentor.instrument_app(
        app, tracer_provider=provider, excluded_urls="/health/live,/health/ready,/metrics"
    )
    return provider


def _instrumentors() -> tuple[Any, ...]:
    return SQLAlchemyInstrumentor(), RedisInstrumentor(), HTTPXClientInstrumentor()


def _release_clients() -> None:
    for instrumentor in _instrumentors():
        if instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.uninstrument()


def start_client_tracing(provider: TracerProvider, engine: AsyncEngine) -> None:
    """Trace SQL on ``engine``, Redis commands and outgoing HTTP to ``provider``.

    These instrumentations patch their libraries for the whole process and ignore a second
    ``instrument()``: an earlier owner is released first, and :func:`stop_tracing` releases
    them again (a process runs one app or worker; the tests start many, traced or not).
    """
    _release_clients()
    # The SQLAlchemy instrumentation declares sqlalchemy<2.1; its event hooks work on 2.1.
    SQLAlchemyInstrumentor().instrument(
        engine=engine.sync_engine, tracer_provider=provider, skip_dep_check=True
    )
    RedisInstrumentor().instrument(tracer_provider=provider)
    HTTPXClientInstrumentor().instrument(tracer_provider=provider)


def stop_tracing(provider: TracerProvider) -> None:
    """Release the client instrumentation and flush the spans still queued."""
    _release_clients()
    provider.shutdown()


# Background polling (the feed's outbox reads, heartbeat credential checks, the webhook
# sender's claims) runs under this: a trace per poll would bury the traces that matter.
untraced = suppress_instrumentation
