"""Job kinds and their functions, and the context they run with: shared by ``bem worker``
(arq), the in-process runner and ``bem import``. No queue library here, so one-off commands
do not load one."""

from __future__ import annotations

from typing import Any

from bem.config import Settings
from bem.ingest.tasks import run_import
from bem.jobs.service import Handler, JobContext
from bem.kit.metrics import Metrics
from bem.kit.storage import SourceStore

HANDLERS: dict[str, Handler] = {"import": run_import}


def job_context(
    settings: Settings, sessions: Any, provider: Any = None, metrics: Metrics | None = None
) -> JobContext:
    """``provider``: the OpenTelemetry tracer provider job spans go to (none: tracing off);
    ``metrics``: where job counts and durations go (none: not counted)."""
    ctx = JobContext(
        settings=settings,
        sessions=sessions,
        store=SourceStore(settings.storage_dir),
        metrics=metrics,
    )
    if provider is not None:
        ctx.tracer = provider.get_tracer("bem.jobs")
    return ctx
