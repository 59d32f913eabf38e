"""The app's resources, built once at start (``app.py``) and handed out by small providers,
so no code outside the composition root reads loose ``app.state`` attributes.

``AppState`` *is* ``app.state`` (starlette's attribute bag), with every attribute declared
and typed. Resources of a domain that kit cannot know (the feed hub, the job queue) are
kept by their type: ``state.provide(Hub, hub)``, then ``state.resource(Hub)``.
"""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Annotated, Any, Protocol, TypeVar, cast

import redis.asyncio
from fastapi import Depends
from opentelemetry.sdk.trace import TracerProvider
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from starlette.applications import Starlette
from starlette.datastructures import State
from starlette.requests import HTTPConnection

from bem.config import Settings
from bem.kit.build import Build
from bem.kit.bulkhead import Bulkhead
from bem.kit.memo import Memo
from bem.kit.metrics import Metrics
from bem.kit.storage import SourceStore

if TYPE_CHECKING:  # they read the state themselves
    from bem.kit.cache import Cache
    from bem.kit.ratelimit import Concurrency, Limiter
    from bem.kit.replicas import Replicas

T = TypeVar("T")


class JobQueue(Protocol):
    """Where jobs go once their row is committed: arq on Redis, or this process
    (``jobs/queue.py``). The jobs table holds their state; a queue only carries ids."""

    async def enqueue(self, job_id: uuid.UUID) -> None: ...

    async def depth(self) -> int: ...

    async def close(self) -> None: ...


class AppState(State):
    settings: Settings
    build: Build
    metrics: Metrics
    store: SourceStore
    redis: redis.asyncio.Redis | None
    cache: Cache | None
    limiter: Limiter | None
    concurrency: Concurrency | None
    bulkhead: Bulkhead  # bounds uncached takeoffs and diffs
    memo: Memo  # what authorizing a request read, for a few seconds (kit/memo.py)
    migration_heads: tuple[str, ...]
    tracer_provider: TracerProvider | None
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    replicas: Replicas | None  # BEM_DATABASE_READ_URL
    job_queue: JobQueue | None  # None in bem gateway, which runs no jobs
    started_at: float
    draining: bool  # SIGTERM arrived: readiness fails, the feed lets its followers go

    def __init__(self, **values: Any) -> None:
        super().__init__({"resources": {}, "started_at": time.time(), "draining": False, **values})

    def provide(self, kind: type[T], resource: T) -> None:
        self._state["resources"][kind] = resource

    def resource(self, kind: type[T]) -> T:
        return cast(T, self._state["resources"][kind])

    def has(self, kind: type[Any]) -> bool:
        return kind in self._state["resources"]


def state_of(holder: HTTPConnection | Starlette) -> AppState:
    """The typed state of the app a request (or WebSocket) belongs to, or of an app."""
    state = (holder.app if isinstance(holder, HTTPConnection) else holder).state
    assert isinstance(state, AppState), "the app was not made by bem.app.create_app"
    return state


# The providers are ``async def``, like every dependency and route: FastAPI runs a plain
# ``def`` in a worker thread, a thread hop per request (tests/unit/test_route_threads.py).
async def get_state(conn: HTTPConnection) -> AppState:
    return state_of(conn)


async def get_settings(conn: HTTPConnection) -> Settings:
    return state_of(conn).settings


async def get_metrics(conn: HTTPConnection) -> Metrics:
    return state_of(conn).metrics


async def get_store(conn: HTTPConnection) -> SourceStore:
    return state_of(conn).store


async def get_memo(conn: HTTPConnection) -> Memo:
    return state_of(conn).memo


StateDep = Annotated[AppState, Depends(get_state)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
StoreDep = Annotated[SourceStore, Depends(get_store)]
MemoDep = Annotated[Memo, Depends(get_memo)]
