"""Authorize by loading: the job a path names, with the caller's role in its project."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from bem.auth.dependencies import CurrentPrincipal, declares
from bem.auth.models import Principal
from bem.auth.permissions import Permission, Role
from bem.jobs.models import Job
from bem.kit.db import SessionDep
from bem.projects.access import authorize_in_model


@dataclass(frozen=True)
class JobAccess:
    principal: Principal
    job: Job
    role: Role


def access_job(permission: Permission) -> Any:
    async def job_access(
        job_id: uuid.UUID, session: SessionDep, principal: CurrentPrincipal
    ) -> JobAccess:
        job, role = await authorize_in_model(session, principal, permission, Job, job_id)
        return JobAccess(principal, job, role)

    return declares(permission, job_access)
