from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter

from bem.auth.permissions import PROJECT_READ
from bem.jobs.access import JobAccess, access_job
from bem.jobs.schemas import JobOut
from bem.kit.errors import problem_responses

router = APIRouter(prefix="/v1", tags=["jobs"], responses=problem_responses(401, 403, 422))


@router.get(
    "/jobs/{job_id}",
    response_model=JobOut,
    responses=problem_responses(404),
    summary="A background job: status, progress, resulting version or error",
)
async def get_job(
    job_id: uuid.UUID, access: Annotated[JobAccess, access_job(PROJECT_READ)]
) -> JobOut:
    return JobOut.of(access.job)
