"""Prometheus metrics: RED per route template, saturation gauges, build info.

Each app owns its registry (no module globals). With several worker processes,
``PROMETHEUS_MULTIPROC_DIR`` makes prometheus-client write values to shared files and the
``/metrics`` answer aggregates every process (``bem serve --workers N`` sets it up).
"""

from __future__ import annotations

import os
import time
from typing import Any

import structlog
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bem.kit.build import Build

# Resolves 5-100 ms (the SLO is p95 < 100 ms) and still sees slow outliers.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Imports take from under a second to many minutes.
JOB_BUCKETS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


class Metrics:
    def __init__(self, build: Build) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "bem_http_requests_total",
            "HTTP requests by route template, method and status class.",
            ["method", "route", "status_class"],
            registry=r,
        )
        self.latency = Histogram(
            "bem_http_request_duration_seconds",
            "HTTP request latency by route template and method.",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "bem_http_requests_in_flight",
            "HTTP requests being served.",
            multiprocess_mode="livesum",
            registry=r,
        )
        self.problems = Counter(
            "bem_http_problems_total",
            "Error responses by problem type.",
            ["type"],
            registry=r,
        )
        self.cache_requests = Counter(
            "bem_cache_requests_total",
            "Cache lookups by kind of answer and result: hit (served without computing) or miss.",
            ["kind", "result"],
            registry=r,
        )
        self.cache_errors = Counter(
            "bem_cache_errors_total",
            "Redis failures of the cache; it is bypassed for a while after each.",
            registry=r,
        )
        self.rate_limited = Counter(
            "bem_rate_limit_rejections_total",
            "Requests refused with 429 by rate-limit rule.",
            ["rule"],
            registry=r,
        )
        self.db_pool_in_use = Gauge(
            "bem_db_pool_checked_out",
            "Database connections in use.",
            multiprocess_mode="livesum",
            registry=r,
        )
        self.replica_lag = Gauge(
            "bem_db_replica_lag_seconds",
            "Replay lag of each read replica (BEM_DATABASE_READ_URL position), at scrape time.",
            ["replica"],
            multiprocess_mode="livemax",
            registry=r,
        )
        self.replica_reads = Counter(
            "bem_db_replica_reads_total",
            "Requests for version data with read replicas configured, by where they were "
            "read: replica, or the primary because the replica was behind or unavailable.",
            ["replica", "outcome"],
            registry=r,
        )
        self.db_pool_size = Gauge(
            "bem_db_pool_size",
            "Database pool size (without overflow).",
            multiprocess_mode="livesum",
            registry=r,
        )
        self.uploads = Counter(
            "bem_version_uploads_total",
            "Version uploads by outcome.",
            ["outcome"],
            registry=r,
        )
        self.upload_elements = Counter(
            "bem_upload_elements_total",
            "Elements stored by uploads (rate() gives elements per second).",
            registry=r,
        )
        self.jobs = Counter(
            "bem_jobs_total",
            "Job runs by kind and outcome: succeeded, rejected (bad input), failed (gave up "
            "after errors), retried, interrupted, superseded (another attempt took over).",
            ["kind", "outcome"],
            registry=r,
        )
        self.job_duration = Histogram(
            "bem_job_duration_seconds",
            "Duration of job runs that finished (succeeded or failed), by kind.",
            ["kind"],
            buckets=JOB_BUCKETS,
            registry=r,
        )
        self.queue_errors = Counter(
            "bem_queue_errors_total",
            "Redis failures of the job runner's queue polls; it keeps polling, with backoff.",
            registry=r,
        )
        self.jobs_resumed = Counter(
            "bem_jobs_resumed_total",
            "Jobs the sweep queued again because nobody was working on them.",
            registry=r,
        )
        self.import_elements = Counter(
            "bem_import_elements_total",
            "Elements stored by file imports (rate() gives elements per second).",
            registry=r,
        )
        self.jobs_waiting = Gauge(
            "bem_jobs_queued",
            "Jobs waiting to run (read from the jobs table at scrape time).",
            multiprocess_mode="livemax",
            registry=r,
        )
        self.oldest_job_age = Gauge(
            "bem_job_oldest_queued_age_seconds",
            "Age of the oldest job waiting to run; 0 when none waits.",
            multiprocess_mode="livemax",
            registry=r,
        )
        self.last_backup = Gauge(
            "bem_backup_last_success_timestamp_seconds",
            "When the newest completed bem backup finished (Unix time; 0 when none has).",
            multiprocess_mode="livemax",
            registry=r,
        )
        self.events = Counter(
            "bem_events_total",
            "Events written to the outbox (the change feed and webhooks), by kind.",
            ["kind"],
            registry=r,
        )
        self.feed_connections = Gauge(
            "bem_feed_connections",
            "Open change-feed connections by transport (websocket, sse).",
            ["transport"],
            multiprocess_mode="livesum",
            registry=r,
        )
        self.webhook_deliveries = Counter(
            "bem_webhook_deliveries_total",
            "Webhook delivery attempts by outcome: succeeded, retried (will be tried again), "
            "failed (gave up or refused).",
            ["outcome"],
            registry=r,
        )
        self.webhook_duration = Histogram(
            "bem_webhook_delivery_duration_seconds",
            "Time for a webhook receiver to answer (or fail to).",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.webhooks_pending = Gauge(
            "bem_webhook_deliveries_pending",
            "Webhook deliveries waiting to be sent (read from the database at scrape time).",
            multiprocess_mode="livemax",
            registry=r,
        )
        self.health = Gauge(
            "bem_health_check_ok",
            "1 when a readiness check passed at its last run (a probe or a scrape), else 0.",
            ["check"],
            multiprocess_mode="livemin",
            registry=r,
        )
        info = Gauge(
            "bem_build_info",
            "Build information: the running version and the commit it was built from.",
            ["version", "commit"],
            multiprocess_mode="max",
            registry=r,
        )
        info.labels(version=build.version, commit=build.commit).set(1)

    def close(self) -> None:
        """At a worker's shutdown: drop its ``live*`` gauges from the multiprocess directory,
        so the others no longer count its connections, pool or readiness."""
        if os.environ.get(MULTIPROC_ENV):
            multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]

    def exposition(self) -> bytes:
        if os.environ.get(MULTIPROC_ENV):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return bytes(generate_latest(registry))
        return bytes(generate_latest(self.registry))


class MetricsMiddleware:
    """Counts and times every HTTP request under its route template (bounded cardinality:
    unknown paths share the label ``unmatched``)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] == "/metrics":
            await self.app(scope, receive, send)
            return
        status = 500
        started = time.perf_counter()
        elapsed: float | None = None  # an event stream is timed to its first byte

        async def capture(message: Message) -> None:
            nonlocal status, elapsed
            if message["type"] == "http.response.start":
                status = message["status"]
                if any(
                    k.lower() == b"content-type" and v.startswith(b"text/event-stream")
                    for k, v in message.get("headers", ())
                ):
                    elapsed = time.perf_counter() - started
                    self.metrics.in_flight.dec()  # a feed, counted in bem_feed_connections
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, capture)
        finally:
            if elapsed is None:
                self.metrics.in_flight.dec()
                elapsed = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            method = scope["method"]
            self.metrics.requests.labels(method, route, f"{status // 100}xx").inc()
            self.metrics.latency.labels(method, route).observe(elapsed)
            problem = structlog.contextvars.get_contextvars().get("problem")
            if problem:
                self.metrics.problems.labels(problem).inc()
            engine = getattr(getattr(scope.get("app"), "state", None), "engine", None)
            pool: Any = engine.sync_engine.pool if engine is not None else None
            if pool is not None and hasattr(pool, "checkedout"):
                self.metrics.db_pool_in_use.set(pool.checkedout())
                self.metrics.db_pool_size.set(pool.size())
