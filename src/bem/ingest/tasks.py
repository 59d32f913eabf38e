"""The import job: a stored file becomes a version, all or nothing."""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from itertools import islice
from pathlib import Path
from typing import TypeVar

import anyio.to_thread
from sqlalchemy.ext.asyncio import AsyncSession

from bem.ingest.schemas import ImportParams
from bem.ingest.sources import open_source
from bem.jobs import service as jobs
from bem.jobs.models import Job
from bem.jobs.service import JobContext, JobResult, Progress
from bem.kit.errors import NotFound
from bem.projects.models import Model
from bem.versions import service as versions
from bem.versions.models import Version

T = TypeVar("T")
CHUNK = 1000
# Jobs to make after an import, in its transaction (the composition root wires geometry in);
# their ids are enqueued once the version has committed.
Then = Callable[[AsyncSession, JobContext, Job, Version], Awaitable[list[uuid.UUID]]]


async def in_thread(items: Iterator[T], chunk: int = CHUNK) -> AsyncIterator[T]:
    """Pull a synchronous iterator (IfcOpenShell, ezdxf) in a worker thread, ``chunk`` items
    at a time, so the event loop stays responsive."""
    # abandon_on_cancel: a cancelled job stops waiting at once (the thread finishes its chunk
    # and is dropped); anyio's default would hold the cancellation until the thread returns.
    while True:
        batch = await anyio.to_thread.run_sync(
            lambda: list(islice(items, chunk)), abandon_on_cancel=True
        )
        for item in batch:
            yield item
        if len(batch) < chunk:  # the iterator is done: no trip to the thread to hear so
            return


async def run_import(
    ctx: JobContext, job: Job, progress: Progress, then: Then | None = None
) -> JobResult:
    params = ImportParams.model_validate(job.params)
    settings = ctx.settings
    follow_ups: list[uuid.UUID] = []

    async def before_commit(session: AsyncSession, version: Version) -> None:
        if then is not None:
            follow_ups.extend(await then(session, ctx, job, version))
        await jobs.succeed(session, job, JobResult(version.id, version.element_count))

    async with ctx.sessions() as session:
        model = await session.get(Model, job.model_id)
        if model is None:
            raise NotFound("The model of this import no longer exists.")
        with tempfile.TemporaryDirectory(prefix="bem-import-") as workdir:
            path = await anyio.to_thread.run_sync(
                ctx.store.local_file, params.sha256, Path(workdir)
            )
            opened = await anyio.to_thread.run_sync(
                open_source,
                path,
                params.format,
                Path(workdir),
                settings,
                abandon_on_cancel=True,
            )
            await progress("extract", 0, opened.total)
            meta = versions.UploadMeta(
                source_format=params.format,
                message=params.message,
                source_name=params.source_name,
                source_schema=opened.schema,
                source_key=params.sha256,
                units=opened.units,
                max_elements=settings.max_import_elements,
                batch_size=settings.upload_batch_size,
                on_progress=progress,
                before_commit=before_commit,
            )
            source = versions.StoredSource(sha256=params.sha256, size=params.size)
            version = await versions.create_version(
                session, job.created_by, model, in_thread(opened.documents), source, meta
            )
    return JobResult(version.id, version.element_count, tuple(follow_ups))
