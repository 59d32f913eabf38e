"""The application factory: middleware order, routers, lifespan and OpenAPI."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import fastapi_offline
import redis.asyncio
from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from opentelemetry.sdk.trace.export import SpanExporter

from bem import __version__
from bem.auth.dependencies import allow, permission_of
from bem.auth.endpoints import router as auth_router
from bem.auth.permissions import PUBLIC
from bem.auth.service import ProjectDirectory
from bem.auth.sessions import rate_identity
from bem.config import JobQueueKind, Settings
from bem.console.endpoints import STATIC as CONSOLE_STATIC
from bem.console.endpoints import router as console_router
from bem.events.service import count_published
from bem.geometry.endpoints import router as geometry_router
from bem.handlers import HANDLERS, LOOPS
from bem.ingest.endpoints import router as imports_router
from bem.jobs.endpoints import router as jobs_router
from bem.jobs.queue import ArqQueue, LocalQueue
from bem.jobs.service import job_context
from bem.kit import migrate
from bem.kit.build import build_of
from bem.kit.bulkhead import Bulkhead
from bem.kit.cache import Cache
from bem.kit.context import RequestContextMiddleware
from bem.kit.db import create_engine, session_factory
from bem.kit.dberrors import DatabaseErrorMiddleware
from bem.kit.errors import (
    ProblemDetail,
    StorageUnavailable,
    install_error_handlers,
    problem_responses,
)
from bem.kit.errortracking import init_error_tracking
from bem.kit.guards import BodyGuardMiddleware, BodyRule, SecurityHeadersMiddleware
from bem.kit.health import mark_draining_on_sigterm
from bem.kit.health import router as health_router
from bem.kit.logging import get_logger
from bem.kit.memo import Memo
from bem.kit.metrics import Metrics, MetricsMiddleware
from bem.kit.ndjson import JSON_TYPES, NDJSON_TYPES
from bem.kit.ratelimit import Concurrency, Limiter, RateLimitMiddleware
from bem.kit.replicas import Replicas
from bem.kit.routes import api_routes, refuse_unknown_query
from bem.kit.state import AppState, JobQueue
from bem.kit.storage import open_store
from bem.kit.tracing import setup_tracing, start_client_tracing, stop_tracing
from bem.live.endpoints import router as live_router
from bem.live.hub import Hub
from bem.live.tasks import Deliverer
from bem.ops.endpoints import router as ops_router
from bem.projects import service as projects
from bem.projects.endpoints import router as projects_router
from bem.query.endpoints import elements_router
from bem.query.endpoints import router as query_router
from bem.versions.endpoints import router as versions_router
from bem.versions.schemas import ElementIn

log = get_logger("bem.app")
MULTIPART_OVERHEAD = 1024 * 1024  # form fields and part headers around an imported file

DESCRIPTION = """
BEM keeps every upload of a building model as an immutable **version** and serves its
**elements** (the IFC-shaped element document) over a REST API.

Authenticate with a personal API token: `Authorization: Bearer bem_pat_...`
(`bem users create-admin` prints one). Errors are RFC 9457 `application/problem+json`.
Lists are cursor-paginated: pass `next_cursor` back as `cursor`.
"""


def _document_global_responses(schema: dict[str, Any]) -> None:
    """Answers any operation can give: malformed input (400), rate limits, database trouble;
    body size and type on those with a body."""
    for operations in schema["paths"].values():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            extra = [400, 429, 503] + ([413, 415] if "requestBody" in operation else [])
            for status, response in problem_responses(*extra).items():
                responses.setdefault(str(status), response)


def _document_permissions(app: FastAPI, schema: dict[str, Any]) -> None:
    """Show each route's declared permission in OpenAPI (``x-permission``)."""
    for route in api_routes(app):
        if route.path not in schema["paths"]:
            continue
        permission = permission_of(route.dependant)
        for method in route.methods:
            operation = schema["paths"][route.path].get(method.lower())
            if operation is not None and permission is not None:
                operation["x-permission"] = permission.name
                note = f"**Permission:** `{permission.name}` ({permission.describe()})."
                operation["description"] = f"{operation.get('description', '')}\n\n{note}".strip()


def _mount_docs(app: FastAPI) -> None:
    """Swagger UI and ReDoc with assets from the fastapi-offline package, served locally."""
    assets = Path(fastapi_offline.__file__).parent / "static"
    app.mount("/docs-assets", StaticFiles(directory=assets), name="docs-assets")
    public = [allow(PUBLIC)]

    @app.get("/docs", include_in_schema=False, dependencies=public)
    async def swagger() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title=f"{app.title} — API",
            swagger_js_url="/docs-assets/swagger-ui-bundle.js",
            swagger_css_url="/docs-assets/swagger-ui.css",
            swagger_favicon_url="/docs-assets/favicon.png",
        )

    @app.get("/redoc", include_in_schema=False, dependencies=public)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url="/openapi.json",
            title=f"{app.title} — API",
            redoc_js_url="/docs-assets/redoc.standalone.js",
            redoc_favicon_url="/docs-assets/favicon.png",
            with_google_fonts=False,
        )


def _resources(settings: Settings) -> AppState:
    """Everything the app holds, built once: pools, clients, caches, limits."""
    build = build_of(settings.build_commit)
    init_error_tracking(settings, build)
    metrics = Metrics(build)
    redis_url = settings.redis_url.get_secret_value() if settings.redis_url else None
    client = (
        redis.asyncio.Redis.from_url(redis_url, socket_timeout=1, socket_connect_timeout=1)
        if redis_url
        else None
    )
    cache = (
        Cache(
            client,
            settings.redis_key_prefix,
            settings.cache_ttl_s,
            settings.cache_memory_bytes,
            metrics,
        )
        if settings.cache_enabled
        else None
    )
    limiter = concurrency = None
    if settings.rate_limit_enabled:
        limiter = Limiter(
            redis_url,
            settings.rate_limit_rules,
            settings.rate_limit_default,
            settings.rate_limit_ip_ceiling,
            settings.redis_key_prefix,
        )
        limiter.on_reject = lambda rule: metrics.rate_limited.labels(rule).inc()
        concurrency = Concurrency(limiter, client, settings.redis_key_prefix)
    engine = create_engine(settings)
    state = AppState(
        settings=settings,
        build=build,
        metrics=metrics,
        store=open_store(settings),
        redis=client,
        cache=cache,
        limiter=limiter,
        concurrency=concurrency,
        bulkhead=Bulkhead(settings.heavy_queries, settings.heavy_query_wait_s),
        memo=Memo(settings.auth_memo_s, client, f"{settings.redis_key_prefix}:memo"),
        migration_heads=tuple(migrate.heads(settings)),
        tracer_provider=None,
        engine=engine,
        sessions=session_factory(engine),
        replicas=Replicas(settings) if settings.read_urls else None,
        job_queue=None,
    )
    state.memo.watch(state.sessions)
    return state


async def _job_queue(state: AppState) -> JobQueue:
    """arq on Redis when configured (``bem worker`` runs the jobs), else this process."""
    settings = state.settings
    if settings.job_queue is JobQueueKind.redis:
        return ArqQueue(settings)
    ctx = job_context(settings, state.sessions, state.tracer_provider, state.metrics)
    local = LocalQueue(ctx, HANDLERS, settings.local_job_concurrency, settings.job_sweep_s)
    await local.start()
    return local


def _lifespan(state: AppState, gateway: bool) -> Any:
    settings = state.settings

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if state.tracer_provider is not None:
            start_client_tracing(state.tracer_provider, state.engine)
        try:
            if swept := await asyncio.to_thread(state.store.sweep):
                log.info("storage.swept", abandoned_files=swept)
        except StorageUnavailable:  # a store that is away does not keep BEM from starting
            log.warning("storage.sweep_skipped", reason="storage unavailable")
        count_published(state.sessions, state.metrics)
        state.memo.start()
        state.job_queue = None if gateway else await _job_queue(state)
        hub = Hub(
            state.sessions,
            poll_s=settings.feed_poll_s,
            heartbeat_s=settings.feed_heartbeat_s,
            max_connections=settings.feed_max_connections,
            metrics=state.metrics,
            draining=lambda: state.draining,
        )
        state.provide(Hub, hub)
        await hub.start()
        # Webhooks go out from the process that runs jobs: this one, or bem worker.
        # So do the loops beside jobs (backups).
        deliverer, loops = None, []
        if isinstance(state.job_queue, LocalQueue):
            provider = state.tracer_provider
            tracer = provider.get_tracer("bem.webhooks") if provider is not None else None
            deliverer = Deliverer(state.sessions, settings, state.metrics, tracer)
            deliverer.start()
            loops = [make(state.sessions, settings) for make in LOOPS]
            for loop in loops:
                loop.start()
        mark_draining_on_sigterm(app)
        build = state.build
        log.info(
            "startup", profile=settings.profile.value, version=build.version, commit=build.commit
        )
        try:
            yield
        finally:
            for loop in loops:
                await loop.close()
            if deliverer is not None:
                await deliverer.close()
            await hub.close()
            await state.memo.close()
            if state.job_queue is not None:
                await state.job_queue.close()
            await state.engine.dispose()
            if state.replicas is not None:
                await state.replicas.dispose()
            if state.tracer_provider is not None:
                stop_tracing(state.tracer_provider)
            if state.redis is not None:
                await state.redis.aclose()
            if state.limiter is not None:
                await state.limiter.close()
            state.metrics.close()
            log.info("shutdown")

    return lifespan


def _middleware(app: FastAPI, state: AppState) -> None:
    """Innermost first: each ``add_middleware`` wraps the ones before it."""
    settings = state.settings
    app.add_middleware(DatabaseErrorMiddleware)  # innermost: it may replay the request
    upload_rule = BodyRule(
        re.compile(r"/v1/models/[^/]+/versions"), (*JSON_TYPES, *NDJSON_TYPES), max_bytes=None
    )
    import_rule = BodyRule(
        re.compile(r"/v1/models/[^/]+/imports"),
        ("multipart/form-data",),
        max_bytes=settings.max_import_bytes + MULTIPART_OVERHEAD,
    )
    app.add_middleware(
        BodyGuardMiddleware,
        max_bytes=settings.max_request_body_bytes,
        rules=(upload_rule, import_rule),
    )
    if state.limiter is not None:
        app.add_middleware(
            RateLimitMiddleware,
            limiter=state.limiter,
            identify=rate_identity(settings),
            trusted_proxies=list(settings.trusted_proxies),
        )
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_credentials=False,  # bearer tokens, no cookies
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "If-None-Match", "X-Request-ID"],
            expose_headers=[
                "ETag",
                "X-Request-ID",
                "Retry-After",
                "RateLimit-Limit",
                "RateLimit-Remaining",
                "RateLimit-Reset",
            ],
            max_age=600,
        )
    app.add_middleware(SecurityHeadersMiddleware, hsts=settings.hsts)
    app.add_middleware(MetricsMiddleware, metrics=state.metrics)
    app.add_middleware(RequestContextMiddleware)  # request id on every answer


def _routers(app: FastAPI, gateway: bool) -> None:
    app.include_router(health_router, dependencies=[allow(PUBLIC)])  # probes need no token
    _mount_docs(app)
    routers = [ops_router, live_router]
    if not gateway:
        # The console's page and assets are public; everything it shows comes from /v1.
        app.mount("/console/assets", StaticFiles(directory=CONSOLE_STATIC), name="console")
        app.include_router(console_router, dependencies=[allow(PUBLIC)])
        routers = [auth_router, ops_router, projects_router, versions_router, elements_router]
        routers += [imports_router, jobs_router, query_router, geometry_router, live_router]
    for router in routers:
        app.include_router(router, dependencies=[Depends(refuse_unknown_query)])


def _openapi(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            # Schemas referenced by hand: streamed upload bodies and problem responses.
            _document_permissions(app, schema)
            _document_global_responses(schema)
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in (ElementIn, ProblemDetail):
                definition = model.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(definition.pop("$defs", {}))
                components[model.__name__] = definition
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(
    settings: Settings, *, span_exporter: SpanExporter | None = None, gateway: bool = False
) -> FastAPI:
    """The app; ``span_exporter`` replaces the OTLP exporter (tests use an in-memory one).
    ``gateway`` (``bem gateway``): only the live routes, health and metrics, and no jobs."""
    state = _resources(settings)
    app = FastAPI(
        title="BEM — Building Element Model server",
        version=__version__,
        description=DESCRIPTION,
        lifespan=_lifespan(state, gateway),
        docs_url=None,  # served below with local assets: no CDN, works offline
        redoc_url=None,
    )
    app.state = state
    state.provide(ProjectDirectory, ProjectDirectory(projects.visible_to))
    install_error_handlers(app)
    _middleware(app, state)
    if settings.tracing_enabled or span_exporter is not None:
        state.tracer_provider = setup_tracing(  # outermost: the span covers everything
            app,
            service="bem-api",
            version=__version__,
            environment=settings.profile.value,
            endpoint=settings.otlp_endpoint,
            sample_ratio=settings.tracing_sample_ratio,
            exporter=span_exporter,
        )
    _routers(app, gateway)
    _openapi(app)
    return app
