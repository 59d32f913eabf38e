"""Authorize by loading: the version a path names, with the caller's role in its project,
checked and handed to the route in one query (a cached page then needs no other), or none
when the memo holds it (kit/memo.py)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from bem.auth.dependencies import CurrentPrincipal, declares
from bem.auth.models import Principal
from bem.auth.permissions import Permission, Role
from bem.kit.db import SessionDep
from bem.kit.state import MemoDep
from bem.projects.access import authorize_in_model
from bem.versions.models import Version


@dataclass(frozen=True)
class VersionAccess:
    principal: Principal
    version: Version
    role: Role


def _ready(version: Version) -> bool:
    return version.status == "ready"  # then immutable: a memo may keep it


def access_version(permission: Permission) -> Any:
    async def version_access(
        version_id: uuid.UUID, session: SessionDep, principal: CurrentPrincipal, memo: MemoDep
    ) -> VersionAccess:
        version, role = await authorize_in_model(
            session, principal, permission, Version, version_id, memo, _ready
        )
        return VersionAccess(principal, version, role)

    return declares(permission, version_access)
