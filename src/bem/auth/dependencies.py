"""Authentication and authorization as FastAPI dependencies.

Every route takes ``access: Annotated[Access, allow(PERMISSION)]`` (or
``dependencies=[allow(...)]``): the one place that decides who may call it. For project
routes the project is resolved from the path (``project_id``, ``model_id`` or
``version_id``) and checked against the caller's membership: not a member (or a token bound
to another project) is a 404, so other projects' ids are never confirmed; a member whose role
is too low is a 403.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Annotated, Any

import structlog
from fastapi import Depends, Request
from fastapi.requests import HTTPConnection
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from bem.auth import repository, service
from bem.auth.models import Principal
from bem.auth.permissions import Permission, Role, Scope, expand
from bem.auth.sessions import verify_access_token
from bem.config import Settings
from bem.jobs import repository as jobs_repository
from bem.kit.db import SessionDep
from bem.kit.errors import Forbidden, NotFound, Unauthorized, Unprocessable
from bem.kit.security import TOKEN_PREFIX
from bem.projects import repository as projects_repository
from bem.projects.models import Project
from bem.versions import repository as versions_repository

bearer = HTTPBearer(
    auto_error=False,
    description="A session access token (JWT from /v1/auth/otp/verify) or a personal API "
    "token (`bem_pat_...`).",
)


@dataclass(frozen=True)
class Access:
    principal: Principal | None
    project_id: uuid.UUID | None = None
    role: Role | None = None


async def principal_for(settings: Settings, session: AsyncSession, secret: str) -> Principal:
    """Who a bearer secret (an API token or a session JWT) belongs to; 401 if nobody."""
    principal: Principal | None = None
    if secret.startswith(TOKEN_PREFIX):
        found = await service.authenticate_api_token(session, secret)
        if found is not None:
            token, user = found
            principal = Principal(
                user=user,
                scopes=expand(frozenset(Scope(s) for s in token.scopes)),
                kind="api_token",
                token_id=token.id,
                project_id=token.project_id,
                expires_at=token.expires_at,
            )
    elif (claims := verify_access_token(settings, secret)) is not None:
        session_user = await repository.session_user(session, claims.user_id, claims.session_id)
        if session_user is not None:
            principal = Principal.of_session(session_user)
    if principal is None:
        raise Unauthorized("The bearer token is invalid, expired or revoked.")
    structlog.contextvars.bind_contextvars(user_id=str(principal.user.id))
    return principal


async def authenticate(
    request: Request,
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    if credentials is None:
        raise Unauthorized()
    return await principal_for(request.app.state.settings, session, credentials.credentials)


CurrentPrincipal = Annotated[Principal, Depends(authenticate)]


async def user_key(principal: CurrentPrincipal) -> str:
    """The rate-limit key of the calling user, whichever of their credentials they use."""
    return f"user:{principal.user.id}"


async def _project_of(session: AsyncSession, params: dict[str, Any]) -> uuid.UUID | None:
    """The project a path refers to, or None if it (or the path's object) does not exist."""
    try:
        if "project_id" in params:
            # Checked here so an admin (who passes every role check) gets a 404 too; the
            # session keeps the row, so a service's get_project costs no second query.
            project = await session.get(Project, uuid.UUID(str(params["project_id"])))
            return project.id if project is not None else None
        if "model_id" in params:
            return await projects_repository.project_of_model(
                session, uuid.UUID(str(params["model_id"]))
            )
        if "job_id" in params:
            return await jobs_repository.project_of_job(session, uuid.UUID(str(params["job_id"])))
        if "version_id" in params:
            return await versions_repository.project_of_version(
                session, uuid.UUID(str(params["version_id"]))
            )
    except ValueError as exc:
        raise Unprocessable(
            "The id in the path is not a valid UUID.", slug="validation-error"
        ) from exc
    raise LookupError("a project permission on a route without a project in its path")


async def _role(session: AsyncSession, project_id: uuid.UUID, user_id: uuid.UUID) -> Role | None:
    role = await repository.membership_role(session, project_id, user_id)
    return Role[role] if role else None


def allow(permission: Permission) -> Any:
    """The dependency that enforces ``permission``; it carries ``.permission`` for tests and
    OpenAPI."""
    if permission.public:

        async def public() -> Access:
            return Access(principal=None)

        public.permission = permission  # type: ignore[attr-defined]
        return Depends(public)

    async def check(request: Request, session: SessionDep, principal: CurrentPrincipal) -> Access:
        return await authorize(request, session, principal, permission)

    check.permission = permission  # type: ignore[attr-defined]
    return Depends(check)


async def authorize(
    conn: HTTPConnection, session: AsyncSession, principal: Principal, permission: Permission
) -> Access:
    """May ``principal`` do ``permission`` on what ``conn``'s path names? Raises 403/404."""
    if permission.scope is not None and permission.scope not in principal.scopes:
        raise Forbidden(f"This credential lacks the {permission.scope.value!r} scope.")
    if permission.admin_only and not principal.user.is_admin:
        raise Forbidden("Only server administrators may do this.")
    if permission.refuses_bound and principal.project_id is not None:
        raise Forbidden("A token bound to one project cannot do this.")
    if permission.role is None:
        return Access(principal=principal)
    project_id = await _project_of(session, conn.path_params)
    hidden = NotFound("The resource does not exist or is not visible to you.")
    if project_id is None or principal.project_id not in (None, project_id):
        raise hidden
    role = await _role(session, project_id, principal.user.id)
    if principal.user.is_admin:
        role = Role.owner
    if role is None:
        raise hidden
    if role < permission.role:
        raise Forbidden(f"This needs the {permission.role.name} role in the project.")
    return Access(principal=principal, project_id=project_id, role=role)


def permission_of(dependant: Any) -> Permission | None:
    """The permission a route declared (searched through its dependency tree)."""
    for dep in dependant.dependencies:
        found = getattr(dep.call, "permission", None)
        if isinstance(found, Permission):
            return found
        if (nested := permission_of(dep)) is not None:
            return nested
    return None
