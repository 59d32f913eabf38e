"""FastAPI dependencies other routers use to require an authenticated user."""

from __future__ import annotations

from typing import Annotated

import structlog
from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from bem.auth import service
from bem.auth.models import User
from bem.kit.db import SessionDep
from bem.kit.errors import Unauthorized

bearer = HTTPBearer(auto_error=False, description="Personal API token (`bem_pat_...`).")


async def require_user(
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> User:
    if credentials is None:
        raise Unauthorized()
    user = await service.authenticate(session, credentials.credentials)
    if user is None:
        raise Unauthorized("The bearer token is invalid, expired or revoked.")
    structlog.contextvars.bind_contextvars(user_id=str(user.id))
    return user


CurrentUser = Annotated[User, Depends(require_user)]
