"""Authentication and authorization as FastAPI dependencies.

Every route declares one permission (``auth/permissions.py``): the one place that decides
who may call it. Routes outside any project take ``Annotated[Principal, allow(PERMISSION)]``
(``Annotated[None, allow(PUBLIC)]`` on public ones).
Project routes take the access dependency of the domain whose object the path names
(``projects.access.access_project``, ``versions.access.access_version``, ...): it checks the
credential here (``check``), then loads the object together with the caller's role in its
project, in one query, and hands the route the object it checked. Not a member (or a token
bound to another project) is a 404, so other projects' ids are never confirmed; a member
whose role is too low is a 403.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Any

import structlog
from fastapi import Depends
from fastapi.requests import HTTPConnection
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from bem.auth import repository, service
from bem.auth.models import Principal
from bem.auth.permissions import Permission, Scope, expand
from bem.auth.sessions import AccessClaims, verify_access_token
from bem.config import Settings
from bem.kit.db import SessionDep, utcnow
from bem.kit.errors import Forbidden, Unauthorized
from bem.kit.memo import Memo, copy_row
from bem.kit.security import TOKEN_PREFIX, token_digest
from bem.kit.state import state_of

bearer = HTTPBearer(
    auto_error=False,
    description="A session access token (JWT from /v1/auth/otp/verify) or a personal API "
    "token (`bem_pat_...`).",
)


async def principal_for(
    settings: Settings, session: AsyncSession, secret: str, memo: Memo
) -> Principal:
    """Who a bearer secret (an API token or a session JWT) belongs to; 401 if nobody.
    ``memo`` answers for a credential verified moments ago (``kit/memo.py``); its user is
    then a detached copy: a route that changes the user loads it (``service.changing``)."""
    key: str | None = None
    claims: AccessClaims | None = None
    if secret.startswith(TOKEN_PREFIX):
        key = f"t:{token_digest(secret)}" if len(secret) <= 128 else None
    elif (claims := verify_access_token(settings, secret)) is not None:
        key = f"s:{claims.user_id}:{claims.session_id}"
    if key is None:
        raise Unauthorized("The bearer token is invalid, expired or revoked.")
    principal: Principal
    if (known := memo.get(key)) is not None:
        principal = replace(known, user=copy_row(known.user))
    else:
        epoch = memo.epoch()
        principal = await _look_up(session, secret, claims)
        if memo.usable:  # a copy only for a memo that will keep it
            left = (
                (principal.expires_at - utcnow()).total_seconds() if principal.expires_at else None
            )
            kept = replace(principal, user=copy_row(principal.user))
            memo.put(key, kept, [f"user:{principal.user.id}"], epoch, left)
    structlog.contextvars.bind_contextvars(user_id=str(principal.user.id))
    return principal


async def _look_up(session: AsyncSession, secret: str, claims: AccessClaims | None) -> Principal:
    principal: Principal | None = None
    if claims is None:
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
    else:
        session_user = await repository.session_user(session, claims.user_id, claims.session_id)
        if session_user is not None:
            principal = Principal.of_session(session_user)
    if principal is None:
        raise Unauthorized("The bearer token is invalid, expired or revoked.")
    return principal


async def authenticate(
    conn: HTTPConnection,
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    if credentials is None:
        raise Unauthorized()
    state = state_of(conn)
    return await principal_for(state.settings, session, credentials.credentials, state.memo)


CurrentPrincipal = Annotated[Principal, Depends(authenticate)]


async def user_key(principal: CurrentPrincipal) -> str:
    """The rate-limit key of the calling user, whichever of their credentials they use."""
    return f"user:{principal.user.id}"


def check(principal: Principal, permission: Permission) -> None:
    """What the credential itself must allow, before anything is looked up: 403 if not."""
    if permission.scope is not None and permission.scope not in principal.scopes:
        raise Forbidden(f"This credential lacks the {permission.scope.value!r} scope.")
    if permission.admin_only and not principal.user.is_admin:
        raise Forbidden("Only server administrators may do this.")
    if permission.refuses_bound and principal.project_id is not None:
        raise Forbidden("A token bound to one project cannot do this.")


def declares(permission: Permission, dependency: Any) -> Any:
    """Mark a dependency as the one enforcing ``permission`` (for the route table's test
    and OpenAPI's ``x-permission``), and wrap it in ``Depends``."""
    dependency.permission = permission
    return Depends(dependency)


def allow(permission: Permission) -> Any:
    """The dependency enforcing a permission outside any project (projects' routes use
    their domain's access dependency)."""
    assert permission.role is None, f"{permission.name} is a project permission"
    if permission.public:

        async def public() -> None:
            return None

        return declares(permission, public)

    async def allowed(principal: CurrentPrincipal) -> Principal:
        check(principal, permission)
        return principal

    return declares(permission, allowed)


def permission_of(dependant: Any) -> Permission | None:
    """The permission a route declared (searched through its dependency tree)."""
    for dep in dependant.dependencies:
        found = getattr(dep.call, "permission", None)
        if isinstance(found, Permission):
            return found
        if (nested := permission_of(dep)) is not None:
            return nested
    return None
