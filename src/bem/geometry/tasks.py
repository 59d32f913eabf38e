"""The geometry job: a version's stored IFC file becomes one GLB in the store."""

from __future__ import annotations

import tempfile
from pathlib import Path

import anyio.to_thread

from bem.geometry.models import VersionGeometry
from bem.geometry.schemas import GeometryParams
from bem.geometry.service import make_glb
from bem.ingest import service as ingest
from bem.jobs import service as jobs
from bem.jobs.models import Job
from bem.jobs.service import JobContext, JobResult, Progress
from bem.kit.db import utcnow
from bem.kit.errors import NotFound


async def run_geometry(ctx: JobContext, job: Job, progress: Progress) -> JobResult:
    params = GeometryParams.model_validate(job.params)
    assert params.format is not None
    with tempfile.TemporaryDirectory(prefix="bem-geometry-") as name:
        workdir = Path(name)
        path = await anyio.to_thread.run_sync(
            ingest.ifc_file,
            ctx.store,
            params.sha256,
            params.format,
            workdir,
            ctx.settings.max_import_bytes,
        )
        await progress("extract", 0, None)
        written, counts = await anyio.to_thread.run_sync(
            make_glb, path, workdir, ctx.settings.geometry_threads, abandon_on_cancel=True
        )
        with written.path.open("rb") as glb:
            key, size = await anyio.to_thread.run_sync(ctx.store.put, glb)
    result = JobResult(params.version_id, counts.elements)
    async with ctx.sessions() as session:
        row = await session.get(VersionGeometry, params.version_id)
        if row is None:
            raise NotFound("The version of this geometry no longer exists.")
        if row.job_id == job.id:  # else a newer request owns the row: this result is spare
            row.sha256, row.bytes = key, size
            row.elements, row.meshes, row.made_at = counts.elements, counts.meshes, utcnow()
        await jobs.succeed(session, job, result)
        await session.commit()
    return result
