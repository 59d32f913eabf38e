from __future__ import annotations

import uuid
from typing import Annotated

import anyio.to_thread
from fastapi import APIRouter, Request, Response, status
from fastapi.responses import FileResponse

from bem.auth.permissions import PROJECT_EDIT, PROJECT_READ
from bem.geometry import service
from bem.geometry.schemas import GeometryOut
from bem.jobs.schemas import JobOut
from bem.kit.cache import not_modified
from bem.kit.db import SessionDep
from bem.kit.errors import problem_responses
from bem.kit.state import StateDep, StoreDep
from bem.versions.access import VersionAccess, access_version

router = APIRouter(prefix="/v1", tags=["geometry"], responses=problem_responses(401, 403, 422))
Read = Annotated[VersionAccess, access_version(PROJECT_READ)]
Edit = Annotated[VersionAccess, access_version(PROJECT_EDIT)]


@router.get(
    "/versions/{version_id}/geometry",
    response_model=GeometryOut,
    responses=problem_responses(404),
    summary="Whether a version's 3D geometry is ready, and how it was made",
)
async def get_geometry(version_id: uuid.UUID, session: SessionDep, access: Read) -> GeometryOut:
    return await service.status_of(session, access.version)


@router.post(
    "/versions/{version_id}/geometry",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobOut,
    responses=problem_responses(404, 409, 503),
    summary="Make a version's 3D geometry (again)",
)
async def make_geometry(
    version_id: uuid.UUID,
    response: Response,
    session: SessionDep,
    state: StateDep,
    access: Edit,
) -> JobOut:
    """For a version imported before geometry was made, or whose geometry job failed. Answers
    202 with the job (`Location`); 409 while one is on its way or for a non-IFC version."""
    job = await service.make_again(
        session, state.settings, state.job_queue, access.version, access.principal.user.id
    )
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return JobOut.of(job)


@router.get(
    "/versions/{version_id}/geometry.glb",
    response_class=FileResponse,
    responses={
        200: {
            "description": "Binary glTF 2.0: one node per element (named by its GlobalId) "
            "under a root node that turns IFC's Z-up into glTF's Y-up; metres.",
            "content": {service.MEDIA_TYPE: {}},
            "headers": {"ETag": {"description": "The file's SHA-256, quoted"}},
        },
        206: {"description": "The requested byte range (`Range`)"},
        304: {"description": "Not modified"},
        **problem_responses(404, 409, 416),
    },
    summary="Download a version's 3D geometry (GLB)",
)
async def get_geometry_glb(
    version_id: uuid.UUID, request: Request, session: SessionDep, store: StoreDep, access: Read
) -> Response:
    made = await service.ready_file(session, access.version)
    assert made.sha256 is not None
    etag = f'"{made.sha256}"'
    if cached := not_modified(request, etag):
        return cached
    return await anyio.to_thread.run_sync(
        store.response,
        made.sha256,
        f"{version_id}.glb",
        service.MEDIA_TYPE,
        {"ETag": etag},
        request.headers.get("range"),
    )
