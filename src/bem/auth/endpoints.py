from __future__ import annotations

from fastapi import APIRouter

from bem.auth.dependencies import CurrentUser
from bem.auth.models import User
from bem.auth.schemas import UserOut
from bem.kit.errors import problem_responses

router = APIRouter(prefix="/v1", tags=["identity"], responses=problem_responses(401))


@router.get("/me", response_model=UserOut, summary="The user behind the bearer token")
async def me(user: CurrentUser) -> User:
    return user
