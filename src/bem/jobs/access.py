"""Authorize by loading: the job a path names, with the caller's role in its project."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from bem.auth.dependencies import CurrentPrincipal, check, declares
from bem.auth.models import Principal
from bem.auth.permissions import Permission, Role
from bem.jobs import repository
from bem.jobs.models import Job
from bem.kit.db import SessionDep
from bem.projects import service as projects


@dataclass(frozen=True)
class JobAccess:
    principal: Principal
    job: Job
    role: Role


def access_job(permission: Permission) -> Any:
    async def job_access(
        job_id: uuid.UUID, session: SessionDep, principal: CurrentPrincipal
    ) -> JobAccess:
        check(principal, permission)
        found = await repository.job_with_role(session, job_id, principal.user.id)
        job, project_id, member = found if found is not None else (None, None, None)
        role = projects.project_role(principal, permission, project_id, member)
        assert job is not None
        return JobAccess(principal, job, role)

    return declares(permission, job_access)
