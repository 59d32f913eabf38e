"""Authorize by loading: the version a path names, with the caller's role in its project,
checked and handed to the route in one query (a cached page then needs no other)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from bem.auth.dependencies import CurrentPrincipal, check, declares
from bem.auth.models import Principal
from bem.auth.permissions import Permission, Role
from bem.kit.db import SessionDep
from bem.projects import service as projects
from bem.versions import repository
from bem.versions.models import Version


@dataclass(frozen=True)
class VersionAccess:
    principal: Principal
    version: Version
    role: Role


def access_version(permission: Permission) -> Any:
    async def version_access(
        version_id: uuid.UUID, session: SessionDep, principal: CurrentPrincipal
    ) -> VersionAccess:
        check(principal, permission)
        found = await repository.version_with_role(session, version_id, principal.user.id)
        version, project_id, member = found if found is not None else (None, None, None)
        role = projects.project_role(principal, permission, project_id, member)
        assert version is not None
        return VersionAccess(principal, version, role)

    return declares(permission, version_access)
