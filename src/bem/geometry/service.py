"""A version's 3D geometry: requested after an IFC import (or again by an editor), made by
a job from the stored file, kept content-addressed in the source store."""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path

import ifcopenshell
from sqlalchemy.ext.asyncio import AsyncSession

from bem.config import Settings
from bem.geometry import repository
from bem.geometry.glb import GlbWriter, Written
from bem.geometry.models import VersionGeometry
from bem.geometry.schemas import GeometryOut, GeometryParams
from bem.geometry.shapes import Counts, write_model
from bem.jobs import service as jobs
from bem.jobs.models import Job
from bem.jobs.schemas import JobError
from bem.jobs.service import JobContext
from bem.kit.db import utcnow
from bem.kit.errors import Problem
from bem.kit.state import JobQueue
from bem.versions.models import Version

IFC_FORMATS = frozenset({"ifc", "ifczip"})
MEDIA_TYPE = "model/gltf-binary"


async def request(
    session: AsyncSession, settings: Settings, version: Version, user_id: uuid.UUID | None
) -> Job | None:
    """A queued geometry job for ``version`` (in the caller's transaction), or None when the
    version has no IFC file to make it from."""
    if version.source_format not in IFC_FORMATS or version.source_key is None:
        return None
    job = await jobs.create_job(
        session,
        kind="geometry",
        model_id=version.model_id,
        created_by=user_id,
        params=GeometryParams(
            version_id=version.id,
            sha256=version.source_key,
            format=version.source_format,
            source_name=version.source_name,
        ),
        max_attempts=settings.job_max_attempts,
    )
    row = await session.get(VersionGeometry, version.id)
    if row is None:
        session.add(VersionGeometry(version_id=version.id, job_id=job.id))
    else:  # made again; the old file stays in the store (the same model makes the same file)
        row.job_id, row.sha256, row.bytes, row.elements, row.meshes = job.id, None, None, None, None
        row.requested_at, row.made_at = utcnow(), None
    await session.flush()
    return job


async def after_import(
    session: AsyncSession, ctx: JobContext, job: Job, version: Version
) -> list[uuid.UUID]:
    """The import job's follow-up: geometry for an IFC version (``BEM_GEOMETRY``)."""
    if not ctx.settings.geometry:
        return []
    made = await request(session, ctx.settings, version, job.created_by)
    return [made.id] if made is not None else []


def _status(row: VersionGeometry | None, job: Job | None) -> GeometryOut:
    if row is None:
        return GeometryOut(status="none")
    if row.sha256 is not None:
        return GeometryOut(
            status="ready",
            job_id=row.job_id,
            url=f"/v1/versions/{row.version_id}/geometry.glb",
            sha256=row.sha256,
            bytes=row.bytes,
            elements=row.elements,
            meshes=row.meshes,
            requested_at=row.requested_at,
            made_at=row.made_at,
        )
    if job is None or job.status == "succeeded":  # the job was deleted: ask again
        return GeometryOut(status="none", requested_at=row.requested_at)
    return GeometryOut(
        status=job.status,
        job_id=job.id,
        requested_at=row.requested_at,
        error=JobError(**job.error) if job.status == "failed" and job.error else None,
    )


async def status_of(session: AsyncSession, version: Version) -> GeometryOut:
    found = await repository.get(session, version.id)
    return _status(*(found or (None, None)))


async def ready_file(session: AsyncSession, version: Version) -> VersionGeometry:
    """The version's geometry row once its GLB exists; else a 409 problem saying why not
    (the version exists: its geometry is not there yet, or could not be made)."""
    found = await repository.get(session, version.id)
    state = _status(*(found or (None, None)))
    if found is None or state.status != "ready":
        detail = {
            "none": "This version has no geometry (see POST /v1/versions/{id}/geometry).",
            "queued": "The geometry is queued; try again shortly.",
            "running": "The geometry is being made; try again shortly.",
            "failed": "The geometry could not be made; GET /v1/versions/{id}/geometry says why.",
        }[state.status]
        pending = state.status in ("queued", "running")
        raise Problem(
            detail,
            status=409,
            slug="geometry-not-ready",
            headers={"Retry-After": "5"} if pending else None,
        )
    return found[0]


async def make_again(
    session: AsyncSession,
    settings: Settings,
    queue: JobQueue | None,
    version: Version,
    user_id: uuid.UUID,
) -> Job:
    """An editor's request: (re)make the geometry unless it is on its way already."""
    state = await status_of(session, version)
    if state.status in ("queued", "running"):
        raise Problem(
            "The geometry of this version is already being made.",
            status=409,
            slug="geometry-pending",
        )
    job = await request(session, settings, version, user_id)
    if job is None:
        raise Problem(
            "Geometry is made from IFC files; this version was imported from "
            f"{version.source_format}.",
            status=409,
            slug="geometry-unavailable",
        )
    await jobs.submit(session, queue, job)
    return job


def make_glb(ifc_path: Path, workdir: Path, threads: int) -> tuple[Written, Counts]:
    """The GLB of an IFC file, written in ``workdir``. Blocking: run it in a thread."""
    try:
        model = ifcopenshell.open(str(ifc_path))
    except RuntimeError as exc:  # imported once, so this is a file IfcOpenShell changed on
        raise Problem(
            f"IfcOpenShell could not read the file again ({exc}).",
            status=422,
            slug="geometry-unavailable",
        ) from exc
    with GlbWriter(workdir) as writer:
        counts = write_model(model, writer, threads)
        with tempfile.NamedTemporaryFile(dir=workdir, suffix=".glb", delete=False) as out:
            target = Path(out.name)
        return writer.finish(target), counts
