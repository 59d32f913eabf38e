"""Authorize by loading: the project or model a path names, with the caller's role in it,
checked and handed to the route (one query; see ``auth/dependencies.py``)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from bem.auth.dependencies import CurrentPrincipal, check, declares
from bem.auth.models import Principal
from bem.auth.permissions import Permission, Role
from bem.kit.db import SessionDep
from bem.kit.memo import Memo, copy_row
from bem.projects import repository, service
from bem.projects.models import Model, Project

T = TypeVar("T")


@dataclass(frozen=True)
class ProjectAccess:
    principal: Principal
    project: Project
    role: Role


@dataclass(frozen=True)
class ModelAccess:
    principal: Principal
    model: Model
    role: Role


async def authorize_project(
    session: AsyncSession, principal: Principal, permission: Permission, project_id: uuid.UUID
) -> ProjectAccess:
    """May ``principal`` do ``permission`` in the project? The project and the role, or
    403/404 (also for connections that outlive a request: the feed re-checks with this)."""
    check(principal, permission)
    found = await repository.project_with_role(session, project_id, principal.user.id)
    project, member = found if found is not None else (None, None)
    role = service.project_role(principal, permission, project_id if project else None, member)
    assert project is not None
    return ProjectAccess(principal, project, role)


async def authorize_in_model(
    session: AsyncSession,
    principal: Principal,
    permission: Permission,
    kind: type[T],
    object_id: uuid.UUID,
    memo: Memo | None = None,
    lasting: Callable[[T], bool] = lambda _: False,
) -> tuple[T, Role]:
    """May ``principal`` do ``permission`` to an object of a model (a version, a job)? The
    object and the role, or 403/404. An object for which ``lasting`` holds (it no longer
    changes: a ready version) is remembered with the caller's membership in ``memo``, until
    a member of its project changes (``projects.service``) or the memo's lifetime ends."""
    check(principal, permission)
    key = f"in:{getattr(kind, '__tablename__')}:{object_id}:{principal.user.id}"  # noqa: B009
    found = memo.get(key) if memo is not None else None
    if found is None:
        epoch = memo.epoch() if memo is not None else 0
        found = await repository.in_model_with_role(session, kind, object_id, principal.user.id)
        if memo is not None and memo.usable and found is not None and lasting(found[0]):
            memo.put(key, (copy_row(found[0]), *found[1:]), [f"project:{found[1]}"], epoch)
    else:
        found = (copy_row(found[0]), *found[1:])
    found_object, project_id, member = found if found is not None else (None, None, None)
    role = service.project_role(principal, permission, project_id, member)
    assert found_object is not None
    return found_object, role


def access_project(permission: Permission) -> Any:
    async def project_access(
        project_id: uuid.UUID, session: SessionDep, principal: CurrentPrincipal
    ) -> ProjectAccess:
        return await authorize_project(session, principal, permission, project_id)

    return declares(permission, project_access)


def access_model(permission: Permission) -> Any:
    async def model_access(
        model_id: uuid.UUID, session: SessionDep, principal: CurrentPrincipal
    ) -> ModelAccess:
        check(principal, permission)
        found = await repository.model_with_role(session, model_id, principal.user.id)
        model, member = found if found is not None else (None, None)
        role = service.project_role(
            principal, permission, model.project_id if model else None, member
        )
        assert model is not None
        return ModelAccess(principal, model, role)

    return declares(permission, model_access)
